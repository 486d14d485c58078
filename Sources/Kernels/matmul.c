// fb_matmul: the portable scalar reference and the run-time dispatch between implementations.
#include "kernels_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#define FB_X86 1
#endif

typedef void (*fb_matmul_fn)(const fb_matrix *, const float *, size_t, size_t, float *, size_t,
                             size_t, size_t);

#ifdef FB_X86
// x86/matvec_int8.c: the int8-activation decode kernels for q4/q8 and n <= 4, else x86/matvec_float.c's float ones.
void fb__matmul_avx2_q(FB__MM_ARGS);
void fb__matmul_avxvnni(FB__MM_ARGS);
void fb__matmul_avx512_q(FB__MM_ARGS);
void fb__matmul_avx512vnni(FB__MM_ARGS);
#endif
#if defined(__aarch64__)
#define FB_ARM 1
void fb__matmul_neon(FB__MM_ARGS);
void fb__matmul_neon_dotprod(FB__MM_ARGS);
#endif

// ---- scalar reference -------------------------------------------------------------------------------
// Reads the documented layouts directly; per group of 32, accumulates q*x in float, then scales.

static void matmul_scalar(const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y,
                          size_t ldy, size_t row_begin, size_t row_end) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    for (size_t t = 0; t < n; t++) {
        const float *xt = x + t * ldx;
        for (size_t r = row_begin; r < row_end; r++) {
            float sum = 0.0f;
            switch (w->type) {
            case FB_F32: {
                const float *wr = (const float *)w->data + r * cols;
                for (size_t c = 0; c < cols; c++) sum += wr[c] * xt[c];
                break;
            }
            case FB_F16: {
                const uint16_t *wr = (const uint16_t *)w->data + r * cols;
                for (size_t c = 0; c < cols; c++) sum += fb_f16_to_f32(wr[c]) * xt[c];
                break;
            }
            case FB_Q8: {
                const int8_t *wr = (const int8_t *)w->data + r * cols;
                for (size_t g = 0; g < ng; g++) {
                    float acc = 0.0f;
                    for (int i = 0; i < FB_GROUP; i++)
                        acc += (float)wr[g * FB_GROUP + i] * xt[g * FB_GROUP + i];
                    sum += acc * fb_f16_to_f32(w->scales[r * ng + g]);
                }
                break;
            }
            case FB_Q4:
            case FB_Q4NL: {
                // Both read a 4-bit code per weight: q4's value is code - 8, q4nl's its level.
                static const int8_t q4_levels[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
                const int8_t *level = w->type == FB_Q4 ? q4_levels : fb_q4nl_levels;
                const uint8_t *wr = (const uint8_t *)w->data + r * cols / 2;
                for (size_t g = 0; g < ng; g++) {
                    const uint8_t *b = wr + g * FB_GROUP / 2;
                    const float *xg = xt + g * FB_GROUP;
                    float acc = 0.0f;
                    for (int i = 0; i < FB_GROUP / 2; i++) {
                        acc += (float)level[b[i] & 15] * xg[i];
                        acc += (float)level[b[i] >> 4] * xg[i + 16];
                    }
                    sum += acc * fb_f16_to_f32(w->scales[r * ng + g]);
                }
                break;
            }
            }
            y[t * ldy + r] = sum;
        }
    }
}

// ---- dispatch -------------------------------------------------------------------------------------------

typedef struct {
    const char *name;
    fb__kernel_set_id id;
    int needs;  // CPU_* flags
    fb_matmul_fn matmul;
} kernel_set;

static const kernel_set kernel_sets[] = {
    // In order of preference: the default is the last one the CPU supports.
    {"scalar", FB__SET_SCALAR, 0, matmul_scalar},
#ifdef FB_X86
    {"avx2", FB__SET_AVX2, CPU_AVX2, fb__matmul_avx2_q},
    {"avx2-vnni", FB__SET_AVX2_VNNI, CPU_AVX2 | CPU_AVXVNNI, fb__matmul_avxvnni},
    {"avx512", FB__SET_AVX512, CPU_AVX512, fb__matmul_avx512_q},
    {"avx512-vnni", FB__SET_AVX512_VNNI, CPU_AVX512 | CPU_AVX512VNNI, fb__matmul_avx512vnni},
#endif
#ifdef FB_ARM
    {"neon", FB__SET_NEON, CPU_NEON, fb__matmul_neon},
    {"neon-dotprod", FB__SET_NEON_DOTPROD, CPU_NEON | CPU_DOTPROD, fb__matmul_neon_dotprod},
#endif
};
#define N_SETS ((int)(sizeof kernel_sets / sizeof kernel_sets[0]))

static atomic_int current = -1;  // index into kernel_sets, -1 = not chosen yet

static int find_set(const char *name) {
    for (int i = 0; i < N_SETS; i++)
        if (strcmp(kernel_sets[i].name, name) == 0)
            return (fb__cpu_features() & kernel_sets[i].needs) == kernel_sets[i].needs ? i : -1;
    return -1;
}

static int current_set(void) {
    int k = atomic_load_explicit(&current, memory_order_acquire);
    if (k >= 0) return k;
    const char *env = getenv("FB_KERNELS");
    if (env && *env) {
        k = find_set(env);
        if (k < 0) k = 0;  // unknown or unsupported: scalar
    } else {
        k = 0;
        for (int i = N_SETS - 1; i > 0; i--)
            if ((fb__cpu_features() & kernel_sets[i].needs) == kernel_sets[i].needs) {
                k = i;
                break;
            }
    }
    int expected = -1;  // keep a selection made concurrently by fb_kernels_select
    if (!atomic_compare_exchange_strong(&current, &expected, k)) k = expected;
    return k;
}

const char *fb_kernels_name(void) { return kernel_sets[current_set()].name; }

fb__kernel_set_id fb__kernel_set(void) { return kernel_sets[current_set()].id; }

int fb_kernels_check(const char *name) {
    if (!name) return -1;
    for (int i = 0; i < N_SETS; i++)
        if (strcmp(kernel_sets[i].name, name) == 0) return (fb__cpu_features() & kernel_sets[i].needs) == kernel_sets[i].needs;
    return -1;
}

static char kernel_lists[2][128];  // [all, runnable], written once
static pthread_once_t kernel_lists_once = PTHREAD_ONCE_INIT;

static void make_kernel_lists(void) {
    for (int runnable = 0; runnable < 2; runnable++) {
        char *s = kernel_lists[runnable];
        for (int i = 0; i < N_SETS; i++)
            if (!runnable || (fb__cpu_features() & kernel_sets[i].needs) == kernel_sets[i].needs) {
                if (s[0]) strcat(s, ",");
                strcat(s, kernel_sets[i].name);
            }
    }
}

const char *fb_kernels_list(int runnable_only) {
    pthread_once(&kernel_lists_once, make_kernel_lists);
    return kernel_lists[runnable_only ? 1 : 0];
}

int fb_kernels_select(const char *name) {
    if (!name) return -1;
    const int k = find_set(name);
    if (k < 0) return -1;
    atomic_store_explicit(&current, k, memory_order_release);
    return 0;
}

void fb_matmul(const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y, size_t ldy,
               size_t row_begin, size_t row_end) {
    if (n == 0 || row_begin >= row_end) return;
    kernel_sets[current_set()].matmul(w, x, ldx, n, y, ldy, row_begin, row_end);
}
