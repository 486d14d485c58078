// Private to the batched products (batched.c and its SIMD files).
#ifndef FIREBOLT_BATCHED_INTERNAL_H
#define FIREBOLT_BATCHED_INTERNAL_H

#include "Kernels.h"

// Activations for the int8 route, n tokens of `cols` values: xq [n][cols] int8 = round(x / d) with
// d = max|x| / 127 per group of 32; dx [n][ng] the d's; ex [n][ng] = -8 * d * sum(q) over the group (the q4
// weights are used as unsigned nibbles 0..15, and this term takes the -8 back out).
// xi (may be NULL; filled by the AVX2 quantizer for the packed kernels): the same int8 values interleaved per
// tile of FB__XI_TOKENS tokens, so that a micro-tile's broadcasts read one 32-byte run per step instead of one
// cache line per token: for token t = FB__XI_TOKENS * tile + k, group g, step s (weights 4s..4s+3 of the group),
// the 4 bytes are at xi[tile * ng * 256 + g * 256 + s * 32 + k * 4].
#define FB__XI_TOKENS 6
typedef struct {
    int8_t *xq, *xi;
    float *dx, *ex;
    size_t n, cols, ng;
} fb__qact;

// The right-hand matrix of a batched product, as the GEMM packs it: element (r, c) for r < rows, c < cols is
//   type f32/f16, !transposed: data[r * stride + c];  transposed (f32 only): data[c * stride + r];
//   q8/q4/q4nl: as in fb_matrix (stride = cols, scales per group of 32).
typedef struct {
    fb_dtype type;
    size_t rows, cols, stride;
    int transposed;
    union {
        const float *f32;
        const uint16_t *f16;
        const int8_t *q8;
        const uint8_t *q4;
        const void *data;
    };
    const uint16_t *scales;
} fb_source;

// Scalar references (any CPU).
void fb__quantize_act_scalar(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a);
void fb__gemm_i8_scalar(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1);

// The packed int8 GEMMs for q4 and q8 (x86/gemm_int8.c for AVX2 and VNNI, arm/gemm_int8.c for the dot product): rows are packed
// FB__PK_ROWS at a time; per group g and step s (0..7), 64 bytes hold weights 4s..4s+3 of the group for the 16 rows,
// one byte each (q4: the nibbles 0..15; q8: the stored int8, or for VNNI that + 128 as unsigned; q4nl: on x86 its
// level + 64 (0..127), on ARM its signed level), row-major within each 4-byte lane: panel[g][s][row][4];
// after all panels of a block, the rows' f16 scales as f32: scales[panel][g][row]. fb__i8_packed (batched.c) packs
// rows [r0, r1) into `pack` (fb__i8_pack_bytes(r1 - r0, cols) bytes, 64-byte aligned) with the kernel's
// `pack_panel`, then walks the tokens FB__PK_STEP at a time, handing each panel to its `tokens`, which writes
// y[t][row] for t in [t0, t1) and the panel's nr valid rows.
#define FB__PK_ROWS 16
#define FB__PK_GROUP_BYTES (32 * FB__PK_ROWS)
#define FB__PK_STEP 48  // tokens that pass over a panel while it is in L1/L2
typedef void (*fb__pk_pack_fn)(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales);
typedef void (*fb__pk_tokens_fn)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                                 size_t t1, float *y, size_t ldy, size_t nr);
size_t fb__i8_pack_bytes(size_t rows, size_t cols);
// An instruction set's pair of packed-kernel functions for one weight type. `panels` is how many adjacent panels one
// `tokens` call covers: 1, or 2 (the second one's groups ng * FB__PK_GROUP_BYTES bytes on and its scales ng *
// FB__PK_ROWS floats on; nr up to 2 * FB__PK_ROWS, and a call with nr <= FB__PK_ROWS reads only the first panel).
typedef struct {
    fb__pk_pack_fn pack_panel;
    fb__pk_tokens_fn tokens;
    int panels;
} fb__pk_kernel;
void fb__i8_packed(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1, void *pack,
                   const fb__pk_kernel *kernel);

#if defined(__x86_64__) || defined(_M_X64)
void fb__quantize_act_avx2(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a);
extern const fb__pk_kernel fb__pk_avx2_q4, fb__pk_avx2_q8, fb__pk_avx_vnni_q4, fb__pk_avx_vnni_q8, fb__pk_avx512_q4,
    fb__pk_avx512_q8, fb__pk_avx512_vnni_q4, fb__pk_avx512_vnni_q8, fb__pk_avx2_q4nl, fb__pk_avx_vnni_q4nl,
    fb__pk_avx512_q4nl, fb__pk_avx512_vnni_q4nl;
#endif

#if defined(__x86_64__) || defined(_M_X64)
// GEMM (x86/gemm_f32.c): y[t*ldy + r] (+)= sum_c src(r, c) * x[t*ldx + c] for rows [r0, r1) (at most the nc the pack
// buffer was sized for), all n tokens; columns in blocks of kc. Overwrites y (adds to it when accumulate).
size_t fb__gemm_pack_floats(size_t nc, size_t kc);
void fb__gemm_block_avx2(const fb_source *s, const float *x, size_t ldx, size_t n, float *y, size_t ldy, size_t r0,
                         size_t r1, size_t kc, float *pack, int accumulate);
#endif

#if defined(__aarch64__)
// f32 GEMM (arm/gemm_f32.c): c[i*ldc + j] (+)= sum_p a[i*lda + p] * B(p, j) for i < m, j < n (B as in fb_sgemm), with a
// pack buffer of fb__sgemm_pack_floats() floats.
size_t fb__sgemm_pack_floats(void);
void fb__sgemm_neon(int trans_b, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                    float *c, size_t ldc, int accumulate, float *pack);
// The activations for the int8 route, and the packed kernels with the dot product and without (arm/gemm_int8.c).
void fb__quantize_act_neon(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a);
extern const fb__pk_kernel fb__pk_dotprod_q4, fb__pk_dotprod_q8, fb__pk_neon_q4, fb__pk_neon_q8, fb__pk_dotprod_q4nl,
    fb__pk_neon_q4nl;
#endif


#endif
