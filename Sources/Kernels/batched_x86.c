// AVX2 parts of the batched products (batched.c): activation quantization and the int8 GEMMs for q4 and q8
// weights. Per-function target attributes, chosen at run time.
//
// q8 int8 GEMM (the "int8" route on request). Per group of 32 (one weight scale s, one activation scale d), for one
// row and one token: maddubs(|w|, sign(q, w)) -> 16 x i16 (|pair| <= 2*127*127 < 32767, no saturation); madd with
// 1s -> 8 x i32; to float; acc += that * (s*d).
// Register tile: RB rows x NT tokens of 8-lane float accumulators (2 x 6 = 12 of the 16 ymm registers); the weights
// of a group are loaded once per row and used for NT tokens, the activations loaded once per token and used for RB
// rows. Rows are taken in chunks (~48 KiB of quants) that stay in L1/L2 while all tokens pass.
// q4 has its own packed kernel, below.
#include "batched_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#include <string.h>

#include "simd_x86.h"

#define A2 __attribute__((target("avx2,fma,f16c")))
#define A2I static inline __attribute__((always_inline, target("avx2,fma,f16c")))

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
            const float mx = fb__hmax8_ps(m);
            const float d = mx / 127.0f;
            const __m256 id = _mm256_set1_ps(d > 0.0f ? 127.0f / mx : 0.0f);
            __m256i iv[4];
            for (int j = 0; j < 4; j++) iv[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));  // round to nearest even
            const __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]), p16b = _mm256_packs_epi32(iv[2], iv[3]);
            const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), perm);
            _mm256_storeu_si256((__m256i *)(q + g * 32), p8);
            if (a->xi) {
                int32_t d4[8];
                _mm256_storeu_si256((__m256i *)d4, p8);
                int8_t *xi = a->xi + (t / FB__XI_TOKENS) * ng * 256 + g * 256 + (t % FB__XI_TOKENS) * 4;
                for (int s = 0; s < 8; s++) memcpy(xi + s * 32, &d4[s], 4);
            }
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

// ---- q8 int8 GEMM -----------------------------------------------------------------------------------------------

// out[i*NT + k] = sum over groups for row r0+i, token t0+k (q8 weights).
A2I void i8_tile(const int RB, const int NT, const fb_matrix *w, const fb__qact *a, size_t r0, size_t t0, float *out) {
    const size_t cols = w->cols, ng = cols / 32;
    const int8_t *wq[2];
    const uint16_t *ws[2];
    for (int i = 0; i < RB; i++) {
        wq[i] = (const int8_t *)w->data + (r0 + i) * cols;
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
        __m256i wv[2], aw[2];
        __m256 sv[2];
        for (int i = 0; i < RB; i++) {
            wv[i] = _mm256_loadu_si256((const __m256i *)(wq[i] + g * 32));
            aw[i] = _mm256_sign_epi8(wv[i], wv[i]);
            sv[i] = _mm256_set1_ps(_cvtsh_ss(ws[i][g]));
        }
        for (int k = 0; k < NT; k++) {
            const __m256i xv = _mm256_loadu_si256((const __m256i *)(xq[k] + g * 32));
            const __m256 d = _mm256_broadcast_ss(dx[k] + g);
            for (int i = 0; i < RB; i++) {
                const __m256i p16 = _mm256_maddubs_epi16(aw[i], _mm256_sign_epi8(xv, wv[i]));
                const __m256 p = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
                acc[i][k] = _mm256_fmadd_ps(p, _mm256_mul_ps(sv[i], d), acc[i][k]);
            }
        }
    }
    for (int i = 0; i < RB; i++)
        for (int k = 0; k < NT; k++) out[i * NT + k] = fb__hsum8_ps(acc[i][k]);
}

#define I8_ROWS(RB, NT)                                                                              \
    do {                                                                                             \
        size_t r = rc;                                                                               \
        float o[16];                                                                                 \
        for (; r + (RB) <= rce; r += (RB)) {                                                         \
            i8_tile(RB, NT, w, a, r, t, o);                                                          \
            for (int i = 0; i < (RB); i++)                                                           \
                for (int k = 0; k < (NT); k++) y[(t + k) * ldy + r + i] = o[i * (NT) + k];           \
        }                                                                                            \
        for (; r < rce; r++) {                                                                       \
            i8_tile(1, NT, w, a, r, t, o);                                                           \
            for (int k = 0; k < (NT); k++) y[(t + k) * ldy + r] = o[k];                              \
        }                                                                                            \
    } while (0)

A2 static void i8_q8(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1) {
    const size_t n = a->n;
    const size_t row_bytes = w->cols;
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


// ---- packed int8 GEMM for q4 weights -------------------------------------------------------------------------
//
// The kernel above turns every (row, token, group) product into floats: ~5 instructions per 32 multiply-adds,
// no better than f32 FMAs. This one keeps 8 rows per register instead of 8 partial sums of one row, so the
// float work is done once per group for 8 rows at a time and the integer work dominates:
//
//   pack (once per block of rows, reused by every token): per group g and step s (0..7), 64 bytes holding
//   weights 4s..4s+3 of group g for 16 rows, as unsigned nibbles (0..15), row-major within each 4-byte lane:
//   panel[g][s][row 0..15][4]; the f16 scales of the 16 rows converted to f32: scales[g][16].
//   micro-kernel, per group: for each step, maddubs(weights of 8 rows, 4 activation bytes broadcast) gives per
//   row two i16 sums of two products, added up in i16 over the 8 steps (|sum| <= 8 * 2 * 15 * 127 = 30480,
//   so no i16 overflow); then one madd with 1s -> the group's integer dot product for 8 rows (i32), one convert,
//   and acc += s_row * (d * dot + ex) (two FMAs; ex = -8 * d * sum(q) puts the nibbles' +8 offset back).
//   Per group and 8 rows x 1 token: 8 maddubs + 8 adds + 1 madd + 1 convert + 2 FMAs for 256 multiply-adds.

#define PK_ROWS FB__PK_ROWS
#define PK_GROUP_BYTES FB__PK_GROUP_BYTES

// The 32 weights of group g of a q4 row as bytes 0..15 (unsigned nibbles, in weight order).
A2I __m256i q4_group(const uint8_t *row, size_t g) {
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(row + g * 16)));
    const __m256i sh = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(sh, _mm256_set1_epi8(15));
}

// Packs rows [r0, r1) (at most PK_ROWS; missing rows get zero weights and scales) of a q4 matrix, all groups.
A2 static void pack_q4_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    const size_t ng = w->cols / 32, row_bytes = w->cols / 2;
    const uint8_t *q = w->data;
    // The next 16 rows, one contiguous run of 16 * row_bytes, fetched a group's share (256 bytes) per group: the
    // 16 interleaved row streams here leave the hardware prefetchers behind when the weights come from memory.
    const uint8_t *next = r0 + 2 * PK_ROWS <= w->rows ? q + (r0 + PK_ROWS) * row_bytes : NULL;
    for (size_t g = 0; g < ng; g++) {
        if (next)
            for (int l = 0; l < 4; l++) _mm_prefetch((const char *)next + g * 256 + l * 64, _MM_HINT_T0);
        for (size_t h = 0; h < PK_ROWS; h += 8) {
            __m256i v[8];
            for (size_t i = 0; i < 8; i++) {
                const size_t r = r0 + h + i;
                v[i] = r < r1 ? q4_group(q + r * row_bytes, g) : _mm256_setzero_si256();
                scales[g * PK_ROWS + h + i] = r < r1 ? _cvtsh_ss(w->scales[r * ng + g]) : 0.0f;
            }
            fb__transpose8_epi32(v);  // v[s] = weights 4s..4s+3 of the 8 rows
            for (int s = 0; s < 8; s++) _mm256_storeu_si256((__m256i *)(panel + g * PK_GROUP_BYTES + s * 64 + h * 4), v[s]);
        }
    }
}

// y[t0 + k][rows of the panel] for k < NT: RB blocks of 8 rows (offset `h` rows into the panel), nr rows valid.
A2I void i8_panel_tile(const int RB, const int NT, size_t ng, const uint8_t *panel, const float *scales, size_t h,
                       const fb__qact *a, size_t t0, float *y, size_t ldy, size_t nr) {
    // t0 starts a tile of the interleaved activations (tiles are PK_TOKENS = FB__XI_TOKENS tokens from token 0).
    const int8_t *xi = a->xi + (t0 / FB__XI_TOKENS) * ng * 256;
    const float *dx[6], *ex[6];
    for (int k = 0; k < NT; k++) {
        dx[k] = a->dx + (t0 + k) * ng;
        ex[k] = a->ex + (t0 + k) * ng;
    }
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][6];
    for (int b = 0; b < RB; b++)
        for (int k = 0; k < NT; k++) acc[b][k] = _mm256_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const uint8_t *pg = panel + g * PK_GROUP_BYTES + h * 4;
        __m256i s16[2][6];
        for (int s = 0; s < 8; s++) {
            __m256i wv[2];
            for (int b = 0; b < RB; b++) wv[b] = _mm256_loadu_si256((const __m256i *)(pg + s * 64 + b * 32));
            for (int k = 0; k < NT; k++) {
                int32_t x4;
                memcpy(&x4, xi + g * 256 + s * 32 + k * 4, 4);
                const __m256i xv = _mm256_set1_epi32(x4);
                for (int b = 0; b < RB; b++) {
                    const __m256i p = _mm256_maddubs_epi16(wv[b], xv);
                    s16[b][k] = s == 0 ? p : _mm256_add_epi16(s16[b][k], p);
                }
            }
        }
        for (int k = 0; k < NT; k++) {
            const __m256 d = _mm256_broadcast_ss(dx[k] + g), e = _mm256_broadcast_ss(ex[k] + g);
            for (int b = 0; b < RB; b++) {
                const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(s16[b][k], ones));
                const __m256 sc = _mm256_loadu_ps(scales + g * PK_ROWS + h + b * 8);
                acc[b][k] = _mm256_fmadd_ps(_mm256_fmadd_ps(dot, d, e), sc, acc[b][k]);
            }
        }
    }
    for (int k = 0; k < NT; k++) {
        float *yt = y + (t0 + k) * ldy;
        for (int b = 0; b < RB; b++) {
            const size_t base = (size_t)b * 8;
            if (base + 8 <= nr) {
                _mm256_storeu_ps(yt + base, acc[b][k]);
            } else if (base < nr) {
                float tmp[8];
                _mm256_storeu_ps(tmp, acc[b][k]);
                for (size_t i = base; i < nr; i++) yt[i] = tmp[i - base];
            }
        }
    }
}

// Micro-tile: PK_RB blocks of 8 rows x PK_TOKENS tokens = 12 i16 accumulators + 2 weight registers + 1 broadcast
// of the 16 ymm registers (the 12 float accumulators, touched once per group, live on the stack). Of 2x3, 2x4, 2x5,
// 2x6, 1x4, 1x5, 1x6, this was fastest on Zen 3.
#define PK_TOKENS 6
#define PK_RB 2
_Static_assert(PK_TOKENS == FB__XI_TOKENS && FB__PK_STEP % PK_TOKENS == 0,
               "micro-tiles must start on the interleaved activation tiles");

#define PK_TILE(NT)                                                                                              \
    for (size_t h = 0; h < PK_ROWS; h += 8 * PK_RB)                                                              \
        if (h < nr) i8_panel_tile(PK_RB, NT, ng, panel, scales, h, a, t, y + h, ldy, nr - h < 8 * PK_RB ? nr - h : 8 * PK_RB)

A2 static void i8_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    size_t t = t0;
    for (; t + PK_TOKENS <= t1; t += PK_TOKENS) PK_TILE(PK_TOKENS);
    switch (t1 - t) {
    case 5: PK_TILE(5); break;
    case 4: PK_TILE(4); break;
    case 3: PK_TILE(3); break;
    case 2: PK_TILE(2); break;
    case 1: PK_TILE(1); break;
    default: break;
    }
}

void fb__gemm_i8_avx2(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1,
                      void *pack) {
    if (w->type == FB_Q4)
        fb__i8_q4_packed(w, a, y, ldy, r0, r1, pack, pack_q4_panel, i8_panel_tokens);
    else if (w->type == FB_Q8)
        i8_q8(w, a, y, ldy, r0, r1);
}

#else
typedef int fb_batched_x86_unused;
#endif
