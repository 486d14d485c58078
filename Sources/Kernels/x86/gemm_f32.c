// AVX2+FMA GEMM for the batched products: y[t*ldy + r] = sum_k W[r][k] * x[t*ldx + k] (+ the old y when
// accumulating), for many tokens t. The classic blocked scheme (Goto / BLIS), with the weights converted to f32
// while they are packed, so q4/q8/f16 weights are read once per product and never stored as f32 in memory:
//
//   for each block of NC rows (the rows of one thread's share, NC at a time):
//     for each block of KC columns:
//       pack W[rows][cols] into panels of 16 rows, k-major ([k][16] f32; dequantized 8 x 8 at a time and
//       transposed in registers), ~NC*KC*4 bytes = 128 KiB: stays in L2;
//       for each tile of 6 tokens (their KC activations, 6 KiB, stay in L1):
//         for each panel: the 6 x 16 micro-kernel over KC: per k, 2 loads of the panel, 6 broadcasts of the
//         activations, 12 FMAs into 12 accumulators; then y[6][16] is stored (or added to, after the first
//         column block).
//
// Every output is a float sum of products in k order per KC block (the same products as the scalar reference,
// in another order), so results match fb_matmul's to rounding.
#include "../batched_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <string.h>

#include "simd.h"

#define A2 FB_TARGET("avx2,fma,f16c")
#define A2I static inline __attribute__((always_inline)) FB_TARGET("avx2,fma,f16c")

#define NR 16  // rows per panel
#define MR 6   // tokens per micro-tile

// ---- packing ---------------------------------------------------------------------------------------------------

// Weights W[r][c..c+8) of one row as 8 floats (c a multiple of 8, c + 8 <= cols; f16/f32 need no alignment).
A2I __m256 w8(const fb_source *s, size_t r, size_t c) {
    switch (s->type) {
    case FB_F32: return _mm256_loadu_ps(s->f32 + r * s->stride + c);
    case FB_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s->f16 + r * s->stride + c)));
    case FB_Q8: {
        const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(s->q8 + r * s->cols + c))));
        return _mm256_mul_ps(v, _mm256_set1_ps(_cvtsh_ss(s->scales[r * (s->cols / 32) + c / 32])));
    }
    default: {  // q4, q4nl: group g = c/32; bytes 0..15 hold weights 0..15 (low nibbles) and 16..31 (high)
        const uint8_t *b = s->q4 + r * (s->cols / 2) + (c / 32) * 16 + (c % 16);
        __m128i v = _mm_loadl_epi64((const __m128i *)b);
        if (c % 32 >= 16) v = _mm_srli_epi16(v, 4);
        v = _mm_and_si128(v, _mm_set1_epi8(15));
        const float sf = _cvtsh_ss(s->scales[r * (s->cols / 32) + c / 32]);
        if (s->type == FB_Q4NL) {  // level * s, as fb_matrix_row computes it
            const __m128i l = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)fb_q4nl_levels), v);
            return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(l)), _mm256_set1_ps(sf));
        }
        // fma(nib, s, -8s) = s * (nib - 8) rounded once, as fb_matrix_row computes it.
        return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)), _mm256_set1_ps(sf), _mm256_set1_ps(-8.0f * sf));
    }
    }
}

A2I float w1(const fb_source *s, size_t r, size_t c) {  // f32/f16 only (column tails)
    if (s->type == FB_F32) return s->f32[r * s->stride + c];
    return _cvtsh_ss(s->f16[r * s->stride + c]);
}

// Packs rows [r0, r1) (at most NR) x columns [c0, c1) into one panel: p[(c - c0) * NR + (r - r0)]; missing rows 0.
A2I void pack_panel(const int type, const fb_source *s, size_t r0, size_t r1, size_t c0, size_t c1, float *p) {
    fb_source src = *s;
    src.type = type;  // constant for the compiler
    for (size_t h = 0; h < NR; h += 8) {
        const size_t rb = r0 + h;
        const size_t rows = rb >= r1 ? 0 : (r1 - rb < 8 ? r1 - rb : 8);
        size_t c = c0;
        if (src.transposed) {
            // Source element (r, c) at f32[c * stride + r]: a column is a contiguous run of rows.
            for (; c < c1; c++) {
                float *o = p + (c - c0) * NR + h;
                if (rows == 8) {
                    _mm256_storeu_ps(o, _mm256_loadu_ps(src.f32 + c * src.stride + rb));
                } else {
                    for (size_t i = 0; i < 8; i++) o[i] = i < rows ? src.f32[c * src.stride + rb + i] : 0.0f;
                }
            }
            continue;
        }
        for (; c + 8 <= c1; c += 8) {
            __m256 v[8];
            for (size_t i = 0; i < 8; i++) v[i] = i < rows ? w8(&src, rb + i, c) : _mm256_setzero_ps();
            fb__transpose8_ps(v);
            for (int j = 0; j < 8; j++) _mm256_storeu_ps(p + (c - c0 + (size_t)j) * NR + h, v[j]);
        }
        for (; c < c1; c++)  // f32/f16 column tail
            for (size_t i = 0; i < 8; i++) p[(c - c0) * NR + h + i] = i < rows ? w1(&src, rb + i, c) : 0.0f;
    }
}

A2 static void pack_f32(const fb_source *s, size_t r0, size_t r1, size_t c0, size_t c1, float *p) {
    pack_panel(FB_F32, s, r0, r1, c0, c1, p);
}
A2 static void pack_f16(const fb_source *s, size_t r0, size_t r1, size_t c0, size_t c1, float *p) {
    pack_panel(FB_F16, s, r0, r1, c0, c1, p);
}
A2 static void pack_q8(const fb_source *s, size_t r0, size_t r1, size_t c0, size_t c1, float *p) {
    pack_panel(FB_Q8, s, r0, r1, c0, c1, p);
}
A2 static void pack_q4(const fb_source *s, size_t r0, size_t r1, size_t c0, size_t c1, float *p) {
    pack_panel(FB_Q4, s, r0, r1, c0, c1, p);
}
A2 static void pack_q4nl(const fb_source *s, size_t r0, size_t r1, size_t c0, size_t c1, float *p) {
    pack_panel(FB_Q4NL, s, r0, r1, c0, c1, p);
}

// ---- micro-kernel ----------------------------------------------------------------------------------------------

// y[t][0..nr) = c[t] (or += when accumulating) for t < M; only the nr valid rows of a partial panel are written.
A2I void store_tile(const int M, __m256 c[MR][2], float *y, size_t ldy, size_t nr, int accumulate) {
    for (int t = 0; t < M; t++) {
        float *yt = y + (size_t)t * ldy;
        if (nr == NR) {
            if (accumulate) {
                c[t][0] = _mm256_add_ps(c[t][0], _mm256_loadu_ps(yt));
                c[t][1] = _mm256_add_ps(c[t][1], _mm256_loadu_ps(yt + 8));
            }
            _mm256_storeu_ps(yt, c[t][0]);
            _mm256_storeu_ps(yt + 8, c[t][1]);
        } else {
            float tmp[NR];
            _mm256_storeu_ps(tmp, c[t][0]);
            _mm256_storeu_ps(tmp + 8, c[t][1]);
            for (size_t i = 0; i < nr; i++) yt[i] = accumulate ? yt[i] + tmp[i] : tmp[i];
        }
    }
}

// y[t][0..nr) (+)= sum_k p[k][0..nr) * x[t][k] for t < M, k < kc.
A2I void micro(const int M, size_t kc, const float *p, const float *x, size_t ldx, float *y, size_t ldy, size_t nr,
               int accumulate) {
    __m256 c[MR][2];
    for (int t = 0; t < M; t++) c[t][0] = c[t][1] = _mm256_setzero_ps();
    const float *xt[MR];
    for (int t = 0; t < M; t++) xt[t] = x + (size_t)t * ldx;
    for (size_t k = 0; k < kc; k++) {
        const __m256 w0 = _mm256_loadu_ps(p + k * NR), w1v = _mm256_loadu_ps(p + k * NR + 8);
        for (int t = 0; t < M; t++) {
            const __m256 b = _mm256_broadcast_ss(xt[t] + k);
            c[t][0] = _mm256_fmadd_ps(w0, b, c[t][0]);
            c[t][1] = _mm256_fmadd_ps(w1v, b, c[t][1]);
        }
    }
    store_tile(M, c, y, ldy, nr, accumulate);
}

// The full 6 x 16 tile, written out: six row pointers indexed by k (no address arithmetic between the FMAs), k
// unrolled by 2; 12 accumulators + 2 panel registers + 1 broadcast = 15 of the 16 ymm registers.
A2I void micro6(size_t kc, const float *p, const float *x, size_t ldx, float *y, size_t ldy, size_t nr, int accumulate) {
    const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx, *x4 = x + 4 * ldx, *x5 = x + 5 * ldx;
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define STEP(k)                                                                        \
    do {                                                                               \
        const __m256 w0 = _mm256_loadu_ps(p + (k) * NR), w1 = _mm256_loadu_ps(p + (k) * NR + 8); \
        __m256 b = _mm256_broadcast_ss(x0 + (k));                                      \
        c00 = _mm256_fmadd_ps(w0, b, c00);                                             \
        c01 = _mm256_fmadd_ps(w1, b, c01);                                             \
        b = _mm256_broadcast_ss(x1 + (k));                                             \
        c10 = _mm256_fmadd_ps(w0, b, c10);                                             \
        c11 = _mm256_fmadd_ps(w1, b, c11);                                             \
        b = _mm256_broadcast_ss(x2 + (k));                                             \
        c20 = _mm256_fmadd_ps(w0, b, c20);                                             \
        c21 = _mm256_fmadd_ps(w1, b, c21);                                             \
        b = _mm256_broadcast_ss(x3 + (k));                                             \
        c30 = _mm256_fmadd_ps(w0, b, c30);                                             \
        c31 = _mm256_fmadd_ps(w1, b, c31);                                             \
        b = _mm256_broadcast_ss(x4 + (k));                                             \
        c40 = _mm256_fmadd_ps(w0, b, c40);                                             \
        c41 = _mm256_fmadd_ps(w1, b, c41);                                             \
        b = _mm256_broadcast_ss(x5 + (k));                                             \
        c50 = _mm256_fmadd_ps(w0, b, c50);                                             \
        c51 = _mm256_fmadd_ps(w1, b, c51);                                             \
    } while (0)
    size_t k = 0;
    for (; k + 2 <= kc; k += 2) {
        STEP(k);
        STEP(k + 1);
    }
    if (k < kc) STEP(k);
#undef STEP
    __m256 c[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    store_tile(MR, c, y, ldy, nr, accumulate);
}

A2 static void micro_tile(size_t m, size_t kc, const float *p, const float *x, size_t ldx, float *y, size_t ldy,
                          size_t nr, int accumulate) {
    switch (m) {
    case 6: micro6(kc, p, x, ldx, y, ldy, nr, accumulate); break;
    case 5: micro(5, kc, p, x, ldx, y, ldy, nr, accumulate); break;
    case 4: micro(4, kc, p, x, ldx, y, ldy, nr, accumulate); break;
    case 3: micro(3, kc, p, x, ldx, y, ldy, nr, accumulate); break;
    case 2: micro(2, kc, p, x, ldx, y, ldy, nr, accumulate); break;
    default: micro(1, kc, p, x, ldx, y, ldy, nr, accumulate); break;
    }
}

// ---- driver ----------------------------------------------------------------------------------------------------

size_t fb__gemm_pack_floats(size_t nc, size_t kc) { return ((nc + NR - 1) / NR) * NR * kc; }

// Rows [r0, r1) of the source (at most nc of them) for all n tokens; `pack` holds fb__gemm_pack_floats(nc, kc).
A2 void fb__gemm_block_avx2(const fb_source *s, const float *x, size_t ldx, size_t n, float *y, size_t ldy,
                            size_t r0, size_t r1, size_t kc_max, float *pack, int accumulate) {
    const size_t cols = s->cols;
    const size_t panels = (r1 - r0 + NR - 1) / NR;
    for (size_t pc = 0; pc < cols; pc += kc_max) {
        const size_t pce = cols - pc < kc_max ? cols : pc + kc_max, kc = pce - pc;
        for (size_t j = 0; j < panels; j++) {
            const size_t rb = r0 + j * NR, re = r1 - rb < NR ? r1 : rb + NR;
            float *p = pack + j * NR * kc;
            switch (s->type) {
            case FB_F32: pack_f32(s, rb, re, pc, pce, p); break;
            case FB_F16: pack_f16(s, rb, re, pc, pce, p); break;
            case FB_Q8: pack_q8(s, rb, re, pc, pce, p); break;
            case FB_Q4NL: pack_q4nl(s, rb, re, pc, pce, p); break;
            default: pack_q4(s, rb, re, pc, pce, p); break;
            }
        }
        for (size_t t = 0; t < n; t += MR) {
            const size_t m = n - t < MR ? n - t : MR;
            for (size_t j = 0; j < panels; j++) {
                const size_t rb = r0 + j * NR, nr = r1 - rb < NR ? r1 - rb : NR;
                micro_tile(m, kc, pack + j * NR * kc, x + t * ldx + pc, ldx, y + t * ldy + rb, ldy, nr,
                           accumulate || pc > 0);
            }
        }
    }
}

#else
typedef int fb_gemm_x86_unused;
#endif
