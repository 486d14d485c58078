// Element-wise and small-vector operations of the model graphs (norms, activations, RoPE, attention pieces).
// Portable C written to auto-vectorise; each is the reference the SIMD variants will be tested against.
#ifndef FIREBOLT_OPS_H
#define FIREBOLT_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// y = x / sqrt(mean(x^2) + eps) * w          (LFM2 RMSNorm; y may alias x)
void fb_rmsnorm(const float *x, const float *w, float *y, size_t n, float eps);
// y = (x - mean) / sqrt(var + eps) * w + b   (PyTorch LayerNorm, biased variance; y may alias x)
void fb_layernorm(const float *x, const float *w, const float *b, float *y, size_t n, float eps);
// y = silu(a) * b                             (SwiGLU; y may alias a or b)
void fb_silu_mul(const float *a, const float *b, float *y, size_t n);
// x = gelu(x), tanh approximation ("gelu_pytorch_tanh") / exact erf form
void fb_gelu_tanh(float *x, size_t n);
void fb_gelu_erf(float *x, size_t n);
// x = softmax(x) over n values (max-subtracted; entries of -INFINITY become 0)
void fb_softmax(float *x, size_t n);
// Rotate-half RoPE on `heads` vectors of head_dim, in place; cos/sin hold head_dim/2 values for this position.
void fb_rope(float *x, size_t heads, size_t head_dim, const float *cos_table, const float *sin_table);
float fb_dot(const float *a, const float *b, size_t n);
// Attention of one new token for `groups` query heads that share a key/value head (grouped-query attention):
// for g < groups, s_j = scale * q_g . k_j over the n cached positions (q_g = q + g*hd, k_j = keys + j*ld),
// p = softmax(s), out_g = sum_j p_j v_j (v_j = values + j*ld; out_g = out + g*hd). `scores` is scratch for
// groups * n floats.
void fb_attend(const float *q, size_t groups, size_t hd, const float *keys, const float *values, size_t ld, size_t n,
               float scale, float *scores, float *out);
// fb_attend over a cache of IEEE binary16 keys and values (read as their exact float values; everything else in
// float as fb_attend).
void fb_attend_f16(const float *q, size_t groups, size_t hd, const uint16_t *keys, const uint16_t *values, size_t ld,
                   size_t n, float scale, float *scores, float *out);
// y += a * x
void fb_axpy(float a, const float *x, float *y, size_t n);
// y = x + bias (row of n), for `rows` rows of stride n
void fb_add_bias(float *y, const float *bias, size_t rows, size_t n);
// y += x
void fb_add(float *y, const float *x, size_t n);
// y = a * b (element-wise)
void fb_mul(const float *a, const float *b, float *y, size_t n);
// A causal depthwise convolution over rings of past inputs (the S4 block's long filter), channels [c0, c1) of t
// rows: z[r][ch] += sum over j = 0 .. min(pos[r], ntaps - 1) of taps[j][ch] * x_r(pos[r] - j)[ch], where x_r(q) is
// row q % ring_rows[r] of rings[r] (rows of dt floats; rows[r] of z likewise). For every element the lags are
// added in ascending order, as a token-by-token loop adds them. The caller keeps every position a row reads in its
// ring (and splits the channels across threads).
void fb_causal_conv(const float *taps, size_t ntaps, const float *const *rings, const size_t *ring_rows,
                    const size_t *pos, size_t t, size_t dt, size_t c0, size_t c1, float *z);

#ifdef __cplusplus
}
#endif
#endif
