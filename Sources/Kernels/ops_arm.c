// NEON versions of the element-wise operations whose libm calls dominate them on AArch64 (ops.c dispatches to them
// when fb_matmul's path is not "scalar"): GELU (tanh form), SiLU-and-multiply and softmax, i.e. the vision tower's
// MLP and attention and the decoder's MLP. Same formulas and the same exp polynomial as ops_x86.c (Cephes-style, max
// error ~2 ulp over the range used); the softmax sum stays in double. Executed instructions per element under qemu
// (scripts/arm-insns.sh), portable with libm -> here: GELU 117 -> 11, SiLU 40 -> 10.5, softmax 46 -> 14.6.
#include "ops_internal.h"

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

#else
typedef int fb_ops_arm_unused;
#endif
