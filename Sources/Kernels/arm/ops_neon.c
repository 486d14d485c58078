// NEON versions of the element-wise operations whose libm calls dominate them on AArch64 (ops.c dispatches to them
// when fb_matmul's path is not "scalar"): GELU (tanh form), SiLU-and-multiply and softmax, i.e. the vision tower's
// MLP and attention and the decoder's MLP; and decode attention over the KV cache (at the end). Same formulas and the
// same exp polynomial as x86/ops_avx2.c (Cephes-style, max error ~2 ulp over the range used); the softmax sum stays in
// double. Executed instructions per element under qemu
// (scripts/arm-insns.sh), portable with libm -> here: GELU 117 -> 11, SiLU 40 -> 10.5, softmax 46 -> 14.6.
#include "../ops_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <math.h>

// e^x for x in float range; x below -87.33 (e^x under the smallest normal, -inf included) gives 0, above 88.37 inf.
static inline __attribute__((always_inline)) float32x4_t exp4(float32x4_t x) {
    const float32x4_t hi = vdupq_n_f32(88.3762626647949f), lo = vdupq_n_f32(-87.33654475f);
    const uint32x4_t under = vcltq_f32(x, lo), over = vcgtq_f32(x, hi);
    x = vmaxq_f32(vminq_f32(x, hi), lo);
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));  // to nearest, ties to even
    float32x4_t r = vfmsq_n_f32(x, n, 0.693359375f);
    r = vfmsq_n_f32(r, n, -2.12194440e-4f);
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    // 2^n: n in [-126, 127] here (x >= -87.34 gives n >= -126).
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    y = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), under));
    return vbslq_f32(over, vdupq_n_f32(INFINITY), y);
}

// Lanes at or past `left` read as 0 and are not written (tails without touching memory past the end).
static inline __attribute__((always_inline)) float32x4_t load_partial(const float *x, size_t left) {
    float t[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < left && i < 4; i++) t[i] = x[i];
    return vld1q_f32(t);
}

static inline __attribute__((always_inline)) void store_partial(float *x, size_t left, float32x4_t v) {
    float t[4];
    vst1q_f32(t, v);
    for (size_t i = 0; i < left && i < 4; i++) x[i] = t[i];
}

// 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3): no cancellation anywhere.
static inline __attribute__((always_inline)) float32x4_t gelu4(float32x4_t v) {
    const float32x4_t u = vmulq_n_f32(vfmaq_f32(v, vmulq_n_f32(v, 0.044715f), vmulq_f32(v, v)), -2.0f * 0.7978845608028654f);
    return vdivq_f32(v, vaddq_f32(vdupq_n_f32(1.0f), exp4(u)));
}

static inline __attribute__((always_inline)) float32x4_t silu_mul4(float32x4_t a, float32x4_t b) {
    return vmulq_f32(vdivq_f32(a, vaddq_f32(vdupq_n_f32(1.0f), exp4(vnegq_f32(a)))), b);
}

// Whole vectors in the loop, the tail once after it (a call inside the loop made the compiler keep exp's constants
// on the stack).
void fb__gelu_tanh_neon(float *x, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(x + i, gelu4(vld1q_f32(x + i)));
    if (i < n) store_partial(x + i, n - i, gelu4(load_partial(x + i, n - i)));
}

void fb__silu_mul_neon(const float *a, const float *b, float *y, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, silu_mul4(vld1q_f32(a + i), vld1q_f32(b + i)));
    if (i < n) store_partial(y + i, n - i, silu_mul4(load_partial(a + i, n - i), load_partial(b + i, n - i)));
}

void fb__softmax_neon(float *x, size_t n) {
    float32x4_t m4 = vdupq_n_f32(-INFINITY);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) m4 = vmaxq_f32(m4, vld1q_f32(x + i));
    float m = vmaxvq_f32(m4);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) {
        for (i = 0; i < n; i++) x[i] = 0.0f;
        return;
    }
    const float32x4_t mv = vdupq_n_f32(m);
    float64x2_t s0 = vdupq_n_f64(0.0), s1 = vdupq_n_f64(0.0);
    for (i = 0; i + 4 <= n; i += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), mv));
        vst1q_f32(x + i, e);
        s0 = vaddq_f64(s0, vcvt_f64_f32(vget_low_f32(e)));
        s1 = vaddq_f64(s1, vcvt_high_f64_f32(e));
    }
    double sum = vaddvq_f64(vaddq_f64(s0, s1));
    if (i < n) {  // the tail through the same exp, lanes past the end left out of the sum
        const size_t left = n - i;
        float t[4];
        vst1q_f32(t, exp4(vsubq_f32(load_partial(x + i, left), mv)));
        for (size_t j = 0; j < left; j++) {
            x[i + j] = t[j];
            sum += t[j];
        }
    }
    const float inv = (float)(1.0 / sum);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++) x[i] *= inv;
}

// ---- decode attention (fb_attend, fb_attend_f16 for head sizes that are multiples of 8) ----------------------------
// As the AVX2 kernels do: query heads in pairs, so that each cached key and value row is read (and, from an f16 cache,
// widened with FCVTL) once for both; the weighted sum of the values in blocks of 32 dimensions, its accumulators in
// registers across all positions.

// 8 cached values at row + i (f32 or f16) as two float vectors.
static inline __attribute__((always_inline)) void load8(const int F16, const void *row, size_t i, float32x4_t *lo,
                                                       float32x4_t *hi) {
    if (F16) {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)row + i));
        *lo = vcvt_f32_f16(vget_low_f16(h));
        *hi = vcvt_high_f32_f16(h);
    } else {
        *lo = vld1q_f32((const float *)row + i);
        *hi = vld1q_f32((const float *)row + i + 4);
    }
}

// o0 (o1) [i0, i0 + 8 NB) = sum_j s0 (s1)[j] * values[j][i0 ..].
static inline __attribute__((always_inline)) void weighted(const int F16, const int TWO, const int NB, const void *values,
                                                          size_t row_bytes, size_t n, const float *s0, const float *s1,
                                                          size_t i0, float *o0, float *o1) {
    float32x4_t c0[8], c1[8];
    for (int b = 0; b < 2 * NB; b++) c0[b] = c1[b] = vdupq_n_f32(0.0f);
    for (size_t j = 0; j < n; j++) {
        const void *v = (const char *)values + j * row_bytes;
        const float p0 = s0[j], p1 = TWO ? s1[j] : 0.0f;
        for (int b = 0; b < NB; b++) {
            float32x4_t lo, hi;
            load8(F16, v, i0 + 8 * (size_t)b, &lo, &hi);
            c0[2 * b] = vfmaq_n_f32(c0[2 * b], lo, p0);
            c0[2 * b + 1] = vfmaq_n_f32(c0[2 * b + 1], hi, p0);
            if (TWO) {
                c1[2 * b] = vfmaq_n_f32(c1[2 * b], lo, p1);
                c1[2 * b + 1] = vfmaq_n_f32(c1[2 * b + 1], hi, p1);
            }
        }
    }
    for (int b = 0; b < 2 * NB; b++) {
        vst1q_f32(o0 + i0 + 4 * (size_t)b, c0[b]);
        if (TWO) vst1q_f32(o1 + i0 + 4 * (size_t)b, c1[b]);
    }
}

// One query head, or two sharing the cache rows (TWO: the next head's query, scores and output follow the first's),
// over positions 0..n-1.
static inline __attribute__((always_inline)) void attend_heads(const int F16, const int TWO, const float *q0, size_t hd,
                                                              const void *keys, const void *values, size_t ld, size_t n,
                                                              float scale, float *s0, float *o0) {
    const size_t row_bytes = ld * (F16 ? 2 : 4);
    const float *q1 = q0 + hd;
    float *s1 = s0 + n, *o1 = o0 + hd;
    // Scores, 4 positions at a time: each 8 query values loaded serve 4 key rows.
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        float32x4_t a[4], b[4];
        for (int p = 0; p < 4; p++) a[p] = b[p] = vdupq_n_f32(0.0f);
        for (size_t i = 0; i < hd; i += 8) {
            const float32x4_t q0l = vld1q_f32(q0 + i), q0h = vld1q_f32(q0 + i + 4);
            const float32x4_t q1l = TWO ? vld1q_f32(q1 + i) : q0l, q1h = TWO ? vld1q_f32(q1 + i + 4) : q0h;
            for (int p = 0; p < 4; p++) {
                float32x4_t lo, hi;
                load8(F16, (const char *)keys + (j + p) * row_bytes, i, &lo, &hi);
                a[p] = vfmaq_f32(vfmaq_f32(a[p], lo, q0l), hi, q0h);
                if (TWO) b[p] = vfmaq_f32(vfmaq_f32(b[p], lo, q1l), hi, q1h);
            }
        }
        for (int p = 0; p < 4; p++) {
            s0[j + p] = scale * vaddvq_f32(a[p]);
            if (TWO) s1[j + p] = scale * vaddvq_f32(b[p]);
        }
    }
    for (; j < n; j++) {
        const void *k = (const char *)keys + j * row_bytes;
        float32x4_t a0 = vdupq_n_f32(0.0f), b0 = a0;
        for (size_t i = 0; i < hd; i += 8) {
            float32x4_t lo, hi;
            load8(F16, k, i, &lo, &hi);
            a0 = vfmaq_f32(vfmaq_f32(a0, lo, vld1q_f32(q0 + i)), hi, vld1q_f32(q0 + i + 4));
            if (TWO) b0 = vfmaq_f32(vfmaq_f32(b0, lo, vld1q_f32(q1 + i)), hi, vld1q_f32(q1 + i + 4));
        }
        s0[j] = scale * vaddvq_f32(a0);
        if (TWO) s1[j] = scale * vaddvq_f32(b0);
    }
    fb__softmax_neon(s0, n);
    if (TWO) fb__softmax_neon(s1, n);
    size_t i0 = 0;
    for (; i0 + 32 <= hd; i0 += 32) weighted(F16, TWO, 4, values, row_bytes, n, s0, s1, i0, o0, o1);
    switch ((hd - i0) / 8) {
    case 3: weighted(F16, TWO, 3, values, row_bytes, n, s0, s1, i0, o0, o1); break;
    case 2: weighted(F16, TWO, 2, values, row_bytes, n, s0, s1, i0, o0, o1); break;
    case 1: weighted(F16, TWO, 1, values, row_bytes, n, s0, s1, i0, o0, o1); break;
    default: break;
    }
}

static inline __attribute__((always_inline)) void attend(const int F16, const float *q, size_t groups, size_t hd,
                                                        const void *keys, const void *values, size_t ld, size_t n,
                                                        float scale, float *scores, float *out) {
    size_t g = 0;
    for (; g + 2 <= groups; g += 2)
        attend_heads(F16, 1, q + g * hd, hd, keys, values, ld, n, scale, scores + g * n, out + g * hd);
    if (g < groups) attend_heads(F16, 0, q + g * hd, hd, keys, values, ld, n, scale, scores + g * n, out + g * hd);
}

void fb__attend_neon(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld,
                     size_t n, float scale, float *scores, float *out) {
    attend(0, q, groups, hd, keys, values, ld, n, scale, scores, out);
}

void fb__attend_f16_neon(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values,
                         size_t ld, size_t n, float scale, float *scores, float *out) {
    attend(1, q, groups, hd, keys, values, ld, n, scale, scores, out);
}

#else
typedef int fb_ops_arm_unused;
#endif
