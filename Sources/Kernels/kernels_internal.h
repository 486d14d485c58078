// Declarations shared between the kernel source files (not part of the public API).
#ifndef FIREBOLT_KERNELS_INTERNAL_H
#define FIREBOLT_KERNELS_INTERNAL_H

#include "Kernels.h"
#include "cpu.h"

#include <stdlib.h>

// Signature of every fb_matmul implementation.
#define FB__MM_ARGS                                                                                   \
    const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y, size_t ldy, size_t row_begin, \
        size_t row_end
#define FB__MM_PASS w, x, ldx, n, y, ldy, row_begin, row_end

// The fb_matmul of each kernel set: the scalar reference (matmul.c); on x86 the int8-activation decode kernels for
// q4/q8/q4nl and n <= 4 (x86/matvec_int8.c), else the float ones (x86/matvec_float.c); on AArch64 arm/matvec.c.
void fb__matmul_scalar(FB__MM_ARGS);
#if defined(__x86_64__) || defined(_M_X64)
void fb__matmul_avx2_q(FB__MM_ARGS);
void fb__matmul_avxvnni(FB__MM_ARGS);
void fb__matmul_avx512_q(FB__MM_ARGS);
void fb__matmul_avx512vnni(FB__MM_ARGS);
#endif
#if defined(__aarch64__)
void fb__matmul_neon(FB__MM_ARGS);
void fb__matmul_neon_dotprod(FB__MM_ARGS);
#endif

// Decode (n <= FB__QACT_MAX_N) products with q4/q8 weights quantize the activations to int8 (Kernels.h).
#define FB__QACT_MAX_N 4
// Activation groups with max |x| below this are quantized as zeros (so 127 / amax cannot overflow);
// such a group's error is below 2^-100 * sum |w|, far under any float rounding of the result.
#define FB__ACT_TINY 0x1p-100f
// Software prefetch distance of the decode kernels, in bytes ahead in the weight stream: the
// hardware prefetchers alone leave a matrix-vector loop waiting on memory. On x86 4 KB since the
// weights sit on huge pages (LFM2-350M q4 decode +6-17% against 2 KB on both x86 kernel families;
// with 4 KiB pages 4 KB had lost 4% at 2 threads; docs/performance.md). ARM keeps 2 KB: not
// measured on ARM hardware since.
#ifndef FB__PFD  // overridable for experiments: CFLAGS=-DFB__PFD=N scripts/bench-matvec.sh
#if defined(__x86_64__) || defined(_M_X64)
#define FB__PFD 4096
#else
#define FB__PFD 2048
#endif
#endif
// Bytes of stack for the quantized activations; larger rows use the heap.
#define FB__QACT_STACK 40960

// One call's quantized activations, per token: int8 values (layout chosen by the kernel), the
// group scales d = max|x| / 127 and, for the q4 kernels, c = 8 * sum of the group's int8 values.
typedef struct {
    const int8_t *q[FB__QACT_MAX_N];
    const float *d[FB__QACT_MAX_N];
    const float *c[FB__QACT_MAX_N];
} fb__decode_act;

// Points `a` at n tokens' activation buffers, each laid out as cols int8 quants, then ng scales d, then ng sums c.
// Uses `stack` when it is large enough, else one heap block, which the caller frees (NULL when none was needed).
static inline void *fb__decode_act_layout(fb__decode_act *a, uint8_t *stack, size_t stack_bytes, size_t n, size_t cols, size_t ng) {
    const size_t per = cols + 2 * ng * sizeof(float);
    uint8_t *buf = stack;
    void *heap = NULL;
    if (n * per > stack_bytes) {
        heap = malloc(n * per);
        if (!heap) abort();
        buf = heap;
    }
    for (size_t t = 0; t < n; t++) {
        uint8_t *p = buf + t * per;
        a->q[t] = (int8_t *)p;
        a->d[t] = (float *)(p + cols);
        a->c[t] = a->d[t] + ng;
    }
    return heap;
}

int fb__cpu_has_f16c(void);

#endif
