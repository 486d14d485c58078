// fb_matmul on every kernel path this CPU offers, against the scalar path and a double-precision
// reference, for every dtype and a range of shapes; the batched int8 route for q4 and q8 against its scalar
// reference; fb_sgemm, the element-wise ops and decode attention (f32 and f16 caches) against double or the scalar
// path; the half-precision array conversions against the scalar ones.
// Built outside SwiftPM, for the paths this machine kind cannot run natively: cross-compiled for AArch64 and run under
// qemu-user by scripts/test-arm.sh (NEON, NEON dot product), and built with FB_EMULATE_X86 by
// scripts/test-x86-emulated.sh (AVX2, AVX-VNNI, AVX-512, AVX-512 VNNI on SIMDe's definitions of the intrinsics:
// x86_emulated.h). Built natively it checks the CPU's own x86 paths the same way.
//
//   kernel_paths_test [--label NAME] [--expect-default PATH] [--expect-missing PATH]...
// Prints one summary line:
//   kernels-test label=NAME default=PATH paths=scalar,neon,... checks=N failures=F worst_float=R
//       worst_int8_exact=R worst_int8=R int8_rel_rms=E result=PASS|FAIL   (one line)
// where worst_* are the largest |error| / tolerance seen (<= 1 passes): float paths against the
// double reference; int8-activation paths against the product with their own int8 activations
// (float rounding only) and against the exact product (the quantization bound); int8_rel_rms is the
// relative RMS difference between the int8-activation results and the exact products.
// Exit status 0 only when everything passed.
#include "Batched.h"
#include "Kernels.h"
#include "Ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *all_paths[] = {"scalar", "avx2", "avx2-vnni", "avx512", "avx512-vnni", "neon", "neon-dotprod"};
#define N_PATHS ((int)(sizeof all_paths / sizeof all_paths[0]))

static uint64_t lcg = 99;
static double uniform(void) {
    lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(lcg >> 11) * 0x1p-53 + 0x1p-54;
}
static float normal(void) { return (float)(sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform())); }

static int failures, checks;
static double worst_float, worst_int8_exact, worst_int8, int8_err2, int8_ref2;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        if (++failures <= 12) {                                                                    \
            fprintf(stderr, "FAIL: " __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

// The int8 activation quantization every decode kernel must reproduce (Kernels.h):
// d = amax / 127, q = round-to-nearest-even(x * (127 / amax)), zero for amax < 2^-100.
// Returns d; xq = d * q (exact in double).
static float quantize_group(const float *x, double *xq) {
    float amax = 0;
    for (int i = 0; i < FB_GROUP; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
    const float d = amax / 127.0f, id = amax >= 0x1p-100f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < FB_GROUP; i++) xq[i] = (double)d * rintf(x[i] * id);
    return d;
}

typedef struct {
    fb_dtype type;
    size_t cols;
    int neg128;  // q8: also store quants of -128 (valid in the layout, never made by the quantizer)
    int zero_group;  // activations of group 1 all zero, group 2 tiny
} test_case;

static void run_case(const test_case *tc, const char **paths, int npaths) {
    const size_t rows = 21, rb = 3, re = 20, cols = tc->cols;
    const fb_dtype type = tc->type;
    float *wf = malloc(sizeof(float) * rows * cols);
    for (size_t i = 0; i < rows * cols; i++) wf[i] = normal() * 0.05f;
    void *data = NULL;
    const size_t qb = fb_quant_bytes(type, rows, cols), sb = fb_scale_bytes(type, rows, cols);
    if (posix_memalign(&data, 64, qb)) abort();
    uint16_t *scales = calloc(sb / 2 + 1, 2);
    if (type == FB_F32) memcpy(data, wf, qb);
    else if (type == FB_F16) fb_f32_to_f16_array(wf, data, rows * cols);
    else if (type == FB_Q8) fb_quantize_q8(wf, cols, 0, rows, data, scales);
    else if (type == FB_Q4NL) fb_quantize_q4nl(wf, cols, 0, rows, data, scales);
    else fb_quantize_q4(wf, cols, 0, rows, data, scales);
    if (tc->neg128)
        for (size_t i = 5; i < rows * cols; i += 7) ((int8_t *)data)[i] = -128;
    const fb_matrix m = {type, rows, cols, data, scales};
    float *wd = malloc(sizeof(float) * rows * cols);
    for (size_t r = 0; r < rows; r++) fb_matrix_row(&m, r, wd + r * cols);
    const int quant = type == FB_Q8 || type == FB_Q4 || type == FB_Q4NL;
    const size_t ng = cols / FB_GROUP;

    const size_t ns[] = {1, 2, 3, 4, 5, 17};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        const size_t n = ns[ni];
        if (cols > 1000 && n != 1 && n != 4 && n != 17) continue;
        const size_t ldx = cols + 5, ldy = rows + 3;
        float *x = malloc(sizeof(float) * n * ldx);
        double *xq = malloc(sizeof(double) * n * ldx);
        float *dg = malloc(sizeof(float) * n * (ng + 1));
        for (size_t i = 0; i < n * ldx; i++) x[i] = normal();
        if (tc->zero_group && cols >= 96)
            for (size_t t = 0; t < n; t++)
                for (int i = 0; i < FB_GROUP; i++) {
                    x[t * ldx + 32 + i] = 0;
                    x[t * ldx + 64 + i] *= 1e-35f;
                }
        for (size_t t = 0; t < n; t++)
            for (size_t g = 0; g < ng; g++)
                dg[t * ng + g] = quantize_group(x + t * ldx + g * FB_GROUP, xq + t * ldx + g * FB_GROUP);
        // Double-precision references from the dequantized rows: with x (ref) and with the int8 x (refq).
        double *ref = calloc(n * ldy, sizeof(double)), *mag = calloc(n * ldy, sizeof(double));
        double *refq = calloc(n * ldy, sizeof(double)), *magq = calloc(n * ldy, sizeof(double));
        double *bound = calloc(n * ldy, sizeof(double));
        for (size_t t = 0; t < n; t++)
            for (size_t r = rb; r < re; r++) {
                double acc = 0, a = 0, accq = 0, aq = 0, b = 0;
                for (size_t c = 0; c < cols; c++) {
                    const double wv = wd[r * cols + c], xv = x[t * ldx + c], qv = xq[t * ldx + c];
                    acc += wv * xv;
                    a += fabs(wv * xv);
                    if (quant) {
                        const size_t g = c / FB_GROUP;
                        accq += wv * qv;
                        // q4 kernels use the stored nibble (q + 8) and subtract 8 * sum(q x) per group:
                        // their float rounding scales with (|q| + 8) * s * |x|; the x86 q4nl kernels likewise
                        // use level + 64 and subtract 64 * sum(q x).
                        const double s = fabs(fb_f16_to_f32(scales[r * ng + g]));
                        aq += (fabs(wv) + (type == FB_Q4 ? 8 * s : type == FB_Q4NL ? 64 * s : 0)) * fabs(qv);
                        b += fabs(wv) * dg[t * ng + g] / 2;
                    }
                }
                ref[t * ldy + r] = acc;
                mag[t * ldy + r] = a;
                refq[t * ldy + r] = accq;
                magq[t * ldy + r] = aq;
                bound[t * ldy + r] = b;
            }
        float *ys = NULL;
        for (int p = 0; p < npaths; p++) {
            if (fb_kernels_select(paths[p]) != 0) {
                FAIL("could not select %s", paths[p]);
                continue;
            }
            const int scalar = strcmp(paths[p], "scalar") == 0;
            const int int8 = !scalar && quant && n <= 4;
            const float sentinel = -12345.0f;
            float *y = malloc(sizeof(float) * n * ldy);
            for (size_t i = 0; i < n * ldy; i++) y[i] = sentinel;
            fb_matmul(&m, x, ldx, n, y, ldy, rb, re);
            char what[96];
            snprintf(what, sizeof what, "%s type %d cols %zu n %zu", paths[p], (int)type, cols, n);
            for (size_t t = 0; t < n; t++)
                for (size_t r = 0; r < ldy; r++) {
                    const size_t i = t * ldy + r;
                    checks++;
                    if (r < rb || r >= re) {
                        if (y[i] != sentinel) FAIL("%s: wrote y[%zu][%zu] outside the rows", what, t, r);
                        continue;
                    }
                    // Float paths (as in KernelsTests.testMatmulAllPaths): products summed in float in any
                    // order; the random-walk estimate 4 * sqrt(cols + 4) * 2^-24 * sum|w x|.
                    const double tol = 4 * sqrt((double)cols + 4) * 0x1p-24 * mag[i];
                    if (!int8) {
                        const double e = fabs(y[i] - ref[i]);
                        worst_float = fmax(worst_float, e / tol);
                        if (!(e <= tol)) FAIL("%s t %zu r %zu: %.9g vs ref %.9g (tol %.3g)", what, t, r, y[i], ref[i], tol);
                        if (!scalar && !(fabs(y[i] - ys[i]) <= 2 * tol))
                            FAIL("%s t %zu r %zu: %.9g vs scalar %.9g", what, t, r, y[i], ys[i]);
                        continue;
                    }
                    // int8 activations: (1) the exact product with the quantized activations, to float
                    // rounding; (2) against x itself, within the quantization bound
                    // sum_g (amax_g / 254) * sum_{i in g} |w_i| (|x - d q| <= d / 2 per element),
                    // and so within that bound plus both float tolerances of the scalar result.
                    const double tolq = 4 * sqrt((double)cols + 4) * 0x1p-24 * magq[i];
                    const double eq = fabs(y[i] - refq[i]);
                    worst_int8_exact = fmax(worst_int8_exact, eq / tolq);
                    if (!(eq <= tolq))
                        FAIL("%s t %zu r %zu: %.9g vs int8-activation ref %.9g (tol %.3g)", what, t, r, y[i], refq[i], tolq);
                    const double bnd = bound[i] * (1 + 1e-4) + tolq;
                    const double e = fabs(y[i] - ref[i]);
                    worst_int8 = fmax(worst_int8, e / bnd);
                    int8_err2 += e * e;
                    int8_ref2 += ref[i] * ref[i];
                    if (!(e <= bnd))
                        FAIL("%s t %zu r %zu: %.9g vs ref %.9g beyond the int8 bound %.3g", what, t, r, y[i], ref[i], bnd);
                    if (!(fabs(y[i] - ys[i]) <= bnd + tol))
                        FAIL("%s t %zu r %zu: %.9g vs scalar %.9g beyond the int8 bound", what, t, r, y[i], ys[i]);
                }
            if (scalar) ys = y;
            else free(y);
        }
        free(ys);
        free(x);
        free(xq);
        free(dg);
        free(ref);
        free(mag);
        free(refq);
        free(magq);
        free(bound);
    }
    free(wf);
    free(wd);
    free(data);
    free(scales);
}

// The batched int8 route for q4, q4nl and q8 (fb_matmul_pool: the packed kernels of the path: SMLAL, SDOT, VPMADDUBSW,
// VPDPBUSD): each path against the scalar int8 reference, which does the same integer sums, so they may differ only by
// float rounding (1e-5 of sum |w x|). Also checks which route "auto" picks: int8 on every path but the scalar one.
static void check_int8_route(const char **paths, int npaths) {
    // Rows: panels of 16 with a short last one, and for kernels that take two panels per call (AVX-512 VNNI) a last
    // call of two full panels (37 = 32 + 5), of one and a part (57 = 32 + 25), or of more than one row chunk (150).
    const size_t shapes[][2] = {{37, 256}, {150, 1024}, {57, 512}};
    const size_t nshapes = sizeof shapes / sizeof shapes[0];
    const size_t tokens[] = {8, 11, 53};
    fb_pool *pool = fb_pool_create(2);
    fb_workspace *ws = fb_workspace_create();
    static const char *const type_names[] = {"f32", "f16", "q8", "q4", "q4nl"};
    for (size_t si = 0; si < 3 * nshapes; si++) {
        const fb_dtype type = si < nshapes ? FB_Q4 : si < 2 * nshapes ? FB_Q8 : FB_Q4NL;
        const size_t rows = shapes[si % nshapes][0], cols = shapes[si % nshapes][1];
        float *w = malloc(rows * cols * sizeof(float)), *wd = malloc(rows * cols * sizeof(float));
        void *q = malloc(fb_quant_bytes(type, rows, cols));
        uint16_t *sc = malloc(fb_scale_bytes(type, rows, cols));
        for (size_t i = 0; i < rows * cols; i++) w[i] = 0.05f * normal();
        if (type == FB_Q4) fb_quantize_q4(w, cols, 0, rows, q, sc);
        else if (type == FB_Q4NL) fb_quantize_q4nl(w, cols, 0, rows, q, sc);
        else fb_quantize_q8(w, cols, 0, rows, q, sc);
        if (type == FB_Q8)  // -128: valid in the layout though the quantizer never makes it (|w| and w + 128 edges)
            for (size_t i = 5; i < rows * cols; i += 7) ((int8_t *)q)[i] = -128;
        const fb_matrix m = {type, rows, cols, q, sc};
        for (size_t r = 0; r < rows; r++) fb_matrix_row(&m, r, wd + r * cols);
        for (size_t ti = 0; ti < 3; ti++) {
            const size_t n = tokens[ti];
            float *x = malloc(n * cols * sizeof(float)), *ref = malloc(n * rows * sizeof(float)),
                  *y = malloc(n * rows * sizeof(float));
            for (size_t i = 0; i < n * cols; i++) x[i] = normal();
            fb_kernels_select("scalar");
            fb_batched_select("int8");
            fb_matmul_pool(pool, ws, &m, x, cols, n, ref, rows);
            for (int p = 1; p < npaths; p++) {
                fb_kernels_select(paths[p]);
                fb_batched_select("auto");
                const int fast = strcmp(paths[p], "scalar") != 0;
                if ((strcmp(fb_batched_route(&m, n), "int8") == 0) != fast)
                    FAIL("path %s: auto route for %s is %s", paths[p], type_names[type], fb_batched_route(&m, n));
                fb_batched_select("int8");
                memset(y, 0, n * rows * sizeof(float));
                fb_matmul_pool(pool, ws, &m, x, cols, n, y, rows);
                for (size_t t = 0; t < n; t++)
                    for (size_t r = 0; r < rows; r++) {
                        double mag = 0;
                        for (size_t c = 0; c < cols; c++) mag += fabs((double)wd[r * cols + c] * x[t * cols + c]);
                        const double e = fabs((double)y[t * rows + r] - ref[t * rows + r]);
                        checks++;
                        if (!(e <= 1e-5 * mag))
                            FAIL("int8 route, path %s, %s %zux%zu, n %zu, t %zu, r %zu: %g vs scalar %g", paths[p],
                                 type_names[type], rows, cols, n, t, r, y[t * rows + r], ref[t * rows + r]);
                    }
            }
            free(x);
            free(ref);
            free(y);
        }
        free(w);
        free(wd);
        free(q);
        free(sc);
    }
    fb_batched_select("auto");
    fb_workspace_destroy(ws);
    fb_pool_destroy(pool);
}

// fb_sgemm (attention's products; the AVX2 GEMM on x86, the NEON one on AArch64, the portable loops on the scalar
// path) against double: both layouts of B, alpha, beta 0 / 1, shapes with tails in every blocked dimension and more
// than one block of the sum (k > 256). Float sums in any order: 4 sqrt(k + 4) 2^-24 (|alpha| sum |a b| + |c0|).
static void check_sgemm(const char **paths, int npaths) {
    const size_t shapes[][3] = {{1, 5, 3}, {7, 33, 64}, {70, 19, 130}, {13, 70, 300}, {256, 40, 17}};
    for (int p = 0; p < npaths; p++) {
        fb_kernels_select(paths[p]);
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int trans_b = 0; trans_b < 2; trans_b++)
                for (int ab = 0; ab < 3; ab++) {
                    const size_t m = shapes[si][0], n = shapes[si][1], k = shapes[si][2];
                    const float alpha = ab == 1 ? 0.125f : 1.0f, beta = ab == 2 ? 1.0f : 0.0f;
                    const size_t lda = k + 2, ldb = (trans_b ? k : n) + 3, ldc = n + 1;
                    float *a = malloc(m * lda * sizeof(float)), *b = malloc((trans_b ? n : k) * ldb * sizeof(float));
                    float *c0 = malloc(m * ldc * sizeof(float)), *c = malloc(m * ldc * sizeof(float));
                    for (size_t i = 0; i < m * lda; i++) a[i] = normal();
                    for (size_t i = 0; i < (trans_b ? n : k) * ldb; i++) b[i] = normal();
                    for (size_t i = 0; i < m * ldc; i++) c[i] = c0[i] = normal();
                    fb_sgemm(trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
                    for (size_t i = 0; i < m; i++)
                        for (size_t j = 0; j < ldc; j++) {
                            checks++;
                            if (j >= n) {
                                if (c[i * ldc + j] != c0[i * ldc + j]) FAIL("sgemm %s: wrote c[%zu][%zu] past n", paths[p], i, j);
                                continue;
                            }
                            double acc = 0, mag = 0;
                            for (size_t q = 0; q < k; q++) {
                                const double v = (double)a[i * lda + q] * (trans_b ? b[j * ldb + q] : b[q * ldb + j]);
                                acc += v;
                                mag += fabs(v);
                            }
                            const double want = alpha * acc + beta * c0[i * ldc + j];
                            const double tol = 4 * sqrt((double)k + 4) * 0x1p-24 * (fabs(alpha) * mag + fabs(c0[i * ldc + j]));
                            const double e = fabs(c[i * ldc + j] - want);
                            worst_float = fmax(worst_float, e / tol);
                            if (!(e <= tol))
                                FAIL("sgemm %s m %zu n %zu k %zu trans_b %d alpha %g beta %g: c[%zu][%zu] %.9g vs %.9g",
                                     paths[p], m, n, k, trans_b, alpha, beta, i, j, c[i * ldc + j], want);
                        }
                    free(a), free(b), free(c0), free(c);
                }
    }
}

// The element-wise ops with SIMD versions (AVX2 on x86, NEON on AArch64: GELU, SiLU-and-multiply, softmax, with and
// without -inf entries; the norms too on x86) on each path against the scalar path's portable C and libm, lengths
// with and without vector tails: |d| <= 1e-6 (|x| + 1) for the activations (|x| |b| + 1 for SiLU times b), 1e-6 of the
// largest output for softmax and the norms (the SIMD exp is within ~2 ulp); exp's under- and overflow in GELU.
static void check_ops(const char **paths, int npaths) {
    const size_t lengths[] = {1, 3, 4, 7, 8, 33, 768, 1000};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        const size_t n = lengths[li];
        float *x = malloc(n * 4), *b = malloc(n * 4), *w = malloc(n * 4), *bias = malloc(n * 4), *masked = malloc(n * 4);
        for (size_t i = 0; i < n; i++) x[i] = 3 * normal(), b[i] = normal(), w[i] = normal(), bias[i] = normal();
        for (size_t i = 0; i < n; i++) masked[i] = i % 5 == 0 ? -INFINITY : x[i];
        if (n > 1) masked[n - 1] = 1;  // at least one finite entry
        enum { OPS = 6 };
        float *out[2][OPS];
        for (int p = 0; p < npaths; p++) {
            const int slot = p == 0 ? 0 : 1;  // paths[0] is scalar, the reference
            fb_kernels_select(paths[p]);
            for (int k = 0; k < OPS; k++) out[slot][k] = malloc(n * 4);
            memcpy(out[slot][0], x, n * 4);
            fb_gelu_tanh(out[slot][0], n);
            fb_silu_mul(x, b, out[slot][1], n);
            memcpy(out[slot][2], x, n * 4);
            fb_softmax(out[slot][2], n);
            memcpy(out[slot][3], masked, n * 4);
            fb_softmax(out[slot][3], n);
            fb_rmsnorm(x, w, out[slot][4], n, 1e-5f);
            fb_layernorm(x, w, bias, out[slot][5], n, 1e-6f);
            if (p == 0) continue;
            static const char *names[OPS] = {"gelu_tanh", "silu_mul", "softmax", "softmax with -inf", "rmsnorm", "layernorm"};
            for (int k = 0; k < OPS; k++) {
                float scale = 0;
                for (size_t i = 0; i < n; i++) scale = fabsf(out[0][k][i]) > scale ? fabsf(out[0][k][i]) : scale;
                for (size_t i = 0; i < n; i++) {
                    checks++;
                    const float tol = k < 2 ? 1e-6f * (fabsf(x[i]) * (k == 1 ? fabsf(b[i]) + 1 : 1) + 1) : 1e-6f * scale;
                    if (!(fabsf(out[1][k][i] - out[0][k][i]) <= tol))
                        FAIL("%s %s n %zu i %zu: %.9g vs scalar %.9g", paths[p], names[k], n, i, out[1][k][i], out[0][k][i]);
                }
                if (k == 3)
                    for (size_t i = 0; i + 1 < n; i += 5)
                        if (out[1][3][i] != 0) FAIL("%s softmax: a -inf entry gave %g", paths[p], out[1][3][i]);
            }
            for (int k = 0; k < OPS; k++) free(out[1][k]);
        }
        for (int k = 0; k < OPS; k++) free(out[0][k]);
        free(x), free(b), free(w), free(bias), free(masked);
    }
    for (int p = 1; p < npaths; p++) {
        fb_kernels_select(paths[p]);
        const float in[8] = {-200, -90, -20, 0, 20, 90, 200, -0.0f}, want[7] = {0, 0, 0, 0, 20, 90, 200};
        float big[8];
        memcpy(big, in, sizeof big);
        fb_gelu_tanh(big, 8);
        for (int i = 0; i < 7; i++) {
            checks++;
            if (!(big[i] == want[i])) FAIL("%s gelu_tanh(%g) = %g, expected %g", paths[p], in[i], big[i], want[i]);
        }
    }
}

// fb_attend and fb_attend_f16 (decode attention for the query heads that share one key/value head, over an f32 and a
// binary16 cache) on every path against a double-precision reference: one to five query heads (the SIMD kernels take
// them in pairs), head sizes with every 8-value tail of their 32-value blocks and one not a multiple of 8 (the
// portable code), one position, a few and many, strided rows. The f16 reference reads the widened cache values (exact),
// so both get the same bound: 1e-5 of the largest |v| (float sums of at most 600 softmax-weighted rows).
static void check_attend(const char **paths, int npaths) {
    const size_t cases[][3] = {{2, 64, 300}, {1, 72, 17}, {3, 7, 5}, {5, 40, 1}, {2, 136, 9}, {4, 64, 600}};  // groups, hd, n
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const size_t groups = cases[ci][0], hd = cases[ci][1], n = cases[ci][2], ld = 2 * hd + 3;
        float *q = malloc(groups * hd * sizeof(float)), *kf = malloc(n * ld * sizeof(float)),
              *vf = malloc(n * ld * sizeof(float)), *scores = malloc(groups * n * sizeof(float)),
              *out = malloc(groups * hd * sizeof(float));
        double *ref = calloc(groups * hd, sizeof(double)), *s = malloc(n * sizeof(double));
        uint16_t *kh = malloc(n * ld * 2), *vh = malloc(n * ld * 2);
        double vmax = 0;
        for (size_t i = 0; i < groups * hd; i++) q[i] = normal();
        for (size_t i = 0; i < n * ld; i++) {
            kh[i] = fb_f32_to_f16(normal());
            vh[i] = fb_f32_to_f16(normal());
            kf[i] = fb_f16_to_f32(kh[i]);  // the same values in both caches, so one reference serves both
            vf[i] = fb_f16_to_f32(vh[i]);
            vmax = fmax(vmax, fabs(vf[i]));
        }
        const float scale = 1.0f / sqrtf((float)hd);
        for (size_t g = 0; g < groups; g++) {
            double m = -INFINITY, sum = 0;
            for (size_t j = 0; j < n; j++) {
                double d = 0;
                for (size_t i = 0; i < hd; i++) d += (double)q[g * hd + i] * kf[j * ld + i];
                s[j] = scale * d;
                m = fmax(m, s[j]);
            }
            for (size_t j = 0; j < n; j++) sum += (s[j] = exp(s[j] - m));
            for (size_t j = 0; j < n; j++)
                for (size_t i = 0; i < hd; i++) ref[g * hd + i] += s[j] / sum * vf[j * ld + i];
        }
        for (int p = 0; p < npaths; p++) {
            fb_kernels_select(paths[p]);
            for (int f16 = 0; f16 < 2; f16++) {
                for (size_t i = 0; i < groups * hd; i++) out[i] = NAN;
                if (f16) fb_attend_f16(q, groups, hd, kh, vh, ld, n, scale, scores, out);
                else fb_attend(q, groups, hd, kf, vf, ld, n, scale, scores, out);
                for (size_t i = 0; i < groups * hd; i++) {
                    checks++;
                    if (!(fabs(out[i] - ref[i]) <= 1e-5 * vmax))
                        FAIL("%s fb_attend%s groups %zu hd %zu n %zu, i %zu: %g vs %g", paths[p], f16 ? "_f16" : "", groups,
                             hd, n, i, out[i], ref[i]);
                }
            }
        }
        free(q), free(kf), free(vf), free(scores), free(out), free(ref), free(s), free(kh), free(vh);
    }
}

// The array conversions (NEON on AArch64, F16C on x86) against the scalar definitions, bit for bit: every half, and
// floats of random bit patterns (NaNs, infinities, subnormals, and values rounding to them included).
static void check_half_arrays(void) {
    enum { N = 65536 };
    uint16_t *h = malloc(N * 2), *h2 = malloc(N * 2);
    float *f = malloc(N * sizeof(float));
    for (size_t i = 0; i < N; i++) h[i] = (uint16_t)i;
    fb_f16_to_f32_array(h, f, N);
    for (size_t i = 0; i < N; i++) {
        const float want = fb_f16_to_f32(h[i]);
        checks++;
        uint32_t got_bits, want_bits;
        memcpy(&got_bits, &f[i], 4);
        memcpy(&want_bits, &want, 4);
        if (got_bits != want_bits) FAIL("fb_f16_to_f32_array(0x%04zx) = %08x, scalar %08x", i, got_bits, want_bits);
    }
    for (size_t i = 0; i < N; i++) {
        uint32_t bits = (uint32_t)(uniform() * 4294967296.0);
        if (i % 4 == 1) bits = (bits & 0x8000ffffu) | ((uint32_t)(102 + i % 40) << 23);  // near the half range's ends
        memcpy(&f[i], &bits, 4);
    }
    fb_f32_to_f16_array(f, h2, N);
    for (size_t i = 0; i < N; i++) {
        checks++;
        uint32_t bits;
        memcpy(&bits, &f[i], 4);
        if (h2[i] != fb_f32_to_f16(f[i])) FAIL("fb_f32_to_f16_array(%08x) = %04x, scalar %04x", bits, h2[i], fb_f32_to_f16(f[i]));
    }
    free(h), free(h2), free(f);
}

int main(int argc, char **argv) {
    const char *label = "native", *expect_default = NULL;
    const char *missing[8];
    int nmissing = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && !strcmp(argv[i], "--label")) label = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--expect-default")) expect_default = argv[++i];
        else if (i + 1 < argc && !strcmp(argv[i], "--expect-missing") && nmissing < 8) missing[nmissing++] = argv[++i];
        else {
            fprintf(stderr, "usage: %s [--label NAME] [--expect-default PATH] [--expect-missing PATH]...\n", argv[0]);
            return 2;
        }
    }
    const char *def = fb_kernels_name();  // the CPU's (or FB_KERNELS') choice, before any selection
    if (expect_default && strcmp(def, expect_default) != 0)
        FAIL("default path is %s, expected %s", def, expect_default);
    for (int i = 0; i < nmissing; i++)
        if (fb_kernels_select(missing[i]) == 0) FAIL("path %s is selectable but should not be on this CPU", missing[i]);
    if (fb_kernels_select("no-such-path") != -1) FAIL("an unknown path name was accepted");

    const char *paths[N_PATHS];
    int npaths = 0;
    char list[256] = "";
    for (int i = 0; i < N_PATHS; i++)
        if (fb_kernels_select(all_paths[i]) == 0) {
            paths[npaths++] = all_paths[i];
            strcat(list, npaths > 1 ? "," : "");
            strcat(list, all_paths[i]);
        }
    if (npaths == 0 || strcmp(paths[0], "scalar") != 0) FAIL("the scalar path must always be available");

    // cols: vector tails for f32/f16; for q8/q4 odd and even group counts, and more than one block of
    // 64 groups (4608 = 144 groups; 4192 = 131, odd, in three blocks).
    const test_case cases[] = {
        {FB_F32, 100, 0, 0}, {FB_F32, 4100, 0, 0}, {FB_F16, 100, 0, 0}, {FB_F16, 1024, 0, 0}, {FB_F16, 1031, 0, 0},
        {FB_Q8, 96, 0, 1},   {FB_Q8, 256, 1, 0},   {FB_Q8, 4192, 0, 0}, {FB_Q4, 160, 0, 1},   {FB_Q4, 64, 0, 0},
        {FB_Q4, 32, 0, 0},   {FB_Q4, 1024, 0, 0},  {FB_Q4, 4608, 0, 0}, {FB_Q4, 4192, 0, 0},  {FB_Q8, 32, 0, 0},
        {FB_Q4NL, 160, 0, 1}, {FB_Q4NL, 32, 0, 0}, {FB_Q4NL, 1024, 0, 0}, {FB_Q4NL, 4192, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], paths, npaths);
    check_int8_route(paths, npaths);
    check_sgemm(paths, npaths);
    check_ops(paths, npaths);
    check_attend(paths, npaths);
    fb_kernels_select(def);
    check_half_arrays();

    const double rel = int8_ref2 > 0 ? sqrt(int8_err2 / int8_ref2) : 0;
    printf("kernels-test label=%s default=%s paths=%s checks=%d failures=%d worst_float=%.3f "
           "worst_int8_exact=%.3f worst_int8=%.3f int8_rel_rms=%.5f result=%s\n",
           label, def, list, checks, failures, worst_float, worst_int8_exact, worst_int8, rel,
           failures ? "FAIL" : "PASS");
    return failures ? 1 : 0;
}
