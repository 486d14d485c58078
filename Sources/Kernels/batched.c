// Batched products over a thread pool: route choice, scalar references, the drivers. See include/Batched.h.
#include "Batched.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"

// ---- tuning ----------------------------------------------------------------------------------------------------

// GEMM blocking: NC rows x KC columns of f32 packed at a time (128 KiB, half the L2 of the CPUs this was tuned
// on); FB_GEMM_NC / FB_GEMM_KC override, for tuning.
static size_t gemm_nc = 128, gemm_kc = 256;
static pthread_once_t tune_once = PTHREAD_ONCE_INIT;

static size_t tune(const char *name, size_t def, size_t multiple) {
    const char *e = getenv(name);
    const long v = e && *e ? atol(e) : 0;
    return v > 0 ? ((size_t)v + multiple - 1) / multiple * multiple : def;
}

static void tune_init(void) {
    gemm_nc = tune("FB_GEMM_NC", gemm_nc, 16);
    gemm_kc = tune("FB_GEMM_KC", gemm_kc, 32);
}

// Pack buffers of the threads that call fb_sgemm (the pool's workers live as long as the process).
static pthread_key_t pack_key;
static pthread_once_t pack_key_once = PTHREAD_ONCE_INIT;
typedef struct {
    float *p;
    size_t cap;
} thread_pack;
static void free_thread_pack(void *v) {
    thread_pack *t = v;
    free(t->p);
    free(t);
}
static void make_pack_key(void) { pthread_key_create(&pack_key, free_thread_pack); }

static void *grow(void *p, size_t *cap, size_t bytes) {
    if (bytes <= *cap && p) return p;
    free(p);
    bytes = (bytes + 4095) & ~(size_t)4095;
    void *q = NULL;
    if (posix_memalign(&q, 64, bytes) != 0) abort();
    *cap = bytes;
    return q;
}

__attribute__((unused)) static float *thread_pack_buffer(size_t floats) {  // unused where no SIMD GEMM is built
    pthread_once(&pack_key_once, make_pack_key);
    thread_pack *t = pthread_getspecific(pack_key);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) abort();
        pthread_setspecific(pack_key, t);
    }
    t->p = grow(t->p, &t->cap, floats * 4);
    return t->p;
}

// ---- fb_sgemm --------------------------------------------------------------------------------------------------

// c[i*ldc + j] *= f for i < m, j < n.
static void scale_c(float *c, size_t ldc, size_t m, size_t n, float f) {
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) c[i * ldc + j] *= f;
}

// c (+)= A B on the kernel path's GEMM (AVX2 or NEON); 0 where there is none (the scalar path, other CPUs).
static int simd_sgemm(int trans_b, size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate) {
    const fb__kernel_table *kt = fb__kernels();
    if (kt->gemm_block) {
        // c[i][j] = sum_k a[i][k] B(k, j): "tokens" are the rows of a, "weight rows" the columns of c.
        const fb_source src = {.type = FB_F32, .rows = n, .cols = k, .stride = ldb, .transposed = !trans_b, .f32 = b};
        const size_t nc = gemm_nc, kc = gemm_kc;
        float *pack = thread_pack_buffer(kt->gemm_pack_floats(nc, kc));
        for (size_t r = 0; r < n; r += nc)
            kt->gemm_block(&src, a, lda, m, c, ldc, r, n - r < nc ? n : r + nc, kc, pack, accumulate);
        return 1;
    }
    if (kt->sgemm) {
        kt->sgemm(trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate, thread_pack_buffer(kt->sgemm_pack_floats()));
        return 1;
    }
    return 0;
}

void fb_sgemm(int trans_b, size_t m, size_t n, size_t k, float alpha, const float *a, size_t lda, const float *b,
              size_t ldb, float beta, float *c, size_t ldc) {
    if (m == 0 || n == 0) return;
    pthread_once(&tune_once, tune_init);
    if (beta != 0.0f && beta != 1.0f) scale_c(c, ldc, m, n, beta);
    const int accumulate = beta != 0.0f;
    // The SIMD GEMMs add A B to c or overwrite it; alpha comes after, so it must be 1 when they add.
    if ((alpha == 1.0f || !accumulate) && k > 0 && simd_sgemm(trans_b, m, n, k, a, lda, b, ldb, c, ldc, accumulate)) {
        if (alpha != 1.0f) scale_c(c, ldc, m, n, alpha);
        return;
    }
    // Portable: dot products (B transposed) or row updates (B as is), both of which the compiler vectorizes.
    for (size_t i = 0; i < m; i++) {
        float *ci = c + i * ldc;
        if (trans_b) {
            for (size_t j = 0; j < n; j++) {
                const float s = alpha * fb_dot(a + i * lda, b + j * ldb, k);
                ci[j] = accumulate ? ci[j] + s : s;
            }
        } else {
            if (!accumulate)
                for (size_t j = 0; j < n; j++) ci[j] = 0.0f;
            for (size_t q = 0; q < k; q++) fb_axpy(alpha * a[i * lda + q], b + q * ldb, ci, n);
        }
    }
}

// ---- scalar references -----------------------------------------------------------------------------------------

static float rne(float v) { return __builtin_nearbyintf(v); }  // default rounding mode: to nearest even

void fb__quantize_act_scalar(const float *x, size_t ldx, size_t t0, size_t t1, const fb__qact *a) {
    const size_t cols = a->cols, ng = a->ng;
    for (size_t t = t0; t < t1; t++) {
        for (size_t g = 0; g < ng; g++) {
            const float *xg = x + t * ldx + g * 32;
            int8_t *q = a->xq + t * cols + g * 32;
            float mx = 0.0f;
            for (int i = 0; i < 32; i++) mx = __builtin_fabsf(xg[i]) > mx ? __builtin_fabsf(xg[i]) : mx;
            const float d = mx / 127.0f, id = d > 0.0f ? 127.0f / mx : 0.0f;
            int sum = 0;
            for (int i = 0; i < 32; i++) {
                q[i] = (int8_t)rne(xg[i] * id);
                sum += q[i];
            }
            a->dx[t * ng + g] = d;
            a->ex[t * ng + g] = -8.0f * d * (float)sum;
        }
    }
}

void fb__gemm_i8_scalar(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1) {
    const size_t cols = w->cols, ng = cols / 32;
    for (size_t t = 0; t < a->n; t++) {
        const int8_t *xq = a->xq + t * cols;
        for (size_t r = r0; r < r1; r++) {
            float acc = 0.0f;
            for (size_t g = 0; g < ng; g++) {
                int dot = 0;
                if (w->type == FB_Q4) {
                    const uint8_t *b = (const uint8_t *)w->data + r * cols / 2 + g * 16;
                    for (int i = 0; i < 16; i++)
                        dot += ((int)(b[i] & 15) - 8) * xq[g * 32 + i] + ((int)(b[i] >> 4) - 8) * xq[g * 32 + 16 + i];
                } else if (w->type == FB_Q4NL) {
                    const uint8_t *b = (const uint8_t *)w->data + r * cols / 2 + g * 16;
                    for (int i = 0; i < 16; i++)
                        dot += fb_q4nl_levels[b[i] & 15] * xq[g * 32 + i] + fb_q4nl_levels[b[i] >> 4] * xq[g * 32 + 16 + i];
                } else {
                    const int8_t *q = (const int8_t *)w->data + r * cols + g * 32;
                    for (int i = 0; i < 32; i++) dot += q[i] * xq[g * 32 + i];
                }
                acc += fb_f16_to_f32(w->scales[r * ng + g]) * a->dx[t * ng + g] * (float)dot;
            }
            y[t * ldy + r] = acc;
        }
    }
}

// ---- packed int8 driver (the layout: batched_internal.h) -----------------------------------------------------------

size_t fb__i8_pack_bytes(size_t rows, size_t cols) {
    const size_t panels = (rows + FB__PK_ROWS - 1) / FB__PK_ROWS, ng = cols / 32;
    return panels * ng * (FB__PK_GROUP_BYTES + FB__PK_ROWS * sizeof(float));
}

void fb__i8_packed(const fb_matrix *w, const fb__qact *a, float *y, size_t ldy, size_t r0, size_t r1, void *pack,
                   const fb__pk_kernel *kernel) {
    const size_t ng = w->cols / 32, panels = (r1 - r0 + FB__PK_ROWS - 1) / FB__PK_ROWS;
    uint8_t *quants = pack;
    float *scales = (float *)(quants + panels * ng * FB__PK_GROUP_BYTES);
    for (size_t j = 0; j < panels; j++) {
        const size_t rb = r0 + j * FB__PK_ROWS, re = r1 - rb < FB__PK_ROWS ? r1 : rb + FB__PK_ROWS;
        kernel->pack_panel(w, rb, re, quants + j * ng * FB__PK_GROUP_BYTES, scales + j * ng * FB__PK_ROWS);
    }
    // Steps of FB__PK_STEP tokens outermost: each panel (16 rows x cols) serves all the step's tiles while it is in
    // L1/L2, and the step's activations stay in L2 across the block's panels.
    for (size_t t = 0; t < a->n; t += FB__PK_STEP) {
        const size_t te = a->n - t < FB__PK_STEP ? a->n : t + FB__PK_STEP;
        for (size_t j = 0; j < panels; j += (size_t)kernel->panels) {
            const size_t rows = (size_t)kernel->panels * FB__PK_ROWS, rb = r0 + j * FB__PK_ROWS;
            const size_t nr = r1 - rb < rows ? r1 - rb : rows;
            kernel->tokens(ng, quants + j * ng * FB__PK_GROUP_BYTES, scales + j * ng * FB__PK_ROWS, a, t, te, y + rb, ldy, nr);
        }
    }
}

// ---- workspace -------------------------------------------------------------------------------------------------

#define MAX_SLOTS 256

struct fb_workspace {
    int8_t *xq, *xi;
    size_t xi_cap;
    float *dx, *ex;
    size_t xq_cap, scale_cap;
    float *block[MAX_SLOTS];  // per chunk: packed / dequantized weights
    size_t block_cap[MAX_SLOTS];
};

fb_workspace *fb_workspace_create(void) { return calloc(1, sizeof(fb_workspace)); }

void fb_workspace_destroy(fb_workspace *ws) {
    if (!ws) return;
    free(ws->xq);
    free(ws->xi);
    free(ws->dx);
    free(ws->ex);
    for (int i = 0; i < MAX_SLOTS; i++) free(ws->block[i]);
    free(ws);
}

static float *slot_buffer(fb_workspace *ws, int c, size_t floats) {
    const int slot = c < MAX_SLOTS ? c : MAX_SLOTS - 1;
    return ws->block[slot] = grow(ws->block[slot], &ws->block_cap[slot], floats * 4);
}

// ---- routes ----------------------------------------------------------------------------------------------------

enum { ROUTE_MATMUL = 0, ROUTE_GEMM, ROUTE_INT8 };
enum { SEL_AUTO = 0, SEL_GEMM, SEL_INT8, SEL_OFF, SEL_UNSET = -1 };
static atomic_int selection = SEL_UNSET;

#define MIN_TOKENS 8

size_t fb_batched_min_tokens(void) { return MIN_TOKENS; }

static int parse_selection(const char *name) {
    if (!name) return -1;
    if (!strcmp(name, "auto")) return SEL_AUTO;
    if (!strcmp(name, "gemm")) return SEL_GEMM;
    if (!strcmp(name, "int8")) return SEL_INT8;
    if (!strcmp(name, "off")) return SEL_OFF;
    return -1;
}

static int current_selection(void) {
    int s = atomic_load_explicit(&selection, memory_order_acquire);
    if (s != SEL_UNSET) return s;
    const char *env = getenv("FB_BATCHED");
    s = env && *env ? parse_selection(env) : SEL_AUTO;
    if (s < 0) s = SEL_AUTO;
    int expected = SEL_UNSET;
    if (!atomic_compare_exchange_strong(&selection, &expected, s)) s = expected;
    return s;
}

int fb_batched_check(const char *name) { return parse_selection(name) < 0 ? -1 : 0; }

int fb_batched_select(const char *name) {
    const int s = parse_selection(name);
    if (s < 0) return -1;
    atomic_store_explicit(&selection, s, memory_order_release);
    return 0;
}

// The packed int8 kernel for q4/q8 weights on the selected kernel path (x86: one per kernel set from AVX2 up;
// AArch64: with the dot product or plain NEON), or NULL (the scalar path).
static const fb__pk_kernel *packed_kernel(const fb_matrix *w) {
    switch (w->type) {
    case FB_Q4: return fb__kernels()->packed_q4;
    case FB_Q8: return fb__kernels()->packed_q8;
    case FB_Q4NL: return fb__kernels()->packed_q4nl;
    default: return NULL;
    }
}

static int route_for(const fb_matrix *w, size_t n) {
    const int sel = current_selection();
    if (sel == SEL_OFF || n < MIN_TOKENS) return ROUTE_MATMUL;
    const int quant = w->type == FB_Q4 || w->type == FB_Q8 || w->type == FB_Q4NL;
    // q4 and q8 take a packed int8 kernel where there is one (on Zen 3, AVX2 without VNNI: q4 2-2.5x, q8 ~1.45x the
    // f32 GEMM; scripts/bench-gemm.sh); int8 asked for without one runs the scalar int8 reference.
    if (quant && (sel == SEL_INT8 || (sel == SEL_AUTO && packed_kernel(w)))) return ROUTE_INT8;
    // The rest: the f32 GEMM with AVX2, else fb_matmul (float for n > 4).
    return fb__kernels()->gemm_block ? ROUTE_GEMM : ROUTE_MATMUL;
}

const char *fb_batched_route(const fb_matrix *w, size_t n) {
    switch (route_for(w, n)) {
    case ROUTE_GEMM: return "gemm";
    case ROUTE_INT8: return "int8";
    default: return "matmul";
    }
}

// ---- jobs ------------------------------------------------------------------------------------------------------

typedef struct {
    fb_workspace *ws;
    const fb_matrix *w;
    const float *x;
    size_t ldx, n;
    float *y;
    size_t ldy;
    fb__qact act;
    size_t rows;          // rows to split
    size_t align;         // static chunk boundaries are multiples of this
    size_t block;         // rows per dynamically handed-out block
    atomic_size_t next;   // next block to hand out
} job;

static void split(size_t count, size_t align, int c, int chunks, size_t *b, size_t *e) {
    const size_t units = (count + align - 1) / align;
    *b = units * (size_t)c / (size_t)chunks * align;
    *e = units * (size_t)(c + 1) / (size_t)chunks * align;
    if (*b > count) *b = count;
    if (*e > count) *e = count;
}

// The next block of rows [*b, *e) of a job, or 0 when all are taken. Blocks are handed out as threads come for
// them, so a thread slowed down by something else running on its core gets fewer.
static int next_block(job *j, size_t *b, size_t *e) {
    const size_t i = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    *b = i * j->block;
    if (*b >= j->rows) return 0;
    *e = j->rows - *b < j->block ? j->rows : *b + j->block;
    return 1;
}

static void matmul_chunk(void *p, int c, int chunks) {
    job *j = p;
    size_t b, e;
    split(j->rows, 1, c, chunks, &b, &e);
    fb_matmul(j->w, j->x, j->ldx, j->n, j->y, j->ldy, b, e);
}

static void quantize_chunk(void *p, int c, int chunks) {
    job *j = p;
    size_t b, e;
    split(j->n, 1, c, chunks, &b, &e);
    fb__kernels()->quantize_act(j->x, j->ldx, b, e, &j->act);
}

static void int8_chunk(void *p, int c, int chunks) {
    job *j = p;
    (void)chunks;
    const fb__pk_kernel *kernel = packed_kernel(j->w);  // NULL: the scalar reference
    // The packed kernels pack each block of rows into this thread's buffer first.
    void *pack = kernel ? slot_buffer(j->ws, c, (fb__i8_pack_bytes(j->block, j->w->cols) + 3) / 4) : NULL;
    size_t b, e;
    while (next_block(j, &b, &e)) {
        if (kernel) fb__i8_packed(j->w, &j->act, j->y, j->ldy, b, e, pack, kernel);
        else fb__gemm_i8_scalar(j->w, &j->act, j->y, j->ldy, b, e);
    }
}

static void gemm_chunk(void *p, int c, int chunks) {
    job *j = p;
    (void)chunks;
    const fb_matrix *w = j->w;
    const fb__kernel_table *kt = fb__kernels();
    const fb_source src = {.type = w->type, .rows = w->rows, .cols = w->cols, .stride = w->cols, .data = w->data,
                           .scales = w->scales};
    float *pack = slot_buffer(j->ws, c, kt->gemm_pack_floats(gemm_nc, gemm_kc));
    size_t b, e;
    while (next_block(j, &b, &e)) kt->gemm_block(&src, j->x, j->ldx, j->n, j->y, j->ldy, b, e, gemm_kc, pack, 0);
}

void fb_matmul_pool(fb_pool *pool, fb_workspace *ws, const fb_matrix *w, const float *x, size_t ldx, size_t n,
                    float *y, size_t ldy) {
    if (n == 0 || w->rows == 0) return;
    pthread_once(&tune_once, tune_init);
    const int threads = fb_pool_threads(pool);
    job j = {.ws = ws, .w = w, .x = x, .ldx = ldx, .n = n, .y = y, .ldy = ldy, .rows = w->rows, .align = 1};
    atomic_init(&j.next, 0);
    const int route = ws ? route_for(w, n) : ROUTE_MATMUL;
    if (route == ROUTE_MATMUL) {
        const size_t work = w->rows * w->cols * n;
        int chunks = work < (1u << 16) ? 1 : threads;
        if ((size_t)chunks > w->rows) chunks = (int)w->rows;
        fb_pool_run_chunks(pool, chunks, matmul_chunk, &j);
        return;
    }
    if (route == ROUTE_INT8) {
        const size_t cols = w->cols, ng = cols / 32;
        ws->xq = grow(ws->xq, &ws->xq_cap, n * cols);
        if (!ws->dx || n * ng * 4 > ws->scale_cap) {  // dx and ex always have the same size
            size_t cap = 0;
            ws->dx = grow(ws->dx, &cap, n * ng * 4);
            ws->scale_cap = 0;
            ws->ex = grow(ws->ex, &ws->scale_cap, n * ng * 4);
        }
        j.act = (fb__qact){.xq = ws->xq, .dx = ws->dx, .ex = ws->ex, .n = n, .cols = cols, .ng = ng};
        if (fb__kernels()->act_interleaved) {  // the packed kernels read the interleaved copy
            const size_t tiles = (n + FB__XI_TOKENS - 1) / FB__XI_TOKENS;
            j.act.xi = ws->xi = grow(ws->xi, &ws->xi_cap, tiles * ng * 256);
        }
        fb_pool_run_chunks(pool, n < (size_t)threads ? (int)n : threads, quantize_chunk, &j);
        j.block = 64;
        fb_pool_run_chunks(pool, threads, int8_chunk, &j);
        return;
    }
    // gemm: blocks of rows handed out dynamically; smaller blocks when there are few rows per thread.
    size_t block = gemm_nc;
    while (block > 16 && w->rows / block < (size_t)threads * 4) block /= 2;
    j.block = block;
    fb_pool_run_chunks(pool, threads, gemm_chunk, &j);
}
