// Decode-shaped fb_matmul benchmark: GB/s of weight bytes (quants + scales) for n = 1 (and n = 2, 4),
// per kernel path, with weights cold (cycling through copies that together exceed the L3 cache, as in
// decode, where every weight of a ~200 MB model is read once per token). Built by scripts/bench-matvec.sh.
//
//   bench-matvec [-t threads] [-s seconds] [-p path,path] [-n 1,4] [shape ...]   shape = TYPE:ROWSxCOLS
#define _GNU_SOURCE
#include "Kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <time.h>

#include "bench-common.h"

typedef struct {
    fb_matrix m;
    size_t bytes;
} mat;

static mat make(fb_dtype type, size_t rows, size_t cols) {
    mat r = {{type, rows, cols, NULL, NULL}, 0};
    const size_t qb = fb_quant_bytes(type, rows, cols), sb = fb_scale_bytes(type, rows, cols);
    void *d = NULL, *s = NULL;
    // 2 MiB aligned and advised to huge pages, as the runtime's weight arena is.
    const size_t huge = (size_t)2 << 20;
    if (posix_memalign(&d, huge, qb) || posix_memalign(&s, 64, sb ? sb : 64)) abort();
    madvise(d, (qb + huge - 1) / huge * huge, MADV_HUGEPAGE);
    uint8_t *b = d;
    if (type == FB_F32) {
        for (size_t i = 0; i < rows * cols; i++) ((float *)d)[i] = gauss() * 0.05f;
    } else if (type == FB_F16) {
        for (size_t i = 0; i < rows * cols; i++) ((uint16_t *)d)[i] = fb_f32_to_f16(gauss() * 0.05f);
    } else {
        for (size_t i = 0; i < qb; i++) {
            b[i] = (uint8_t)next();
            if (type == FB_Q8 && b[i] == 0x80) b[i] = 0x81;
        }
        for (size_t i = 0; i < sb / 2; i++) ((uint16_t *)s)[i] = fb_f32_to_f16((unif() + 0.5f) * 0.004f);
    }
    r.m.data = d;
    r.m.scales = s;
    r.bytes = qb + sb;
    return r;
}

typedef struct {
    const fb_matrix *m;
    const float *x;
    size_t n;
    float *y;
    size_t r0, r1;
    pthread_barrier_t *bar;
    int iters, ncopies;
    const mat *copies;
} job;

static void *worker(void *p) {
    job *j = p;
    for (int it = 0; it < j->iters; it++) {
        const fb_matrix *m = &j->copies[it % j->ncopies].m;
        fb_matmul(m, j->x, m->cols, j->n, j->y, m->rows, j->r0, j->r1);
        if (j->bar) pthread_barrier_wait(j->bar);
    }
    return NULL;
}

// Runs `iters` products over the copies with `threads` threads; returns seconds.
static double run(const mat *copies, int ncopies, const float *x, size_t n, float *y, int threads, int iters) {
    const size_t rows = copies[0].m.rows;
    pthread_t th[16];
    job jobs[16];
    pthread_barrier_t bar;
    if (threads > 1) pthread_barrier_init(&bar, NULL, (unsigned)threads);
    const double t0 = now();
    for (int k = 0; k < threads; k++) {
        jobs[k] = (job){NULL, x, n, y, rows * k / threads, rows * (k + 1) / threads, threads > 1 ? &bar : NULL,
                        iters, ncopies, copies};
        if (k) pthread_create(&th[k], NULL, worker, &jobs[k]);
    }
    worker(&jobs[0]);
    for (int k = 1; k < threads; k++) pthread_join(th[k], NULL);
    const double t = now() - t0;
    if (threads > 1) pthread_barrier_destroy(&bar);
    return t;
}

int main(int argc, char **argv) {
    int threads = 1;
    double seconds = 0.6;
    const char *paths = NULL, *ns = "1";
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first += 2) {
        if (first + 1 >= argc) return 2;
        if (!strcmp(argv[first], "-t")) threads = atoi(argv[first + 1]);
        else if (!strcmp(argv[first], "-s")) seconds = atof(argv[first + 1]);
        else if (!strcmp(argv[first], "-p")) paths = argv[first + 1];
        else if (!strcmp(argv[first], "-n")) ns = argv[first + 1];
        else return 2;
    }
    const char *defaults[] = {"q4:4608x1024", "q4:1024x4608", "q4:65536x1024", "q8:4608x1024", "q8:1024x4608",
                              "f16:4608x1024", "f32:4608x1024"};
    const int nshapes = first < argc ? argc - first : (int)(sizeof defaults / sizeof defaults[0]);
    cpu_clock = threads == 1;
    char pathbuf[256];
    snprintf(pathbuf, sizeof pathbuf, "%s", paths ? paths : fb_kernels_name());
    printf("default path %s, %d thread(s), timed by %s\n", fb_kernels_name(), threads,
           cpu_clock ? "thread CPU time" : "wall clock");
    for (int si = 0; si < nshapes; si++) {
        const char *shape = first < argc ? argv[first + si] : defaults[si];
        char tname[8];
        size_t rows, cols;
        if (sscanf(shape, "%7[^:]:%zux%zu", tname, &rows, &cols) != 3) return 2;
        fb_dtype type = !strcmp(tname, "f32") ? FB_F32 : !strcmp(tname, "f16") ? FB_F16 : !strcmp(tname, "q8") ? FB_Q8
                      : !strcmp(tname, "q4nl") ? FB_Q4NL : FB_Q4;
        mat one = make(type, rows, cols);
        int ncopies = (int)((160u << 20) / one.bytes) + 1;  // > 5x the 32 MB L3
        if (ncopies > 64) ncopies = 64;
        mat *copies = malloc(sizeof(mat) * (size_t)ncopies);
        copies[0] = one;
        for (int k = 1; k < ncopies; k++) copies[k] = make(type, rows, cols);
        float *x = malloc(sizeof(float) * cols * 4), *y = malloc(sizeof(float) * rows * 4);
        for (size_t i = 0; i < cols * 4; i++) x[i] = gauss();
        char list[256];
        snprintf(list, sizeof list, "%s", pathbuf);
        for (char *save = NULL, *p = strtok_r(list, ",", &save); p; p = strtok_r(NULL, ",", &save)) {
            if (fb_kernels_select(p) != 0) continue;
            char nl[64];
            snprintf(nl, sizeof nl, "%s", ns);
            for (char *s2 = NULL, *q = strtok_r(nl, ",", &s2); q; q = strtok_r(NULL, ",", &s2)) {
                const size_t n = (size_t)atoi(q);
                run(copies, ncopies, x, n, y, threads, ncopies);  // warm up (page faults, clocks)
                int iters = ncopies;
                double t = run(copies, ncopies, x, n, y, threads, iters);
                iters = (int)(iters * seconds / (t > 1e-4 ? t : 1e-4)) + 1;
                double best = 1e30;
                for (int rep = 0; rep < 3; rep++) {  // best of 3: the machine is shared
                    t = run(copies, ncopies, x, n, y, threads, iters);
                    if (t < best) best = t;
                }
                const double cold = one.bytes * (double)iters / best / 1e9;
                // Hot: the same matrix again and again (from cache when it fits).
                int hi = (int)(seconds * 1e9 / 4 / (one.bytes / (cold > 1 ? cold : 1)));
                if (hi < 1) hi = 1;
                t = run(copies, 1, x, n, y, threads, hi);
                const double hot = one.bytes * (double)hi / t / 1e9;
                printf("%-14s %-13s n=%zu  cold %6.1f GB/s  hot %6.1f GB/s  (%.1f MB, %.0f us/call cold)\n", shape, p, n,
                       cold, hot, one.bytes / 1e6, best / iters * 1e6);
                fflush(stdout);
            }
        }
        for (int k = 0; k < ncopies; k++) {
            free((void *)copies[k].m.data);
            free((void *)copies[k].m.scales);
        }
        free(copies);
        free(x);
        free(y);
    }
    return 0;
}
