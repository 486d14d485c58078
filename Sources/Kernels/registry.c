// The kernel registry: every kernel set's table, in one place, and the choice of the set in use (FB_KERNELS, else the
// best set this CPU runs, from the features cpu.c detects). See registry.h.
#include "registry.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define PORTABLE_OPS                                                                                          \
    .rmsnorm = fb__rmsnorm_portable, .layernorm = fb__layernorm_portable, .silu_mul = fb__silu_mul_portable, \
    .gelu_tanh = fb__gelu_tanh_portable, .softmax = fb__softmax_portable

#if defined(__x86_64__) || defined(_M_X64)
// Every x86 set has AVX2, FMA and F16C: they share the element-wise ops, the activation quantizer and the f32 GEMM,
// and differ in the int8 products.
#define X86_COMMON                                                                                              \
    .quantize_act = fb__quantize_act_avx2, .act_interleaved = 1, .gemm_pack_floats = fb__gemm_pack_floats,     \
    .gemm_block = fb__gemm_block_avx2, .rmsnorm = fb__rmsnorm_avx2, .layernorm = fb__layernorm_avx2,           \
    .silu_mul = fb__silu_mul_avx2, .gelu_tanh = fb__gelu_tanh_avx2, .softmax = fb__softmax_avx2,               \
    .attend = fb__attend_avx2, .attend_f16 = fb__attend_f16_avx2
#define X86_PACKED(p) .packed_q4 = &fb__pk_##p##_q4, .packed_q8 = &fb__pk_##p##_q8, .packed_q4nl = &fb__pk_##p##_q4nl
#endif

#if defined(__aarch64__)
#define ARM_COMMON                                                                                                  \
    .quantize_act = fb__quantize_act_neon, .sgemm_pack_floats = fb__sgemm_pack_floats, .sgemm = fb__sgemm_neon,      \
    .rmsnorm = fb__rmsnorm_portable, .layernorm = fb__layernorm_portable, .silu_mul = fb__silu_mul_neon,             \
    .gelu_tanh = fb__gelu_tanh_neon, .softmax = fb__softmax_neon, .attend = fb__attend_neon,                         \
    .attend_f16 = fb__attend_f16_neon
#endif

static const fb__kernel_table tables[] = {
    // In order of preference: the default is the last one the CPU runs.
    {.name = "scalar", .needs = 0, .matmul = fb__matmul_scalar,
     .quantize_act = fb__quantize_act_scalar, PORTABLE_OPS},
#if defined(__x86_64__) || defined(_M_X64)
    {.name = "avx2", .needs = CPU_AVX2, .matmul = fb__matmul_avx2_q, X86_PACKED(avx2), X86_COMMON},
    {.name = "avx2-vnni", .needs = CPU_AVX2 | CPU_AVXVNNI, .matmul = fb__matmul_avxvnni,
     X86_PACKED(avx_vnni), X86_COMMON},
    {.name = "avx512", .needs = CPU_AVX512, .matmul = fb__matmul_avx512_q, X86_PACKED(avx512),
     X86_COMMON},
    {.name = "avx512-vnni", .needs = CPU_AVX512 | CPU_AVX512VNNI,
     .matmul = fb__matmul_avx512vnni, X86_PACKED(avx512_vnni), X86_COMMON},
#endif
#if defined(__aarch64__)
    {.name = "neon", .needs = CPU_NEON, .matmul = fb__matmul_neon, .packed_q4 = &fb__pk_neon_q4,
     .packed_q8 = &fb__pk_neon_q8, .packed_q4nl = &fb__pk_neon_q4nl, ARM_COMMON},
    {.name = "neon-dotprod", .needs = CPU_NEON | CPU_DOTPROD,
     .matmul = fb__matmul_neon_dotprod, .packed_q4 = &fb__pk_dotprod_q4, .packed_q8 = &fb__pk_dotprod_q8,
     .packed_q4nl = &fb__pk_dotprod_q4nl, ARM_COMMON},
#endif
};
#define N_SETS ((int)(sizeof tables / sizeof tables[0]))

static int runs_here(int i) { return (fb__cpu_features() & tables[i].needs) == tables[i].needs; }

static int find_set(const char *name) {
    for (int i = 0; i < N_SETS; i++)
        if (strcmp(tables[i].name, name) == 0) return i;
    return -1;
}

static atomic_int current = -1;  // index into tables, -1 = not chosen yet

static int current_set(void) {
    int k = atomic_load_explicit(&current, memory_order_acquire);
    if (k >= 0) return k;
    const char *env = getenv("FB_KERNELS");
    if (env && *env) {
        k = find_set(env);
        if (k < 0 || !runs_here(k)) k = 0;  // unknown or not runnable here: scalar
    } else {
        k = 0;
        for (int i = N_SETS - 1; i > 0; i--)
            if (runs_here(i)) {
                k = i;
                break;
            }
    }
    int expected = -1;  // keep a selection made concurrently by fb_kernels_select
    if (!atomic_compare_exchange_strong(&current, &expected, k)) k = expected;
    return k;
}

const fb__kernel_table *fb__kernels(void) { return &tables[current_set()]; }

const char *fb_kernels_name(void) { return tables[current_set()].name; }

int fb_kernels_check(const char *name) {
    if (!name) return -1;
    const int k = find_set(name);
    return k < 0 ? -1 : runs_here(k);
}

int fb_kernels_select(const char *name) {
    if (!name) return -1;
    const int k = find_set(name);
    if (k < 0 || !runs_here(k)) return -1;
    atomic_store_explicit(&current, k, memory_order_release);
    return 0;
}

static char kernel_lists[2][128];  // [all, runnable], written once
static pthread_once_t kernel_lists_once = PTHREAD_ONCE_INIT;

static void make_kernel_lists(void) {
    for (int runnable = 0; runnable < 2; runnable++) {
        char *s = kernel_lists[runnable];
        for (int i = 0; i < N_SETS; i++)
            if (!runnable || runs_here(i)) {
                if (s[0]) strcat(s, ",");
                strcat(s, tables[i].name);
            }
    }
}

const char *fb_kernels_list(int runnable_only) {
    pthread_once(&kernel_lists_once, make_kernel_lists);
    return kernel_lists[runnable_only ? 1 : 0];
}
