// Batched matrix products (prefill, the vision tower) and the attention products, split over a thread pool.
//
// fb_matmul (Kernels.h) is built for one token at a time: it streams the weights once per few tokens. With many
// tokens the product is a real GEMM and goes one of these ways ("routes"):
//   "gemm":  (the default with AVX2+FMA for f32/f16) a blocked f32 GEMM (x86/gemm_f32.c): the weights are converted
//            to f32 as they are packed into cache-sized panels, and a 6-token x 16-row register tile is FMA'd over
//            them. Float throughout: results differ from fb_matmul's only by summation order.
//   "int8":  (the default for q4 and q8 on every SIMD path: AVX2 and up, NEON) the activations are quantized once
//            per product to int8 per group of 32 (one f32 scale per group, round to nearest, as the decode kernels
//            do), and the integer products are summed with VPMADDUBSW, VPDPBUSD (VNNI), SDOT or SMLAL. The weights
//            are packed 16 rows at a time so that one register holds 8 rows (16 with AVX-512, 4 on AArch64) and the
//            float work (scales) is done once per
//            group for them (x86/gemm_int8.c, arm/gemm_int8.c). Adds the activation rounding to the weight error:
//            relative RMS error of a product ~5e-3 with Gaussian activations (q4 weights alone: 8e-2). On Zen 3
//            (AVX2, no VNNI) q4 runs at 2-2.5x the "gemm" route and q8 (sign trick) at ~1.45x.
//   "matmul": fb_matmul, rows split across the pool (fewer than fb_batched_min_tokens() tokens; f32/f16 without
//            AVX2; q4/q8 on the scalar path; or FB_BATCHED=off).
// FB_BATCHED=gemm|int8|off (or fb_batched_select) picks a route for every product.
#ifndef FIREBOLT_BATCHED_H
#define FIREBOLT_BATCHED_H

#include <stddef.h>

#include "Kernels.h"
#include "Pool.h"

#ifdef __cplusplus
extern "C" {
#endif

// Scratch for batched products (per-thread packed weights, quantized activations); grows as needed.
// One product at a time per workspace.
typedef struct fb_workspace fb_workspace;
fb_workspace *fb_workspace_create(void);
void fb_workspace_destroy(fb_workspace *ws);

// y[t*ldy + r] = sum_c W[r][c] * x[t*ldx + c] for t in [0, n), every row r, the rows split over `pool`
// (NULL: the calling thread alone; blocks of rows are handed out to the threads as they come for them). Small
// products (n below the batched threshold) take fb_matmul; the others one of the routes above.
void fb_matmul_pool(fb_pool *pool, fb_workspace *ws, const fb_matrix *w, const float *x, size_t ldx, size_t n,
                    float *y, size_t ldy);

// The route fb_matmul_pool uses for `w` with n tokens: "matmul" (fb_matmul), "gemm" or "int8".
const char *fb_batched_route(const fb_matrix *w, size_t n);
// Force a route for all types: "auto" (the default: int8 for q4/q8 where a packed kernel exists, gemm for the
// others), "gemm", "int8" (q4/q8, the scalar reference where no packed kernel exists; gemm for the others) or "off";
// returns 0, or -1 for an unknown name. For tests and measurements.
int fb_batched_select(const char *name);
// 0 if `name` is one of those route names, else -1 (the tools check FB_BATCHED with it and refuse a bad one).
int fb_batched_check(const char *name);
// Fewest tokens for which a batched route is used.
size_t fb_batched_min_tokens(void);

// C[i*ldc + j] = alpha * sum_k A[i*lda + k] * B(k, j) + beta * C[i*ldc + j] for i < m, j < n, where B(k, j) is
// B[j*ldb + k] when trans_b, else B[k*ldb + j] (row-major, like cblas_sgemm); single-threaded, for use inside a
// pool's chunks (attention: scores = Q Kᵀ, context = P V per head). Fast path for beta 0 or 1.
void fb_sgemm(int trans_b, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b,
              size_t ldb, float beta, float *c, size_t ldc);

#ifdef __cplusplus
}
#endif
#endif
