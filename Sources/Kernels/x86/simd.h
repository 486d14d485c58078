// Small register helpers shared by the x86 kernel files: horizontal sum and max of 8 floats, and the 8 x 8 transpose
// of 32-bit lanes the GEMMs' weight packing uses (x86/gemm_f32.c: floats; x86/gemm_int8.c: 4-byte groups of int8 weights,
// through casts, which move bits unchanged). The AVX-512 kernel sets call them too (their targets include AVX2).
#ifndef FIREBOLT_SIMD_X86_H
#define FIREBOLT_SIMD_X86_H

// The intrinsics, and FB_TARGET(isa): the target attribute each kernel function is compiled with (no global -m flags;
// registry.c picks a kernel set at run time). FB_EMULATE_X86 is the emulated kernel test's build
// (scripts/test-x86-emulated.sh): portable definitions of the intrinsics stand in for the instructions, so the kernel
// sets this machine kind lacks (AVX-VNNI, AVX-512, AVX-512 VNNI) are checked on any x86-64.
#ifdef FB_EMULATE_X86
#include "x86_emulated.h"
#else
#include <immintrin.h>
#define FB_TARGET(isa) __attribute__((target(isa)))
#endif

// v[0] + ... + v[7] (pairwise: (0+4)+(2+6) + (1+5)+(3+7)).
static inline __attribute__((always_inline)) FB_TARGET("avx") float fb__hsum8_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// max(v[0..7]) with MAXPS's NaN rule at each step (the second operand when either is NaN).
static inline __attribute__((always_inline)) FB_TARGET("avx") float fb__hmax8_ps(__m256 v) {
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

// Rows v[0..7] become columns: afterwards v[j][i] is the old v[i][j].
static inline __attribute__((always_inline)) FB_TARGET("avx2") void fb__transpose8_ps(__m256 v[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(v[0], v[1]), t1 = _mm256_unpackhi_ps(v[0], v[1]);
    const __m256 t2 = _mm256_unpacklo_ps(v[2], v[3]), t3 = _mm256_unpackhi_ps(v[2], v[3]);
    const __m256 t4 = _mm256_unpacklo_ps(v[4], v[5]), t5 = _mm256_unpackhi_ps(v[4], v[5]);
    const __m256 t6 = _mm256_unpacklo_ps(v[6], v[7]), t7 = _mm256_unpackhi_ps(v[6], v[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xee);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xee);
    v[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    v[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    v[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    v[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    v[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    v[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    v[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    v[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

static inline __attribute__((always_inline)) FB_TARGET("avx2") void fb__transpose8_epi32(__m256i v[8]) {
    __m256 f[8];
    for (int i = 0; i < 8; i++) f[i] = _mm256_castsi256_ps(v[i]);
    fb__transpose8_ps(f);
    for (int i = 0; i < 8; i++) v[i] = _mm256_castps_si256(f[i]);
}

#endif
