// AArch64 paths of fb_matmul: "neon" (Advanced SIMD, part of every AArch64 CPU) and "neon-dotprod"
// (ARMv8.2 dot product, SDOT; registry.c chooses it only where cpu.c finds HWCAP_ASIMDDP).
//   q4/q8, n <= 4 (decode): int8 activations and integer dot products (arm/matvec_int8_template.h).
//   Everything else: float. f32/f16 rows are FMA'd directly (f16 through FCVTL); for n > 4, q4/q8
//   groups are dequantized to float once per 4 tokens (q * scale), like the x86 float paths, and
//   rows are blocked so the weights of a block stay in cache across the token blocks.
#include "../kernels_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <stdlib.h>
#include <string.h>

// ---- float kernels (shared by both sets) -----------------------------------------------------------

// 8 weights of row r from column c as two float32x4 (f32/f16).
static inline void w8(const int type, const fb_matrix *w, size_t r, size_t c, float32x4_t *lo, float32x4_t *hi) {
    if (type == FB_F32) {
        const float *p = (const float *)w->data + r * w->cols + c;
        *lo = vld1q_f32(p);
        *hi = vld1q_f32(p + 4);
    } else {
        const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16((const uint16_t *)w->data + r * w->cols + c));
        *lo = vcvt_f32_f16(vget_low_f16(h));
        *hi = vcvt_high_f32_f16(h);
    }
}

// The 32 weights of group g of row r, times the group scale (q4/q8), as 8 float32x4.
static inline void qgroup(const int type, const fb_matrix *w, size_t r, size_t g, float32x4_t v[8]) {
    const size_t cols = w->cols;
    const float s = fb_f16_to_f32(w->scales[r * (cols / FB_GROUP) + g]);
    int8x16_t q[2];
    if (type == FB_Q8) {
        const int8_t *p = (const int8_t *)w->data + r * cols + g * FB_GROUP;
        q[0] = vld1q_s8(p);
        q[1] = vld1q_s8(p + 16);
    } else if (type == FB_Q4NL) {
        const uint8x16_t b = vld1q_u8((const uint8_t *)w->data + r * cols / 2 + g * 16);
        const int8x16_t levels = vld1q_s8(fb_q4nl_levels);
        q[0] = vqtbl1q_s8(levels, vandq_u8(b, vdupq_n_u8(15)));
        q[1] = vqtbl1q_s8(levels, vshrq_n_u8(b, 4));
    } else {
        const uint8x16_t b = vld1q_u8((const uint8_t *)w->data + r * cols / 2 + g * 16);
        q[0] = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))), vdupq_n_s8(8));
        q[1] = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(b, 4)), vdupq_n_s8(8));
    }
    for (int h = 0; h < 2; h++) {
        const int16x8_t a = vmovl_s8(vget_low_s8(q[h])), b = vmovl_high_s8(q[h]);
        v[4 * h + 0] = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(a))), s);
        v[4 * h + 1] = vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(a)), s);
        v[4 * h + 2] = vmulq_n_f32(vcvtq_f32_s32(vmovl_s16(vget_low_s16(b))), s);
        v[4 * h + 3] = vmulq_n_f32(vcvtq_f32_s32(vmovl_high_s16(b)), s);
    }
}

static inline float w1(const int type, const fb_matrix *w, size_t r, size_t c) {
    if (type == FB_F32) return ((const float *)w->data)[r * w->cols + c];
    return fb_f16_to_f32(((const uint16_t *)w->data)[r * w->cols + c]);
}

// Row r against NT (1..4) tokens starting at t0.
static inline __attribute__((always_inline)) void f_row(const int type, const int NT, const fb_matrix *w,
                                                        const float *x, size_t ldx, float *y, size_t ldy,
                                                        size_t r, size_t t0) {
    const size_t cols = w->cols;
    const float *xt[4];
    float32x4_t acc[4][2];
    for (int t = 0; t < NT; t++) {
        xt[t] = x + (t0 + t) * ldx;
        acc[t][0] = acc[t][1] = vdupq_n_f32(0.0f);
    }
    if (type == FB_Q8 || type == FB_Q4 || type == FB_Q4NL) {
        for (size_t g = 0; g < cols / FB_GROUP; g++) {
            float32x4_t v[8];
            qgroup(type, w, r, g, v);
            for (int t = 0; t < NT; t++)
                for (int j = 0; j < 8; j++)
                    acc[t][j & 1] = vfmaq_f32(acc[t][j & 1], v[j], vld1q_f32(xt[t] + g * FB_GROUP + 4 * j));
        }
        for (int t = 0; t < NT; t++) y[(t0 + t) * ldy + r] = vaddvq_f32(vaddq_f32(acc[t][0], acc[t][1]));
        return;
    }
    const size_t es = type == FB_F32 ? 4 : 2;
    const char *row = (const char *)w->data + r * cols * es;
    size_t c = 0;
    if (NT == 1) {  // decode: four accumulators, prefetch ahead
        float32x4_t a2 = vdupq_n_f32(0.0f), a3 = a2;
        for (; c + 16 <= cols; c += 16) {
            __builtin_prefetch(row + c * es + FB__PFD);
            float32x4_t l0, h0, l1, h1;
            w8(type, w, r, c, &l0, &h0);
            w8(type, w, r, c + 8, &l1, &h1);
            acc[0][0] = vfmaq_f32(acc[0][0], l0, vld1q_f32(xt[0] + c));
            acc[0][1] = vfmaq_f32(acc[0][1], h0, vld1q_f32(xt[0] + c + 4));
            a2 = vfmaq_f32(a2, l1, vld1q_f32(xt[0] + c + 8));
            a3 = vfmaq_f32(a3, h1, vld1q_f32(xt[0] + c + 12));
        }
        acc[0][0] = vaddq_f32(acc[0][0], a2);
        acc[0][1] = vaddq_f32(acc[0][1], a3);
    }
    for (; c + 8 <= cols; c += 8) {
        float32x4_t lo, hi;
        w8(type, w, r, c, &lo, &hi);
        for (int t = 0; t < NT; t++) {
            acc[t][0] = vfmaq_f32(acc[t][0], lo, vld1q_f32(xt[t] + c));
            acc[t][1] = vfmaq_f32(acc[t][1], hi, vld1q_f32(xt[t] + c + 4));
        }
    }
    float tail[4] = {0, 0, 0, 0};
    for (; c < cols; c++) {
        const float wv = w1(type, w, r, c);
        for (int t = 0; t < NT; t++) tail[t] += wv * xt[t][c];
    }
    for (int t = 0; t < NT; t++) y[(t0 + t) * ldy + r] = vaddvq_f32(vaddq_f32(acc[t][0], acc[t][1])) + tail[t];
}

static inline __attribute__((always_inline)) void f_run(const int type, FB__MM_ARGS) {
    // With more than one block of 4 tokens, run a block of rows (~256 KiB of weights) against every
    // token block before moving on, so the weights come from memory once.
    const size_t cols = w->cols;
    const size_t row_bytes = type == FB_F32 ? cols * 4 : type == FB_F16 ? cols * 2 : type == FB_Q8 ? cols : cols / 2;
    size_t chunk = row_end - row_begin;
    if (n > 4) {
        chunk = (256u * 1024u) / (row_bytes ? row_bytes : 1);
        if (chunk < 16) chunk = 16;
    }
    for (size_t rc = row_begin; rc < row_end; rc += chunk) {
        const size_t rce = row_end - rc < chunk ? row_end : rc + chunk;
        for (size_t t = 0; t < n; t += 4) {
            const size_t nt = n - t < 4 ? n - t : 4;
            for (size_t r = rc; r < rce; r++) {
                switch (nt) {
                case 1: f_row(type, 1, w, x, ldx, y, ldy, r, t); break;
                case 2: f_row(type, 2, w, x, ldx, y, ldy, r, t); break;
                case 3: f_row(type, 3, w, x, ldx, y, ldy, r, t); break;
                default: f_row(type, 4, w, x, ldx, y, ldy, r, t); break;
                }
            }
        }
    }
}

static void f_f32(FB__MM_ARGS) { f_run(FB_F32, FB__MM_PASS); }
static void f_f16(FB__MM_ARGS) { f_run(FB_F16, FB__MM_PASS); }
static void f_q8(FB__MM_ARGS) { f_run(FB_Q8, FB__MM_PASS); }
static void f_q4(FB__MM_ARGS) { f_run(FB_Q4, FB__MM_PASS); }
static void f_q4nl(FB__MM_ARGS) { f_run(FB_Q4NL, FB__MM_PASS); }

static void matmul_float(FB__MM_ARGS) {
    switch (w->type) {
    case FB_F32: f_f32(FB__MM_PASS); break;
    case FB_F16: f_f16(FB__MM_PASS); break;
    case FB_Q8: f_q8(FB__MM_PASS); break;
    case FB_Q4: f_q4(FB__MM_PASS); break;
    case FB_Q4NL: f_q4nl(FB__MM_PASS); break;
    }
}

// ---- int8-activation kernels ------------------------------------------------------------------------

#define QX(name) nq_##name
#define QATTR
#define QSDOT 0
#include "matvec_int8_template.h"

// "arch=armv8.2-a+dotprod": the spelling both clang and GCC 12 accept.
#define QX(name) dq_##name
#define QATTR __attribute__((target("arch=armv8.2-a+dotprod")))
#define QSDOT 1
#include "matvec_int8_template.h"

static int small_quant(const fb_matrix *w, size_t n) {
    return n <= FB__QACT_MAX_N && (w->type == FB_Q4 || w->type == FB_Q8 || w->type == FB_Q4NL);
}

void fb__matmul_neon(FB__MM_ARGS);
void fb__matmul_neon(FB__MM_ARGS) {
    if (small_quant(w, n)) nq_matvec_q(FB__MM_PASS);
    else matmul_float(FB__MM_PASS);
}

void fb__matmul_neon_dotprod(FB__MM_ARGS);
void fb__matmul_neon_dotprod(FB__MM_ARGS) {
    if (small_quant(w, n)) dq_matvec_q(FB__MM_PASS);
    else matmul_float(FB__MM_PASS);
}

#else
typedef int fb_matmul_arm_unused;  // keep the translation unit non-empty on other architectures
#endif
