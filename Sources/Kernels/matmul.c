// fb_matmul: the portable scalar reference (every kernel set is tested against it) and the call through the registry.
#include "kernels_internal.h"

#include "registry.h"

// ---- scalar reference -------------------------------------------------------------------------------
// Reads the documented layouts directly; per group of 32, accumulates q*x in float, then scales.

void fb__matmul_scalar(FB__MM_ARGS) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    for (size_t t = 0; t < n; t++) {
        const float *xt = x + t * ldx;
        for (size_t r = row_begin; r < row_end; r++) {
            float sum = 0.0f;
            switch (w->type) {
            case FB_F32: {
                const float *wr = (const float *)w->data + r * cols;
                for (size_t c = 0; c < cols; c++) sum += wr[c] * xt[c];
                break;
            }
            case FB_F16: {
                const uint16_t *wr = (const uint16_t *)w->data + r * cols;
                for (size_t c = 0; c < cols; c++) sum += fb_f16_to_f32(wr[c]) * xt[c];
                break;
            }
            case FB_Q8: {
                const int8_t *wr = (const int8_t *)w->data + r * cols;
                for (size_t g = 0; g < ng; g++) {
                    float acc = 0.0f;
                    for (int i = 0; i < FB_GROUP; i++)
                        acc += (float)wr[g * FB_GROUP + i] * xt[g * FB_GROUP + i];
                    sum += acc * fb_f16_to_f32(w->scales[r * ng + g]);
                }
                break;
            }
            case FB_Q4:
            case FB_Q4NL: {
                // Both read a 4-bit code per weight: q4's value is code - 8, q4nl's its level.
                static const int8_t q4_levels[16] = {-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7};
                const int8_t *level = w->type == FB_Q4 ? q4_levels : fb_q4nl_levels;
                const uint8_t *wr = (const uint8_t *)w->data + r * cols / 2;
                for (size_t g = 0; g < ng; g++) {
                    const uint8_t *b = wr + g * FB_GROUP / 2;
                    const float *xg = xt + g * FB_GROUP;
                    float acc = 0.0f;
                    for (int i = 0; i < FB_GROUP / 2; i++) {
                        acc += (float)level[b[i] & 15] * xg[i];
                        acc += (float)level[b[i] >> 4] * xg[i + 16];
                    }
                    sum += acc * fb_f16_to_f32(w->scales[r * ng + g]);
                }
                break;
            }
            }
            y[t * ldy + r] = sum;
        }
    }
}

void fb_matmul(const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y, size_t ldy,
               size_t row_begin, size_t row_end) {
    if (n == 0 || row_begin >= row_end) return;
    fb__kernels()->matmul(w, x, ldx, n, y, ldy, row_begin, row_end);
}
