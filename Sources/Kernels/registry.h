// The kernel registry: for each kernel set, one table of every function that differs between sets, chosen once
// (registry.c; FB_KERNELS is read there, the CPU's features in cpu.c). Private to the kernel source files: each
// public entry point (fb_matmul, fb_matmul_pool, fb_sgemm, the element-wise ops, attention) calls through
// fb__kernels() and never asks which set it is on.
#ifndef FIREBOLT_REGISTRY_H
#define FIREBOLT_REGISTRY_H

#include "batched_internal.h"  // fb__qact, fb__pk_kernel, fb_source
#include "kernels_internal.h"  // FB__MM_ARGS, the CPU features
#include "ops_internal.h"

typedef struct {
    const char *name;        // as FB_KERNELS and fb_kernels_select spell it
    int needs;               // the CPU_* features it runs on

    // Decode: fb_matmul (q4/q8/q4nl with n <= FB__QACT_MAX_N tokens quantize the activations to int8).
    void (*matmul)(FB__MM_ARGS);

    // Batched products (fb_matmul_pool, fb_sgemm).
    void (*quantize_act)(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a);
    int act_interleaved;     // quantize_act also writes the interleaved copy (xi) the packed tiles read
    const fb__pk_kernel *packed_q4, *packed_q8, *packed_q4nl;  // packed int8 tiles; NULL: the scalar int8 reference
    // f32 GEMM over a weight's rows (x86; NULL: none, fb_matmul takes batches of more than four tokens).
    size_t (*gemm_pack_floats)(size_t nc, size_t kc);
    void (*gemm_block)(const fb_source *s, const float *x, size_t ldx, size_t n, float *y, size_t ldy, size_t r0,
                       size_t r1, size_t kc, float *pack, int accumulate);
    // c (+)= A B of its own (AArch64; on x86 fb_sgemm runs gemm_block; with neither, a portable loop).
    size_t (*sgemm_pack_floats)(void);
    void (*sgemm)(int trans_b, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                  float *c, size_t ldc, int accumulate, float *pack);

    // Element-wise ops (never NULL) and attention (NULL: the portable loops in ops.c; the SIMD ones need hd % 8 == 0).
    void (*rmsnorm)(const float *x, const float *w, float *y, size_t n, float eps);
    void (*layernorm)(const float *x, const float *w, const float *b, float *y, size_t n, float eps);
    void (*silu_mul)(const float *a, const float *b, float *y, size_t n);
    void (*gelu_tanh)(float *x, size_t n);
    void (*softmax)(float *x, size_t n);
    void (*attend)(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld,
                   size_t n, float scale, float *scores, float *out);
    void (*attend_f16)(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values,
                       size_t ld, size_t n, float scale, float *scores, float *out);
} fb__kernel_table;

// The table of the set in use: FB_KERNELS if it names a set this CPU runs (else scalar), otherwise the best one.
const fb__kernel_table *fb__kernels(void);

#endif
