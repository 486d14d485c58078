// Benchmark probes (see probe.c).
#ifndef FIREBOLT_PROBE_H
#define FIREBOLT_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

// a[i] = b[i] + s * c[i] for i in [begin, end)
void fb_probe_triad(double *a, const double *b, const double *c, double s, size_t begin, size_t end);
// 16 flops per iteration in 8 independent chains; returns a value to keep the work alive.
double fb_probe_compute(size_t iterations);

#ifdef __cplusplus
}
#endif
#endif
