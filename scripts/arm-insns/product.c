// One kernel call for scripts/arm-insns.sh, run under qemu-user with an instruction-counting plugin:
//   product q4|q8 ROWS COLS N     a batched product (fb_matmul_pool, one thread) of a ROWS x COLS matrix, N tokens
//   product qk|pv REPEATS         attention's f32 products at the vision tower's size (256 queries and keys, head
//                                 size 64), Q Kᵀ or P V, REPEATS times
//   product gelu|silu|softmax REPEATS   the element-wise op over 65536 values (softmax in rows of 256), REPEATS times
//   product attend|attend16 REPEATS     decode attention, 2 query heads of 64 over 2048 cached positions (f32 / f16)
// FB_KERNELS / FB_BATCHED choose the path and route.
#include "Batched.h"
#include "Kernels.h"
#include "Ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float value(size_t i, unsigned mul) { return (float)((i * mul) % 1000) / 1000.0f - 0.5f; }

int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if ((!strcmp(what, "q4") || !strcmp(what, "q8")) && argc == 5) {
        const fb_dtype type = strcmp(what, "q8") == 0 ? FB_Q8 : FB_Q4;
        const size_t rows = strtoul(argv[2], NULL, 10), cols = strtoul(argv[3], NULL, 10), n = strtoul(argv[4], NULL, 10);
        float *w = malloc(rows * cols * sizeof(float)), *x = malloc(n * cols * sizeof(float)), *y = malloc(n * rows * sizeof(float));
        for (size_t i = 0; i < rows * cols; i++) w[i] = value(i, 2654435761u);
        for (size_t i = 0; i < n * cols; i++) x[i] = value(i, 40503u);
        void *q = malloc(fb_quant_bytes(type, rows, cols));
        uint16_t *scales = malloc(fb_scale_bytes(type, rows, cols));
        if (type == FB_Q8) fb_quantize_q8(w, cols, 0, rows, q, scales);
        else fb_quantize_q4(w, cols, 0, rows, q, scales);
        const fb_matrix m = {type, rows, cols, q, scales};
        fb_workspace *ws = fb_workspace_create();
        fb_matmul_pool(NULL, ws, &m, x, cols, n, y, rows);
        printf("path %s route %s\n", fb_kernels_name(), fb_batched_route(&m, n));
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s q4|q8 ROWS COLS N  |  %s qk|pv|gelu|silu|softmax|attend|attend16 REPEATS\n", argv[0],
                argv[0]);
        return 2;
    }
    const int repeats = atoi(argv[2]);
    if (!strcmp(what, "qk") || !strcmp(what, "pv")) {
        const size_t t = 256, hd = 64;
        float *a = malloc(t * t * sizeof(float)), *b = malloc(t * t * sizeof(float)), *c = malloc(t * t * sizeof(float));
        for (size_t i = 0; i < t * t; i++) a[i] = value(i, 7u), b[i] = value(i, 5u);
        for (int r = 0; r < repeats; r++) {
            if (!strcmp(what, "qk")) fb_sgemm(1, t, t, hd, 0.125f, a, hd, b, hd, 0, c, t);  // [t, hd] x [t, hd]ᵀ
            else fb_sgemm(0, t, hd, t, 1, a, t, b, hd, 0, c, hd);                           // [t, t] x [t, hd]
        }
        printf("path %s %g\n", fb_kernels_name(), c[5]);
        return 0;
    }
    if (!strcmp(what, "attend") || !strcmp(what, "attend16")) {
        const size_t groups = 2, hd = 64, n = 2048, ld = 8 * hd;
        float *q = malloc(groups * hd * sizeof(float)), *k = malloc(n * ld * sizeof(float)), *v = malloc(n * ld * sizeof(float));
        float *scores = malloc(groups * n * sizeof(float)), *out = malloc(groups * hd * sizeof(float));
        uint16_t *kh = malloc(n * ld * 2), *vh = malloc(n * ld * 2);
        for (size_t i = 0; i < groups * hd; i++) q[i] = value(i, 7u);
        for (size_t i = 0; i < n * ld; i++) k[i] = value(i, 5u), v[i] = value(i, 3u), kh[i] = fb_f32_to_f16(k[i]), vh[i] = fb_f32_to_f16(v[i]);
        for (int r = 0; r < repeats; r++) {
            if (!strcmp(what, "attend16")) fb_attend_f16(q, groups, hd, kh, vh, ld, n, 0.125f, scores, out);
            else fb_attend(q, groups, hd, k, v, ld, n, 0.125f, scores, out);
        }
        printf("path %s %g\n", fb_kernels_name(), out[3]);
        return 0;
    }
    const size_t n = 1 << 16;
    float *x = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = 6.6f * value(i, 2654435761u), b[i] = 1.0f;
    for (int r = 0; r < repeats; r++) {
        if (!strcmp(what, "gelu")) fb_gelu_tanh(x, n);
        else if (!strcmp(what, "silu")) fb_silu_mul(x, b, y, n);
        else for (size_t s = 0; s < n; s += 256) fb_softmax(x + s, 256);
    }
    printf("path %s %g %g\n", fb_kernels_name(), x[7], y[7]);
    return 0;
}
