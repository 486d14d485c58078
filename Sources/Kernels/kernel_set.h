// The CPU's features and the kernel set every dispatch point uses (shared by the kernel source files; not part of
// the public API).
#ifndef FIREBOLT_KERNEL_SET_H
#define FIREBOLT_KERNEL_SET_H

// The kernel set in use (FB_KERNELS, else the best this CPU runs; chosen once in matmul.c from the features cpu.c
// detects, FB_EMULATE_X86 included). Every dispatch point asks this, not the set's name.
typedef enum {
    FB__SET_SCALAR,
    FB__SET_AVX2,
    FB__SET_AVX2_VNNI,
    FB__SET_AVX512,
    FB__SET_AVX512_VNNI,
    FB__SET_NEON,
    FB__SET_NEON_DOTPROD,
} fb__kernel_set_id;
fb__kernel_set_id fb__kernel_set(void);

// CPU features (cpu.c): what the kernel sets need.
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
