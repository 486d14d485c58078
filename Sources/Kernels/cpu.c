// The CPU's features, detected once for every kernel file (cpuid and xgetbv on x86-64, HWCAP on AArch64). Under
// FB_EMULATE_X86 (SIMDe standing in for the instructions, x86/simd.h) every x86 feature is claimed.
#include "cpu.h"

#include <stdatomic.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(_M_X64)
#define FB_X86 1
#include <cpuid.h>
#endif
#if defined(__aarch64__)
#define FB_ARM 1
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

static atomic_int cpu_flags;  // 0 = not yet detected

static int detect_cpu(void) {
    int f = CPU_INIT;
#ifdef FB_EMULATE_X86  // SIMDe stands in for every x86 instruction (x86/simd.h)
    return f | CPU_F16C | CPU_AVX2 | CPU_AVX512 | CPU_AVXVNNI | CPU_AVX512VNNI;
#endif
#ifdef FB_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return f;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    const uint64_t xcr0 = ((uint64_t)hi << 32) | lo;
    if ((xcr0 & 0x6) != 0x6) return f;  // OS does not save YMM state
    if (f16c) f |= CPU_F16C;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1,
              avx512vl = (b >> 31) & 1;
    if (avx2 && fma && f16c) f |= CPU_AVX2;
    if ((f & CPU_AVX2) && avx512f && avx512bw && avx512vl && (xcr0 & 0xe6) == 0xe6) f |= CPU_AVX512;
    if ((f & CPU_AVX512) && ((c >> 11) & 1)) f |= CPU_AVX512VNNI;
    if ((f & CPU_AVX2) && a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 4) & 1)) f |= CPU_AVXVNNI;
#endif
#ifdef FB_ARM
    f |= CPU_NEON;  // Advanced SIMD (with half conversions) is part of AArch64
    if (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) f |= CPU_DOTPROD;
#endif
    return f;
}

int fb__cpu_features(void) {
    int f = atomic_load_explicit(&cpu_flags, memory_order_relaxed);
    if (!f) {  // racing first calls compute the same value
        f = detect_cpu();
        atomic_store_explicit(&cpu_flags, f, memory_order_relaxed);
    }
    return f;
}

int fb__cpu_has_f16c(void) { return (fb__cpu_features() & CPU_F16C) != 0; }

