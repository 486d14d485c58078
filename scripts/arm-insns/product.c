// One batched product (fb_matmul_pool, one thread) of a rows x cols q4 or q8 matrix with n tokens, for
// scripts/arm-insns.sh:  product q4|q8 ROWS COLS N   (FB_KERNELS / FB_BATCHED choose the path and route).
#include "Batched.h"
#include "Kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s q4|q8 ROWS COLS N\n", argv[0]);
        return 2;
    }
    const fb_dtype type = strcmp(argv[1], "q8") == 0 ? FB_Q8 : FB_Q4;
    const size_t rows = strtoul(argv[2], NULL, 10), cols = strtoul(argv[3], NULL, 10), n = strtoul(argv[4], NULL, 10);
    float *w = malloc(rows * cols * sizeof(float)), *x = malloc(n * cols * sizeof(float)), *y = malloc(n * rows * sizeof(float));
    for (size_t i = 0; i < rows * cols; i++) w[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    for (size_t i = 0; i < n * cols; i++) x[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
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
