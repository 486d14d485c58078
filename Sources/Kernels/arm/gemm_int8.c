// AArch64 part of the batched products (batched.c): the packed int8 GEMMs for q4 and q8 weights, used when fb_matmul
// runs its "neon-dotprod" path (ARMv8.2 SDOT) or its "neon" one (ARMv8.0: Cortex-A53 / A72, the Raspberry Pi 3 and 4).
// Same scheme, packed layout and driver as the AVX2 kernels in x86/gemm_int8.c (the layout: batched_internal.h):
//   micro-kernel: one 16-byte register holds 4 rows x 4 weights. SDOT by lane against 4 activation bytes adds each
//         row's 4 products into its i32 lane (exact, signed x signed: no i16 stage or sign trick as on AVX2). Without
//         SDOT, SMLAL multiplies the register by the 4 bytes repeated into i16 product lanes (2 rows x 4 weights per
//         half): q4 sums 8 steps there (|sum| <= 8 * 15 * 127 < 2^15), q8 two (<= 2 * 128 * 127), then pairwise
//         adds (SADDLP / SADALP, ADDP) give the same per-row i32 lanes; 2 (q4) or 3 (q8) instructions per 16
//         multiply-adds against SDOT's 1, and fewer than the float route's conversions and FMAs (by instruction
//         count: no ARM hardware measured it).
//         Per group, to float once: acc += s_row * (d * dot + ex), where for q4 ex = -8 * d * sum(q) puts the
//         nibbles' +8 offset back and for q8 ex = 0.
//   Tile: 4 blocks of 4 rows (16 rows) x 3 tokens = 12 i32 + 12 f32 accumulators of the 32 vector registers (plain
//         NEON q4: 24 i16 ones while a group runs).
#include "../batched_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define DP __attribute__((target("arch=armv8.2-a+dotprod")))
#define DPI static inline __attribute__((always_inline, target("arch=armv8.2-a+dotprod")))

#define PK_ROWS FB__PK_ROWS
#define PK_GROUP_BYTES FB__PK_GROUP_BYTES
#define PK_TOKENS 3

// The activations for the int8 route (batched_internal.h), as fb__quantize_act_scalar computes them: FCVTNS rounds
// to nearest with ties to even like its nearbyint, and the group's sum and ex are formed in the same order.
void fb__quantize_act_neon(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a) {
    const size_t cols = a->cols, ng = a->ng;
    for (size_t t = t0; t < t1; t++)
        for (size_t g = 0; g < ng; g++) {
            const float *xg = x + t * ldx + g * 32;
            float32x4_t v[8], m = vdupq_n_f32(0.0f);
            for (int j = 0; j < 8; j++) {
                v[j] = vld1q_f32(xg + 4 * j);
                m = vmaxq_f32(m, vabsq_f32(v[j]));
            }
            const float mx = vmaxvq_f32(m), d = mx / 127.0f, id = d > 0.0f ? 127.0f / mx : 0.0f;
            int32x4_t q[8], sum = vdupq_n_s32(0);
            for (int j = 0; j < 8; j++) {
                q[j] = vcvtnq_s32_f32(vmulq_n_f32(v[j], id));
                sum = vaddq_s32(sum, q[j]);
            }
            for (int h = 0; h < 2; h++) {
                const int16x8_t lo = vcombine_s16(vqmovn_s32(q[4 * h]), vqmovn_s32(q[4 * h + 1]));
                const int16x8_t hi = vcombine_s16(vqmovn_s32(q[4 * h + 2]), vqmovn_s32(q[4 * h + 3]));
                vst1q_s8(a->xq + t * cols + g * 32 + 16 * h, vcombine_s8(vqmovn_s16(lo), vqmovn_s16(hi)));
            }
            a->dx[t * ng + g] = d;
            a->ex[t * ng + g] = -8.0f * d * (float)vaddvq_s32(sum);
        }
}

// Packs rows [r0, r1) (at most PK_ROWS; missing rows get zero weights and scales), all groups: q4 as its nibbles
// 0..15, q8 as stored, q4nl as its signed levels (a table lookup of fb_q4nl_levels), which the q8 tiles multiply.
static inline __attribute__((always_inline)) void pack_panel(const fb_dtype type, const fb_matrix *w, size_t r0,
                                                             size_t r1, uint8_t *panel, float *scales) {
    const size_t ng = w->cols / 32, row_bytes = type == FB_Q8 ? w->cols : w->cols / 2,
                 group_bytes = type == FB_Q8 ? 32 : 16;
    const uint8_t *q = w->data;
    const uint8x16_t levels = vreinterpretq_u8_s8(vld1q_s8(fb_q4nl_levels));
    // The next 16 rows, one contiguous run of 16 * row_bytes, fetched a group's share per group, as the x86 pack
    // does: 16 interleaved row streams leave hardware prefetchers behind when the weights come from memory.
    const uint8_t *next = r0 + 2 * PK_ROWS <= w->rows ? q + (r0 + PK_ROWS) * row_bytes : NULL;
    for (size_t g = 0; g < ng; g++) {
        uint8_t *pg = panel + g * PK_GROUP_BYTES;
        if (next)
            for (size_t l = 0; l < PK_ROWS * group_bytes; l += 64)
                __builtin_prefetch(next + g * PK_ROWS * group_bytes + l, 0, 3);
        for (size_t i = 0; i < PK_ROWS; i++) {
            const size_t r = r0 + i;
            uint8_t bytes[32];  // the group's 32 weights, one byte each
            if (r < r1 && type == FB_Q8) {
                memcpy(bytes, q + r * row_bytes + g * 32, 32);
            } else if (r < r1) {
                const uint8x16_t b = vld1q_u8(q + r * row_bytes + g * 16);
                uint8x16_t lo = vandq_u8(b, vdupq_n_u8(15)), hi = vshrq_n_u8(b, 4);  // weights 0..15, 16..31
                if (type == FB_Q4NL) {
                    lo = vqtbl1q_u8(levels, lo);
                    hi = vqtbl1q_u8(levels, hi);
                }
                vst1q_u8(bytes, lo);
                vst1q_u8(bytes + 16, hi);
            } else {
                memset(bytes, 0, sizeof bytes);
            }
            scales[g * PK_ROWS + i] = r < r1 ? fb_f16_to_f32(w->scales[r * ng + g]) : 0.0f;
            for (int s = 0; s < 8; s++) memcpy(pg + s * 64 + i * 4, bytes + 4 * s, 4);
        }
    }
}

static void pack_q4_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q4, w, r0, r1, panel, scales);
}

static void pack_q8_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q8, w, r0, r1, panel, scales);
}

static void pack_q4nl_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q4NL, w, r0, r1, panel, scales);
}

// The tile's tokens: their int8 activations, scales and q4 offsets.
typedef struct {
    const int8_t *xq[PK_TOKENS];
    const float *dx[PK_TOKENS], *ex[PK_TOKENS];
} tile_tokens;

static inline __attribute__((always_inline)) tile_tokens tokens_from(const int NT, const fb__qact *a, size_t t0) {
    tile_tokens tt;
    for (int k = 0; k < NT; k++) {
        tt.xq[k] = a->xq + (t0 + k) * a->cols;
        tt.dx[k] = a->dx + (t0 + k) * a->ng;
        tt.ex[k] = a->ex + (t0 + k) * a->ng;
    }
    return tt;
}

// A group's integer dots (rows 4b..4b+3 of token k in dot[b][k]) into the float sums.
static inline __attribute__((always_inline)) void add_group(const int Q8, const int NT, const tile_tokens *tt, size_t g,
                                                           const float *scales, int32x4_t dot[4][PK_TOKENS],
                                                           float32x4_t acc[4][PK_TOKENS]) {
    for (int k = 0; k < NT; k++) {
        const float32x4_t e = vdupq_n_f32(Q8 ? 0.0f : tt->ex[k][g]);
        const float d = tt->dx[k][g];
        for (int b = 0; b < 4; b++) {
            const float32x4_t v = vfmaq_n_f32(e, vcvtq_f32_s32(dot[b][k]), d);
            acc[b][k] = vfmaq_f32(acc[b][k], v, vld1q_f32(scales + g * PK_ROWS + b * 4));
        }
    }
}

static inline __attribute__((always_inline)) void store_tile(const int NT, float32x4_t acc[4][PK_TOKENS], size_t t0,
                                                            float *y, size_t ldy, size_t nr) {
    for (int k = 0; k < NT; k++) {
        float out[PK_ROWS];
        for (int b = 0; b < 4; b++) vst1q_f32(out + b * 4, acc[b][k]);
        float *yt = y + (t0 + k) * ldy;
        for (size_t i = 0; i < nr; i++) yt[i] = out[i];
    }
}

// y[t0 + k][0..nr) for k < NT over the 16 rows of a panel, with SDOT.
DPI void tile(const int Q8, const int NT, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a,
              size_t t0, float *y, size_t ldy, size_t nr) {
    const tile_tokens tt = tokens_from(NT, a, t0);
    float32x4_t acc[4][PK_TOKENS];
    for (int b = 0; b < 4; b++)
        for (int k = 0; k < NT; k++) acc[b][k] = vdupq_n_f32(0.0f);
    for (size_t g = 0; g < ng; g++) {
        const int8_t *pg = (const int8_t *)panel + g * PK_GROUP_BYTES;
        int32x4_t dot[4][PK_TOKENS];
        for (int b = 0; b < 4; b++)
            for (int k = 0; k < NT; k++) dot[b][k] = vdupq_n_s32(0);
        for (int h = 0; h < 2; h++) {  // activations 16h..16h+15: steps 4h..4h+3
            int8x16_t xv[PK_TOKENS];
            for (int k = 0; k < NT; k++) xv[k] = vld1q_s8(tt.xq[k] + g * 32 + 16 * h);
#define STEP(L)                                                                                  \
    for (int b = 0; b < 4; b++) {                                                                \
        const int8x16_t wv = vld1q_s8(pg + (4 * h + (L)) * 64 + b * 16);                         \
        for (int k = 0; k < NT; k++) dot[b][k] = vdotq_laneq_s32(dot[b][k], wv, xv[k], (L));      \
    }
            STEP(0)
            STEP(1)
            STEP(2)
            STEP(3)
#undef STEP
        }
        add_group(Q8, NT, &tt, g, scales, dot, acc);
    }
    store_tile(NT, acc, t0, y, ldy, nr);
}

// The same without SDOT (see the top of the file).
static inline __attribute__((always_inline)) void tile_neon(const int Q8, const int NT, size_t ng, const uint8_t *panel,
                                                           const float *scales, const fb__qact *a, size_t t0, float *y,
                                                           size_t ldy, size_t nr) {
    const tile_tokens tt = tokens_from(NT, a, t0);
    float32x4_t acc[4][PK_TOKENS];
    for (int b = 0; b < 4; b++)
        for (int k = 0; k < NT; k++) acc[b][k] = vdupq_n_f32(0.0f);
    for (size_t g = 0; g < ng; g++) {
        const int8_t *pg = (const int8_t *)panel + g * PK_GROUP_BYTES;
        int32x4_t dot[4][PK_TOKENS];
        // lo: rows 4b, 4b+1 (4 product lanes each); hi: rows 4b+2, 4b+3. q4: i16 sums over the group; q8: i32 pair sums.
        int16x8_t lo16[4][PK_TOKENS], hi16[4][PK_TOKENS];
        int32x4_t lo32[4][PK_TOKENS], hi32[4][PK_TOKENS];
        for (int b = 0; b < 4; b++)
            for (int k = 0; k < NT; k++) {
                lo16[b][k] = hi16[b][k] = vdupq_n_s16(0);
                lo32[b][k] = hi32[b][k] = vdupq_n_s32(0);
            }
        for (int h = 0; h < 2; h++) {  // activations 16h..16h+15: steps 4h..4h+3
            int8x16_t xv[PK_TOKENS];
            for (int k = 0; k < NT; k++) xv[k] = vld1q_s8(tt.xq[k] + g * 32 + 16 * h);
            // Steps L and L + 1: the 4 activation bytes of each, repeated over the register.
#define PAIR(L)                                                                                              \
    {                                                                                                        \
        int8x16_t x0[PK_TOKENS], x1[PK_TOKENS];                                                              \
        for (int k = 0; k < NT; k++) {                                                                       \
            x0[k] = vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(xv[k]), (L)));                 \
            x1[k] = vreinterpretq_s8_s32(vdupq_laneq_s32(vreinterpretq_s32_s8(xv[k]), (L) + 1));             \
        }                                                                                                    \
        for (int b = 0; b < 4; b++) {                                                                        \
            const int8x16_t w0 = vld1q_s8(pg + (4 * h + (L)) * 64 + b * 16);                                 \
            const int8x16_t w1 = vld1q_s8(pg + (4 * h + (L) + 1) * 64 + b * 16);                             \
            for (int k = 0; k < NT; k++) {                                                                   \
                if (Q8) {                                                                                    \
                    const int16x8_t l = vmlal_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0[k])), vget_low_s8(w1), \
                                                 vget_low_s8(x1[k]));                                        \
                    const int16x8_t u = vmlal_high_s8(vmull_high_s8(w0, x0[k]), w1, x1[k]);                  \
                    lo32[b][k] = vpadalq_s16(lo32[b][k], l);                                                 \
                    hi32[b][k] = vpadalq_s16(hi32[b][k], u);                                                 \
                } else {                                                                                     \
                    lo16[b][k] = vmlal_s8(lo16[b][k], vget_low_s8(w0), vget_low_s8(x0[k]));                  \
                    hi16[b][k] = vmlal_high_s8(hi16[b][k], w0, x0[k]);                                       \
                    lo16[b][k] = vmlal_s8(lo16[b][k], vget_low_s8(w1), vget_low_s8(x1[k]));                  \
                    hi16[b][k] = vmlal_high_s8(hi16[b][k], w1, x1[k]);                                       \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    }
            PAIR(0)
            PAIR(2)
#undef PAIR
        }
        for (int b = 0; b < 4; b++)
            for (int k = 0; k < NT; k++)
                dot[b][k] = Q8 ? vpaddq_s32(lo32[b][k], hi32[b][k])
                               : vpaddq_s32(vpaddlq_s16(lo16[b][k]), vpaddlq_s16(hi16[b][k]));
        add_group(Q8, NT, &tt, g, scales, dot, acc);
    }
    store_tile(NT, acc, t0, y, ldy, nr);
}

#define PANEL_TOKENS(TILE)                                                                                  \
    size_t t = t0;                                                                                          \
    for (; t + PK_TOKENS <= t1; t += PK_TOKENS) TILE(Q8, PK_TOKENS, ng, panel, scales, a, t, y, ldy, nr);     \
    switch (t1 - t) {                                                                                       \
    case 2: TILE(Q8, 2, ng, panel, scales, a, t, y, ldy, nr); break;                                        \
    case 1: TILE(Q8, 1, ng, panel, scales, a, t, y, ldy, nr); break;                                        \
    default: break;                                                                                         \
    }

DPI void panel_tokens(const int Q8, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a,
                      size_t t0, size_t t1, float *y, size_t ldy, size_t nr) {
    PANEL_TOKENS(tile)
}

static inline __attribute__((always_inline)) void panel_tokens_neon(const int Q8, size_t ng, const uint8_t *panel,
                                                                   const float *scales, const fb__qact *a, size_t t0,
                                                                   size_t t1, float *y, size_t ldy, size_t nr) {
    PANEL_TOKENS(tile_neon)
}
#undef PANEL_TOKENS

DP static void q4_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens(0, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

DP static void q8_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens(1, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

static void q4_panel_tokens_neon(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                                 size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens_neon(0, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

static void q8_panel_tokens_neon(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                                 size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens_neon(1, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

const fb__pk_kernel fb__pk_dotprod_q4 = {pack_q4_panel, q4_panel_tokens, 1};
const fb__pk_kernel fb__pk_dotprod_q8 = {pack_q8_panel, q8_panel_tokens, 1};
const fb__pk_kernel fb__pk_neon_q4 = {pack_q4_panel, q4_panel_tokens_neon, 1};
const fb__pk_kernel fb__pk_neon_q8 = {pack_q8_panel, q8_panel_tokens_neon, 1};
const fb__pk_kernel fb__pk_dotprod_q4nl = {pack_q4nl_panel, q8_panel_tokens, 1};
const fb__pk_kernel fb__pk_neon_q4nl = {pack_q4nl_panel, q8_panel_tokens_neon, 1};

#else
typedef int fb_batched_arm_unused;
#endif
