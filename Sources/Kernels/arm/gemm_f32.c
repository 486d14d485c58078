// AArch64 f32 GEMM for fb_sgemm (attention's Q Kᵀ and P V per head; batched.c). Executed instructions per
// multiply-add under qemu (scripts/arm-insns.sh) for the vision tower's shapes (256 queries, 256 keys, head
// size 64): Q Kᵀ 1.70 with the portable dot products, 0.56 here; P V 1.49 with the portable row updates, 0.43
// (packing B from Kᵀ gathers, hence the difference; the micro-kernel alone is 20 instructions per 64).
// Both operands are packed per block of KC columns of the sum: A as [p][8 rows], B as [p][8 columns] (zero-padded);
// the 8 x 8 micro-kernel keeps the tile in 16 registers and does 16 FMLA-by-lane per step of p, for 64 multiply-adds.
#include "../batched_internal.h"

#if defined(__aarch64__)
#include <arm_neon.h>
#include <string.h>

#define MR 8
#define NR 8
#define KC 256  // steps of p per packed block: A's 8 KiB and a B slab's 8 KiB stay in L1
#define NC 64   // columns of C per packed block of B (8 slabs, 64 KiB at KC)

size_t fb__sgemm_pack_floats(void) { return (size_t)KC * (MR + NC); }

// B(p, j) for p in [p0, p0 + kc), j in [j0, j0 + nc) into slabs of NR columns: bp[slab][p][NR], zeros past nc.
static void pack_b(int trans_b, const float *b, size_t ldb, size_t p0, size_t kc, size_t j0, size_t nc, float *bp) {
    for (size_t s = 0; s * NR < nc; s++) {
        float *slab = bp + s * kc * NR;
        const size_t js = j0 + s * NR, nr = nc - s * NR < NR ? nc - s * NR : NR;
        for (size_t p = 0; p < kc; p++) {
            float *row = slab + p * NR;
            if (!trans_b && nr == NR) {
                memcpy(row, b + (p0 + p) * ldb + js, NR * sizeof(float));
                continue;
            }
            for (size_t j = 0; j < NR; j++)
                row[j] = j < nr ? (trans_b ? b[(js + j) * ldb + p0 + p] : b[(p0 + p) * ldb + js + j]) : 0.0f;
        }
    }
}

// A(i, p) for i in [i0, i0 + mr), p in [p0, p0 + kc) into ap[p][MR], zeros past mr.
static void pack_a(const float *a, size_t lda, size_t i0, size_t mr, size_t p0, size_t kc, float *ap) {
    for (size_t p = 0; p < kc; p++)
        for (size_t i = 0; i < MR; i++) ap[p * MR + i] = i < mr ? a[(i0 + i) * lda + p0 + p] : 0.0f;
}

// C[i][j] (+)= sum_p ap[p][i] * bp[p][j] for the tile's mr x nr part.
static void kernel_8x8(size_t kc, const float *ap, const float *bp, float *c, size_t ldc, size_t mr, size_t nr,
                       int accumulate) {
    float32x4_t acc[MR][2];
    for (int i = 0; i < MR; i++) acc[i][0] = acc[i][1] = vdupq_n_f32(0.0f);
    for (size_t p = 0; p < kc; p++) {
        const float32x4_t a0 = vld1q_f32(ap + p * MR), a1 = vld1q_f32(ap + p * MR + 4);
        const float32x4_t b0 = vld1q_f32(bp + p * NR), b1 = vld1q_f32(bp + p * NR + 4);
#define ROW(I, A, L)                                            \
    acc[I][0] = vfmaq_laneq_f32(acc[I][0], b0, A, L);           \
    acc[I][1] = vfmaq_laneq_f32(acc[I][1], b1, A, L);
        ROW(0, a0, 0) ROW(1, a0, 1) ROW(2, a0, 2) ROW(3, a0, 3)
        ROW(4, a1, 0) ROW(5, a1, 1) ROW(6, a1, 2) ROW(7, a1, 3)
#undef ROW
    }
    for (size_t i = 0; i < mr; i++) {
        float out[NR];
        vst1q_f32(out, acc[i][0]);
        vst1q_f32(out + 4, acc[i][1]);
        float *ci = c + i * ldc;
        for (size_t j = 0; j < nr; j++) ci[j] = accumulate ? ci[j] + out[j] : out[j];
    }
}

void fb__sgemm_neon(int trans_b, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                    float *c, size_t ldc, int accumulate, float *pack) {
    float *ap = pack, *bp = pack + (size_t)KC * MR;
    for (size_t j0 = 0; j0 < n; j0 += NC) {
        const size_t nc = n - j0 < NC ? n - j0 : NC;
        for (size_t p0 = 0; p0 < k; p0 += KC) {
            const size_t kc = k - p0 < KC ? k - p0 : KC;
            const int add = accumulate || p0 > 0;  // later blocks of p add to the first's sums
            pack_b(trans_b, b, ldb, p0, kc, j0, nc, bp);
            for (size_t i0 = 0; i0 < m; i0 += MR) {
                const size_t mr = m - i0 < MR ? m - i0 : MR;
                pack_a(a, lda, i0, mr, p0, kc, ap);
                for (size_t s = 0; s * NR < nc; s++) {
                    const size_t nr = nc - s * NR < NR ? nc - s * NR : NR;
                    kernel_8x8(kc, ap, bp + s * kc * NR, c + i0 * ldc + j0 + s * NR, ldc, mr, nr, add);
                }
            }
        }
    }
}

#else
typedef int fb_gemm_arm_unused;
#endif
