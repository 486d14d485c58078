// Kernels: the narrow C API the runtime and the converter call for every hot loop.
//
// Weight layouts (the .fbm storage types; formats/fbm.md is the normative description):
//   f32  rows*cols floats, row-major ([out, in], as PyTorch stores Linear weights).
//   f16  rows*cols IEEE binary16 values, row-major.
//   q8   quants: rows*cols int8, row-major; then scales: rows*(cols/32) f16, row-major.
//        w[r][c] = scales[r*(cols/32) + c/32] * quants[r*cols + c].
//   q4   quants: rows*cols/2 bytes, row-major, 16 bytes per group of 32 weights; then scales as q8.
//        Within group g of row r (bytes at r*cols/2 + g*16): byte i (0..15) holds
//        weight 32g+i in its low nibble and weight 32g+i+16 in its high nibble, each stored as q+8 (q in -8..7).
//        w = scale * (nibble - 8).
//   q4nl as q4 (same bytes, same nibble order, same scales), but the nibble indexes a fixed non-uniform grid:
//        w = scale * fb_q4nl_levels[nibble]. The 16 levels are denser near zero, where trained weights are.
// Quantized types need cols % 32 == 0 (FB_GROUP).
#ifndef FIREBOLT_KERNELS_H
#define FIREBOLT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FB_GROUP 32

typedef enum { FB_F32 = 0, FB_F16 = 1, FB_Q8 = 2, FB_Q4 = 3, FB_Q4NL = 4 } fb_dtype;

// The q4nl grid, ascending, in [-64, 63]: within that range so that level + 64 is a u8 operand of 0..127, whose
// products with int8 activations pair-sum within int16 (2 * 127 * 127) on the x86 kernels' VPMADDUBSW.
extern const int8_t fb_q4nl_levels[16];

// A weight matrix as stored: `data` points at values (f32/f16) or quants (q8/q4); `scales` at the f16 scales.
typedef struct {
    fb_dtype type;
    size_t rows, cols;
    const void *data;
    const uint16_t *scales;
} fb_matrix;

// ---- Half precision ----------------------------------------------------------------------------
uint16_t fb_f32_to_f16(float x);  // round to nearest even; overflow -> inf; NaN kept
float fb_f16_to_f32(uint16_t h);
void fb_f32_to_f16_array(const float *src, uint16_t *dst, size_t n);
void fb_f16_to_f32_array(const uint16_t *src, float *dst, size_t n);
// bfloat16 -> f32 (exact).
void fb_bf16_to_f32_array(const uint16_t *src, float *dst, size_t n);

// ---- Quantization (converter side) ---------------------------------------------------------------
// Bytes a quantized matrix needs for its quants and for its scales.
size_t fb_quant_bytes(fb_dtype type, size_t rows, size_t cols);
size_t fb_scale_bytes(fb_dtype type, size_t rows, size_t cols);
// Quantize rows [row_begin, row_end) of a row-major f32 matrix into the layout above.
// `quants` and `scales` point at the start of the whole matrix's planes.
void fb_quantize_q8(const float *w, size_t cols, size_t row_begin, size_t row_end, int8_t *quants,
                    uint16_t *scales);
void fb_quantize_q4(const float *w, size_t cols, size_t row_begin, size_t row_end, uint8_t *quants,
                    uint16_t *scales);
// q4nl: per group, the f16 scale that minimises the squared error over a search of candidate scales, then each
// weight's nearest level.
void fb_quantize_q4nl(const float *w, size_t cols, size_t row_begin, size_t row_end, uint8_t *quants,
                      uint16_t *scales);
// The Q4_0-style baseline (scale = signed max / -8, round, clamp): same layout, kept for comparison.
void fb_quantize_q4_baseline(const float *w, size_t cols, size_t row_begin, size_t row_end,
                             uint8_t *quants, uint16_t *scales);

// ---- Reading weights ------------------------------------------------------------------------------
// Dequantize / convert one row to f32 (embedding lookups, tests).
void fb_matrix_row(const fb_matrix *w, size_t row, float *out);

// y[t*ldy + r] = sum_c W[r][c] * x[t*ldx + c]  for t in [0, n), r in [row_begin, row_end).
// The caller splits rows across threads; one call never spawns threads.
// Decode products (q8/q4 weights, n <= 4) on the SIMD paths quantize each token's activations to int8
// per group of 32, like llama.cpp's Q8_0 (amax = max|x|, d = amax / 127, q = x * (127 / amax) rounded
// to nearest even; groups with amax < 2^-100 become zeros) and sum exact integer group dot products
// times (weight scale * d). Each result then differs from the float product by at most
// sum_g (amax_g / 254) * sum_{i in g} |w_i| plus float rounding (typically ~0.5% relative RMS); NaN or
// inf activations give non-finite results. The scalar path, f32/f16 weights and n > 4 are float.
void fb_matmul(const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y, size_t ldy,
               size_t row_begin, size_t row_end);

// Which implementation fb_matmul uses: "scalar", "avx2", "avx2-vnni" (AVX-VNNI), "avx512" (F/BW/VL),
// "avx512-vnni", "neon", "neon-dotprod" (ARMv8.2 SDOT). Chosen once from the CPU (the last of these it
// supports), overridable with FB_KERNELS=<name> (falls back to scalar if unsupported: the tools check FB_KERNELS
// with fb_kernels_check first and refuse a bad one).
const char *fb_kernels_name(void);
// Force a path (tests); returns 0 on success, -1 if the CPU lacks it.
int fb_kernels_select(const char *name);
// 1 if `name` is a kernel set this CPU runs, 0 if it is one of this build's sets that the CPU lacks, -1 if it is none
// of this build's sets (each build has its architecture's: scalar and the x86 ones, or scalar and the ARM ones).
int fb_kernels_check(const char *name);
// This build's kernel set names, comma-separated in order of preference: all of them, or those this CPU runs.
const char *fb_kernels_list(int runnable_only);

// ---- Hashing ----------------------------------------------------------------------------------------
// XXH64 (the published xxHash 64-bit algorithm), for the .fbm per-tensor checksums.
uint64_t fb_xxh64(const void *data, size_t len, uint64_t seed);

#ifdef __cplusplus
}
#endif

#include "Ops.h"
#include "Probe.h"
#include "Pool.h"
#include "Batched.h"
#endif
