// AVX2+FMA versions of the element-wise operations that show up in prefill / vision profiles (ops.c dispatches to
// them at run time). Same formulas as ops.c; exp is a Cephes-style polynomial (max error ~2 ulp over the range
// used), and the reductions that ops.c does in double stay in double (4 lanes at a time).
#include "ops_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <math.h>

#include "simd_x86.h"

#define A2 __attribute__((target("avx2,fma")))
#define A2I static inline __attribute__((always_inline, target("avx2,fma")))

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

A2 void fb__attend_avx2(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld,
                        size_t n, float scale, float *scores, float *out) {
    for (size_t g = 0; g < groups; g++) {
        const float *qg = q + g * hd;
        float *s = scores + g * n, *o = out + g * hd;
        // Scores: one key row (hd floats, contiguous) per position, two accumulators per row.
        for (size_t j = 0; j < n; j++) {
            const float *k = keys + j * ld;
            __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
            size_t i = 0;
            for (; i + 16 <= hd; i += 16) {
                a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_loadu_ps(k + i), a0);
                a1 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i + 8), _mm256_loadu_ps(k + i + 8), a1);
            }
            if (i < hd) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(qg + i), _mm256_loadu_ps(k + i), a0);
            s[j] = scale * fb__hsum8_ps(_mm256_add_ps(a0, a1));
        }
        fb__softmax_avx2(s, n);
        // Output: hd / 8 accumulators at a time (up to 64 floats in registers), one pass over the values each.
        for (size_t i0 = 0; i0 < hd; i0 += 64) {
            const size_t w = hd - i0 < 64 ? (hd - i0) / 8 : 8;
            __m256 acc[8];
            for (size_t v = 0; v < w; v++) acc[v] = _mm256_setzero_ps();
            for (size_t j = 0; j < n; j++) {
                const __m256 p = _mm256_broadcast_ss(s + j);
                const float *vr = values + j * ld + i0;
                for (size_t v = 0; v < w; v++) acc[v] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vr + 8 * v), acc[v]);
            }
            for (size_t v = 0; v < w; v++) _mm256_storeu_ps(o + i0 + 8 * v, acc[v]);
        }
    }
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
