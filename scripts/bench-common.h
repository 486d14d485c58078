// Shared by the kernel benchmarks (scripts/bench-matvec.c, scripts/bench-gemm.c): the clock and a small generator.
#ifndef FIREBOLT_BENCH_COMMON_H
#define FIREBOLT_BENCH_COMMON_H

#include <math.h>
#include <stdint.h>
#include <time.h>

// With one thread, the thread's CPU time: the machines this runs on are shared, and time slices
// lost to other processes would otherwise count as kernel time (memory contention still shows).
static int cpu_clock;
static double now(void) {
    struct timespec ts;
    clock_gettime(cpu_clock ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static float unif(void) { return (float)((next() >> 40) * (1.0 / 16777216.0)); }  // [0, 1)
static float gauss(void) {
    float u = unif() + 1e-7f, v = unif();
    return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

#endif
