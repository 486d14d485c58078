// Half-precision (IEEE binary16) and bfloat16 conversions.
// The scalar routines are the definition; the F16C (x86) and NEON (AArch64) array paths are bit-identical to them
// (verified exhaustively for f16 -> f32 and on random bit patterns for f32 -> f16: KernelsTests, and
// Tests/KernelPaths/kernel_paths_test.c under qemu).
#include "Kernels.h"
#include "cpu.h"

#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include "x86/simd.h"
#define FB_X86 1
#endif


static inline uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

uint16_t fb_f32_to_f16(float x) {
    const uint32_t f = f32_bits(x);
    const uint16_t sign = (uint16_t)((f >> 16) & 0x8000u);
    const uint32_t a = f & 0x7fffffffu;
    if (a >= 0x7f800000u) {
        if (a > 0x7f800000u)  // NaN: keep the top payload bits, make it quiet (as F16C does)
            return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
        return (uint16_t)(sign | 0x7c00u);  // inf
    }
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (a >= 0x38800000u) {                                    // normal result (>= 2^-14)
        // Rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even;
        // a carry out of the mantissa correctly bumps the exponent.
        const uint32_t r = (a - 0x38000000u) + 0x0fffu + ((a >> 13) & 1u);
        return (uint16_t)(sign | (r >> 13));
    }
    // Subnormal or zero result: the value in units of 2^-24, rounded to nearest even.
    const uint32_t e = a >> 23;
    if (e < 102) return sign;  // < 2^-25: rounds to 0 (2^-25 exactly is e == 102, a tie to 0 anyway)
    const uint32_t m = (a & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;
    return (uint16_t)(sign | q);  // q == 0x400 is the smallest normal, which is right
}

float fb_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        const float v = (float)man * 5.9604644775390625e-8f;  // man * 2^-24, exact
        return bits_f32(sign | f32_bits(v));
    }
    if (exp == 31) {
        if (man == 0) return bits_f32(sign | 0x7f800000u);
        return bits_f32(sign | 0x7fc00000u | (man << 13));  // NaN, quieted as F16C does
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

#ifdef FB_X86
FB_TARGET("avx,f16c") static void f32_to_f16_f16c(const float *src, uint16_t *dst,
                                                                 size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(dst + i), h);
    }
    for (; i < n; i++) dst[i] = fb_f32_to_f16(src[i]);
}

FB_TARGET("avx,f16c") static void f16_to_f32_f16c(const uint16_t *src, float *dst,
                                                                 size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = fb_f16_to_f32(src[i]);
}
#endif

#if defined(__aarch64__)
// AArch64: FCVTN / FCVTL (part of Advanced SIMD) under the default FPCR (round to nearest even, no flush to zero,
// NaNs quieted with their payload kept), which is what the scalar routines define; scripts/test-arm.sh checks them
// against each other, all 65536 halves and random floats.
#include <arm_neon.h>
static void f32_to_f16_neon(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
    for (; i < n; i++) dst[i] = fb_f32_to_f16(src[i]);
}
static void f16_to_f32_neon(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
    for (; i < n; i++) dst[i] = fb_f16_to_f32(src[i]);
}
#endif

void fb_f32_to_f16_array(const float *src, uint16_t *dst, size_t n) {
#ifdef FB_X86
    if (fb__cpu_has_f16c()) {
        f32_to_f16_f16c(src, dst, n);
        return;
    }
#elif defined(__aarch64__)
    f32_to_f16_neon(src, dst, n);
    return;
#endif
    for (size_t i = 0; i < n; i++) dst[i] = fb_f32_to_f16(src[i]);
}

void fb_f16_to_f32_array(const uint16_t *src, float *dst, size_t n) {
#ifdef FB_X86
    if (fb__cpu_has_f16c()) {
        f16_to_f32_f16c(src, dst, n);
        return;
    }
#elif defined(__aarch64__)
    f16_to_f32_neon(src, dst, n);
    return;
#endif
    for (size_t i = 0; i < n; i++) dst[i] = fb_f16_to_f32(src[i]);
}

void fb_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n) {
    for (size_t i = 0; i < n; i++) dst[i] = bits_f32((uint32_t)src[i] << 16);
}
