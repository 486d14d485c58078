// Which kernel set every dispatch point uses (shared by the kernel source files; not part of the public API).
#ifndef FIREBOLT_KERNEL_SET_H
#define FIREBOLT_KERNEL_SET_H

// The kernel set in use (FB_KERNELS, else the best this CPU runs; chosen once in matmul.c, where the CPU's features
// are detected, FB_EMULATE_X86 included). Every dispatch point asks this, not the set's name.
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

#endif
