// AVX2+FMA versions of the element-wise operations that show up in prefill / vision profiles (ops.c dispatches to
// them at run time). Same formulas as ops.c; exp is a Cephes-style polynomial (max error ~2 ulp over the range
// used), and the reductions that ops.c does in double stay in double (4 lanes at a time).
#include "../ops_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <math.h>

#include "simd.h"

#define A2 FB_TARGET("avx2,fma,f16c")
#define A2I static inline __attribute__((always_inline)) FB_TARGET("avx2,fma,f16c")

// e^x for x in float range; x below -87.33 (e^x under the smallest normal, -inf included) gives 0, above 88.37 inf.
A2I __m256 exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.33654475f);
    const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    const __m256 over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    x = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    // 2^n: n in [-126, 127] here (x >= -87.34 gives n >= -126).
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    y = _mm256_andnot_ps(under, y);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
}

A2I double hsum4d(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    s = _mm_add_sd(s, _mm_unpackhi_pd(s, s));
    return _mm_cvtsd_f64(s);
}

// Loads i..i+7 of x, lanes at or past n read as 0 (tails without reading past the end).
A2I __m256 load_partial(const float *x, size_t left) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), idx);
    return _mm256_maskload_ps(x, m);
}

A2I void store_partial(float *x, size_t left, __m256 v) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(x, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), idx), v);
}

A2 void fb__gelu_tanh_avx2(float *x, size_t n) {
    // 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)),  u = sqrt(2/pi) (x + 0.044715 x^3): no cancellation anywhere.
    const __m256 k2 = _mm256_set1_ps(-2.0f * 0.7978845608028654f), c = _mm256_set1_ps(0.044715f);
    const __m256 one = _mm256_set1_ps(1.0f);
    size_t i = 0;
    for (; i < n; i += 8) {
        const size_t left = n - i;
        const __m256 v = left >= 8 ? _mm256_loadu_ps(x + i) : load_partial(x + i, left);
        const __m256 u = _mm256_mul_ps(k2, _mm256_fmadd_ps(_mm256_mul_ps(c, v), _mm256_mul_ps(v, v), v));
        const __m256 y = _mm256_div_ps(v, _mm256_add_ps(one, exp8(u)));
        if (left >= 8) _mm256_storeu_ps(x + i, y);
        else store_partial(x + i, left, y);
    }
}

A2 void fb__silu_mul_avx2(const float *a, const float *b, float *y, size_t n) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    for (size_t i = 0; i < n; i += 8) {
        const size_t left = n - i;
        const __m256 va = left >= 8 ? _mm256_loadu_ps(a + i) : load_partial(a + i, left);
        const __m256 vb = left >= 8 ? _mm256_loadu_ps(b + i) : load_partial(b + i, left);
        const __m256 r = _mm256_mul_ps(_mm256_div_ps(va, _mm256_add_ps(one, exp8(_mm256_xor_ps(va, sign)))), vb);
        if (left >= 8) _mm256_storeu_ps(y + i, r);
        else store_partial(y + i, left, r);
    }
}

A2 void fb__softmax_avx2(float *x, size_t n) {
    __m256 m8 = _mm256_set1_ps(-INFINITY);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
    float m = fb__hmax8_ps(m8);
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) {
        for (i = 0; i < n; i++) x[i] = 0.0f;
        return;
    }
    const __m256 mv = _mm256_set1_ps(m);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (i = 0; i < n; i += 8) {
        const size_t left = n - i;
        // Lanes past the end load as 0 and would give e^(-m): store nothing there and add nothing.
        const __m256 v = left >= 8 ? _mm256_loadu_ps(x + i) : load_partial(x + i, left);
        __m256 e = exp8(_mm256_sub_ps(v, mv));
        if (left < 8) {
            const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            e = _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), idx)));
            store_partial(x + i, left, e);
        } else {
            _mm256_storeu_ps(x + i, e);
        }
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    const __m256 inv = _mm256_set1_ps((float)(1.0 / hsum4d(_mm256_add_pd(s0, s1))));
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    const float invs = _mm256_cvtss_f32(inv);
    for (; i < n; i++) x[i] *= invs;
}

// 8 floats of a cached row: f32 as is, or f16 widened (exact) with F16C.
A2I __m256 cache8(const int f16, const void *row, size_t i) {
    if (f16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)row + i)));
    return _mm256_loadu_ps((const float *)row + i);
}

// The sums of a0..a3 (8 lanes each) as one vector {sum a0, sum a1, sum a2, sum a3}.
A2I __m128 hsum4x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// Scores of query heads q0 (and q1 when TWO) against cached rows j0..j0+3: s[j0 + r] = scale * q . k_r. Each key
// vector is loaded once for both heads; 4 rows x 2 heads = 8 independent FMA chains, one reduction per 4 rows.
A2I void scores4(const int f16, const int TWO, const float *q0, const float *q1, size_t hd, const char *rows,
                 size_t row_bytes, float scale, float *s0, float *s1) {
    __m256 a0[4], a1[4];
    for (int r = 0; r < 4; r++) a0[r] = a1[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < hd; i += 8) {
        const __m256 x0 = _mm256_loadu_ps(q0 + i), x1 = TWO ? _mm256_loadu_ps(q1 + i) : x0;
        for (int r = 0; r < 4; r++) {
            const __m256 k = cache8(f16, rows + r * row_bytes, i);
            a0[r] = _mm256_fmadd_ps(x0, k, a0[r]);
            if (TWO) a1[r] = _mm256_fmadd_ps(x1, k, a1[r]);
        }
    }
    const __m128 sc = _mm_set1_ps(scale);
    _mm_storeu_ps(s0, _mm_mul_ps(hsum4x8(a0[0], a0[1], a0[2], a0[3]), sc));
    if (TWO) _mm_storeu_ps(s1, _mm_mul_ps(hsum4x8(a1[0], a1[1], a1[2], a1[3]), sc));
}

// o0[i0 .. i0 + 8W) = sum_j p0_j v_j over the n cached rows (and o1 with p1 when TWO): each value vector is loaded
// once for both heads.
A2I void weighted4(const int f16, const int TWO, const int W, const char *rows, size_t row_bytes, size_t n,
                   const float *p0, const float *p1, size_t i0, float *o0, float *o1) {
    __m256 a0[4], a1[4];
    for (int v = 0; v < W; v++) a0[v] = a1[v] = _mm256_setzero_ps();
    for (size_t j = 0; j < n; j++) {
        const __m256 w0 = _mm256_broadcast_ss(p0 + j), w1 = TWO ? _mm256_broadcast_ss(p1 + j) : w0;
        const char *row = rows + j * row_bytes;
        for (int v = 0; v < W; v++) {
            const __m256 x = cache8(f16, row, i0 + 8 * v);
            a0[v] = _mm256_fmadd_ps(w0, x, a0[v]);
            if (TWO) a1[v] = _mm256_fmadd_ps(w1, x, a1[v]);
        }
    }
    for (int v = 0; v < W; v++) {
        _mm256_storeu_ps(o0 + i0 + 8 * v, a0[v]);
        if (TWO) _mm256_storeu_ps(o1 + i0 + 8 * v, a1[v]);
    }
}

// One or two query heads (TWO) through the cache: scores, softmax, weighted values.
A2I void attend_heads(const int f16, const int TWO, const float *q0, size_t hd, const void *keys, const void *values,
                      size_t row_bytes, size_t n, float scale, float *s0, float *o0) {
    const float *q1 = q0 + hd;
    float *s1 = s0 + n, *o1 = o0 + hd;
    size_t j = 0;
    for (; j + 4 <= n; j += 4)
        scores4(f16, TWO, q0, q1, hd, (const char *)keys + j * row_bytes, row_bytes, scale, s0 + j, s1 + j);
    for (; j < n; j++) {
        const char *k = (const char *)keys + j * row_bytes;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (size_t i = 0; i < hd; i += 8) {
            const __m256 x = cache8(f16, k, i);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q0 + i), x, a0);
            if (TWO) a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q1 + i), x, a1);
        }
        s0[j] = scale * fb__hsum8_ps(a0);
        if (TWO) s1[j] = scale * fb__hsum8_ps(a1);
    }
    fb__softmax_avx2(s0, n);
    if (TWO) fb__softmax_avx2(s1, n);
    size_t i0 = 0;
    for (; i0 + 32 <= hd; i0 += 32) weighted4(f16, TWO, 4, values, row_bytes, n, s0, s1, i0, o0, o1);
    switch ((hd - i0) / 8) {
    case 3: weighted4(f16, TWO, 3, values, row_bytes, n, s0, s1, i0, o0, o1); break;
    case 2: weighted4(f16, TWO, 2, values, row_bytes, n, s0, s1, i0, o0, o1); break;
    case 1: weighted4(f16, TWO, 1, values, row_bytes, n, s0, s1, i0, o0, o1); break;
    default: break;
    }
}

// fb_attend over a float (f16 = 0) or binary16 (f16 = 1) cache, hd a multiple of 8. The query heads go two at a
// time, so the cache rows are read once per pair (once in all for two heads per key/value head, as in LFM2).
A2I void attend(const int f16, const float *q, size_t groups, size_t hd, const void *keys, const void *values,
                size_t ld, size_t n, float scale, float *scores, float *out) {
    const size_t row_bytes = ld * (f16 ? 2 : 4);
    size_t g = 0;
    for (; g + 2 <= groups; g += 2)
        attend_heads(f16, 1, q + g * hd, hd, keys, values, row_bytes, n, scale, scores + g * n, out + g * hd);
    if (g < groups) attend_heads(f16, 0, q + g * hd, hd, keys, values, row_bytes, n, scale, scores + g * n, out + g * hd);
}

A2 void fb__attend_avx2(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld,
                        size_t n, float scale, float *scores, float *out) {
    attend(0, q, groups, hd, keys, values, ld, n, scale, scores, out);
}

A2 void fb__attend_f16_avx2(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values,
                            size_t ld, size_t n, float scale, float *scores, float *out) {
    attend(1, q, groups, hd, keys, values, ld, n, scale, scores, out);
}

A2 void fb__rmsnorm_avx2(const float *x, const float *w, float *y, size_t n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), b = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        s0 = _mm256_fmadd_pd(a, a, s0);
        s1 = _mm256_fmadd_pd(b, b, s1);
    }
    double ss = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) ss += (double)x[i] * (double)x[i];
    const float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    const __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), iv), _mm256_loadu_ps(w + i)));
    for (; i < n; i++) y[i] = (x[i] * inv) * w[i];
}

A2 void fb__layernorm_avx2(const float *x, const float *w, const float *b, float *y, size_t n, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double sum = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) sum += x[i];
    const double mean = sum / (double)n;
    const __m256d md = _mm256_set1_pd(mean);
    s0 = s1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), md);
        const __m256d c = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), md);
        s0 = _mm256_fmadd_pd(a, a, s0);
        s1 = _mm256_fmadd_pd(c, c, s1);
    }
    double var = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) {
        const double d = (double)x[i] - mean;
        var += d * d;
    }
    const float inv = (float)(1.0 / sqrt(var / (double)n + (double)eps));
    const float m = (float)mean;
    const __m256 iv = _mm256_set1_ps(inv), mv = _mm256_set1_ps(m);
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), iv), _mm256_loadu_ps(w + i));
        _mm256_storeu_ps(y + i, _mm256_add_ps(t, _mm256_loadu_ps(b + i)));
    }
    for (; i < n; i++) y[i] = (x[i] - m) * inv * w[i] + b[i];
}

#else
typedef int fb_ops_x86_unused;
#endif
