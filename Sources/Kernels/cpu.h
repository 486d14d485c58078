// The CPU's features, detected once (cpu.c): what the kernel sets need (registry.c). Shared by the kernel source
// files; not part of the public API.
#ifndef FIREBOLT_CPU_H
#define FIREBOLT_CPU_H

enum {
    CPU_F16C = 1,
    CPU_AVX2 = 2,  // with FMA and F16C
    CPU_AVX512 = 4,  // F, BW, VL
    CPU_AVXVNNI = 8,
    CPU_AVX512VNNI = 16,
    CPU_NEON = 32,
    CPU_DOTPROD = 64,
    CPU_INIT = 1 << 30
};
int fb__cpu_features(void);  // CPU_* flags, detected once
int fb__cpu_has_f16c(void);

#endif
