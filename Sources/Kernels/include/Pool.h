// A persistent thread pool for the model's data-parallel loops (matrix products, attention heads).
//
// fb_pool_run(pool, fn, ctx) calls fn(ctx, chunk, chunks) exactly once for every chunk in [0, chunks) and returns
// when all are done. The calling thread works too: it and the workers claim chunks until none are left, so a job
// never waits for a worker that has not started yet (busy core, still waking up); the caller then waits only for
// chunks that are running. Workers spin for a while after each job (1 ms; FB_POOL_SPIN_US overrides), so
// back-to-back jobs cost well under a microsecond to hand out, and then sleep on a condition variable. Pools never
// nest: a call made from inside a chunk, or while another thread is using the same pool, runs all its chunks on
// the calling thread (correct, just not parallel).
#ifndef FIREBOLT_POOL_H
#define FIREBOLT_POOL_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fb_pool fb_pool;
typedef void (*fb_pool_fn)(void *ctx, int chunk, int chunks);

// A pool of `threads` threads in all, the caller included (threads - 1 workers are started; 1 starts none).
fb_pool *fb_pool_create(int threads);
// Stops and joins the workers. Must not be called while a job is running.
void fb_pool_destroy(fb_pool *pool);
// Threads the pool runs a job on (the caller included).
int fb_pool_threads(const fb_pool *pool);
// One job of fb_pool_threads(pool) chunks.
void fb_pool_run(fb_pool *pool, fb_pool_fn fn, void *ctx);
// One job of `chunks` chunks (1 ≤ chunks ≤ fb_pool_threads; more are clamped). A chunk index is never run by two
// threads at once, so per-chunk scratch needs no locking.
void fb_pool_run_chunks(fb_pool *pool, int chunks, fb_pool_fn fn, void *ctx);
// The pool shared by everything in the process that asks for `threads` threads (created on first use and kept
// for the life of the process), so that several sessions never keep several sets of spinning workers.
fb_pool *fb_pool_shared(int threads);
// Nonzero while the calling thread is running a chunk of some pool's job.
int fb_pool_inside(void);

#ifdef __cplusplus
}
#endif
#endif
