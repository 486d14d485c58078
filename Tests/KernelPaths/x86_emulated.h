// The x86 intrinsics for the emulated kernel test (scripts/test-x86-emulated.sh), included by
// Sources/Kernels/simd_x86.h when FB_EMULATE_X86 is defined: SIMDe (Debian's libsimde-dev, portable C definitions of
// the SSE .. AVX-512 intrinsics) stands in for the instructions, so that the kernel sets this project's build machines
// lack (AVX-VNNI, AVX-512, AVX-512 VNNI) run, and are checked against the scalar path, on any x86-64. SIMDE_NO_NATIVE
// (set by the script) keeps SIMDe off the compiler's own headers, whose types its aliases would redefine.
//
// Debian bookworm's SIMDe (0.7.4) lacks a few intrinsics the kernels use, and names _mm512_madd_epi16 wrongly; those
// are defined here, element by element from Intel's definitions (each is a plain lane-wise load, conversion or
// shuffle). VPDPBUSD, VPMADDUBSW and VPMADDWD, whose saturation and pairing rules the kernels depend on, are SIMDe's.
#ifndef FIREBOLT_X86_EMULATED_H
#define FIREBOLT_X86_EMULATED_H

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>

#include <stdint.h>
#include <string.h>

#include "Kernels.h"

#define FB_TARGET(isa)

// AVX-VNNI's VEX-encoded VPDPBUSD computes what the AVX-512 VL form does.
#define _mm256_dpbusd_avx_epi32(acc, u, s) _mm256_dpbusd_epi32(acc, u, s)
#define _mm_dpbusd_avx_epi32(acc, u, s) _mm_dpbusd_epi32(acc, u, s)

#undef _mm512_madd_epi16  // SIMDe 0.7.4 aliases it with the masked form's four arguments
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)

typedef simde__mmask16 __mmask16;
typedef simde__mmask64 __mmask64;
typedef int _MM_PERM_ENUM;
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC

// F16C's scalar conversion: fb_f16_to_f32 is bit-identical to it (KernelsTests checks every half against F16C).
static inline float _cvtsh_ss(uint16_t h) { return fb_f16_to_f32(h); }

// F16C's vector conversions, from the scalar definitions too: SIMDe's portable ones keep a signalling NaN signalling,
// where VCVTPH2PS / VCVTPS2PH quiet it (as fb_f16_to_f32 / fb_f32_to_f16 do).
static inline __m128 fb__emu_cvtph_ps(__m128i a) {
    uint16_t h[8];
    float f[4];
    _mm_storeu_si128((__m128i *)h, a);
    for (int i = 0; i < 4; i++) f[i] = fb_f16_to_f32(h[i]);
    return _mm_loadu_ps(f);
}
static inline __m256 fb__emu_cvtph_ps256(__m128i a) {
    uint16_t h[8];
    float f[8];
    _mm_storeu_si128((__m128i *)h, a);
    for (int i = 0; i < 8; i++) f[i] = fb_f16_to_f32(h[i]);
    return _mm256_loadu_ps(f);
}
static inline __m128i fb__emu_cvtps_ph256(__m256 a) {  // round to nearest even, the only mode the kernels use
    float f[8];
    uint16_t h[8];
    _mm256_storeu_ps(f, a);
    for (int i = 0; i < 8; i++) h[i] = fb_f32_to_f16(f[i]);
    return _mm_loadu_si128((const __m128i *)h);
}
static inline __m128i fb__emu_cvtps_ph(__m128 a) {
    float f[4];
    uint16_t h[8] = {0};
    _mm_storeu_ps(f, a);
    for (int i = 0; i < 4; i++) h[i] = fb_f32_to_f16(f[i]);
    return _mm_loadu_si128((const __m128i *)h);
}
#undef _mm_cvtph_ps
#undef _mm256_cvtph_ps
#undef _mm_cvtps_ph
#undef _mm256_cvtps_ph
#define _mm_cvtph_ps(a) fb__emu_cvtph_ps(a)
#define _mm256_cvtph_ps(a) fb__emu_cvtph_ps256(a)
#define _mm_cvtps_ph(a, rounding) fb__emu_cvtps_ph(a)
#define _mm256_cvtps_ph(a, rounding) fb__emu_cvtps_ph256(a)

static inline __m512 _mm512_cvtph_ps(__m256i a) {
    uint16_t h[16];
    float f[16];
    _mm256_storeu_si256((__m256i *)h, a);
    for (int i = 0; i < 16; i++) f[i] = fb_f16_to_f32(h[i]);
    return _mm512_loadu_ps(f);
}

static inline __m512 _mm512_cvtepi32_ps(__m512i a) {
    int32_t v[16];
    float f[16];
    _mm512_storeu_si512(v, a);
    for (int i = 0; i < 16; i++) f[i] = (float)v[i];  // round to nearest even, as VCVTDQ2PS in the default mode
    return _mm512_loadu_ps(f);
}

static inline __m512i _mm512_cvtepi8_epi32(__m128i a) {
    int8_t b[16];
    int32_t v[16];
    _mm_storeu_si128((__m128i *)b, a);
    for (int i = 0; i < 16; i++) v[i] = b[i];
    return _mm512_loadu_si512(v);
}

static inline __m512i _mm512_cvtepu8_epi32(__m128i a) {
    uint8_t b[16];
    int32_t v[16];
    _mm_storeu_si128((__m128i *)b, a);
    for (int i = 0; i < 16; i++) v[i] = b[i];
    return _mm512_loadu_si512(v);
}

// Masked loads read only the selected elements (the instruction does not touch, or fault on, the others).
static inline __m256i _mm256_maskz_loadu_epi16(__mmask16 k, const void *p) {
    int16_t v[16];
    for (int i = 0; i < 16; i++) v[i] = (k >> i) & 1 ? ((const int16_t *)p)[i] : 0;
    return _mm256_loadu_si256((const __m256i *)v);
}

static inline __m512 _mm512_maskz_loadu_ps(__mmask16 k, const void *p) {
    float v[16];
    for (int i = 0; i < 16; i++) v[i] = (k >> i) & 1 ? ((const float *)p)[i] : 0.0f;
    return _mm512_loadu_ps(v);
}

static inline float _mm512_reduce_add_ps(__m512 a) {
    float v[16];
    _mm512_storeu_ps(v, a);
    for (int w = 8; w >= 1; w /= 2)  // halves added pairwise, as the compilers' expansion does
        for (int i = 0; i < w; i++) v[i] += v[i + w];
    return v[0];
}

// VPSHUFD within each 128-bit lane.
static inline __m512i fb__emu_shuffle_epi32(__m512i a, int imm) {
    int32_t v[16], r[16];
    _mm512_storeu_si512(v, a);
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < 4; i++) r[4 * l + i] = v[4 * l + ((imm >> (2 * i)) & 3)];
    return _mm512_loadu_si512(r);
}
#define _mm512_shuffle_epi32(a, imm) fb__emu_shuffle_epi32(a, (int)(imm))

#endif
