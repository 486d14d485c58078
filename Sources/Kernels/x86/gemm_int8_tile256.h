// Template of the 256-bit micro-kernels of the packed int8 GEMMs (x86/gemm_int8.c describes the method); x86/gemm_int8.c
// includes it once per instruction set with:
//   PX(name)  the set's prefix for every function defined here
//   PT        the target attribute string
//   PVNNI     1: VPDPBUSD (AVX-VNNI) sums 4 u8 x s8 products into i32 per step, for q4 and for q8 (whose pack stores
//             the weights + 128, unsigned); 0: VPMADDUBSW, with i16 sums for q4 and the sign trick for q8 (AVX2)
//   PDPB(acc, u, s)  acc + per-dword sums of u8 x s8 products (PVNNI only)
// and defines PX(q4_tokens), PX(q8_tokens), PX(q4nl_tokens) (fb__pk_tokens_fn). KIND is PK_Q4, PK_Q8 or PK_Q4NL
// (x86/gemm_int8.c): q4nl is packed as level + 64 (0..127), whose pair sums fit i16 but not a group's, so without
// VNNI each step goes to i32 at once (as q8, without the sign trick), and ex (times 8) takes the + 64 back out.

#define PI static inline __attribute__((always_inline)) FB_TARGET(PT)
#define PF static FB_TARGET(PT)

// y[t0 + k][rows of the panel] for k < NT: RB blocks of 8 rows (offset `h` rows into the panel), nr rows valid.
// t0 starts a tile of the interleaved activations (FB__XI_TOKENS tokens from token 0).
PI void PX(panel_tile)(const int KIND, const int RB, const int NT, size_t ng, const uint8_t *panel, const float *scales,
                       size_t h, const fb__qact *a, size_t t0, float *y, size_t ldy, size_t nr) {
    const int8_t *xi = a->xi + (t0 / FB__XI_TOKENS) * ng * 256;
    const float *dx[6], *ex[6];
    for (int k = 0; k < NT; k++) {
        dx[k] = a->dx + (t0 + k) * ng;
        ex[k] = a->ex + (t0 + k) * ng;
    }
    // The pack's unsigned weights are the true ones + 8 (q4), + 64 (q4nl) or + 128 (VNNI q8): ex = -8 * d * sum(q),
    // times 1, 8 or 16.
    const int Q8 = KIND == PK_Q8, NL = KIND == PK_Q4NL;
    const float ex_mul = NL ? 8.0f : PVNNI && Q8 ? 16.0f : 1.0f;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[2][6];
    for (int b = 0; b < RB; b++)
        for (int k = 0; k < NT; k++) acc[b][k] = _mm256_setzero_ps();
    for (size_t g = 0; g < ng; g++) {
        const uint8_t *pg = panel + g * PK_GROUP_BYTES + h * 4;
        __m256i sum[2][6];  // i32, or AVX2 q4: i16 pairs over the group
#if PVNNI
        for (int b = 0; b < RB; b++)
            for (int k = 0; k < NT; k++) sum[b][k] = _mm256_setzero_si256();
#endif
        for (int s = 0; s < 8; s++) {
            __m256i wv[2], aw[2];
            for (int b = 0; b < RB; b++) {
                wv[b] = _mm256_loadu_si256((const __m256i *)(pg + s * 64 + b * 32));
                if (!PVNNI && Q8) aw[b] = _mm256_abs_epi8(wv[b]);
            }
            for (int k = 0; k < NT; k++) {
                int32_t x4;
                memcpy(&x4, xi + g * 256 + s * 32 + k * 4, 4);
                const __m256i xv = _mm256_set1_epi32(x4);
                for (int b = 0; b < RB; b++) {
#if PVNNI
                    sum[b][k] = PDPB(sum[b][k], wv[b], xv);
#else
                    if (Q8) {
                        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[b], _mm256_sign_epi8(xv, wv[b])), ones);
                        sum[b][k] = s == 0 ? p : _mm256_add_epi32(sum[b][k], p);
                    } else if (NL) {
                        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[b], xv), ones);
                        sum[b][k] = s == 0 ? p : _mm256_add_epi32(sum[b][k], p);
                    } else {
                        const __m256i p = _mm256_maddubs_epi16(wv[b], xv);
                        sum[b][k] = s == 0 ? p : _mm256_add_epi16(sum[b][k], p);
                    }
#endif
                }
            }
        }
        for (int k = 0; k < NT; k++) {
            const __m256 d = _mm256_broadcast_ss(dx[k] + g);
            for (int b = 0; b < RB; b++) {
                const __m256 sc = _mm256_loadu_ps(scales + g * PK_ROWS + h + b * 8);
                if (!PVNNI && Q8) {
                    acc[b][k] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[b][k]), _mm256_mul_ps(sc, d), acc[b][k]);
                } else {
                    const __m256i dot32 = PVNNI || NL ? sum[b][k] : _mm256_madd_epi16(sum[b][k], ones);
                    const __m256 e = _mm256_set1_ps(ex_mul * ex[k][g]);
                    acc[b][k] = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_cvtepi32_ps(dot32), d, e), sc, acc[b][k]);
                }
            }
        }
    }
    for (int k = 0; k < NT; k++) {
        float *yt = y + (t0 + k) * ldy;
        for (int b = 0; b < RB; b++) {
            const size_t base = (size_t)b * 8;
            if (base + 8 <= nr) {
                _mm256_storeu_ps(yt + base, acc[b][k]);
            } else if (base < nr) {
                float tmp[8];
                _mm256_storeu_ps(tmp, acc[b][k]);
                for (size_t i = base; i < nr; i++) yt[i] = tmp[i - base];
            }
        }
    }
}

// Rows h .. h + 8 * RB of the panel (those of them below nr), NT tokens from t (which starts a tile).
#define PK_TILE(KIND, RB, NT)                                                                                       \
    for (size_t h = 0; h < PK_ROWS; h += 8 * (RB))                                                              \
        if (h < nr) PX(panel_tile)(KIND, RB, NT, ng, panel, scales, h, a, t, y + h, ldy, nr - h < 8 * (RB) ? nr - h : 8 * (RB))

PI void PX(panel_tokens)(const int KIND, const int RB, size_t ng, const uint8_t *panel, const float *scales,
                         const fb__qact *a, size_t t0, size_t t1, float *y, size_t ldy, size_t nr) {
    size_t t = t0;
    for (; t + PK_TOKENS <= t1; t += PK_TOKENS) PK_TILE(KIND, RB, PK_TOKENS);
    switch (t1 - t) {
    case 5: PK_TILE(KIND, RB, 5); break;
    case 4: PK_TILE(KIND, RB, 4); break;
    case 3: PK_TILE(KIND, RB, 3); break;
    case 2: PK_TILE(KIND, RB, 2); break;
    case 1: PK_TILE(KIND, RB, 1); break;
    default: break;
    }
}
#undef PK_TILE

PF void PX(q4_tokens)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0, size_t t1,
                      float *y, size_t ldy, size_t nr) {
    PX(panel_tokens)(PK_Q4, 2, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

PF void PX(q8_tokens)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0, size_t t1,
                      float *y, size_t ldy, size_t nr) {
    // AVX2's sign trick needs the weights, their absolute values, a broadcast, its signed copy and the 1s per block
    // of rows: one block of 8 rows (2 blocks x 3 tokens measured ~10% slower on Zen 3). VPDPBUSD needs no more
    // registers than q4.
    PX(panel_tokens)(PK_Q8, PVNNI ? 2 : 1, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

PF void PX(q4nl_tokens)(size_t ng, const uint8_t *panel, const float *scales, const fb__qact *a, size_t t0, size_t t1,
                        float *y, size_t ldy, size_t nr) {
    PX(panel_tokens)(PK_Q4NL, 2, ng, panel, scales, a, t0, t1, y, ldy, nr);
}

#undef PI
#undef PF
// The includer's parameters too, so that the next instruction set starts clean.
#undef PX
#undef PT
#undef PVNNI
#undef PDPB
