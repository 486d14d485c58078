// AVX2 parts of the batched products (batched.c): activation quantization and the packed int8 GEMMs for q4 and
// q8 weights (layout and driver: batched_internal.h, batched.c). Per-function target attributes, chosen at run time.
#include "batched_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <string.h>

#include "simd_x86.h"

#define A2 FB_TARGET("avx2,fma,f16c")
#define A2I static inline __attribute__((always_inline)) FB_TARGET("avx2,fma,f16c")

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

// ---- packed int8 GEMMs -----------------------------------------------------------------------------------------
//
// 8 rows per register (rather than 8 partial sums of one row), so the float work is done once per group for 8 rows
// at a time and the integer work dominates:
//
//   pack (once per block of rows, reused by every token): per group g and step s (0..7), 64 bytes holding
//   weights 4s..4s+3 of group g for 16 rows, row-major within each 4-byte lane: panel[g][s][row 0..15][4]; q4 as
//   unsigned nibbles (0..15), q8 as the stored signed bytes; the f16 scales of the 16 rows as f32: scales[g][16].
//   q4 micro-kernel, per group: for each step, maddubs(weights of 8 rows, 4 activation bytes broadcast) gives per
//   row two i16 sums of two products, added up in i16 over the 8 steps (|sum| <= 8 * 2 * 15 * 127 = 30480,
//   so no i16 overflow); then one madd with 1s -> the group's integer dot product for 8 rows (i32), one convert,
//   and acc += s_row * (d * dot + ex) (two FMAs; ex = -8 * d * sum(q) puts the nibbles' +8 offset back).
//   Per group and 8 rows x 1 token: 8 maddubs + 8 adds + 1 madd + 1 convert + 2 FMAs for 256 multiply-adds.
//   q8 micro-kernel: VPMADDUBSW needs an unsigned operand, so the sign trick: maddubs(|w|, sign(x, w)) = the w * x
//   pairs (|pair| <= 2 * 128 * 127 = 32512 < 32767: exact, a stored -128 included, as |x| <= 127); two steps could
//   overflow i16, so each step goes to i32 at once (madd with 1s) and the group sums in i32; then one convert and
//   acc += (s_row * d) * dot. Per group and 8 rows x 1 token: 8 x (sign + maddubs + madd + add) + 1 convert + 2
//   float ops: about twice the q4 kernel's work per multiply-add, still well above the f32 GEMM.

#define PK_ROWS FB__PK_ROWS
#define PK_GROUP_BYTES FB__PK_GROUP_BYTES

// The 32 weights of group g of a row: q4 as bytes 0..15 (unsigned nibbles, in weight order), q8 as stored.
A2I __m256i group_weights(const int Q8, const uint8_t *row, size_t g) {
    if (Q8) return _mm256_loadu_si256((const __m256i *)(row + g * 32));
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(row + g * 16)));
    const __m256i sh = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    return _mm256_and_si256(sh, _mm256_set1_epi8(15));
}

// Packs rows [r0, r1) (at most PK_ROWS; missing rows get zero weights and scales), all groups.
A2I void pack_panel(const int Q8, const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    const size_t ng = w->cols / 32, row_bytes = Q8 ? w->cols : w->cols / 2, group_bytes = Q8 ? 32 : 16;
    const uint8_t *q = w->data;
    // The next 16 rows, one contiguous run of 16 * row_bytes, fetched a group's share per group: the 16
    // interleaved row streams here leave the hardware prefetchers behind when the weights come from memory.
    const uint8_t *next = r0 + 2 * PK_ROWS <= w->rows ? q + (r0 + PK_ROWS) * row_bytes : NULL;
    for (size_t g = 0; g < ng; g++) {
        if (next)
            for (size_t l = 0; l < PK_ROWS * group_bytes; l += 64)
                _mm_prefetch((const char *)next + g * PK_ROWS * group_bytes + l, _MM_HINT_T0);
        for (size_t h = 0; h < PK_ROWS; h += 8) {
            __m256i v[8];
            for (size_t i = 0; i < 8; i++) {
                const size_t r = r0 + h + i;
                v[i] = r < r1 ? group_weights(Q8, q + r * row_bytes, g) : _mm256_setzero_si256();
                scales[g * PK_ROWS + h + i] = r < r1 ? _cvtsh_ss(w->scales[r * ng + g]) : 0.0f;
            }
            fb__transpose8_epi32(v);  // v[s] = weights 4s..4s+3 of the 8 rows
            for (int s = 0; s < 8; s++) _mm256_storeu_si256((__m256i *)(panel + g * PK_GROUP_BYTES + s * 64 + h * 4), v[s]);
        }
    }
}

A2 static void pack_q4_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(0, w, r0, r1, panel, scales);
}

A2 static void pack_q8_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(1, w, r0, r1, panel, scales);
}

// y[t0 + k][rows of the panel] for k < NT: RB blocks of 8 rows (offset `h` rows into the panel), nr rows valid.
// t0 starts a tile of the interleaved activations (FB__XI_TOKENS tokens from token 0).
A2I void panel_tile(const int Q8, const int RB, const int NT, size_t ng, const uint8_t *panel, const float *scales,
                    size_t h, const fb__qact *a, size_t t0, float *y, size_t ldy, size_t nr) {
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
        __m256i sum[2][6];  // q4: i16 pairs over the group; q8: i32
        for (int s = 0; s < 8; s++) {
            __m256i wv[2], aw[2];
            for (int b = 0; b < RB; b++) {
                wv[b] = _mm256_loadu_si256((const __m256i *)(pg + s * 64 + b * 32));
                if (Q8) aw[b] = _mm256_abs_epi8(wv[b]);
            }
            for (int k = 0; k < NT; k++) {
                int32_t x4;
                memcpy(&x4, xi + g * 256 + s * 32 + k * 4, 4);
                const __m256i xv = _mm256_set1_epi32(x4);
                for (int b = 0; b < RB; b++) {
                    if (Q8) {
                        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[b], _mm256_sign_epi8(xv, wv[b])), ones);
                        sum[b][k] = s == 0 ? p : _mm256_add_epi32(sum[b][k], p);
                    } else {
                        const __m256i p = _mm256_maddubs_epi16(wv[b], xv);
                        sum[b][k] = s == 0 ? p : _mm256_add_epi16(sum[b][k], p);
                    }
                }
            }
        }
        for (int k = 0; k < NT; k++) {
            const __m256 d = _mm256_broadcast_ss(dx[k] + g);
            for (int b = 0; b < RB; b++) {
                const __m256 sc = _mm256_loadu_ps(scales + g * PK_ROWS + h + b * 8);
                if (Q8) {
                    acc[b][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[b][k]), _mm256_mul_ps(sc, d), acc[b][k]);
                } else {
                    const __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum[b][k], ones));
                    acc[b][k] = _mm256_fmadd_ps(_mm256_fmadd_ps(dot, d, _mm256_broadcast_ss(ex[k] + g)), sc, acc[b][k]);
                }
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

// Micro-tiles, of the 16 ymm registers. q4: 2 blocks of 8 rows x 6 tokens = 12 i16 accumulators + 2 weight
// registers + 1 broadcast (the 12 float accumulators, touched once per group, live on the stack); of 2x3, 2x4, 2x5,
// 2x6, 1x4, 1x5, 1x6, this was fastest on Zen 3. q8: 1 block x 6 tokens = 6 i32 accumulators + the weights, their
// absolute values, a broadcast, its signed copy and the 1s (2 blocks x 3 tokens measured ~10% slower).
#define PK_TOKENS FB__XI_TOKENS
#define Q4_RB 2
#define Q8_RB 1
_Static_assert(PK_TOKENS == 6 && FB__PK_STEP % PK_TOKENS == 0, "micro-tiles must start on the interleaved activation tiles");

// Rows h .. h + 8 * RB of the panel (those of them below nr), NT tokens from t (which starts a tile).
#define PK_TILE(Q8, RB, NT)                                                                                         \
    for (size_t h = 0; h < PK_ROWS; h += 8 * (RB))                                                              \
        if (h < nr) panel_tile(Q8, RB, NT, ng, panel, scales, h, a, t, y + h, ldy, nr - h < 8 * (RB) ? nr - h : 8 * (RB))

A2I void panel_tokens(const int Q8, const int RB, size_t ng, const uint8_t *panel, const float *scales,
                      const fb__qact *a, size_t t0, size_t t1, float *y, size_t ldy, size_t nr) {
    size_t t = t0;
    for (; t + PK_TOKENS <= t1; t += PK_TOKENS) PK_TILE(Q8, RB, PK_TOKENS);
    switch (t1 - t) {
    case 5: PK_TILE(Q8, RB, 5); break;
    case 4: PK_TILE(Q8, RB, 4); break;
    case 3: PK_TILE(Q8, RB, 3); break;
    case 2: PK_TILE(Q8, RB, 2); break;
    case 1: PK_TILE(Q8, RB, 1); break;
    default: break;
    }
}

A2 static void q4_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens(0, Q4_RB, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

A2 static void q8_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens(1, Q8_RB, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

const fb__pk_kernel fb__pk_avx2_q4 = {pack_q4_panel, q4_panel_tokens};
const fb__pk_kernel fb__pk_avx2_q8 = {pack_q8_panel, q8_panel_tokens};

#else
typedef int fb_batched_x86_unused;
#endif
