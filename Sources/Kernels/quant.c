// Quantization (converter side) and row dequantization.
// Everything here is portable scalar C written so compilers can vectorise it; the results do not
// depend on the CPU (no run-time dispatch), so converted files are reproducible.
#include "Kernels.h"

#include <math.h>
#include <string.h>

#ifdef __clang__
// No fused multiply-adds (arm64 would otherwise contract `x - d * q`): same bits on every host.
#pragma STDC FP_CONTRACT OFF
#endif

size_t fb_quant_bytes(fb_dtype type, size_t rows, size_t cols) {
    switch (type) {
    case FB_F32: return rows * cols * 4;
    case FB_F16: return rows * cols * 2;
    case FB_Q8: return rows * cols;
    case FB_Q4:
    case FB_Q4NL: return rows * cols / 2;
    }
    return 0;
}

size_t fb_scale_bytes(fb_dtype type, size_t rows, size_t cols) {
    switch (type) {
    case FB_Q8:
    case FB_Q4:
    case FB_Q4NL: return rows * (cols / FB_GROUP) * 2;
    default: return 0;
    }
}

// Round to nearest even for |v| < 2^22 with plain adds (vectorises without SSE4.1's roundps).
static inline float rne(float v) {
    const float magic = 12582912.0f;  // 1.5 * 2^23
    return (v + magic) - magic;
}

// Clamp written as compare-selects that map onto min/max instructions; a NaN becomes `lo`.
static inline float clampf(float v, float lo, float hi) {
    v = v > lo ? v : lo;
    return v < hi ? v : hi;
}

// ---- q8 ---------------------------------------------------------------------------------------------

static void q8_group(const float *x, int8_t *q, uint16_t *scale) {
    float amax = 0.0f;
    for (int i = 0; i < FB_GROUP; i++) {
        const float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    float d = amax / 127.0f;
    if (d > 65504.0f) d = 65504.0f;
    const uint16_t dh = fb_f32_to_f16(d);
    const float df = fb_f16_to_f32(dh);
    *scale = dh;
    if (!(df > 0.0f)) {
        memset(q, 0, FB_GROUP);
        *scale = 0;
        return;
    }
    for (int i = 0; i < FB_GROUP; i++) q[i] = (int8_t)clampf(rne(x[i] / df), -127.0f, 127.0f);
}

void fb_quantize_q8(const float *w, size_t cols, size_t row_begin, size_t row_end, int8_t *quants,
                    uint16_t *scales) {
    const size_t ng = cols / FB_GROUP;
    for (size_t r = row_begin; r < row_end; r++)
        for (size_t g = 0; g < ng; g++)
            q8_group(w + r * cols + g * FB_GROUP, quants + r * cols + g * FB_GROUP,
                     scales + r * ng + g);
}

// The group's largest |x| and the signed value that has it (the first such).
static void largest_magnitude(const float *x, float *amax, float *m) {
    *amax = 0.0f;
    *m = 0.0f;
    for (int i = 0; i < FB_GROUP; i++) {
        const float a = fabsf(x[i]);
        if (a > *amax) {
            *amax = a;
            *m = x[i];
        }
    }
}

// ---- q4 (error-minimising scale) -------------------------------------------------------------------
// Written with GCC/Clang vector extensions (4 floats: SSE2 on x86-64, NEON on arm64): every operation
// is an element-wise IEEE operation and every reduction has a fixed order, so the result is the same
// whatever the compiler does with it.

typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
#define NV (FB_GROUP / 4)

static inline v4f v4_splat(float a) { return (v4f){a, a, a, a}; }
static inline v4f v4_sel(v4i m, v4f a, v4f b) { return (v4f)((m & (v4i)a) | (~m & (v4i)b)); }
// round(v * s) clamped to [-8, 7]; round = nearest even (valid for |v*s| < 2^22, and any larger
// value is clamped anyway); a NaN becomes -8.
static inline v4f v4_q(v4f v, v4f s) {
    const v4f magic = v4_splat(12582912.0f);  // 1.5 * 2^23
    v4f q = (v * s + magic) - magic;
    const v4f lo = v4_splat(-8.0f), hi = v4_splat(7.0f);
    q = v4_sel(q > lo, q, lo);
    return v4_sel(q < hi, q, hi);
}
static inline float v4_sum(v4f a) { return (a[0] + a[2]) + (a[1] + a[3]); }

// Least-squares scale sum(x q) / sum(q q) for the grid values q = clamp(round(x * iscale)).
static inline float q4_lsq(const v4f *x, float iscale) {
    const v4f is = v4_splat(iscale);
    v4f a = v4_splat(0.0f), b = a;
    for (int i = 0; i < NV; i++) {
        const v4f q = v4_q(x[i], is);
        a += x[i] * q;
        b += q * q;
    }
    const float sa = v4_sum(a), sb = v4_sum(b);
    return sb > 0.0f ? sa / sb : 0.0f;
}

// Squared error of the group on the grid with scale d (an f16 value): for a fixed scale, rounding
// each weight to the nearest (clamped) grid point is optimal element by element.
static inline float q4_err(const v4f *x, float d) {
    const v4f is = v4_splat(1.0f / d), dv = v4_splat(d);
    v4f e = v4_splat(0.0f);
    for (int i = 0; i < NV; i++) {
        const v4f r = x[i] - dv * v4_q(x[i], is);
        e += r * r;
    }
    return v4_sum(e);
}

static inline uint16_t f16_scale(float d) {
    if (d > 65504.0f) d = 65504.0f;
    if (d < -65504.0f) d = -65504.0f;
    return fb_f32_to_f16(d);
}

// Candidate grid positions for the largest-magnitude weight m: it maps to -k (the -8 end of the
// grid) or to +k (the +7 end). Chosen by measurement: on Gaussian, Laplace and Student-t(4)
// weights this set is within 0.1% of the RMS error of a 22-candidate, 3-refinement search
// (0.0809 vs the baseline's 0.0859 relative RMSE on Gaussian) at ~2.5x its speed.
static const float q4_neg_k[] = {7.0f, 7.3333f, 7.6667f, 8.0f, 8.3333f, 8.6667f, 9.0f, 9.5f};
static const float q4_pos_k[] = {6.75f, 7.25f};

static void q4_group(const float *xs, uint8_t *qs, uint16_t *scale) {
    v4f x[NV];
    memcpy(x, xs, sizeof x);
    float amax, m;
    largest_magnitude(xs, &amax, &m);
    float best_err = INFINITY;
    uint16_t best_dh = 0;
    if (amax > 0.0f && amax < INFINITY) {
        const int nneg = (int)(sizeof q4_neg_k / sizeof q4_neg_k[0]);
        const int npos = (int)(sizeof q4_pos_k / sizeof q4_pos_k[0]);
        for (int c = 0; c < nneg + npos; c++) {
            const float iscale = c < nneg ? -q4_neg_k[c] / m : q4_pos_k[c - nneg] / m;
            // Least-squares scale for the candidate's grid values, rounded to f16; its error is
            // measured after re-rounding the weights on that exact grid.
            const uint16_t dh = f16_scale(q4_lsq(x, iscale));
            const float df = fb_f16_to_f32(dh);
            if (df == 0.0f) continue;
            const float err = q4_err(x, df);
            if (err < best_err) {
                best_err = err;
                best_dh = dh;
            }
        }
    }
    if (best_err == INFINITY) {  // all zero (or non-finite): scale 0, every weight 0 (nibble 8)
        memset(qs, 0x88, FB_GROUP / 2);
        *scale = 0;
        return;
    }
    *scale = best_dh;
    // The same rounding q4_err used for the winning scale.
    const v4f is = v4_splat(1.0f / fb_f16_to_f32(best_dh));
    float q[FB_GROUP];
    for (int i = 0; i < NV; i++) {
        const v4f v = v4_q(x[i], is);
        memcpy(q + 4 * i, &v, sizeof v);
    }
    for (int i = 0; i < FB_GROUP / 2; i++)
        qs[i] = (uint8_t)((int)(q[i] + 8.0f) | ((int)(q[i + 16] + 8.0f) << 4));
}

void fb_quantize_q4(const float *w, size_t cols, size_t row_begin, size_t row_end, uint8_t *quants,
                    uint16_t *scales) {
    const size_t ng = cols / FB_GROUP;
    for (size_t r = row_begin; r < row_end; r++)
        for (size_t g = 0; g < ng; g++)
            q4_group(w + r * cols + g * FB_GROUP, quants + r * cols / 2 + g * FB_GROUP / 2,
                     scales + r * ng + g);
}

// ---- q4nl (non-uniform grid) ----------------------------------------------------------------------------
// llama.cpp's IQ4_NL levels halved (so that they fit [-64, 63], Kernels.h): on the 13 real trained matrices of
// Tests/Fixtures/real-weights the halving costs 0.0002 of relative RMS error (0.0755 against 0.0753), and the grid
// beats the uniform q4 grid's 0.0848 at the same 4.5 bits.
const int8_t fb_q4nl_levels[16] = {-64, -52, -42, -32, -24, -18, -11, -5, 0, 6, 12, 19, 26, 34, 44, 56};

// Nearest level of v (a weight divided by the scale), by table: the levels are integers, so every midpoint between
// two of them is a multiple of 1/2, and each half-unit cell [-64 + k/2, -64 + (k+1)/2) has one nearest level.
// Outside [-64, 56] the end levels; a NaN gives level 0 (index of -64; the group's scale search discards it).
#define Q4NL_CELLS 241
static uint8_t q4nl_cell[Q4NL_CELLS];

__attribute__((constructor)) static void q4nl_make_cells(void) {
    for (int k = 0; k < Q4NL_CELLS; k++) {
        const float v = -64.0f + 0.5f * (float)k + 0.25f;  // the cell's centre
        int best = 0;
        for (int i = 1; i < 16; i++)
            if (fabsf(v - (float)fb_q4nl_levels[i]) < fabsf(v - (float)fb_q4nl_levels[best])) best = i;
        q4nl_cell[k] = (uint8_t)best;
    }
}

static inline int q4nl_index(float v) {
    const float t = clampf((v + 64.0f) * 2.0f, 0.0f, (float)(Q4NL_CELLS - 1));
    return q4nl_cell[(int)t];
}

// Squared error of the group with scale d (an f16 value), each weight on its nearest level; also the least-squares
// scale sum(x l) / sum(l l) for those levels, through *lsq.
static float q4nl_err(const float *x, float d, float *lsq) {
    const float id = 1.0f / d;
    float e = 0.0f, xl = 0.0f, ll = 0.0f;
    for (int i = 0; i < FB_GROUP; i++) {
        const float l = (float)fb_q4nl_levels[q4nl_index(x[i] * id)];
        const float r = x[i] - d * l;
        e += r * r;
        xl += x[i] * l;
        ll += l * l;
    }
    if (lsq) *lsq = ll > 0.0f ? xl / ll : 0.0f;
    return e;
}

// Candidate scales map the largest-magnitude weight m to the grid's negative end (-64) or its positive end (56)
// times these factors; each candidate's levels give a least-squares scale, rounded to f16, and the candidate whose
// re-rounded error is smallest wins. (0.0756 mean relative RMS on the real matrices with these 7; a NumPy search of
// 15 factors from 0.8 to 1.25 gave 0.0755.)
static const float q4nl_factors[] = {0.85f, 0.9f, 0.95f, 1.0f, 1.05f, 1.1f, 1.15f};

static void q4nl_group(const float *x, uint8_t *qs, uint16_t *scale) {
    float amax, m;
    largest_magnitude(x, &amax, &m);
    float best_err = INFINITY;
    uint16_t best_dh = 0;
    if (amax > 0.0f && amax < INFINITY) {
        const int nf = (int)(sizeof q4nl_factors / sizeof q4nl_factors[0]);
        for (int c = 0; c < 2 * nf; c++) {
            const float end = c < nf ? -64.0f : 56.0f;
            float lsq;
            q4nl_err(x, m / (end * q4nl_factors[c % nf]), &lsq);
            const uint16_t dh = f16_scale(lsq);
            const float df = fb_f16_to_f32(dh);
            if (df == 0.0f || !(df == df)) continue;
            const float err = q4nl_err(x, df, NULL);
            if (err < best_err) {
                best_err = err;
                best_dh = dh;
            }
        }
    }
    if (best_err == INFINITY) {  // all zero (or non-finite): scale 0, every weight on level 0 (index 8)
        memset(qs, 0x88, FB_GROUP / 2);
        *scale = 0;
        return;
    }
    *scale = best_dh;
    const float id = 1.0f / fb_f16_to_f32(best_dh);
    for (int i = 0; i < FB_GROUP / 2; i++)
        qs[i] = (uint8_t)(q4nl_index(x[i] * id) | (q4nl_index(x[i + 16] * id) << 4));
}

void fb_quantize_q4nl(const float *w, size_t cols, size_t row_begin, size_t row_end, uint8_t *quants,
                      uint16_t *scales) {
    const size_t ng = cols / FB_GROUP;
    for (size_t r = row_begin; r < row_end; r++)
        for (size_t g = 0; g < ng; g++)
            q4nl_group(w + r * cols + g * FB_GROUP, quants + r * cols / 2 + g * FB_GROUP / 2, scales + r * ng + g);
}

// ---- q4 baseline: llama.cpp quantize_row_q4_0_reference ---------------------------------------------

void fb_quantize_q4_baseline(const float *w, size_t cols, size_t row_begin, size_t row_end,
                             uint8_t *quants, uint16_t *scales) {
    const size_t ng = cols / FB_GROUP;
    for (size_t r = row_begin; r < row_end; r++)
        for (size_t g = 0; g < ng; g++) {
            const float *x = w + r * cols + g * FB_GROUP;
            uint8_t *qs = quants + r * cols / 2 + g * FB_GROUP / 2;
            float amax = 0.0f, max = 0.0f;
            for (int j = 0; j < FB_GROUP; j++) {
                const float v = x[j];
                if (amax < fabsf(v)) {
                    amax = fabsf(v);
                    max = v;
                }
            }
            const float d = max / -8;
            const float id = d ? 1.0f / d : 0.0f;
            scales[r * ng + g] = fb_f32_to_f16(d);
            for (int j = 0; j < FB_GROUP / 2; j++) {
                const float x0 = x[j] * id, x1 = x[j + 16] * id;
                // llama.cpp: MIN(15, (int8_t)(x + 8.5f)); x >= -8 so x + 8.5 >= 0.5 and the
                // truncation is a floor; going through int keeps it defined.
                int q0 = (int)(x0 + 8.5f), q1 = (int)(x1 + 8.5f);
                q0 = q0 < 15 ? q0 : 15;
                q1 = q1 < 15 ? q1 : 15;
                qs[j] = (uint8_t)(q0 | (q1 << 4));
            }
        }
}

// ---- rows ---------------------------------------------------------------------------------------------

void fb_matrix_row(const fb_matrix *w, size_t row, float *out) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    switch (w->type) {
    case FB_F32: memcpy(out, (const float *)w->data + row * cols, cols * sizeof(float)); break;
    case FB_F16: fb_f16_to_f32_array((const uint16_t *)w->data + row * cols, out, cols); break;
    case FB_Q8: {
        const int8_t *q = (const int8_t *)w->data + row * cols;
        for (size_t g = 0; g < ng; g++) {
            const float s = fb_f16_to_f32(w->scales[row * ng + g]);
            for (int i = 0; i < FB_GROUP; i++) out[g * FB_GROUP + i] = s * (float)q[g * FB_GROUP + i];
        }
        break;
    }
    case FB_Q4: {
        const uint8_t *q = (const uint8_t *)w->data + row * cols / 2;
        for (size_t g = 0; g < ng; g++) {
            const float s = fb_f16_to_f32(w->scales[row * ng + g]);
            const uint8_t *b = q + g * FB_GROUP / 2;
            float *o = out + g * FB_GROUP;
            for (int i = 0; i < FB_GROUP / 2; i++) {
                o[i] = s * (float)((int)(b[i] & 15) - 8);
                o[i + 16] = s * (float)((int)(b[i] >> 4) - 8);
            }
        }
        break;
    }
    case FB_Q4NL: {
        const uint8_t *q = (const uint8_t *)w->data + row * cols / 2;
        for (size_t g = 0; g < ng; g++) {
            const float s = fb_f16_to_f32(w->scales[row * ng + g]);
            const uint8_t *b = q + g * FB_GROUP / 2;
            float *o = out + g * FB_GROUP;
            for (int i = 0; i < FB_GROUP / 2; i++) {
                o[i] = s * (float)fb_q4nl_levels[b[i] & 15];
                o[i + 16] = s * (float)fb_q4nl_levels[b[i] >> 4];
            }
        }
        break;
    }
    }
}
