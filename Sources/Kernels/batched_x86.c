// AVX2 parts of the batched products (batched.c): activation quantization, the int8 GEMM for q8/q4 weights, and
// weight-row dequantization for the sgemm route. Per-function target attributes, chosen at run time.
//
// int8 GEMM. Per group of 32 (one weight scale s, one activation scale d), for one row and one token:
//   q4: maddubs(nibbles 0..15 as u8, xq as s8) -> 16 x i16 (|pair| <= 2*15*127, no saturation); madd with 1s
//       -> 8 x i32; to float; acc += that * (s*d). The nibbles are w/s + 8, so sum_g s*d*sum(nib*q) is too big
//       by 8*sum_g s*d*sum(q): the activation side precomputes ex = -8*d*sum(q) per group, and each (row, token)
//       adds sum_g s*ex once (ng/8 FMAs against ng*5 instructions for the main sum).
//   q8: the same with maddubs(|w|, sign(q, w)) (|pair| <= 2*127*127 < 32767), no offset.
// Register tile: RB rows x NT tokens of 8-lane float accumulators (2 x 6 = 12 of the 16 ymm registers; of the
// shapes tried, 4x3, 2x4, 1x8, 3x4, 4x2, this was fastest on Zen 3); the weights of a group are unpacked once per
// row and used for NT tokens, the activations loaded once per token and used for RB rows. Rows are taken in chunks (~48 KiB of quants) that stay in L1/L2 while all tokens pass.
#include "batched_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

#define A2 __attribute__((target("avx2,fma,f16c")))
#define A2I static inline __attribute__((always_inline, target("avx2,fma,f16c")))

A2I float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// ---- activations -----------------------------------------------------------------------------------------

A2 void fb__quantize_act_avx2(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a) {
    const size_t cols = a->cols, ng = a->ng;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t t = t0; t < t1; t++) {
        const float *xt = x + t * ldx;
        int8_t *q = a->xq + t * cols;
        for (size_t g = 0; g < ng; g++) {
            const float *xg = xt + g * 32;
            __m256 v[4], m = _mm256_setzero_ps();
            for (int j = 0; j < 4; j++) {
                v[j] = _mm256_loadu_ps(xg + 8 * j);
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
            }
            __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            h = _mm_max_ps(h, _mm_movehl_ps(h, h));
            h = _mm_max_ss(h, _mm_movehdup_ps(h));
            const float mx = _mm_cvtss_f32(h);
            const float d = mx / 127.0f;
            const __m256 id = _mm256_set1_ps(d > 0.0f ? 127.0f / mx : 0.0f);
            __m256i iv[4];
            for (int j = 0; j < 4; j++) iv[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));  // round to nearest even
            const __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]), p16b = _mm256_packs_epi32(iv[2], iv[3]);
            const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), perm);
            _mm256_storeu_si256((__m256i *)(q + g * 32), p8);
            // sum(q): maddubs(1s, q) then madd(1s)
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p8);
            const __m256i s32 = _mm256_madd_epi16(s16, ones);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            a->dx[t * ng + g] = d;
            a->ex[t * ng + g] = -8.0f * d * (float)_mm_cvtsi128_si32(s4);
        }
    }
}

// ---- int8 GEMM -----------------------------------------------------------------------------------------------

// The 32 weights of group g of a q4 row as bytes 0..15 (unsigned nibbles, in weight order).
A2I __m256i q4_group(const uint8_t *row, size_t g) {
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(row + g * 16)));
    const __m256i sh = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(sh, _mm256_set1_epi8(15));
}

// out[i*NT + k] = sum over groups for row r0+i, token t0+k (the q4 offset term included).
A2I void i8_tile(const int q4, const int RB, const int NT, const fb_matrix *w, const fb__qact *a, size_t r0,
                 size_t t0, float *out) {
    const size_t cols = w->cols, ng = cols / 32;
    const size_t wrow = q4 ? cols / 2 : cols;
    const uint8_t *wq[2];
    const uint16_t *ws[2];
    for (int i = 0; i < RB; i++) {
        wq[i] = (const uint8_t *)w->data + (r0 + i) * wrow;
        ws[i] = w->scales + (r0 + i) * ng;
    }
    const int8_t *xq[6];
    const float *dx[6];
    for (int k = 0; k < NT; k++) {
        xq[k] = a->xq + (t0 + k) * cols;
        dx[k] = a->dx + (t0 + k) * ng;
    }
    __m256 acc[2][6];
    for (int i = 0; i < RB; i++)
        for (int k = 0; k < NT; k++) acc[i][k] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t g = 0; g < ng; g++) {
        __m256i wv[2];
        __m256 sv[2];
        for (int i = 0; i < RB; i++) {
            if (q4) {
                wv[i] = q4_group(wq[i], g);
            } else {
                wv[i] = _mm256_loadu_si256((const __m256i *)(wq[i] + g * 32));
            }
            sv[i] = _mm256_set1_ps(_cvtsh_ss(ws[i][g]));
        }
        __m256i aw[2];
        if (!q4)
            for (int i = 0; i < RB; i++) aw[i] = _mm256_sign_epi8(wv[i], wv[i]);
        for (int k = 0; k < NT; k++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq[k] + g * 32));
            const __m256 d = _mm256_broadcast_ss(dx[k] + g);
            for (int i = 0; i < RB; i++) {
                const __m256i p16 = q4 ? _mm256_maddubs_epi16(wv[i], xv)
                                       : _mm256_maddubs_epi16(aw[i], _mm256_sign_epi8(xv, wv[i]));
                const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[i][k] = _mm256_fmadd_ps(p, _mm256_mul_ps(sv[i], d), acc[i][k]);
            }
        }
    }
    if (q4) {
        // + sum_g s[g] * ex[g]  (8 groups at a time)
        for (int i = 0; i < RB; i++) {
            for (int k = 0; k < NT; k++) {
                const float *ex = a->ex + (t0 + k) * ng;
                __m256 c = _mm256_setzero_ps();
                size_t g = 0;
                for (; g + 8 <= ng; g += 8)
                    c = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ws[i] + g))),
                                        _mm256_loadu_ps(ex + g), c);
                float tail = 0.0f;
                for (; g < ng; g++) tail += _cvtsh_ss(ws[i][g]) * ex[g];
                out[i * NT + k] = hsum8(acc[i][k]) + (hsum8(c) + tail);
            }
        }
    } else {
        for (int i = 0; i < RB; i++)
            for (int k = 0; k < NT; k++) out[i * NT + k] = hsum8(acc[i][k]);
    }
}

#define I8_ROWS(RB, NT)                                                                              \
    do {                                                                                             \
        size_t r = rc;                                                                               \
        float o[16];                                                                                 \
        for (; r + (RB) <= rce; r += (RB)) {                                                         \
            i8_tile(q4, RB, NT, w, a, r, t, o);                                                      \
            for (int i = 0; i < (RB); i++)                                                           \
                for (int k = 0; k < (NT); k++) y[(t + k) * ldy + r + i] = o[i * (NT) + k];           \
        }                                                                                            \
        for (; r < rce; r++) {                                                                       \
            i8_tile(q4, 1, NT, w, a, r, t, o);                                                       \
            for (int k = 0; k < (NT); k++) y[(t + k) * ldy + r] = o[k];                              \
        }                                                                                            \
    } while (0)

A2I void i8_run(const int q4, const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1) {
    const size_t n = a->n;
    const size_t row_bytes = q4 ? w->cols / 2 : w->cols;
    size_t chunk = (48u * 1024u) / row_bytes;
    chunk = chunk < 4 ? 4 : chunk & ~(size_t)3;
    for (size_t rc = r0; rc < r1; rc += chunk) {
        const size_t rce = r1 - rc < chunk ? r1 : rc + chunk;
        size_t t = 0;
        for (; t + 6 <= n; t += 6) I8_ROWS(2, 6);
        switch (n - t) {
        case 5: I8_ROWS(2, 5); break;
        case 4: I8_ROWS(2, 4); break;
        case 3: I8_ROWS(2, 3); break;
        case 2: I8_ROWS(2, 2); break;
        case 1: I8_ROWS(2, 1); break;
        default: break;
        }
    }
}

A2 static void i8_q4(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1) {
    i8_run(1, w, a, y, ldy, r0, r1);
}
A2 static void i8_q8(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1) {
    i8_run(0, w, a, y, ldy, r0, r1);
}

void fb__gemm_i8_avx2(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1) {
    if (w->type == FB_Q4)
        i8_q4(w, a, y, ldy, r0, r1);
    else if (w->type == FB_Q8)
        i8_q8(w, a, y, ldy, r0, r1);
}

#else
typedef int fb_batched_x86_unused;
#endif
