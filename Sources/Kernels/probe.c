// Machine probes for the benchmarks: memory bandwidth (STREAM-style triad) and scalar-ish compute speed.
// Deliberately independent of the model kernels, so a kernel regression cannot hide in its own yardstick.
#include "Probe.h"

void fb_probe_triad(double *a, const double *b, const double *c, double s, size_t begin, size_t end) {
    for (size_t i = begin; i < end; i++) a[i] = b[i] + s * c[i];
}

double fb_probe_compute(size_t iterations) {
    // 8 independent multiply-add chains: limited by the FP units, not by latency or memory.
    double x0 = 1.0, x1 = 1.1, x2 = 1.2, x3 = 1.3, x4 = 1.4, x5 = 1.5, x6 = 1.6, x7 = 1.7;
    const double m = 0.999999, k = 0.000001;
    for (size_t i = 0; i < iterations; i++) {
        x0 = x0 * m + k; x1 = x1 * m + k; x2 = x2 * m + k; x3 = x3 * m + k;
        x4 = x4 * m + k; x5 = x5 * m + k; x6 = x6 * m + k; x7 = x7 * m + k;
    }
    return x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}
