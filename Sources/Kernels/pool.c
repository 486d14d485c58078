// fb_pool: see include/Pool.h.
//
// A job is published by storing (fn, ctx), resetting `claim` and `done`, and then storing `generation`, a word
// holding the job's number and chunk count. Chunks are claimed, not assigned: `claim` holds (job number << 32 |
// next unclaimed chunk), and the caller and every worker that sees the job take chunks from it with a
// compare-and-swap until none are left. So a job never waits for a worker that has not started (descheduled by
// another process on a shared machine, or still waking up): the caller runs that chunk itself. The caller then
// waits only for claimed chunks to finish (`done`). fn and ctx are read only after a successful claim, when the job
// cannot end before that chunk reports back, and a claim names its job, so a worker that wakes up late can never
// take a chunk of the wrong job.
//
// Idle workers spin on `generation` for a while, then sleep on the condition variable. The sleep/wake hand-shake
// is the usual store-then-load pair on both sides (seq_cst): a worker announces itself in `sleepers` before it
// re-reads the generation under the mutex, and the caller stores the generation before it reads `sleepers`, so at
// least one of them sees the other and no wake-up is lost.
#define _GNU_SOURCE
#include "Pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define CPU_RELAX() ((void)0)
#endif

#define LINE 64
#define MAX_THREADS 1024

struct fb_pool {
    int threads;
    pthread_t *workers;
    long spin_ns;  // how long an idle worker spins before it sleeps
    uint32_t job;  // number of the last job published (caller side only)

    _Alignas(LINE) atomic_uint_fast64_t generation;  // job number << 16 | chunks
    fb_pool_fn fn;
    void *ctx;
    atomic_int stop;

    _Alignas(LINE) atomic_uint_fast64_t claim;  // job number << 32 | next unclaimed chunk

    _Alignas(LINE) atomic_int done;  // chunks of the current job finished

    _Alignas(LINE) atomic_int busy;  // a caller owns the pool
    atomic_int sleepers;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
};

static _Thread_local int inside_job;

int fb_pool_inside(void) { return inside_job; }

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

// A chunk of job `job` (of `chunks`), or -1 when all are taken or the job is over.
static int claim_chunk(fb_pool *pool, uint32_t job, int chunks) {
    uint_fast64_t c = atomic_load_explicit(&pool->claim, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(c >> 32) != job || (int)(uint32_t)c >= chunks) return -1;
        if (atomic_compare_exchange_weak_explicit(&pool->claim, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
            return (int)(uint32_t)c;
    }
}

// Claims and runs chunks of the job until none are left.
static void run_claimed(fb_pool *pool, uint32_t job, int chunks) {
    for (int c; (c = claim_chunk(pool, job, chunks)) >= 0;) {
        pool->fn(pool->ctx, c, chunks);
        atomic_fetch_add_explicit(&pool->done, 1, memory_order_release);
    }
}

static void *worker_main(void *p) {
    fb_pool *pool = p;
    uint_fast64_t seen = 0;
    inside_job = 1;  // a worker never dispatches to a pool
    for (;;) {
        uint_fast64_t g = atomic_load_explicit(&pool->generation, memory_order_acquire);
        if (g == seen) {
            // Spin for a while: jobs usually come back to back.
            const long deadline = now_ns() + pool->spin_ns;
            for (int i = 1;; i++) {
                CPU_RELAX();
                g = atomic_load_explicit(&pool->generation, memory_order_acquire);
                if (g != seen) break;
                if ((i & 255) == 0) {
                    if (now_ns() > deadline) break;
                    // With more threads than free cores, let a thread that has work run.
                    if ((i & 4095) == 0) sched_yield();
                }
            }
            if (g == seen) {
                pthread_mutex_lock(&pool->mutex);
                atomic_fetch_add(&pool->sleepers, 1);
                while ((g = atomic_load(&pool->generation)) == seen) pthread_cond_wait(&pool->wake, &pool->mutex);
                atomic_fetch_sub(&pool->sleepers, 1);
                pthread_mutex_unlock(&pool->mutex);
            }
        }
        seen = g;
        if (atomic_load_explicit(&pool->stop, memory_order_acquire)) break;
        run_claimed(pool, (uint32_t)(g >> 16), (int)(g & 0xffff));
    }
    return NULL;
}

fb_pool *fb_pool_create(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    fb_pool *pool = aligned_alloc(LINE, (sizeof(fb_pool) + LINE - 1) / LINE * LINE);
    if (!pool) return NULL;
    pool->threads = threads;
    pool->workers = NULL;
    pool->spin_ns = 1000 * 1000;  // 1 ms: covers the gaps between products in a decode step (sampling included)
    const char *env = getenv("FB_POOL_SPIN_US");
    if (env && *env) pool->spin_ns = atol(env) * 1000L;
    pool->job = 0;
    atomic_init(&pool->generation, 0);
    pool->fn = NULL;
    pool->ctx = NULL;
    atomic_init(&pool->stop, 0);
    atomic_init(&pool->claim, 0);
    atomic_init(&pool->done, 0);
    atomic_init(&pool->busy, 0);
    atomic_init(&pool->sleepers, 0);
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    if (threads > 1) {
        pool->workers = calloc((size_t)threads - 1, sizeof(pthread_t));
        for (int i = 1; i < threads; i++) {
            if (!pool->workers || pthread_create(&pool->workers[i - 1], NULL, worker_main, pool) != 0) {
                pool->threads = i;  // could not start a worker: run with the ones started so far
                break;
            }
        }
    }
    return pool;
}

static void publish(fb_pool *pool, fb_pool_fn fn, void *ctx, int chunks) {
    pool->fn = fn;
    pool->ctx = ctx;
    pool->job++;
    atomic_store_explicit(&pool->done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->claim, (uint_fast64_t)pool->job << 32, memory_order_release);
    // seq_cst: before reading sleepers. Only the low 48 bits of the job number fit; claims compare 32.
    atomic_store(&pool->generation, (uint_fast64_t)pool->job << 16 | (uint_fast64_t)chunks);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->mutex);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->mutex);
    }
}

void fb_pool_destroy(fb_pool *pool) {
    if (!pool) return;
    if (pool->threads > 1) {
        atomic_store(&pool->stop, 1);
        publish(pool, NULL, NULL, 0);
        for (int i = 1; i < pool->threads; i++) pthread_join(pool->workers[i - 1], NULL);
    }
    free(pool->workers);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->wake);
    free(pool);
}

int fb_pool_threads(const fb_pool *pool) { return pool ? pool->threads : 1; }

static void run_serial(fb_pool_fn fn, void *ctx, int chunks) {
    const int was = inside_job;
    inside_job = 1;
    for (int c = 0; c < chunks; c++) fn(ctx, c, chunks);
    inside_job = was;
}

void fb_pool_run_chunks(fb_pool *pool, int chunks, fb_pool_fn fn, void *ctx) {
    if (chunks < 1) return;
    const int threads = fb_pool_threads(pool);
    if (chunks > threads) chunks = threads;
    int expected = 0;
    if (chunks == 1 || inside_job ||
        !atomic_compare_exchange_strong_explicit(&pool->busy, &expected, 1, memory_order_acquire,
                                                 memory_order_relaxed)) {
        run_serial(fn, ctx, chunks);
        return;
    }
    publish(pool, fn, ctx, chunks);
    inside_job = 1;
    run_claimed(pool, pool->job, chunks);
    inside_job = 0;
    for (int i = 1; atomic_load_explicit(&pool->done, memory_order_acquire) != chunks; i++) {
        CPU_RELAX();
        if (i > 4096) sched_yield();  // a worker is inside a chunk but may have been descheduled: let it run
    }
    atomic_store_explicit(&pool->busy, 0, memory_order_release);
}

void fb_pool_run(fb_pool *pool, fb_pool_fn fn, void *ctx) {
    fb_pool_run_chunks(pool, fb_pool_threads(pool), fn, ctx);
}

// ---- shared pools ----------------------------------------------------------------------------------------

#define MAX_SHARED 256
static fb_pool *shared_pools[MAX_SHARED + 1];
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

fb_pool *fb_pool_shared(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_SHARED) threads = MAX_SHARED;
    pthread_mutex_lock(&shared_lock);
    fb_pool *p = shared_pools[threads];
    if (!p) p = shared_pools[threads] = fb_pool_create(threads);
    pthread_mutex_unlock(&shared_lock);
    return p;
}
