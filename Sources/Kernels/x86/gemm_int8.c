// x86 parts of the batched products (batched.c): activation quantization (AVX2) and the packed int8 GEMMs for q4 and
// q8 weights on AVX2, AVX-VNNI, AVX-512 and AVX-512 VNNI (layout and driver: batched_internal.h, batched.c). Per-function
// target attributes, chosen at run time.
#include "../batched_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <string.h>

#include "simd.h"

#define A2 FB_TARGET("avx2,fma,f16c")
#define A2I static inline __attribute__((always_inline)) FB_TARGET("avx2,fma,f16c")

// ---- activations -----------------------------------------------------------------------------------------

A2 void fb__quantize_act_avx2(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a) {
    const size_t cols = a->cols, ng = a->ng;
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i ones = _mm256_set1_epi16(1);
    for (size_t t = t0; t < t1; t++) {
        const float *xt = x + t * ldx;
        int8_t *q = a->xq + t * cols;
        for (size_t g = 0; g < ng; g++) {
            const float *xg = xt + g * 32;
            __m256 v[4], m = _mm256_setzero_ps();
            for (int j = 0; j < 4; j++) {
                v[j] = _mm256_loadu_ps(xg + 8 * j);
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
            }
            const float mx = fb__hmax8_ps(m);
            const float d = mx / 127.0f;
            const __m256 id = _mm256_set1_ps(d > 0.0f ? 127.0f / mx : 0.0f);
            __m256i iv[4];
            for (int j = 0; j < 4; j++) iv[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], id));  // round to nearest even
            const __m256i p16a = _mm256_packs_epi32(iv[0], iv[1]), p16b = _mm256_packs_epi32(iv[2], iv[3]);
            const __m256i p8 = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), perm);
            _mm256_storeu_si256((__m256i *)(q + g * 32), p8);
            if (a->xi) {
                int32_t d4[8];
                _mm256_storeu_si256((__m256i *)d4, p8);
                int8_t *xi = a->xi + (t / FB__XI_TOKENS) * ng * 256 + g * 256 + (t % FB__XI_TOKENS) * 4;
                for (int s = 0; s < 8; s++) memcpy(xi + s * 32, &d4[s], 4);
            }
            // sum(q): maddubs(1s, q) then madd(1s)
            const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), p8);
            const __m256i s32 = _mm256_madd_epi16(s16, ones);
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s32), _mm256_extracti128_si256(s32, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
            a->dx[t * ng + g] = d;
            a->ex[t * ng + g] = -8.0f * d * (float)_mm_cvtsi128_si32(s4);
        }
    }
}

// ---- packed int8 GEMMs -----------------------------------------------------------------------------------------
//
// 8 rows per register (rather than 8 partial sums of one row), so the float work is done once per group for 8 rows
// at a time and the integer work dominates:
//
//   pack (once per block of rows, reused by every token): per group g and step s (0..7), 64 bytes holding
//   weights 4s..4s+3 of group g for 16 rows, row-major within each 4-byte lane: panel[g][s][row 0..15][4]; q4 as
//   unsigned nibbles (0..15), q8 as the stored signed bytes; the f16 scales of the 16 rows as f32: scales[g][16].
//   q4 micro-kernel, per group: for each step, maddubs(weights of 8 rows, 4 activation bytes broadcast) gives per
//   row two i16 sums of two products, added up in i16 over the 8 steps (|sum| <= 8 * 2 * 15 * 127 = 30480,
//   so no i16 overflow); then one madd with 1s -> the group's integer dot product for 8 rows (i32), one convert,
//   and acc += s_row * (d * dot + ex) (two FMAs; ex = -8 * d * sum(q) puts the nibbles' +8 offset back).
//   Per group and 8 rows x 1 token: 8 maddubs + 8 adds + 1 madd + 1 convert + 2 FMAs for 256 multiply-adds.
//   q8 micro-kernel: VPMADDUBSW needs an unsigned operand, so the sign trick: maddubs(|w|, sign(x, w)) = the w * x
//   pairs (|pair| <= 2 * 128 * 127 = 32512 < 32767: exact, a stored -128 included, as |x| <= 127); two steps could
//   overflow i16, so each step goes to i32 at once (madd with 1s) and the group sums in i32; then one convert and
//   acc += (s_row * d) * dot. Per group and 8 rows x 1 token: 8 x (sign + maddubs + madd + add) + 1 convert + 2
//   float ops: about twice the q4 kernel's work per multiply-add, still well above the f32 GEMM.
//   With VNNI, VPDPBUSD does a step's multiply, pair sums and i32 accumulation in one instruction, for q4 and q8
//   alike: the q8 pack stores the weights + 128 (w ^ 0x80, unsigned 0..255), and the group's -128 * d * sum(q)
//   comes back, like q4's -8 * d * sum(q), through ex (times 16, exact); |dot| <= 32 * 255 * 127 < 2^24, so its
//   conversion to float is exact too. Per group and 8 rows x 1 token: 8 VPDPBUSD + 1 convert + 2 FMAs.
//   AVX2 and AVX-VNNI run the 256-bit micro-kernels (x86/gemm_int8_tile256.h); AVX-512 and AVX-512 VNNI hold a whole step
//   of a panel (16 rows x 4 bytes) in one 512-bit register (x86/gemm_int8_tile512.h).

#define PK_ROWS FB__PK_ROWS
#define PK_GROUP_BYTES FB__PK_GROUP_BYTES

// The 32 weights of group g of a row, one byte each in weight order: q4 as its unsigned nibbles 0..15, q8 as stored,
// q4nl as the nibbles through `table` (a byte shuffle: its levels, already offset for the tiles that want them so).
A2I __m256i group_weights(const fb_dtype type, const uint8_t *row, size_t g, __m256i table) {
    if (type == FB_Q8) return _mm256_loadu_si256((const __m256i *)(row + g * 32));
    const __m256i b = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(row + g * 16)));
    const __m256i sh = _mm256_srlv_epi32(b, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    const __m256i nibbles = _mm256_and_si256(sh, _mm256_set1_epi8(15));
    if (type == FB_Q4) return nibbles;
    return _mm256_shuffle_epi8(table, nibbles);
}

// Packs rows [r0, r1) (at most PK_ROWS; missing rows get zero weights and scales), all groups, each weight byte plus
// OFFSET (mod 256): 0, 64 (q4nl: level + 64, 0..127, the unsigned operand of its tiles) or 128 (q8 for VPDPBUSD's
// unsigned operand).
A2I void pack_panel(const fb_dtype type, const int OFFSET, const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel,
                    float *scales) {
    const size_t ng = w->cols / 32, row_bytes = type == FB_Q8 ? w->cols : w->cols / 2,
                 group_bytes = type == FB_Q8 ? 32 : 16;
    const uint8_t *q = w->data;
    // q4nl's offset goes into its level table, so only q8 adds it byte by byte.
    __attribute__((aligned(16))) int8_t levels[16];
    for (int i = 0; i < 16; i++) levels[i] = (int8_t)(fb_q4nl_levels[i] + (type == FB_Q4NL ? OFFSET : 0));
    const __m256i table = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)levels));
    const int add_offset = OFFSET && type != FB_Q4NL;
    // The scales, f16 to f32: 8 rows x 8 groups per step through a transpose rather than a scalar conversion per group
    // and row; what is left over (fewer than 8 rows or groups) one by one.
    for (size_t h = 0; h < PK_ROWS; h += 8) {
        size_t g = 0;
        if (r0 + h + 8 <= r1)
            for (; g + 8 <= ng; g += 8) {
                __m256 s[8];
                for (size_t i = 0; i < 8; i++)
                    s[i] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w->scales + (r0 + h + i) * ng + g)));
                fb__transpose8_ps(s);  // s[j] = group g + j of the 8 rows
                for (size_t j = 0; j < 8; j++) _mm256_storeu_ps(scales + (g + j) * PK_ROWS + h, s[j]);
            }
        for (; g < ng; g++)
            for (size_t i = 0; i < 8; i++) {
                const size_t r = r0 + h + i;
                scales[g * PK_ROWS + h + i] = r < r1 ? _cvtsh_ss(w->scales[r * ng + g]) : 0.0f;
            }
    }
    // The next 16 rows, one contiguous run of 16 * row_bytes, fetched a group's share per group: the 16
    // interleaved row streams here leave the hardware prefetchers behind when the weights come from memory.
    const uint8_t *next = r0 + 2 * PK_ROWS <= w->rows ? q + (r0 + PK_ROWS) * row_bytes : NULL;
    for (size_t g = 0; g < ng; g++) {
        if (next)
            for (size_t l = 0; l < PK_ROWS * group_bytes; l += 64)
                _mm_prefetch((const char *)next + g * PK_ROWS * group_bytes + l, _MM_HINT_T0);
        for (size_t h = 0; h < PK_ROWS; h += 8) {
            __m256i v[8];
            for (size_t i = 0; i < 8; i++) {
                const size_t r = r0 + h + i;
                v[i] = r < r1 ? group_weights(type, q + r * row_bytes, g, table) : _mm256_setzero_si256();
            }
            if (add_offset)
                for (size_t i = 0; i < 8; i++) v[i] = _mm256_add_epi8(v[i], _mm256_set1_epi8((char)OFFSET));
            fb__transpose8_epi32(v);  // v[s] = weights 4s..4s+3 of the 8 rows
            for (int s = 0; s < 8; s++) _mm256_storeu_si256((__m256i *)(panel + g * PK_GROUP_BYTES + s * 64 + h * 4), v[s]);
        }
    }
}

A2 static void pack_q4_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q4, 0, w, r0, r1, panel, scales);
}

A2 static void pack_q8_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q8, 0, w, r0, r1, panel, scales);
}

A2 static void pack_q8u_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q8, 128, w, r0, r1, panel, scales);
}

// q4nl as level + 64 (0..127), for its own tiles (x86/gemm_int8_tile256.h).
A2 static void pack_q4nl_panel(const fb_matrix *w, size_t r0, size_t r1, uint8_t *panel, float *scales) {
    pack_panel(FB_Q4NL, 64, w, r0, r1, panel, scales);
}

// Micro-tiles, of the 16 ymm registers. q4: 2 blocks of 8 rows x 6 tokens = 12 i16 accumulators + 2 weight
// registers + 1 broadcast (the 12 float accumulators, touched once per group, live on the stack); of 2x3, 2x4, 2x5,
// 2x6, 1x4, 1x5, 1x6, this was fastest on Zen 3. q8: 1 block x 6 tokens = 6 i32 accumulators + the weights, their
// absolute values, a broadcast, its signed copy and the 1s (2 blocks x 3 tokens measured ~10% slower). AVX-VNNI,
// q4 and q8: 2 blocks x 6 tokens, 12 i32 accumulators (timed once on a Sapphire Rapids core, README; not tuned).
#define PK_TOKENS FB__XI_TOKENS
enum { PK_Q4, PK_Q8, PK_Q4NL };  // the tiles' KIND
_Static_assert(PK_TOKENS == 6 && FB__PK_STEP % PK_TOKENS == 0, "micro-tiles must start on the interleaved activation tiles");

// AVX2 + FMA + F16C: VPMADDUBSW.
#define PX(name) a2_##name
#define PT "avx2,fma,f16c"
#define PVNNI 0
#include "gemm_int8_tile256.h"

// AVX-VNNI: VEX-encoded VPDPBUSD on 256-bit vectors.
#define PX(name) avx_vnni_##name
#define PT "avx2,fma,f16c,avxvnni"
#define PVNNI 1
#define PDPB(acc, u, s) _mm256_dpbusd_avx_epi32(acc, u, s)
#include "gemm_int8_tile256.h"

// ---- AVX-512 --------------------------------------------------------------------------------------------------------

// AVX-512 F/BW: VPMADDUBSW on 512-bit vectors (q8 with the sign trick through a mask: there is no EVEX VPSIGNB).
#define PX(name) avx512_##name
#define PT "avx512f,avx512bw,avx512vl,avx2,fma,f16c"
#define PVNNI 0
#include "gemm_int8_tile512.h"

// AVX-512 VNNI.
#define PX(name) avx512_vnni_##name
#define PT "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"
#define PVNNI 1
#include "gemm_int8_tile512.h"

const fb__pk_kernel fb__pk_avx2_q4 = {pack_q4_panel, a2_q4_tokens, 1};
const fb__pk_kernel fb__pk_avx2_q8 = {pack_q8_panel, a2_q8_tokens, 1};
const fb__pk_kernel fb__pk_avx_vnni_q4 = {pack_q4_panel, avx_vnni_q4_tokens, 1};
const fb__pk_kernel fb__pk_avx_vnni_q8 = {pack_q8u_panel, avx_vnni_q8_tokens, 1};
const fb__pk_kernel fb__pk_avx512_q4 = {pack_q4_panel, avx512_q4_tokens, 1};
const fb__pk_kernel fb__pk_avx512_q8 = {pack_q8_panel, avx512_q8_tokens, 1};
const fb__pk_kernel fb__pk_avx512_vnni_q4 = {pack_q4_panel, avx512_vnni_q4_tokens, 2};
const fb__pk_kernel fb__pk_avx512_vnni_q8 = {pack_q8u_panel, avx512_vnni_q8_tokens, 2};
const fb__pk_kernel fb__pk_avx2_q4nl = {pack_q4nl_panel, a2_q4nl_tokens, 1};
const fb__pk_kernel fb__pk_avx_vnni_q4nl = {pack_q4nl_panel, avx_vnni_q4nl_tokens, 1};
const fb__pk_kernel fb__pk_avx512_q4nl = {pack_q4nl_panel, avx512_q4nl_tokens, 1};
const fb__pk_kernel fb__pk_avx512_vnni_q4nl = {pack_q4nl_panel, avx512_vnni_q4nl_tokens, 2};

#else
typedef int fb_batched_x86_unused;
#endif
