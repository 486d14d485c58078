// Template of the 512-bit micro-kernels of the packed int8 GEMMs (x86/gemm_int8.c describes the method); x86/gemm_int8.c
// includes it once per instruction set with:
//   PX(name)  the set's prefix for every function defined here
//   PT        the target attribute string
//   PVNNI     1: VPDPBUSD (AVX-512 VNNI), q8 packed as weights + 128; 0: VPMADDUBSW (AVX-512 BW), i16 sums for q4,
//             the sign trick for q8 (packed as stored)
// and defines PX(q4_tokens), PX(q8_tokens), PX(q4nl_tokens) (fb__pk_tokens_fn; KIND and q4nl's + 64 pack as in
// x86/gemm_int8_tile256.h).
//
// One step of a panel (16 rows x 4 bytes) is one register. AVX-512 BW: a micro-tile is the panel's 16 rows x NT
// tokens, even and odd steps in separate accumulators (12 independent chains). VNNI: two panels (32 rows) x NT
// tokens, so that each broadcast of the activations feeds two VPDPBUSD (PX(tile2)); measured on a Sapphire Rapids
// core, 1.3-2.3x the one-panel tile's GFLOP/s (scripts/bench-gemm.sh, interleaved runs).

#define PI static inline __attribute__((always_inline)) FB_TARGET(PT)
#define PF static FB_TARGET(PT)

// y[0..n) = v[0..n), n <= PK_ROWS (the rows of a panel that exist).
PI void PX(store_rows)(float *y, __m512 v, size_t n) {
    if (n == PK_ROWS) {
        _mm512_storeu_ps(y, v);
        return;
    }
    float tmp[PK_ROWS];
    _mm512_storeu_ps(tmp, v);
    for (size_t i = 0; i < n; i++) y[i] = tmp[i];
}

// y[t0 + k][the panel's nr rows] for k < NT, t0 starting a tile of the interleaved activations.
PI void PX(tile)(const int KIND, const int NT, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a,
                 size_t t0, float *y, size_t ldy, size_t nr) {
    const int8_t *xi = a->xi + (t0 / FB__XI_TOKENS) * ng * 256;
    // ex = -8 * d * sum(q) takes out the + 8 of q4's nibbles; q4nl's + 64 needs it times 8, VNNI's q8 (+ 128) times
    // 16; signed q8 none.
    const int Q8 = KIND == PK_Q8, NL = KIND == PK_Q4NL;
    const float ex_mul = NL ? 8.0f : !Q8 ? 1.0f : PVNNI ? 16.0f : 0.0f;
    const __m512i ones = _mm512_set1_epi16(1);
    (void)ones;
    __m512 acc[6];
    for (int k = 0; k < NT; k++) acc[k] = _mm512_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const uint8_t *pg = panel + g * PK_GROUP_BYTES;
        const int8_t *xg = xi + g * 256;
        __m512i even[6], odd[6];  // i32; AVX-512 BW q4: i16 pairs (|sum over the group| <= 8 * 2 * 15 * 127)
        for (int k = 0; k < NT; k++) even[k] = odd[k] = _mm512_setzero_si512();
        for (int s = 0; s < 8; s += 2) {
            const __m512i w0 = _mm512_loadu_si512(pg + s * 64), w1 = _mm512_loadu_si512(pg + s * 64 + 64);
#if !PVNNI
            // q8: |w| x (x with w's sign), each pair within i16 (<= 2 * 128 * 127), to i32 at once.
            const __m512i aw0 = _mm512_abs_epi8(w0), aw1 = _mm512_abs_epi8(w1);
            const __mmask64 neg0 = _mm512_movepi8_mask(w0), neg1 = _mm512_movepi8_mask(w1);
            (void)aw0, (void)aw1, (void)neg0, (void)neg1;
#endif
            for (int k = 0; k < NT; k++) {
                int32_t x0, x1;
                memcpy(&x0, xg + s * 32 + k * 4, 4);
                memcpy(&x1, xg + s * 32 + 32 + k * 4, 4);
                const __m512i xv0 = _mm512_set1_epi32(x0), xv1 = _mm512_set1_epi32(x1);
#if PVNNI
                even[k] = _mm512_dpbusd_epi32(even[k], w0, xv0);
                odd[k] = _mm512_dpbusd_epi32(odd[k], w1, xv1);
#else
                if (Q8) {
                    const __m512i zero = _mm512_setzero_si512();
                    const __m512i xs0 = _mm512_mask_sub_epi8(xv0, neg0, zero, xv0),
                                  xs1 = _mm512_mask_sub_epi8(xv1, neg1, zero, xv1);
                    even[k] = _mm512_add_epi32(even[k], _mm512_madd_epi16(_mm512_maddubs_epi16(aw0, xs0), ones));
                    odd[k] = _mm512_add_epi32(odd[k], _mm512_madd_epi16(_mm512_maddubs_epi16(aw1, xs1), ones));
                } else if (NL) {
                    even[k] = _mm512_add_epi32(even[k], _mm512_madd_epi16(_mm512_maddubs_epi16(w0, xv0), ones));
                    odd[k] = _mm512_add_epi32(odd[k], _mm512_madd_epi16(_mm512_maddubs_epi16(w1, xv1), ones));
                } else {
                    even[k] = _mm512_add_epi16(even[k], _mm512_maddubs_epi16(w0, xv0));
                    odd[k] = _mm512_add_epi16(odd[k], _mm512_maddubs_epi16(w1, xv1));
                }
#endif
            }
        }
        const __m512 sc = _mm512_loadu_ps(scales + g * PK_ROWS);
        for (int k = 0; k < NT; k++) {
            const size_t i = (t0 + k) * a->ng + g;
            const __m512i dot32 = PVNNI || Q8 || NL ? _mm512_add_epi32(even[k], odd[k])
                                              : _mm512_madd_epi16(_mm512_add_epi16(even[k], odd[k]), ones);
            const __m512 e = _mm512_set1_ps(ex_mul * a->ex[i]);
            acc[k] = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(dot32), _mm512_set1_ps(a->dx[i]), e), sc, acc[k]);
        }
    }
    for (int k = 0; k < NT; k++) PX(store_rows)(y + (t0 + k) * ldy, acc[k], nr);
}

#if PVNNI
// Two adjacent panels (32 rows: the second's groups ng * PK_GROUP_BYTES on, its scales ng * PK_ROWS on; 16 < nr <=
// 32) x NT tokens. Each broadcast feeds both panels' weights, so a step loads 2 + NT registers for 2 * NT VPDPBUSD
// (the one-panel tile: 2 + 2 * NT), and each group's float work per token is shared by 32 rows. 12 i32 sums (12
// independent chains) and 12 float accumulators.
PI void PX(tile2)(const int KIND, const int NT, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a,
                  size_t t0, float *y, size_t ldy, size_t nr) {
    const int8_t *xi = a->xi + (t0 / FB__XI_TOKENS) * ng * 256;
    const float ex_mul = KIND == PK_Q8 ? 16.0f : KIND == PK_Q4NL ? 8.0f : 1.0f;
    const size_t next_panel = ng * PK_GROUP_BYTES, next_scales = ng * PK_ROWS;
    __m512 acc[2][6];
    for (int k = 0; k < NT; k++) acc[0][k] = acc[1][k] = _mm512_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const uint8_t *pg = panel + g * PK_GROUP_BYTES;
        const int8_t *xg = xi + g * 256;
        __m512i sum[2][6];
        for (int k = 0; k < NT; k++) sum[0][k] = sum[1][k] = _mm512_setzero_si512();
        for (int s = 0; s < 8; s++) {
            const __m512i w0 = _mm512_loadu_si512(pg + s * 64), w1 = _mm512_loadu_si512(pg + next_panel + s * 64);
            for (int k = 0; k < NT; k++) {
                int32_t x4;
                memcpy(&x4, xg + s * 32 + k * 4, 4);
                const __m512i xv = _mm512_set1_epi32(x4);
                sum[0][k] = _mm512_dpbusd_epi32(sum[0][k], w0, xv);
                sum[1][k] = _mm512_dpbusd_epi32(sum[1][k], w1, xv);
            }
        }
        const __m512 sc0 = _mm512_loadu_ps(scales + g * PK_ROWS), sc1 = _mm512_loadu_ps(scales + next_scales + g * PK_ROWS);
        for (int k = 0; k < NT; k++) {
            const size_t i = (t0 + k) * a->ng + g;
            const __m512 d = _mm512_set1_ps(a->dx[i]), e = _mm512_set1_ps(ex_mul * a->ex[i]);
            acc[0][k] = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[0][k]), d, e), sc0, acc[0][k]);
            acc[1][k] = _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[1][k]), d, e), sc1, acc[1][k]);
        }
    }
    for (int k = 0; k < NT; k++) {
        float *yt = y + (t0 + k) * ldy;
        _mm512_storeu_ps(yt, acc[0][k]);
        PX(store_rows)(yt + PK_ROWS, acc[1][k], nr - PK_ROWS);
    }
}
#define PK_TILE(NT)                                                                                              \
    (nr > PK_ROWS ? PX(tile2)(KIND, NT, ng, panel, scales, a, t, y, ldy, nr) : PX(tile)(KIND, NT, ng, panel, scales, a, t, y, ldy, nr))
#else
#define PK_TILE(NT) PX(tile)(KIND, NT, ng, panel, scales, a, t, y, ldy, nr)
#endif

// The VNNI kernel covers two panels per call (fb__pk_kernel.panels = 2), the others one.
PI void PX(tokens)(const int KIND, size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0,
                   size_t t1, float *y, size_t ldy, size_t nr) {
    size_t t = t0;
    for (; t + PK_TOKENS <= t1; t += PK_TOKENS) PK_TILE(PK_TOKENS);
    switch (t1 - t) {
    case 5: PK_TILE(5); break;
    case 4: PK_TILE(4); break;
    case 3: PK_TILE(3); break;
    case 2: PK_TILE(2); break;
    case 1: PK_TILE(1); break;
    default: break;
    }
}
#undef PK_TILE

PF void PX(q4_tokens)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0, size_t t1,
                      float *y, size_t ldy, size_t nr) {
    PX(tokens)(PK_Q4, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

PF void PX(q8_tokens)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0, size_t t1,
                      float *y, size_t ldy, size_t nr) {
    PX(tokens)(PK_Q8, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

PF void PX(q4nl_tokens)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0, size_t t1,
                        float *y, size_t ldy, size_t nr) {
    PX(tokens)(PK_Q4NL, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

#undef PI
#undef PF
// The includer's parameters too, so that the next instruction set starts clean.
#undef PX
#undef PT
#undef PVNNI
