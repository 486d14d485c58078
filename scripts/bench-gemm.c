// Prefill-shaped batched product benchmark: GFLOP/s (2 * rows * cols * tokens per product) of fb_matmul_pool on
// each batched route, for the weight shapes of LFM2-350M and the vision tower. Built by scripts/bench-gemm.sh.
//
//   bench-gemm [-t threads] [-n tokens] [-s seconds] [-r gemm,int8] [shape ...]   shape = TYPE:ROWSxCOLS
#define _GNU_SOURCE
#include "Kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench-common.h"

int main(int argc, char **argv) {
    int threads = 2;
    size_t n = 256;
    double seconds = 1.0;
    const char *routes = "gemm,int8";
    const char *defaults[] = {"q4:4608x1024", "q4:1024x4608", "q4:1024x1024", "q4:3072x768"};
    const char **shapes = defaults;
    int nshapes = 4;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i += 2) {
        if (i + 1 >= argc) break;
        if (!strcmp(argv[i], "-t")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) n = (size_t)atol(argv[i + 1]);
        else if (!strcmp(argv[i], "-s")) seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) routes = argv[i + 1];
        else { fprintf(stderr, "unknown option %s\n", argv[i]); return 2; }
    }
    if (i < argc) { shapes = (const char **)argv + i; nshapes = argc - i; }
    cpu_clock = threads == 1;
    fb_pool *pool = fb_pool_shared(threads);
    fb_workspace *ws = fb_workspace_create();
    printf("kernels %s, %d threads, %zu tokens, %s time\n", fb_kernels_name(), threads, n, cpu_clock ? "CPU" : "wall");
    for (int s = 0; s < nshapes; s++) {
        char type[8];
        size_t rows, cols;
        if (sscanf(shapes[s], "%7[a-z0-9]:%zux%zu", type, &rows, &cols) != 3) { fprintf(stderr, "bad shape %s\n", shapes[s]); return 2; }
        const fb_dtype t = !strcmp(type, "q4nl") ? FB_Q4NL : !strcmp(type, "q4") ? FB_Q4 : !strcmp(type, "q8") ? FB_Q8 : !strcmp(type, "f16") ? FB_F16 : FB_F32;
        float *w = malloc(rows * cols * 4), *x = malloc(n * cols * 4), *y = malloc(n * rows * 4);
        for (size_t k = 0; k < rows * cols; k++) w[k] = gauss() * 0.05f;
        for (size_t k = 0; k < n * cols; k++) x[k] = gauss();
        void *q = aligned_alloc(64, (fb_quant_bytes(t, rows, cols) + 63) / 64 * 64);
        uint16_t *sc = aligned_alloc(64, (fb_scale_bytes(t, rows, cols) + 64) / 64 * 64);
        if (t == FB_Q4) fb_quantize_q4(w, cols, 0, rows, q, sc);
        else if (t == FB_Q4NL) fb_quantize_q4nl(w, cols, 0, rows, q, sc);
        else if (t == FB_Q8) fb_quantize_q8(w, cols, 0, rows, q, sc);
        else if (t == FB_F16) fb_f32_to_f16_array(w, q, rows * cols);
        else memcpy(q, w, rows * cols * 4);
        const fb_matrix m = {t, rows, cols, q, sc};
        char list[64];
        snprintf(list, sizeof list, "%s", routes);
        for (char *r = strtok(list, ","); r; r = strtok(NULL, ",")) {
            if (fb_batched_select(r) != 0) { fprintf(stderr, "unknown route %s\n", r); return 2; }
            fb_matmul_pool(pool, ws, &m, x, cols, n, y, rows);  // warm up, grow the workspace
            int iters = 0;
            const double t0 = now();
            double t1;
            do {
                fb_matmul_pool(pool, ws, &m, x, cols, n, y, rows);
                iters++;
            } while ((t1 = now()) - t0 < seconds);
            const double gflops = 2.0 * rows * cols * n * iters / (t1 - t0) * 1e-9;
            printf("%-14s %-5s (%s) %7.1f GFLOP/s  %.2f ms per product\n", shapes[s], r, fb_batched_route(&m, n), gflops,
                   (t1 - t0) / iters * 1e3);
        }
        free(w); free(x); free(y); free(q); free(sc);
    }
    fb_workspace_destroy(ws);
    return 0;
}
