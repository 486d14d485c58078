// Element-wise operations (see include/Ops.h). Accumulations that feed a normalisation are done in double so
// the results match PyTorch's float32 reductions to well below the parity tolerances.
#include "Ops.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "registry.h"

// ---- the kernel set's versions (registry.c), the portable ones below where it has none ------------------------

void fb_rmsnorm(const float *x, const float *w, float *y, size_t n, float eps) { fb__kernels()->rmsnorm(x, w, y, n, eps); }

void fb_layernorm(const float *x, const float *w, const float *b, float *y, size_t n, float eps) {
    fb__kernels()->layernorm(x, w, b, y, n, eps);
}

void fb_silu_mul(const float *a, const float *b, float *y, size_t n) { fb__kernels()->silu_mul(a, b, y, n); }

void fb_gelu_tanh(float *x, size_t n) { fb__kernels()->gelu_tanh(x, n); }

void fb_softmax(float *x, size_t n) { fb__kernels()->softmax(x, n); }

// ---- portable versions --------------------------------------------------------------------------------------

void fb__rmsnorm_portable(const float *x, const float *w, float *y, size_t n, float eps) {
    double ss = 0.0;
    for (size_t i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    const float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
    for (size_t i = 0; i < n; i++) y[i] = (x[i] * inv) * w[i];
}

void fb__layernorm_portable(const float *x, const float *w, const float *b, float *y, size_t n, float eps) {
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += x[i];
    const double mean = sum / (double)n;
    double var = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = (double)x[i] - mean;
        var += d * d;
    }
    const float inv = (float)(1.0 / sqrt(var / (double)n + (double)eps));
    const float m = (float)mean;
    for (size_t i = 0; i < n; i++) y[i] = (x[i] - m) * inv * w[i] + b[i];
}

void fb__silu_mul_portable(const float *a, const float *b, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float v = a[i];
        y[i] = v / (1.0f + expf(-v)) * b[i];
    }
}

void fb__gelu_tanh_portable(float *x, size_t n) {
    const float k = 0.7978845608028654f;  // sqrt(2/pi)
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
    }
}

void fb_gelu_erf(float *x, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.7071067811865476f));
}

void fb__softmax_portable(float *x, size_t n) {
    float m = -INFINITY;
    for (size_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY) {
        for (size_t i = 0; i < n; i++) x[i] = 0.0f;
        return;
    }
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        sum += x[i];
    }
    const float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++) x[i] *= inv;
}

void fb_rope(float *x, size_t heads, size_t head_dim, const float *cos_table, const float *sin_table) {
    const size_t half = head_dim / 2;
    for (size_t h = 0; h < heads; h++) {
        float *v = x + h * head_dim;
        for (size_t i = 0; i < half; i++) {
            const float a = v[i], b = v[i + half];
            v[i] = a * cos_table[i] - b * sin_table[i];
            v[i + half] = b * cos_table[i] + a * sin_table[i];
        }
    }
}

float fb_dot(const float *a, const float *b, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (size_t j = 0; j < 8; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0.0f;
    for (; i < n; i++) s += a[i] * b[i];
    for (size_t j = 0; j < 8; j++) s += acc[j];
    return s;
}

// The portable attention reads each cached row once for all `groups` query heads (positions outermost): the cache
// comes from memory at long contexts, the query heads' vectors stay in L1.
void fb_attend(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld, size_t n,
               float scale, float *scores, float *out) {
    if (hd % 8 == 0 && fb__kernels()->attend) {
        fb__kernels()->attend(q, groups, hd, keys, values, ld, n, scale, scores, out);
        return;
    }
    for (size_t j = 0; j < n; j++)
        for (size_t g = 0; g < groups; g++) scores[g * n + j] = scale * fb_dot(q + g * hd, keys + j * ld, hd);
    for (size_t g = 0; g < groups; g++) fb_softmax(scores + g * n, n);
    for (size_t i = 0; i < groups * hd; i++) out[i] = 0.0f;
    for (size_t j = 0; j < n; j++)
        for (size_t g = 0; g < groups; g++) fb_axpy(scores[g * n + j], values + j * ld, out + g * hd, hd);
}

// The same over binary16 rows: each row is widened once (exactly: fb_f16_to_f32_array, FCVTL on AArch64),
// ATTEND_ROW values at a time, into a float buffer.
#define ATTEND_ROW 64

void fb_attend_f16(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values, size_t ld,
                   size_t n, float scale, float *scores, float *out) {
    if (hd % 8 == 0 && fb__kernels()->attend_f16) {
        fb__kernels()->attend_f16(q, groups, hd, keys, values, ld, n, scale, scores, out);
        return;
    }
    float row[ATTEND_ROW];
    for (size_t i = 0; i < groups * n; i++) scores[i] = 0.0f;
    for (size_t j = 0; j < n; j++)
        for (size_t i = 0; i < hd; i += ATTEND_ROW) {
            const size_t m = hd - i < ATTEND_ROW ? hd - i : ATTEND_ROW;
            fb_f16_to_f32_array(keys + j * ld + i, row, m);
            for (size_t g = 0; g < groups; g++) scores[g * n + j] += fb_dot(q + g * hd + i, row, m);
        }
    for (size_t g = 0; g < groups; g++) {
        for (size_t j = 0; j < n; j++) scores[g * n + j] *= scale;
        fb_softmax(scores + g * n, n);
    }
    for (size_t i = 0; i < groups * hd; i++) out[i] = 0.0f;
    for (size_t j = 0; j < n; j++)
        for (size_t i = 0; i < hd; i += ATTEND_ROW) {
            const size_t m = hd - i < ATTEND_ROW ? hd - i : ATTEND_ROW;
            fb_f16_to_f32_array(values + j * ld + i, row, m);
            for (size_t g = 0; g < groups; g++) fb_axpy(scores[g * n + j], row, out + g * hd + i, m);
        }
}

void fb_axpy(float a, const float *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

void fb_add_bias(float *y, const float *bias, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < n; i++) y[r * n + i] += bias[i];
}

void fb_add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void fb_mul(const float *a, const float *b, float *y, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}

// Blocks of CONV_BLOCK channels by CONV_LAGS lags: a block's sums stay in registers over its lags, and the
// CONV_LAGS rows of taps and of each ring that a lag block reads (one 4 KB page each at 1,024 channels) stay in
// the L1 TLB and in L2 while the channel blocks and rows go over them. (Sweeping all lags per channel block touched
// ~1,000 pages per block: slower at one token than the plain row-by-row loop.)
#define CONV_BLOCK 32
#define CONV_LAGS 16

void fb_causal_conv(const float *taps, size_t ntaps, const float *const *rings, const size_t *ring_rows,
                    const size_t *pos, size_t t, size_t dt, size_t c0, size_t c1, float *z) {
    for (size_t j0 = 0; j0 < ntaps; j0 += CONV_LAGS)
        for (size_t r = 0; r < t; r++) {
            const size_t rows = ring_rows[r], used = pos[r] + 1 < ntaps ? pos[r] + 1 : ntaps;
            if (j0 >= used) continue;
            const size_t j1 = used - j0 < CONV_LAGS ? used : j0 + CONV_LAGS;
            const size_t q0 = (pos[r] - j0) % rows;  // the ring row of position pos[r] - j0
            for (size_t c = c0; c < c1; c += CONV_BLOCK) {
                const size_t w = c1 - c < CONV_BLOCK ? c1 - c : CONV_BLOCK;
                float *zr = z + r * dt + c;
                float acc[CONV_BLOCK];
                for (size_t i = 0; i < CONV_BLOCK; i++) acc[i] = i < w ? zr[i] : 0.0f;
                size_t q = q0;  // stepped down per lag (no division per lag)
                for (size_t j = j0; j < j1; j++) {
                    const float *k = taps + j * dt + c, *x = rings[r] + q * dt + c;
                    if (w == CONV_BLOCK)
                        for (size_t i = 0; i < CONV_BLOCK; i++) acc[i] += k[i] * x[i];
                    else
                        for (size_t i = 0; i < w; i++) acc[i] += k[i] * x[i];
                    q = q ? q - 1 : rows - 1;
                }
                for (size_t i = 0; i < w; i++) zr[i] = acc[i];
            }
        }
}

