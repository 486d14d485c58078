// AArch64 part of the batched products (batched.c): the packed int8 GEMMs for q4 and q8 weights with the ARMv8.2
// dot product (SDOT), used when fb_matmul runs its "neon-dotprod" path. Same scheme, packed layout and driver as the
// AVX2 kernels in batched_x86.c (the layout: batched_internal.h):
//   micro-kernel: one 16-byte register holds 4 rows x 4 weights; SDOT by lane against 4 activation bytes adds
//         each row's 4 products into its i32 lane (exact, signed x signed: no i16 stage or sign trick as on AVX2);
//         per group, to float once: acc += s_row * (d * dot + ex), where for q4 ex = -8 * d * sum(q) puts the
//         nibbles' +8 offset back and for q8 ex = 0.
//   Tile: 4 blocks of 4 rows (16 rows) x 3 tokens = 12 i32 + 12 f32 accumulators of the 32 vector registers.
#include "batched_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define DP __attribute__((target("arch=armv8.2-a+dotprod")))
#define DPI static inline __attribute__((always_inline, target("arch=armv8.2-a+dotprod")))

#define PK_ROWS FB__PK_ROWS
#define PK_GROUP_BYTES FB__PK_GROUP_BYTES
#define PK_TOKENS 3

// Packs rows [r0, r1) (at most PK_ROWS; missing rows get zero weights and scales), all groups.
static inline __attribute__((always_inline)) void pack_panel(const int Q8, const fb_matrix *w, size_t r0, size_t r1,
                                                             uint8_t *panel, float *scales) {
    const size_t ng = w->cols / 32, row_bytes = Q8 ? w->cols : w->cols / 2, group_bytes = Q8 ? 32 : 16;
    const uint8_t *q = w->data;
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
            if (r < r1 && Q8) {
                memcpy(bytes, q + r * row_bytes + g * 32, 32);
            } else if (r < r1) {
                const uint8x16_t b = vld1q_u8(q + r * row_bytes + g * 16);
                vst1q_u8(bytes, vandq_u8(b, vdupq_n_u8(15)));  // weights 0..15 of the group
                vst1q_u8(bytes + 16, vshrq_n_u8(b, 4));        // weights 16..31
            } else {
                memset(bytes, 0, sizeof bytes);
            }
            scales[g * PK_ROWS + i] = r < r1 ? fb_f16_to_f32(w->scales[r * ng + g]) : 0.0f;
            for (int s = 0; s < 8; s++) memcpy(pg + s * 64 + i * 4, bytes + 4 * s, 4);
        }
    }
}

static void pack_q4_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(0, w, r0, r1, panel, scales);
}

static void pack_q8_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(1, w, r0, r1, panel, scales);
}

// y[t0 + k][0..nr) for k < NT over the 16 rows of a panel.
DPI void tile(const int Q8, const int NT, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a,
              size_t t0, float *y, size_t ldy, size_t nr) {
    const int8_t *xq[PK_TOKENS];
    const float *dx[PK_TOKENS], *ex[PK_TOKENS];
    for (int k = 0; k < NT; k++) {
        xq[k] = a->xq + (t0 + k) * a->cols;
        dx[k] = a->dx + (t0 + k) * ng;
        ex[k] = a->ex + (t0 + k) * ng;
    }
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
            for (int k = 0; k < NT; k++) xv[k] = vld1q_s8(xq[k] + g * 32 + 16 * h);
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
        for (int k = 0; k < NT; k++) {
            const float32x4_t e = vdupq_n_f32(Q8 ? 0.0f : ex[k][g]);
            const float d = dx[k][g];
            for (int b = 0; b < 4; b++) {
                const float32x4_t v = vfmaq_n_f32(e, vcvtq_f32_s32(dot[b][k]), d);
                acc[b][k] = vfmaq_f32(acc[b][k], v, vld1q_f32(scales + g * PK_ROWS + b * 4));
            }
        }
    }
    for (int k = 0; k < NT; k++) {
        float out[PK_ROWS];
        for (int b = 0; b < 4; b++) vst1q_f32(out + b * 4, acc[b][k]);
        float *yt = y + (t0 + k) * ldy;
        for (size_t i = 0; i < nr; i++) yt[i] = out[i];
    }
}

DPI void panel_tokens(const int Q8, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a,
                      size_t t0, size_t t1, float *y, size_t ldy, size_t nr) {
    size_t t = t0;
    for (; t + PK_TOKENS <= t1; t += PK_TOKENS) tile(Q8, PK_TOKENS, ng, panel, scales, a, t, y, ldy, nr);
    switch (t1 - t) {
    case 2: tile(Q8, 2, ng, panel, scales, a, t, y, ldy, nr); break;
    case 1: tile(Q8, 1, ng, panel, scales, a, t, y, ldy, nr); break;
    default: break;
    }
}

DP static void q4_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens(0, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

DP static void q8_panel_tokens(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                               size_t t1, float *y, size_t ldy, size_t nr) {
    panel_tokens(1, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

const fb__pk_kernel fb__pk_dotprod_q4 = {pack_q4_panel, q4_panel_tokens};
const fb__pk_kernel fb__pk_dotprod_q8 = {pack_q8_panel, q8_panel_tokens};

#else
typedef int fb_batched_arm_unused;
#endif
