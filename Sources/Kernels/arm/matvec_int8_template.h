// Template of the AArch64 int8-activation decode kernels (q4/q8 weights, n <= 4 tokens); included
// by arm/matvec.c once for plain NEON and once for the dot-product extension, with:
//   QX(name)  the set's prefix,  QATTR  a function attribute (empty or the target),
//   QSDOT     1: SDOT (vdotq_s32), 0: SMULL/SMLAL2 into int16 then SADALP into int32.
// The method is the x86 one (x86/matvec_int8_template.h, Kernels.h): activations quantized per group of 32 to
// int8 with the same rounding (FCVTNS rounds to nearest, ties to even, like CVTPS2DQ), exact int32
// group dot products, then (weight scale * activation scale) in float. q4 uses the stored nibble
// (0..15) and subtracts 8 * sum(qx) per group through one float dot product per row, as on x86.
// Groups go 4 at a time: four int32x4 group dots are summed pairwise (ADDP) into one vector of the
// 4 group sums, which meets the 4 scales (natural order) in one FMA.
// q4nl looks its nibbles up in the signed level table (TBL) and needs no correction: the dot product is signed x
// signed here, and without SDOT four products of |level| <= 64 and |qx| <= 127 still fit an int16 lane.

#define QI static inline __attribute__((always_inline)) QATTR
#define QF static QATTR

// d[g] = amax / 127, q = round-to-nearest-even(x * 127 / amax) (0 when amax < FB__ACT_TINY), in
// order; with c, c[g] = 8 * sum(q).
QI void QX(quant_x)(const float *x, size_t cols, int8_t *q, float *d, float *c) {
    const size_t ng = cols / FB_GROUP;
    for (size_t g = 0; g < ng; g++) {
        const float *xg = x + g * FB_GROUP;
        float32x4_t v[8];
        uint32x4_t m = vdupq_n_u32(0);
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(xg + 4 * j);
            // max |x| on the bit patterns: a NaN (or inf) wins, as in the x86 kernels.
            m = vmaxq_u32(m, vandq_u32(vreinterpretq_u32_f32(v[j]), vdupq_n_u32(0x7fffffffu)));
        }
        const uint32_t mb = vmaxvq_u32(m);
        float amax;
        memcpy(&amax, &mb, 4);
        d[g] = amax / 127.0f;
        const float id = amax >= FB__ACT_TINY ? 127.0f / amax : 0.0f;
        int32x4_t i[8], s = vdupq_n_s32(0);
        for (int j = 0; j < 8; j++) {
            i[j] = vcvtnq_s32_f32(vmulq_n_f32(v[j], id));
            s = vaddq_s32(s, i[j]);
        }
        if (c) c[g] = 8.0f * (float)vaddvq_s32(s);
        for (int h = 0; h < 2; h++) {
            const int16x8_t a = vcombine_s16(vqmovn_s32(i[4 * h]), vqmovn_s32(i[4 * h + 1]));
            const int16x8_t b = vcombine_s16(vqmovn_s32(i[4 * h + 2]), vqmovn_s32(i[4 * h + 3]));
            vst1q_s8(q + g * FB_GROUP + 16 * h, vcombine_s8(vqmovn_s16(a), vqmovn_s16(b)));
        }
    }
}

// acc + per-lane sums of 4 consecutive s8 x s8 products (16 bytes in, 4 int32 out).
QI int32x4_t QX(dot16)(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if QSDOT
    return vdotq_s32(acc, a, b);
#else
    // |a * b| <= 128 * 127, so two products fit in int16; SADALP pairs them into int32.
    return vpadalq_s16(acc, vmlal_high_s8(vmull_s8(vget_low_s8(a), vget_low_s8(b)), a, b));
#endif
}

// Dot of one q4 group (16 bytes of nibbles) with 32 int8 activations, as 4 int32 lanes: the nibbles themselves (NL
// 0), or q4nl's levels (NL 1, `levels` holding fb_q4nl_levels).
QI int32x4_t QX(q4dot)(const int NL, int8x16_t levels, const uint8_t *wb, const int8_t *xq) {
    const uint8x16_t b = vld1q_u8(wb);
    int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(b, vdupq_n_u8(15))), hi = vreinterpretq_s8_u8(vshrq_n_u8(b, 4));
    if (NL) {
        lo = vqtbl1q_s8(levels, vreinterpretq_u8_s8(lo));
        hi = vqtbl1q_s8(levels, vreinterpretq_u8_s8(hi));
    }
#if QSDOT
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), lo, vld1q_s8(xq)), hi, vld1q_s8(xq + 16));
#else
    // nibble * x <= 15 * 127, |level * x| <= 64 * 127: four products fit in int16.
    const int8x16_t xl = vld1q_s8(xq), xh = vld1q_s8(xq + 16);
    int16x8_t t = vmull_s8(vget_low_s8(lo), vget_low_s8(xl));
    t = vmlal_high_s8(t, lo, xl);
    t = vmlal_s8(t, vget_low_s8(hi), vget_low_s8(xh));
    t = vmlal_high_s8(t, hi, xh);
    return vpaddlq_s16(t);
#endif
}

QI int32x4_t QX(q8dot)(const int8_t *wq, const int8_t *xq) {
    return QX(dot16)(QX(dot16)(vdupq_n_s32(0), vld1q_s8(wq), vld1q_s8(xq)), vld1q_s8(wq + 16), vld1q_s8(xq + 16));
}

// One weight row r against NT tokens.
QI void QX(q_row)(const int type, const int NT, const fb_matrix *w, const fb__decode_act *a, float *y, size_t ldy, size_t r) {
    const size_t cols = w->cols, ng = cols / FB_GROUP, ng4 = ng & ~(size_t)3;
    const size_t gb = type == FB_Q8 ? 32 : 16;  // weight bytes per group
    const int8x16_t levels = vld1q_s8(fb_q4nl_levels);
    const uint8_t *wr = (const uint8_t *)w->data + r * ng * gb;
    const uint16_t *ws = w->scales + r * ng;
    float32x4_t acc[4], cor[4];
    float tail[4];
    for (int t = 0; t < NT; t++) {
        acc[t] = cor[t] = vdupq_n_f32(0.0f);
        tail[t] = 0.0f;
    }
    for (size_t g = 0; g < ng4; g += 4) {
        __builtin_prefetch(wr + g * gb + FB__PFD);
        if (type == FB_Q8) __builtin_prefetch(wr + g * gb + FB__PFD + 64);
        const float32x4_t s = vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(ws + g)));
        for (int t = 0; t < NT; t++) {
            const int8_t *xq = a->q[t] + g * FB_GROUP;
            int32x4_t e[4];
            for (int k = 0; k < 4; k++)
                e[k] = type != FB_Q8 ? QX(q4dot)(type == FB_Q4NL, levels, wr + (g + k) * gb, xq + k * FB_GROUP)
                                     : QX(q8dot)((const int8_t *)wr + (g + k) * gb, xq + k * FB_GROUP);
            const int32x4_t h = vpaddq_s32(vpaddq_s32(e[0], e[1]), vpaddq_s32(e[2], e[3]));
            const float32x4_t sd = vmulq_f32(s, vld1q_f32(a->d[t] + g));
            acc[t] = vfmaq_f32(acc[t], vcvtq_f32_s32(h), sd);
            if (type == FB_Q4) cor[t] = vfmaq_f32(cor[t], sd, vld1q_f32(a->c[t] + g));
        }
    }
    for (size_t g = ng4; g < ng; g++) {
        const float s = fb_f16_to_f32(ws[g]);
        for (int t = 0; t < NT; t++) {
            const int8_t *xq = a->q[t] + g * FB_GROUP;
            const int32x4_t e = type != FB_Q8 ? QX(q4dot)(type == FB_Q4NL, levels, wr + g * gb, xq)
                                              : QX(q8dot)((const int8_t *)wr + g * gb, xq);
            const float sd = s * a->d[t][g];
            tail[t] += sd * (float)vaddvq_s32(e) - (type == FB_Q4 ? sd * a->c[t][g] : 0.0f);
        }
    }
    for (int t = 0; t < NT; t++) y[t * ldy + r] = vaddvq_f32(acc[t]) - vaddvq_f32(cor[t]) + tail[t];
}

QF void QX(matvec_q)(FB__MM_ARGS) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    const int q4 = w->type == FB_Q4;
    fb__decode_act a;
    __attribute__((aligned(64))) uint8_t stack[FB__QACT_STACK];
    void *heap = fb__decode_act_layout(&a, stack, sizeof stack, n, cols, ng);
    for (size_t t = 0; t < n; t++) {
        QX(quant_x)(x + t * ldx, cols, (int8_t *)a.q[t], (float *)a.d[t], q4 ? (float *)a.c[t] : NULL);
    }
#define QROWS(TYPE, NT) \
    for (size_t r = row_begin; r < row_end; r++) QX(q_row)(TYPE, NT, w, &a, y, ldy, r)
    if (w->type == FB_Q4NL) {
        switch (n) {
        case 1: QROWS(FB_Q4NL, 1); break;
        case 2: QROWS(FB_Q4NL, 2); break;
        case 3: QROWS(FB_Q4NL, 3); break;
        default: QROWS(FB_Q4NL, 4); break;
        }
    } else if (q4) {
        switch (n) {
        case 1: QROWS(FB_Q4, 1); break;
        case 2: QROWS(FB_Q4, 2); break;
        case 3: QROWS(FB_Q4, 3); break;
        default: QROWS(FB_Q4, 4); break;
        }
    } else {
        switch (n) {
        case 1: QROWS(FB_Q8, 1); break;
        case 2: QROWS(FB_Q8, 2); break;
        case 3: QROWS(FB_Q8, 3); break;
        default: QROWS(FB_Q8, 4); break;
        }
    }
#undef QROWS
    free(heap);
}

#undef QI
#undef QF
// The includer's parameters too, so that the next instruction set starts clean.
#undef QX
#undef QATTR
#undef QSDOT
