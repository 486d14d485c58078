// Private to ops.c and its SIMD files.
#ifndef FIREBOLT_OPS_INTERNAL_H
#define FIREBOLT_OPS_INTERNAL_H

#include "Kernels.h"

// The portable versions (ops.c), every kernel set's fallback.
void fb__rmsnorm_portable(const float *x, const float *w, float *y, size_t n, float eps);
void fb__layernorm_portable(const float *x, const float *w, const float *b, float *y, size_t n, float eps);
void fb__silu_mul_portable(const float *a, const float *b, float *y, size_t n);
void fb__gelu_tanh_portable(float *x, size_t n);
void fb__softmax_portable(float *x, size_t n);

#if defined(__x86_64__) || defined(_M_X64)
void fb__gelu_tanh_avx2(float *x, size_t n);
void fb__silu_mul_avx2(const float *a, const float *b, float *y, size_t n);
void fb__softmax_avx2(float *x, size_t n);
void fb__rmsnorm_avx2(const float *x, const float *w, float *y, size_t n, float eps);
void fb__layernorm_avx2(const float *x, const float *w, const float *b, float *y, size_t n, float eps);
// fb_attend for hd a multiple of 8.
void fb__attend_avx2(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld,
                     size_t n, float scale, float *scores, float *out);
void fb__attend_f16_avx2(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values,
                         size_t ld, size_t n, float scale, float *scores, float *out);
#endif

#if defined(__aarch64__)
void fb__gelu_tanh_neon(float *x, size_t n);
void fb__silu_mul_neon(const float *a, const float *b, float *y, size_t n);
void fb__softmax_neon(float *x, size_t n);
// fb_attend / fb_attend_f16 for hd a multiple of 8.
void fb__attend_neon(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld,
                     size_t n, float scale, float *scores, float *out);
void fb__attend_f16_neon(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values,
                         size_t ld, size_t n, float scale, float *scores, float *out);
#endif

#endif
