// x86-64 fast paths of fb_matmul: AVX2+FMA+F16C and AVX-512 (F/BW/VL).
// Compiled with per-function target attributes (no global -m flags); registry.c picks one at run time.
//
// Strategy (both paths): tiles of RB rows x NT tokens (NT <= 4). Weights are converted to float
// once per tile (q4/q8: the integer q; each group's partial sums are multiplied by the group
// scale, like the scalar reference), then FMA'd against the NT activation rows, so for prefill
// every weight is read once per 4 tokens; rows are also blocked (~256 KiB of weights) so that,
// for long prompts, weights come from memory once and from cache for the other token blocks.
// Activations stay float here. Decode (q4/q8 with n <= 4, and f32/f16 with n == 1) goes to
// x86/matvec_int8.c first: int8 activations and integer dot products for q4/q8 (Kernels.h).
#include "Kernels.h"

#if defined(__x86_64__) || defined(_M_X64)
#include "simd.h"

#define MM_ARGS                                                                                       \
    const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y, size_t ldy, size_t row_begin, \
        size_t row_end
#define MM_PASS w, x, ldx, n, y, ldy, row_begin, row_end

// Rows per cache block: with more than one block of 4 tokens, a block of rows (~256 KiB of weights)
// is run against every token block before moving on, so weights come from memory once.
static size_t row_chunk(int type, size_t cols, size_t n, size_t nrows) {
    if (n <= 4) return nrows;
    const size_t row_bytes = type == FB_F32 ? cols * 4 : type == FB_F16 ? cols * 2 : type == FB_Q8 ? cols : cols / 2;
    size_t c = (256u * 1024u) / (row_bytes ? row_bytes : 1);
    c = c < 16 ? 16 : c & ~(size_t)3;
    return c;
}

// ======================================= AVX2 ===========================================================

#define A2 FB_TARGET("avx2,fma,f16c")
#define A2I static inline __attribute__((always_inline)) FB_TARGET("avx2,fma,f16c")

// 8 consecutive f32/f16 weights of row r starting at column c.
A2I __m256 a2_w8(const int type, const fb_matrix *w, size_t r, size_t c) {
    if (type == FB_F32) return _mm256_loadu_ps((const float *)w->data + r * w->cols + c);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w->data + r * w->cols + c)));
}

// The 32 weights of group g of row r as 4 x 8 floats. For q8/q4: with fold, q*s (rounded once,
// exactly like the float product of fb_matrix_row: for q4, fma(nibble, s, -8s)); without, the
// integer q, and the caller scales the group's partial sums, as the scalar reference does.
A2I void a2_wgroup(const int type, const int fold, const fb_matrix *w, size_t r, size_t g, __m256 wv[4]) {
    const size_t cols = w->cols;
    if (type == FB_F32 || type == FB_F16) {
        for (int j = 0; j < 4; j++) wv[j] = a2_w8(type, w, r, g * FB_GROUP + (size_t)j * 8);
        return;
    }
    const float sf = fold ? _cvtsh_ss(w->scales[r * (cols / FB_GROUP) + g]) : 1.0f;
    const __m256 s = _mm256_set1_ps(sf);
    if (type == FB_Q8) {
        const int8_t *q = (const int8_t *)w->data + r * cols + g * FB_GROUP;
        for (int j = 0; j < 4; j++) {
            wv[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(q + j * 8))));
            if (fold) wv[j] = _mm256_mul_ps(wv[j], s);
        }
        return;
    }
    // q4: low nibbles are weights 0-15 of the group, high nibbles weights 16-31.
    const __m128i b = _mm_loadu_si128((const __m128i *)((const uint8_t *)w->data + r * cols / 2 + g * 16));
    const __m128i m = _mm_set1_epi8(15);
    if (type == FB_Q4NL) {  // the nibbles index the level table (VPSHUFB); level * s as fb_matrix_row computes it
        const __m128i levels = _mm_loadu_si128((const __m128i *)fb_q4nl_levels);
        const __m128i lo = _mm_shuffle_epi8(levels, _mm_and_si128(b, m));
        const __m128i hi = _mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(b, 4), m));
        const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int j = 0; j < 4; j++) {
            wv[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[j]));
            if (fold) wv[j] = _mm256_mul_ps(wv[j], s);
        }
        return;
    }
    if (fold) {
        const __m256 o = _mm256_set1_ps(-8.0f * sf);
        const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int j = 0; j < 4; j++)
            wv[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(part[j])), s, o);
    } else {
        const __m128i eight = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
        const __m128i part[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        for (int j = 0; j < 4; j++) wv[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part[j]));
    }
}

A2I float a2_w1(const int type, const fb_matrix *w, size_t r, size_t c) {  // f32/f16 tail only
    if (type == FB_F32) return ((const float *)w->data)[r * w->cols + c];
    return _cvtsh_ss(((const uint16_t *)w->data)[r * w->cols + c]);
}

A2I void a2_tile(const int type, const int RB, const int NT, const fb_matrix *w, const float *x,
                 size_t ldx, float *y, size_t ldy, size_t r0, size_t t0) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    const int quant = type == FB_Q8 || type == FB_Q4 || type == FB_Q4NL;
    // Several tokens: scale the weights once and share them; one token: scale the group sums.
    const int fold = NT >= 3;
    __m256 acc[4][4];
    const float *xt[4];
    for (int k = 0; k < NT; k++) xt[k] = x + (t0 + k) * ldx;
    for (int i = 0; i < RB; i++)
        for (int k = 0; k < NT; k++) acc[i][k] = _mm256_setzero_ps();
    for (size_t g = 0; g < ng; g++)
        for (int i = 0; i < RB; i++) {
            __m256 wv[4];
            a2_wgroup(type, fold, w, r0 + i, g, wv);
            const float *xg[4];
            for (int k = 0; k < NT; k++) xg[k] = xt[k] + g * FB_GROUP;
            if (quant && !fold) {
                const __m256 s = _mm256_set1_ps(_cvtsh_ss(w->scales[(r0 + i) * ng + g]));
                for (int k = 0; k < NT; k++) {
                    __m256 p = _mm256_mul_ps(wv[0], _mm256_loadu_ps(xg[k]));
                    for (int j = 1; j < 4; j++) p = _mm256_fmadd_ps(wv[j], _mm256_loadu_ps(xg[k] + j * 8), p);
                    acc[i][k] = _mm256_fmadd_ps(p, s, acc[i][k]);
                }
            } else {
                for (int j = 0; j < 4; j++)
                    for (int k = 0; k < NT; k++)
                        acc[i][k] = _mm256_fmadd_ps(wv[j], _mm256_loadu_ps(xg[k] + j * 8), acc[i][k]);
            }
        }
    float tail[4][4] = {{0}};
    if (!quant) {
        size_t c = ng * FB_GROUP;
        for (; c + 8 <= cols; c += 8) {
            __m256 xv[4];
            for (int k = 0; k < NT; k++) xv[k] = _mm256_loadu_ps(xt[k] + c);
            for (int i = 0; i < RB; i++) {
                const __m256 wv = a2_w8(type, w, r0 + i, c);
                for (int k = 0; k < NT; k++) acc[i][k] = _mm256_fmadd_ps(wv, xv[k], acc[i][k]);
            }
        }
        for (; c < cols; c++)
            for (int i = 0; i < RB; i++) {
                const float wv = a2_w1(type, w, r0 + i, c);
                for (int k = 0; k < NT; k++) tail[i][k] += wv * xt[k][c];
            }
    }
    for (int i = 0; i < RB; i++)
        for (int k = 0; k < NT; k++) y[(t0 + k) * ldy + r0 + i] = fb__hsum8_ps(acc[i][k]) + tail[i][k];
}

#define A2_ROWS(TYPE, RB, NT)                                                                       \
    do {                                                                                            \
        size_t r = rc;                                                                              \
        for (; r + (RB) <= rce; r += (RB)) a2_tile(TYPE, RB, NT, w, x, ldx, y, ldy, r, t);           \
        for (; r < rce; r++) a2_tile(TYPE, 1, NT, w, x, ldx, y, ldy, r, t);                          \
    } while (0)

A2I void a2_run(const int type, const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y,
                size_t ldy, size_t row_begin, size_t row_end) {
    const size_t chunk = row_chunk(type, w->cols, n, row_end - row_begin);
    for (size_t rc = row_begin; rc < row_end; rc += chunk) {
        const size_t rce = row_end - rc < chunk ? row_end : rc + chunk;
        size_t t = 0;
        for (; t + 4 <= n; t += 4) A2_ROWS(type, 2, 4);
        switch (n - t) {
        case 3: A2_ROWS(type, 2, 3); break;
        case 2: A2_ROWS(type, 4, 2); break;
        case 1: A2_ROWS(type, 4, 1); break;
        default: break;
        }
    }
}

A2 static void a2_f32(MM_ARGS) { a2_run(FB_F32, MM_PASS); }
A2 static void a2_f16(MM_ARGS) { a2_run(FB_F16, MM_PASS); }
A2 static void a2_q8(MM_ARGS) { a2_run(FB_Q8, MM_PASS); }
A2 static void a2_q4(MM_ARGS) { a2_run(FB_Q4, MM_PASS); }
A2 static void a2_q4nl(MM_ARGS) { a2_run(FB_Q4NL, MM_PASS); }

void fb__matmul_avx2(MM_ARGS);
void fb__matmul_avx2(MM_ARGS) {
    switch (w->type) {
    case FB_F32: a2_f32(MM_PASS); break;
    case FB_F16: a2_f16(MM_PASS); break;
    case FB_Q8: a2_q8(MM_PASS); break;
    case FB_Q4: a2_q4(MM_PASS); break;
    case FB_Q4NL: a2_q4nl(MM_PASS); break;
    }
}

// ======================================= AVX-512 ========================================================

#define A5 FB_TARGET("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
#define A5I static inline __attribute__((always_inline)) FB_TARGET("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

// 16 consecutive f32/f16 weights of row r from column c; lanes outside mask m are zero.
A5I __m512 a5_w16(const int type, const fb_matrix *w, size_t r, size_t c, __mmask16 m) {
    if (type == FB_F32) return _mm512_maskz_loadu_ps(m, (const float *)w->data + r * w->cols + c);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w->data + r * w->cols + c));
}

// The 32 weights of group g of row r as 2 x 16 floats (fold: as in a2_wgroup).
A5I void a5_wgroup(const int type, const int fold, const fb_matrix *w, size_t r, size_t g, __m512 wv[2]) {
    const size_t cols = w->cols;
    if (type == FB_F32 || type == FB_F16) {
        wv[0] = a5_w16(type, w, r, g * FB_GROUP, 0xffff);
        wv[1] = a5_w16(type, w, r, g * FB_GROUP + 16, 0xffff);
        return;
    }
    const float sf = fold ? _cvtsh_ss(w->scales[r * (cols / FB_GROUP) + g]) : 1.0f;
    const __m512 s = _mm512_set1_ps(sf);
    if (type == FB_Q8) {
        const int8_t *q = (const int8_t *)w->data + r * cols + g * FB_GROUP;
        for (int j = 0; j < 2; j++) {
            wv[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(q + j * 16))));
            if (fold) wv[j] = _mm512_mul_ps(wv[j], s);
        }
        return;
    }
    const __m128i b = _mm_loadu_si128((const __m128i *)((const uint8_t *)w->data + r * cols / 2 + g * 16));
    const __m128i m = _mm_set1_epi8(15);
    if (type == FB_Q4NL) {  // as in a2_wgroup
        const __m128i levels = _mm_loadu_si128((const __m128i *)fb_q4nl_levels);
        wv[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(levels, _mm_and_si128(b, m))));
        wv[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_shuffle_epi8(levels, _mm_and_si128(_mm_srli_epi16(b, 4), m))));
        if (fold) {
            wv[0] = _mm512_mul_ps(wv[0], s);
            wv[1] = _mm512_mul_ps(wv[1], s);
        }
        return;
    }
    if (fold) {
        const __m512 o = _mm512_set1_ps(-8.0f * sf);
        const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
        wv[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), s, o);
        wv[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), s, o);
    } else {
        const __m128i eight = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
        wv[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo));
        wv[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi));
    }
}

A5I void a5_tile(const int type, const int RB, const int NT, const fb_matrix *w, const float *x,
                 size_t ldx, float *y, size_t ldy, size_t r0, size_t t0) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    const int quant = type == FB_Q8 || type == FB_Q4 || type == FB_Q4NL;
    const int fold = NT >= 3;  // as in a2_tile
    __m512 acc[4][4];
    const float *xt[4];
    for (int k = 0; k < NT; k++) xt[k] = x + (t0 + k) * ldx;
    for (int i = 0; i < RB; i++)
        for (int k = 0; k < NT; k++) acc[i][k] = _mm512_setzero_ps();
    const __mmask16 all = 0xffff;
    for (size_t g = 0; g < ng; g++)
        for (int i = 0; i < RB; i++) {
            __m512 wv[2];
            a5_wgroup(type, fold, w, r0 + i, g, wv);
            const float *xg[4];
            for (int k = 0; k < NT; k++) xg[k] = xt[k] + g * FB_GROUP;
            if (quant && !fold) {
                const __m512 s = _mm512_set1_ps(_cvtsh_ss(w->scales[(r0 + i) * ng + g]));
                for (int k = 0; k < NT; k++) {
                    const __m512 p = _mm512_fmadd_ps(wv[1], _mm512_loadu_ps(xg[k] + 16),
                                                     _mm512_mul_ps(wv[0], _mm512_loadu_ps(xg[k])));
                    acc[i][k] = _mm512_fmadd_ps(p, s, acc[i][k]);
                }
            } else {
                for (int j = 0; j < 2; j++)
                    for (int k = 0; k < NT; k++)
                        acc[i][k] = _mm512_fmadd_ps(wv[j], _mm512_loadu_ps(xg[k] + j * 16), acc[i][k]);
            }
        }
    if (!quant) {
        for (size_t c = ng * FB_GROUP; c < cols; c += 16) {
            const size_t left = cols - c;
            const __mmask16 m = left >= 16 ? all : (__mmask16)((1u << left) - 1u);
            __m512 xv[4];
            for (int k = 0; k < NT; k++) xv[k] = _mm512_maskz_loadu_ps(m, xt[k] + c);
            for (int i = 0; i < RB; i++) {
                const __m512 wv = a5_w16(type, w, r0 + i, c, m);
                for (int k = 0; k < NT; k++) acc[i][k] = _mm512_fmadd_ps(wv, xv[k], acc[i][k]);
            }
        }
    }
    for (int i = 0; i < RB; i++)
        for (int k = 0; k < NT; k++) y[(t0 + k) * ldy + r0 + i] = _mm512_reduce_add_ps(acc[i][k]);
}

#define A5_ROWS(TYPE, RB, NT)                                                                       \
    do {                                                                                            \
        size_t r = rc;                                                                              \
        for (; r + (RB) <= rce; r += (RB)) a5_tile(TYPE, RB, NT, w, x, ldx, y, ldy, r, t);           \
        for (; r < rce; r++) a5_tile(TYPE, 1, NT, w, x, ldx, y, ldy, r, t);                          \
    } while (0)

A5I void a5_run(const int type, const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y,
                size_t ldy, size_t row_begin, size_t row_end) {
    const size_t chunk = row_chunk(type, w->cols, n, row_end - row_begin);
    for (size_t rc = row_begin; rc < row_end; rc += chunk) {
        const size_t rce = row_end - rc < chunk ? row_end : rc + chunk;
        size_t t = 0;
        for (; t + 4 <= n; t += 4) A5_ROWS(type, 4, 4);
        switch (n - t) {
        case 3: A5_ROWS(type, 4, 3); break;
        case 2: A5_ROWS(type, 4, 2); break;
        case 1: A5_ROWS(type, 4, 1); break;
        default: break;
        }
    }
}

A5 static void a5_f32(MM_ARGS) { a5_run(FB_F32, MM_PASS); }
A5 static void a5_f16(MM_ARGS) { a5_run(FB_F16, MM_PASS); }
A5 static void a5_q8(MM_ARGS) { a5_run(FB_Q8, MM_PASS); }
A5 static void a5_q4(MM_ARGS) { a5_run(FB_Q4, MM_PASS); }
A5 static void a5_q4nl(MM_ARGS) { a5_run(FB_Q4NL, MM_PASS); }

void fb__matmul_avx512(MM_ARGS);
void fb__matmul_avx512(MM_ARGS) {
    switch (w->type) {
    case FB_F32: a5_f32(MM_PASS); break;
    case FB_F16: a5_f16(MM_PASS); break;
    case FB_Q8: a5_q8(MM_PASS); break;
    case FB_Q4: a5_q4(MM_PASS); break;
    case FB_Q4NL: a5_q4nl(MM_PASS); break;
    }
}

#else
typedef int fb_matmul_x86_unused;  // keep the translation unit non-empty on other architectures
#endif
