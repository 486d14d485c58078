// x86-64 decode kernels: fb_matmul for q4/q8 weights and n <= 4 tokens with the activations
// quantized to int8 (see x86/matvec_int8_template.h for the method), and for f16 weights with n == 1, for the
// AVX2, AVX-VNNI, AVX-512 and AVX-512 VNNI kernel sets. Every other case goes to the float kernels
// of x86/matvec_float.c.
#include "../kernels_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <stdlib.h>

#include "simd.h"

void fb__matmul_avx2(FB__MM_ARGS);
void fb__matmul_avx512(FB__MM_ARGS);

// AVX2 + FMA + F16C: VPMADDUBSW / VPMADDWD.
#define QX(name) a2q_##name
#define QT "avx2,fma,f16c"
#define QVNNI 0
#define QW512 0
#include "matvec_int8_template.h"

// AVX-VNNI (VEX-encoded VPDPBUSD on 256-bit vectors: Alder Lake and later, Zen 5).
#define QX(name) avq_##name
#define QT "avx2,fma,f16c,avxvnni"
#define QVNNI 1
#define QW512 0
#define QDPB(a, u, s) _mm256_dpbusd_avx_epi32(a, u, s)
#define QDPB128(a, u, s) _mm_dpbusd_avx_epi32(a, u, s)
#include "matvec_int8_template.h"

// AVX-512 F/BW/VL (q4 blocks in 512-bit vectors).
#define QX(name) a5q_##name
#define QT "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define QVNNI 0
#define QW512 1
#include "matvec_int8_template.h"

// AVX-512 VNNI (VPDPBUSD on 512-bit vectors for q4 blocks, 256-bit ones through AVX-512 VL elsewhere).
#define QX(name) a5vq_##name
#define QT "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define QVNNI 1
#define QW512 1
#define QDPB(a, u, s) _mm256_dpbusd_epi32(a, u, s)
#define QDPB128(a, u, s) _mm_dpbusd_epi32(a, u, s)
#define QDPB512(a, u, s) _mm512_dpbusd_epi32(a, u, s)
#include "matvec_int8_template.h"

static int small_quant(const fb_matrix *w, size_t n) {
    return n <= FB__QACT_MAX_N && (w->type == FB_Q4 || w->type == FB_Q8 || w->type == FB_Q4NL);
}

// One fb_matmul entry per instruction set: the int8-activation kernels for q4/q8 and few tokens, the f16 row kernel
// for one token, else the float kernels of x86/matvec_float.c (AVX2 or AVX-512).
#define ENTRY(name, set, fallback)                                                         \
    void name(FB__MM_ARGS);                                                                \
    void name(FB__MM_ARGS) {                                                               \
        if (small_quant(w, n)) set##_matvec_q(FB__MM_PASS);                                \
        else if (n == 1 && w->type == FB_F16) set##_matvec_f16(w, x, y, row_begin, row_end); \
        else fallback(FB__MM_PASS);                                                        \
    }
ENTRY(fb__matmul_avx2_q, a2q, fb__matmul_avx2)
ENTRY(fb__matmul_avxvnni, avq, fb__matmul_avx2)
ENTRY(fb__matmul_avx512_q, a5q, fb__matmul_avx512)
ENTRY(fb__matmul_avx512vnni, a5vq, fb__matmul_avx512)
#undef ENTRY

#else
typedef int fb_matvec_x86_unused;  // keep the translation unit non-empty on other architectures
#endif
