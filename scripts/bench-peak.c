// Throughput of the instructions the int8 kernels are built on, one core: VPMADDUBSW (AVX2 / AVX-512 BW) and
// VPDPBUSD (AVX-VNNI / AVX-512 VNNI), as instructions per second from 12 independent chains (enough to cover their
// latency), and what that makes in GOPS (a multiply and an add per byte pair). It is the ceiling to hold
// scripts/bench-gemm.sh's GFLOP/s against. Built by scripts/bench-peak.sh; instruction sets the CPU lacks are skipped.
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdio.h>

#include "bench-common.h"

#define CHAINS 12
#define ITERS 20000000L

// Each function runs ITERS x CHAINS instructions on registers only and returns instructions per second. Every chain
// feeds the result, so that none can be dropped.
#define PROBE(name, isa, vec, setb, sete, op, add, lane0)                                                           \
    __attribute__((target(isa), noinline)) static double name(void) {                                           \
        vec acc[CHAINS];                                                                                        \
        const vec w = setb(3), x = setb(5);                                                                      \
        for (int k = 0; k < CHAINS; k++) acc[k] = sete(k);                                                      \
        const double t0 = now();                                                                                \
        for (long i = 0; i < ITERS; i++) {                                                                      \
            for (int k = 0; k < CHAINS; k++) acc[k] = op;                                                       \
            __asm__ volatile("" ::"v"(w), "v"(x)); /* keeps the loop */                                         \
        }                                                                                                       \
        const double t = now() - t0;                                                                            \
        for (int k = 1; k < CHAINS; k++) acc[0] = add(acc[0], acc[k]);                                          \
        sink = lane0(acc[0]);                                                                                   \
        return (double)ITERS * CHAINS / t;                                                                      \
    }

static volatile int sink;
#define LANE0_256(v) _mm256_extract_epi32(v, 0)
#define LANE0_512(v) _mm_cvtsi128_si32(_mm512_castsi512_si128(v))
PROBE(maddubs256, "avx2", __m256i, _mm256_set1_epi8, _mm256_set1_epi32, _mm256_maddubs_epi16(acc[k], x),
      _mm256_add_epi32, LANE0_256)
PROBE(dpbusd256, "avx2,avxvnni", __m256i, _mm256_set1_epi8, _mm256_set1_epi32, _mm256_dpbusd_avx_epi32(acc[k], w, x),
      _mm256_add_epi32, LANE0_256)
PROBE(maddubs512, "avx512f,avx512bw", __m512i, _mm512_set1_epi8, _mm512_set1_epi32, _mm512_maddubs_epi16(acc[k], x),
      _mm512_add_epi32, LANE0_512)
PROBE(dpbusd512, "avx512f,avx512bw,avx512vnni", __m512i, _mm512_set1_epi8, _mm512_set1_epi32,
      _mm512_dpbusd_epi32(acc[k], w, x), _mm512_add_epi32, LANE0_512)

static void report(const char *name, double per_s, int pairs) {
    printf("%-16s %6.2f G instructions/s  %7.0f GOPS int8\n", name, per_s * 1e-9, per_s * pairs * 2 * 1e-9);
}

int main(void) {
    cpu_clock = 1;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) report("vpmaddubsw ymm", maddubs256(), 32);
    if (__builtin_cpu_supports("avxvnni")) report("vpdpbusd ymm", dpbusd256(), 32);
    if (__builtin_cpu_supports("avx512bw")) report("vpmaddubsw zmm", maddubs512(), 64);
    if (__builtin_cpu_supports("avx512vnni")) report("vpdpbusd zmm", dpbusd512(), 64);
    return 0;
}
