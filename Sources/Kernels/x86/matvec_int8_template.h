// Template of the x86 decode kernels for q4/q8 weights with int8 activations (n <= 4 tokens), and
// of the f16 n == 1 kernel (f_rows, float); x86/matvec_int8.c includes it once per instruction set with:
//   QX(name)    the set's prefix for every function defined here
//   QT          the target attribute string
//   QVNNI       1: u8 x s8 dot products with VPDPBUSD (AVX-VNNI or AVX-512 VNNI), 0: VPMADDUBSW + VPMADDWD
//   QDPB(a,u,s) / QDPB128(a,u,s) [/ QDPB512]: acc + per-dword sums of u8 x s8 products (QVNNI only)
//   QW512       1: the set has 512-bit vectors (AVX-512 sets): the q4 blocks of 8 groups use them for 3-4 tokens
// The rest is 256 bits wide in every set (in the AVX-512 sets with EVEX encodings and 32 registers):
// q8 and the q4 tails are cheap next to the memory traffic, and 256-bit tails need no 4-group cases.
// One token (decode) and two take the 256-bit q4 blocks on AVX-512 too: on Zen 4 (AMD EPYC, AVX-512 VNNI) the
// 512-bit block read cold weights at 13-20 GB/s against 22-24 for the 256-bit one at 1 thread, though it is faster
// on weights in cache (docs/performance.md, 2026-12-06); with 3-4 tokens the work is compute-bound and 512 bits win.
//
// The algorithm (shared with the NEON kernels in arm/matvec.c and described in Kernels.h):
//   1. Each token's activations are quantized per group of 32 to int8, like llama.cpp's Q8_0:
//      amax = max |x|, d = amax / 127, q = round-to-nearest-even(x * (127 / amax)) (|q| <= 127).
//      NaN or inf wins the max, so it reaches d and the results (Kernels.h).
//   2. Per group, the integer dot product sum(qw * qx) is exact in int32, then
//      y += (weight scale * d) * float(dot).
//   q4 weights are used unsigned (the stored nibble n = qw + 8, 0..15, is the u8 operand of
//   VPMADDUBSW, no sign fix-up): sum(n * qx) - 8 * sum(qx), subtracted per group in float, where both
//   are exact integers (below 2^16), so the difference is the exact integer dot product.
//   q8 weights use the sign trick: |qw| (u8) x (qx with qw's sign) (s8), exact even for qw = -128.
//   q4nl weights go the q4 way: the nibble indexes a 16-byte table of level + 64 (0..127, one VPSHUFB), and
//   64 * sum(qx) comes off per group (c = 64 * sum(qx), below 2^19: exact in float).
//   Pair sums of VPMADDUBSW stay within int16: q4 2 * 15 * 127, q8 2 * 128 * 127, q4nl 2 * 127 * 127; q4's
//   two VPMADDUBSW results may be added in int16 (4 * 15 * 127), q4nl's may not, so it widens each to int32.

// Prefetch distance: FB__PFD rounded up to whole tiles of RB rows (so the address is in the same
// column position of a later tile).
#define QPF(tile_bytes) ((tile_bytes) * ((FB__PFD + (tile_bytes) - 1) / (tile_bytes)))
#define QI static inline __attribute__((always_inline)) FB_TARGET(QT)
#define QF static FB_TARGET(QT)

// Quantizes 32 floats per group (see above). lo = values 0-15 of a group, hi = values 16-31.
// layout 0 (q8): every group in order, d and c in order.
// layout 1 (q4, 256-bit): groups two by two as [g lo | g+1 lo | g hi | g+1 hi], which puts each
//   value under the nibble that holds its weight in a 32-byte load of two q4 groups; an odd last
//   group in order. Within each whole block of 8 groups, d and c go in the order q4_tile sums the
//   groups in: 0, 2, 4, 6, 1, 3, 5, 7.
// layout 2 (q4, 512-bit): whole blocks of 8 groups as two quads [g..g+3 lo | g..g+3 hi] (64-byte
//   loads of four q4 groups); the last ng % 8 groups as in layout 1; d and c in order.
// d[g] = amax / 127; with c, c[g] = coff * sum(q) (coff: the weights' offset, 8 for q4, 64 for q4nl).
QI void QX(quant_x)(const float *x, size_t cols, int layout, int8_t *q, float *d, float *c, float coff) {
    const size_t ng = cols / FB_GROUP, paired = layout ? ng & ~(size_t)1 : 0, ng8 = ng & ~(size_t)7;
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (size_t g = 0; g < ng; g++) {
        const float *xg = x + g * FB_GROUP;
        const __m256 v0 = _mm256_loadu_ps(xg), v1 = _mm256_loadu_ps(xg + 8), v2 = _mm256_loadu_ps(xg + 16),
                     v3 = _mm256_loadu_ps(xg + 24);
        // max |x| as integers: for non-negative floats the bit patterns order like the values,
        // and a NaN (or inf) wins, so it reaches d and the outputs.
        const __m256i a = _mm256_max_epi32(
            _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(v0), absmask),
                             _mm256_and_si256(_mm256_castps_si256(v1), absmask)),
            _mm256_max_epi32(_mm256_and_si256(_mm256_castps_si256(v2), absmask),
                             _mm256_and_si256(_mm256_castps_si256(v3), absmask)));
        __m128i m = _mm_max_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
        m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0x4e));
        m = _mm_max_epi32(m, _mm_shuffle_epi32(m, 0xb1));
        const float amax = _mm_cvtss_f32(_mm_castsi128_ps(m));
        const size_t k = g < ng8 && layout == 1 ? (g & ~(size_t)7) + (g & 1) * 4 + ((g & 7) >> 1) : g;
        d[k] = amax / 127.0f;
        const __m256 id = _mm256_set1_ps(amax >= FB__ACT_TINY ? 127.0f / amax : 0.0f);
        const __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, id)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, id)),
                      i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, id)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, id));
        if (c) {
            const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
            t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
            c[k] = coff * (float)_mm_cvtsi128_si32(t);
        }
        const __m256i b = _mm256_permutevar8x32_epi32(
            _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3)), order);
        if (g < ng8 && layout == 2) {
            int8_t *p = q + (g & ~(size_t)3) * FB_GROUP + (g & 3) * 16;
            _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(b));
            _mm_storeu_si128((__m128i *)(p + 64), _mm256_extracti128_si256(b, 1));
        } else if (g < paired) {
            int8_t *p = q + (g & ~(size_t)1) * FB_GROUP + (g & 1) * 16;
            _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(b));
            _mm_storeu_si128((__m128i *)(p + 32), _mm256_extracti128_si256(b, 1));
        } else {
            _mm256_storeu_si256((__m256i *)(q + g * FB_GROUP), b);
        }
    }
}

// int32 lanes += sum of u8 x s8 products (4 per lane).
#if QVNNI
#define QDOT1(acc, u, s) QDPB(acc, u, s)
#define QDOT2(u1, s1, u2, s2) QDPB(QDPB(_mm256_setzero_si256(), u1, s1), u2, s2)
#define QDOT2_128(u1, s1, u2, s2) QDPB128(QDPB128(_mm_setzero_si128(), u1, s1), u2, s2)
#define QDOT2W(u1, s1, u2, s2) QDOT2(u1, s1, u2, s2)
#else
#define QDOT1(acc, u, s) _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones16)
#define QDOT2(u1, s1, u2, s2) \
    _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u1, s1), _mm256_maddubs_epi16(u2, s2)), ones16)
#define QDOT2_128(u1, s1, u2, s2)                                                                  \
    _mm_madd_epi16(_mm_add_epi16(_mm_maddubs_epi16(u1, s1), _mm_maddubs_epi16(u2, s2)), \
                   _mm256_castsi256_si128(ones16))
// As QDOT2 for u8 operands up to 127 (q4nl): each VPMADDUBSW result widened to int32 before the add.
#define QDOT2W(u1, s1, u2, s2)                                                  \
    _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(u1, s1), ones16), \
                     _mm256_madd_epi16(_mm256_maddubs_epi16(u2, s2), ones16))
#endif

// Sums of the four int32 lanes in each 128-bit half of e0..e3, in two steps (so that only two
// vectors per token are live at a time): sum2x4(e0, e1) and sum2x4(e2, e3), then sum4x4 of those
// gives {e0, e1, e2, e3 | e0, e1, e2, e3}. (Unpacks and adds: VPHADDD is 3 uops at half the
// throughput on Zen 3.)
QI __m256i QX(sum2x4)(__m256i e0, __m256i e1) {
    return _mm256_add_epi32(_mm256_unpacklo_epi32(e0, e1), _mm256_unpackhi_epi32(e0, e1));
}
QI __m256i QX(sum4x4)(__m256i s01, __m256i s23) {
    return _mm256_add_epi32(_mm256_unpacklo_epi64(s01, s23), _mm256_unpackhi_epi64(s01, s23));
}

// q4 (NL 0) and q4nl (NL 1, the nibbles through the level table): RB rows x NT tokens of y for weight rows r0..r0+RB-1. Groups go 8 at a time (256-bit; the
// 512-bit variant is described in the loop): four 32-byte
// loads per row give four two-group dot products, summed across lanes into one vector of the 8 group
// dots in the order {0,2,4,6 | 1,3,5,7}; the row's 8 scales are shuffled into the same order (and
// quant_x stores d and c in it), so one conversion and one FMA per 8 groups apply the scales.
QI void QX(q4_tile)(const int NL, const int W512, const int RB, const int NT, const fb_matrix *w,
                    const fb__decode_act *a, float *y, size_t ldy, size_t r0) {
    const size_t cols = w->cols, ng = cols / FB_GROUP, ng8 = ng & ~(size_t)7, rowb = cols / 2;
    const size_t pf = QPF(RB * rowb);  // once here: a division the loop must not repeat
    const uint8_t *wq = (const uint8_t *)w->data + r0 * rowb;
    const uint16_t *ws = w->scales + r0 * ng;
    const __m256i m4 = _mm256_set1_epi8(15);
    const __m256i ones16 = _mm256_set1_epi16(1);
    // q4nl: level + 64 for each nibble, in both 128-bit lanes (VPSHUFB looks up within a lane).
    __attribute__((aligned(16))) uint8_t lut[16];
    for (int i = 0; i < 16; i++) lut[i] = (uint8_t)(fb_q4nl_levels[i] + 64);
    const __m256i lut256 = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)lut));
    (void)lut256;
    const __m128i sperm = _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    (void)ones16;
    (void)sperm;
    __m256 acc[4][4];
    for (int i = 0; i < RB; i++)
        for (int t = 0; t < NT; t++) acc[i][t] = _mm256_setzero_ps();
#if QW512
    if (W512) {
        // 512-bit: two 64-byte loads give the dots of two quads of groups (4 int32 lanes per group);
        // unpacks and adds sum each group's lanes, and one permute gathers the 8 sums in group order.
        const __m512i m4z = _mm512_set1_epi8(15);
        const __m512i onesz = _mm512_set1_epi16(1);
        const __m512i gather = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
        const __m512i lut512 = _mm512_broadcast_i32x4(_mm_load_si128((const __m128i *)lut));
        (void)onesz;
        (void)lut512;
        for (size_t g = 0; g < ng8; g += 8) {
            for (int i = 0; i < RB; i++) {
                const uint8_t *wr = wq + i * rowb + g * 16;
                _mm_prefetch((const char *)(wr + pf), _MM_HINT_T0);
                _mm_prefetch((const char *)(wr + pf + 64), _MM_HINT_T0);
                __m512i e[4][2];
                for (int k = 0; k < 2; k++) {
                    const __m512i b = _mm512_loadu_si512((const void *)(wr + 64 * k));
                    __m512i lo = _mm512_and_si512(b, m4z), hi = _mm512_and_si512(_mm512_srli_epi16(b, 4), m4z);
                    if (NL) {
                        lo = _mm512_shuffle_epi8(lut512, lo);
                        hi = _mm512_shuffle_epi8(lut512, hi);
                    }
                    for (int t = 0; t < NT; t++) {
                        const int8_t *xq = a->q[t] + g * FB_GROUP + 128 * k;
                        const __m512i xl = _mm512_loadu_si512((const void *)xq);
                        const __m512i xh = _mm512_loadu_si512((const void *)(xq + 64));
#if QVNNI
                        e[t][k] = QDPB512(QDPB512(_mm512_setzero_si512(), lo, xl), hi, xh);
#else
                        if (NL)
                            e[t][k] = _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(lo, xl), onesz),
                                                       _mm512_madd_epi16(_mm512_maddubs_epi16(hi, xh), onesz));
                        else
                            e[t][k] = _mm512_madd_epi16(
                                _mm512_add_epi16(_mm512_maddubs_epi16(lo, xl), _mm512_maddubs_epi16(hi, xh)), onesz);
#endif
                    }
                }
                const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ws + i * ng + g)));
                for (int t = 0; t < NT; t++) {
                    __m512i h = _mm512_add_epi32(_mm512_unpacklo_epi32(e[t][0], e[t][1]),
                                                 _mm512_unpackhi_epi32(e[t][0], e[t][1]));
                    h = _mm512_add_epi32(h, _mm512_shuffle_epi32(h, (_MM_PERM_ENUM)0x4e));
                    const __m256i dots = _mm512_castsi512_si256(_mm512_permutexvar_epi32(gather, h));
                    const __m256 sd = _mm256_mul_ps(s, _mm256_loadu_ps(a->d[t] + g));
                    const __m256 q = _mm256_sub_ps(_mm256_cvtepi32_ps(dots), _mm256_loadu_ps(a->c[t] + g));
                    acc[i][t] = _mm256_fmadd_ps(q, sd, acc[i][t]);
                }
            }
        }
    } else  // the 256-bit block below: every set's, and the AVX-512 sets' for one or two tokens
#else
    (void)W512;
#endif
    for (size_t g = 0; g < ng8; g += 8) {
        for (int i = 0; i < RB; i++) {
            const uint8_t *wr = wq + i * rowb + g * 16;
            // The same 128 bytes RB rows on: the next tile's (hardware prefetch alone leaves the
            // loop waiting on memory).
            _mm_prefetch((const char *)(wr + pf), _MM_HINT_T0);
            _mm_prefetch((const char *)(wr + pf + 64), _MM_HINT_T0);
            __m256i e[4][2], h[4][2];
            for (int p = 0; p < 4; p++) {
                const __m256i b = _mm256_loadu_si256((const __m256i *)(wr + 32 * p));
                __m256i lo = _mm256_and_si256(b, m4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m4);
                if (NL) {
                    lo = _mm256_shuffle_epi8(lut256, lo);
                    hi = _mm256_shuffle_epi8(lut256, hi);
                }
                for (int t = 0; t < NT; t++) {
                    const int8_t *xq = a->q[t] + (g + 2 * p) * FB_GROUP;
                    const __m256i xl = _mm256_loadu_si256((const __m256i *)xq),
                                  xh = _mm256_loadu_si256((const __m256i *)(xq + 32));
                    e[t][p & 1] = NL ? QDOT2W(lo, xl, hi, xh) : QDOT2(lo, xl, hi, xh);
                    if (p & 1) h[t][p >> 1] = QX(sum2x4)(e[t][0], e[t][1]);
                }
            }
            const __m256 s =
                _mm256_cvtph_ps(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(ws + i * ng + g)), sperm));
            for (int t = 0; t < NT; t++) {
                const __m256 sd = _mm256_mul_ps(s, _mm256_loadu_ps(a->d[t] + g));
                const __m256 q = _mm256_sub_ps(_mm256_cvtepi32_ps(QX(sum4x4)(h[t][0], h[t][1])),
                                               _mm256_loadu_ps(a->c[t] + g));
                acc[i][t] = _mm256_fmadd_ps(q, sd, acc[i][t]);
            }
        }
    }
    // Up to 7 last groups, stored in order: pairs, then a single group.
    float tail[4][4] = {{0}};
    for (size_t g = ng8; g < ng; g += 2) {
        const int two = g + 2 <= ng;
        for (int i = 0; i < RB; i++) {
            const uint8_t *wr = wq + i * rowb + g * 16;
            const __m256i b = two ? _mm256_loadu_si256((const __m256i *)wr)
                                  : _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)wr));
            __m256i lo = _mm256_and_si256(b, m4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m4);
            if (NL) {
                lo = _mm256_shuffle_epi8(lut256, lo);
                hi = _mm256_shuffle_epi8(lut256, hi);
            }
            const float s0 = _cvtsh_ss(ws[i * ng + g]), s1 = two ? _cvtsh_ss(ws[i * ng + g + 1]) : 0.0f;
            for (int t = 0; t < NT; t++) {
                const int8_t *xq = a->q[t] + g * FB_GROUP;
                __m256i xl, xh;
                if (two) {
                    xl = _mm256_loadu_si256((const __m256i *)xq);
                    xh = _mm256_loadu_si256((const __m256i *)(xq + 32));
                } else {  // a single group: [lo | hi] in order; the upper lanes only meet zero scales
                    xl = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)xq));
                    xh = _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(xq + 16)));
                }
                const __m256i dot = NL ? QDOT2W(lo, xl, hi, xh) : QDOT2(lo, xl, hi, xh);
                const float sd0 = s0 * a->d[t][g], sd1 = two ? s1 * a->d[t][g + 1] : 0.0f;
                const __m256 sd = _mm256_setr_ps(sd0, sd0, sd0, sd0, sd1, sd1, sd1, sd1);
                acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), sd, acc[i][t]);
                tail[i][t] += sd0 * a->c[t][g] + (two ? sd1 * a->c[t][g + 1] : 0.0f);
            }
        }
    }
    for (int i = 0; i < RB; i++)
        for (int t = 0; t < NT; t++) y[t * ldy + r0 + i] = fb__hsum8_ps(acc[i][t]) - tail[i][t];
}

#define QCG 64  // groups per scale block of the q8 tile

// q8: RB rows x NT tokens; S holds, per block of QCG groups, (weight scale * activation scale) for
// every row and token, broadcast from memory for each group's FMA.
QI void QX(q8_tile)(const int RB, const int NT, const fb_matrix *w, const fb__decode_act *a, float *y, size_t ldy,
                    size_t r0) {
    const size_t cols = w->cols, ng = cols / FB_GROUP, rowb = cols;
    const size_t pf = QPF(RB * rowb);  // once here: inside the loop's branch it was a division every other group
    const int8_t *wq = (const int8_t *)w->data + r0 * rowb;
    const uint16_t *ws = w->scales + r0 * ng;
    const __m256i ones16 = _mm256_set1_epi16(1);
    (void)ones16;
    __m256 acc[4][4];
    __attribute__((aligned(32))) float S[4][4][QCG];
    for (int i = 0; i < RB; i++)
        for (int t = 0; t < NT; t++) acc[i][t] = _mm256_setzero_ps();
    for (size_t g0 = 0; g0 < ng; g0 += QCG) {
        const size_t ge = ng - g0 < QCG ? ng : g0 + QCG, cn = ge - g0;
        for (int i = 0; i < RB; i++) {
            size_t j = 0;
            for (; j + 8 <= cn; j += 8) {
                const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(ws + i * ng + g0 + j)));
                for (int t = 0; t < NT; t++)
                    _mm256_store_ps(S[i][t] + j, _mm256_mul_ps(s, _mm256_loadu_ps(a->d[t] + g0 + j)));
            }
            for (; j < cn; j++) {
                const float s = _cvtsh_ss(ws[i * ng + g0 + j]);
                for (int t = 0; t < NT; t++) S[i][t][j] = s * a->d[t][g0 + j];
            }
        }
        for (size_t g = g0; g < ge; g++) {
            __m256i xv[4];
            for (int t = 0; t < NT; t++) xv[t] = _mm256_loadu_si256((const __m256i *)(a->q[t] + g * FB_GROUP));
            for (int i = 0; i < RB; i++) {
                const int8_t *wr = wq + i * rowb + g * FB_GROUP;
                if (!(g & 1)) _mm_prefetch((const char *)(wr + pf), _MM_HINT_T0);
                const __m256i b = _mm256_loadu_si256((const __m256i *)wr);
                const __m256i ab = _mm256_abs_epi8(b);
                for (int t = 0; t < NT; t++) {
                    const __m256i dot = QDOT1(_mm256_setzero_si256(), ab, _mm256_sign_epi8(xv[t], b));
                    acc[i][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(S[i][t] + (g - g0)),
                                                acc[i][t]);
                }
            }
        }
    }
    for (int i = 0; i < RB; i++)
        for (int t = 0; t < NT; t++) y[t * ldy + r0 + i] = fb__hsum8_ps(acc[i][t]);
}

// 8 f32/f16 weights from element i of p.
QI __m256 QX(w8)(const int type, const char *p, size_t i) {
    if (type == FB_F32) return _mm256_loadu_ps((const float *)p + i);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i)));
}

// fb_matmul for f16 (and f32) and n == 1: one row at a time (one sequential weight stream,
// prefetched ahead), four independent accumulators, f16 through F16C. Bound by memory bandwidth.
// Measured against x86/matvec_float.c's 4-row tiles (scripts/bench-matvec.sh, 4608 x 1024, n = 1): f16
// 10.5 -> 13.4 GB/s on the 2-core EPYC, 6.8 -> 12.3 on a Xeon; f32 was slower here (18 -> 14 GB/s),
// so only f16 comes here.
QI void QX(f_rows)(const int type, const fb_matrix *w, const float *x, float *y, size_t row_begin, size_t row_end) {
    const size_t cols = w->cols, es = type == FB_F32 ? 4 : 2;
    for (size_t r = row_begin; r < row_end; r++) {
        const char *row = (const char *)w->data + r * cols * es;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        size_t c = 0;
        for (; c + 32 <= cols; c += 32) {
            const char *p = row + c * es;
            _mm_prefetch(p + FB__PFD, _MM_HINT_T0);
            if (type == FB_F32) _mm_prefetch(p + FB__PFD + 64, _MM_HINT_T0);
            for (int j = 0; j < 4; j++)
                acc[j] = _mm256_fmadd_ps(QX(w8)(type, p, 8 * j), _mm256_loadu_ps(x + c + 8 * j), acc[j]);
        }
        for (; c + 8 <= cols; c += 8) acc[0] = _mm256_fmadd_ps(QX(w8)(type, row, c), _mm256_loadu_ps(x + c), acc[0]);
        float tail = 0.0f;
        for (; c < cols; c++)
            tail += (type == FB_F32 ? ((const float *)row)[c] : _cvtsh_ss(((const uint16_t *)row)[c])) * x[c];
        y[r] = fb__hsum8_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]))) + tail;
    }
}

QF void QX(matvec_f16)(const fb_matrix *w, const float *x, float *y, size_t row_begin, size_t row_end) {
    QX(f_rows)(FB_F16, w, x, y, row_begin, row_end);
}

// fb_matmul for q4/q4nl/q8 and n <= 4.
QF void QX(matvec_q)(const fb_matrix *w, const float *x, size_t ldx, size_t n, float *y, size_t ldy,
                     size_t row_begin, size_t row_end) {
    const size_t cols = w->cols, ng = cols / FB_GROUP;
    const int q4 = w->type == FB_Q4 || w->type == FB_Q4NL, nl = w->type == FB_Q4NL, w512 = QW512 && n >= 3;
    fb__decode_act a;
    __attribute__((aligned(64))) uint8_t stack[FB__QACT_STACK];
    void *heap = fb__decode_act_layout(&a, stack, sizeof stack, n, cols, ng);
    for (size_t t = 0; t < n; t++) {
        QX(quant_x)(x + t * ldx, cols, q4 ? 1 + w512 : 0, (int8_t *)a.q[t], (float *)a.d[t],
                    q4 ? (float *)a.c[t] : NULL, nl ? 64.0f : 8.0f);
    }
    size_t r = row_begin;
    // 256-bit: sixteen vector registers hold two tokens' partial sums in q4_tile, not four (with NT 3 or 4 they spill
    // and the tile runs 4-5x slower than NT 1). Three or four tokens go as pairs over each row, whose weights are
    // still in L1 for the second pair, so memory is read once. (The AVX-512 sets take 3-4 tokens 512 bits wide.)
    if (q4 && n >= 3 && !w512) {
        fb__decode_act upper = a;
        for (size_t t = 2; t < n; t++) {
            upper.q[t - 2] = a.q[t];
            upper.d[t - 2] = a.d[t];
            upper.c[t - 2] = a.c[t];
        }
        // NL, RB and NT as constants in every call, so that each tile is specialised (unrolled, no spills).
#define QPAIRS(NL)                                                                    \
    for (; r < row_end; r++) {                                                        \
        QX(q4_tile)(NL, 0, 1, 2, w, &a, y, ldy, r);                                   \
        if (n == 3) QX(q4_tile)(NL, 0, 1, 1, w, &upper, y + 2 * ldy, ldy, r);         \
        else QX(q4_tile)(NL, 0, 1, 2, w, &upper, y + 2 * ldy, ldy, r);                \
    }
        if (nl) QPAIRS(1) else QPAIRS(0)
#undef QPAIRS
        free(heap);
        return;
    }
#define QROWS(TYPE, RB, NT)                                                                 \
    do {                                                                                    \
        for (; r + (RB) <= row_end; r += (RB)) TYPE(RB, NT, w, &a, y, ldy, r);   \
        for (; r < row_end; r++) TYPE(1, NT, w, &a, y, ldy, r);                   \
    } while (0)
// One or two tokens: 256-bit blocks; three or four: 512-bit ones where the set has them (see the top).
#define Q4_TILE(RB, NT, ...) QX(q4_tile)(0, NT >= 3 && QW512, RB, NT, __VA_ARGS__)
#define Q4NL_TILE(RB, NT, ...) QX(q4_tile)(1, NT >= 3 && QW512, RB, NT, __VA_ARGS__)
    if (nl) {
        switch (n) {
        case 1: QROWS(Q4NL_TILE, 1, 1); break;
        case 2: QROWS(Q4NL_TILE, 1, 2); break;
        case 3: QROWS(Q4NL_TILE, 1, 3); break;
        default: QROWS(Q4NL_TILE, 1, 4); break;
        }
    } else if (q4) {
        switch (n) {
        case 1: QROWS(Q4_TILE, 1, 1); break;
        case 2: QROWS(Q4_TILE, 1, 2); break;
        case 3: QROWS(Q4_TILE, 1, 3); break;
        default: QROWS(Q4_TILE, 1, 4); break;
        }
    } else {
        switch (n) {
        case 1: QROWS(QX(q8_tile), 1, 1); break;
        case 2: QROWS(QX(q8_tile), 1, 2); break;
        case 3: QROWS(QX(q8_tile), 1, 3); break;
        default: QROWS(QX(q8_tile), 1, 4); break;
        }
    }
#undef QROWS
#undef Q4_TILE
#undef Q4NL_TILE
    free(heap);
}

#undef QI
#undef QF
#undef QDOT1
#undef QDOT2
#undef QDOT2_128
#undef QDOT2W
// The includer's parameters too, so that the next instruction set starts clean.
#undef QX
#undef QT
#undef QVNNI
#undef QW512
#undef QDPB
#undef QDPB128
#undef QDPB512
