/* The compiled backend, one translation unit, which setup.py compiles once per instruction set.

   The kernels proper are two templates, each written once in plain C on an element type `real`,
   whose functions are named NAME(x): cells.c, the cells' elementwise steps, the product at B = 1
   and whole passes at B = 1; threaded.c, the passes on several threads at B > 1. The end of this
   file includes them once for float (`real` float, NAME(x) x_f32: tanh_f32, lstm_step_f32) and
   once for double (x_f64). Here is what does not depend on the element type: the exported sizes
   and constants, the range reduction of exp (which works on the bits of each type, so written
   out once per type), the barrier, the pool of threads and the sharing out of a pass's units.
   One translation unit, so that the cells' arithmetic inlines into the threaded loops. */

#define _GNU_SOURCE /* pthreads, sched_yield; on Linux sched_getcpu and CPU affinity */
#include "contract.h" /* the structs Python fills, by name: step_args, matvec_args, add_args,
                         pass_args, gradient_args */

#include <math.h> /* INFINITY only: no libm function is called */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* inlined wherever called, past the compiler's budget: a vector loop vectorizes only with its
   whole body in sight (the activations, a cell's element), and a constant function pointer
   argument becomes a direct call only once its caller is inlined */
#define INLINE static inline __attribute__((always_inline))

/* the sizes of the structs of contract.h, which Python checks against the fields it reads there */
int64_t sizeof_step_args(void) { return sizeof(step_args); }
int64_t sizeof_matvec_args(void) { return sizeof(matvec_args); }
int64_t sizeof_add_args(void) { return sizeof(add_args); }
int64_t sizeof_pass_args(void) { return sizeof(pass_args); }
int64_t sizeof_gradient_args(void) { return sizeof(gradient_args); }

/* Prefetching the arrays of the next step that come from far (the input projection, the
   cache kept by the forward pass) lets their memory latency overlap this step's arithmetic
   and the GEMM between the two. */
static inline void prefetch_rows(array_arg a, int64_t rows, int64_t row_bytes, int64_t item) {
    const char *base = (const char *)(intptr_t)a.addr;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t byte = 0; byte < row_bytes; byte += 64) {
            __builtin_prefetch(base + r * a.ld * item + byte);
        }
    }
}

/* exp and expm1 share one range reduction: x = n ln2 + r with |r| <= ln2/2, so that
   exp(x) = 2^n (1 + expm1(r)) and expm1(x) = 2^n expm1(r) + (2^n - 1), with expm1(r) by its
   Taylor series and 2^n put into the exponent bits. The argument is clamped to where 2^n is a
   normal number; NaN fails every comparison and stays NaN. Writing tanh with expm1 keeps it
   accurate near 0, where 1 - exp(-2x) would cancel, with one series instead of two. */

/* r of x, and 2^n in *scale; x within [-87.3, 88.3] */
INLINE float reduce_f32(float x, float *scale) {
    const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float shifted = x * 1.44269504f + shifter;
    float n = shifted - shifter;
    float r = x - n * 0.693359375f; /* ln2 in two parts, the first exact in few bits */
    r = r + n * 2.12194440e-4f;
    uint32_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits - 0x4B400000u + 127u) << 23; /* the integer n, as the exponent of 2^n */
    memcpy(scale, &bits, sizeof bits);
    return r;
}

INLINE double reduce_f64(double x, double *scale) {
    const double shifter = 6755399441055744.0; /* 1.5 * 2^52 */
    double shifted = x * 1.4426950408889634 + shifter;
    double n = shifted - shifter;
    double r = x - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    uint64_t bits;
    memcpy(&bits, &shifted, sizeof bits);
    bits = (bits - 0x4338000000000000ull + 1023u) << 52;
    memcpy(scale, &bits, sizeof bits);
    return r;
}

/* 1/k! for k = 0 .. 13 */
static const double inverse_factorial[14] = {
    1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040, 1.0 / 40320,
    1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800.0,
};

/* A tile of the product is PANEL_ROWS rows by VECTORS vectors of columns (the batch), whose
   sums are held in registers ROW_BLOCK rows at a time: 12 x 2 of the 32 AVX-512 registers,
   6 x 2 of the 16 of AVX2 and SSE (12 x 1 there reads 13 numbers a 12 FMAs, 6 x 2 reads 8) */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#define ROW_BLOCK 12
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#define ROW_BLOCK 6
#else
#define VECTOR_BYTES 16
#define ROW_BLOCK 6
#endif
#define VECTORS 2
/* the vectors of out whose sums the product at B = 1 (cells.c: matvec_t) holds in registers,
   twice: 16 of the 32 AVX-512 registers, 8 of the 16 of AVX2 and SSE */
#if defined(__AVX512F__)
#define MATVEC_VECTORS 8
#else
#define MATVEC_VECTORS 4
#endif
/* a multiple of every cell's gate count (1, 3, 4), so that a forward panel holds whole units,
   and of ROW_BLOCK */
#define PANEL_ROWS 12
#define MAX_THREADS 64
#define SPINS 20000
/* the steps x batch of one block of the sums over time: a panel of dpre (GRADIENT_BLOCK x
   PANEL_ROWS) stays in L1 while it meets every tile of h or x */
#define GRADIENT_BLOCK 128
/* the sums one packed panel of dpre feeds at most: dW_hh and dW_ih */
#define GRADIENT_TARGETS 2
/* what a worker spins between passes before it sleeps, short: a spinning worker would take a
   core from the BLAS threads working between passes */
#define IDLE_SPINS 2000
/* what a worker spins after wake_workers woke it (1.3 ms on a Zen 4): long enough for the
   engine to plan the pass it announced, so that the pass finds the worker awake on its core */
#define WARM_SPINS 50000

int64_t panel_rows(void) { return PANEL_ROWS; }

/* n rounded up to a multiple of `step` */
static int64_t round_up(int64_t n, int64_t step) { return (n + step - 1) / step * step; }

/* the columns of one tile for numbers of `itemsize` bytes */
static int64_t tile_columns(int64_t itemsize) { return VECTORS * (VECTOR_BYTES / itemsize); }

/* The scratch numbers each thread of a pass needs, which the engine allocates. Forward
   (threaded.c: forward_units): the last columns of h_{t-1} (n rows of a tile), [x_t; 1]
   (input_n rows of B rounded up to whole tiles), and a region of KH + PANEL_ROWS rows of a tile
   for each of pre_x, pre_h and the cache arrays that `discard` marks (one bit each). */
int64_t forward_scratch(int64_t itemsize, int64_t n, int64_t input_n, int64_t B, int64_t KH,
                        int64_t discard) {
    const int64_t tile = tile_columns(itemsize), width = round_up(B, tile);
    const int64_t regions = 2 + __builtin_popcountll((unsigned long long)discard);
    return n * tile + input_n * width + regions * (KH + PANEL_ROWS) * tile;
}

/* Backward (backward_units): the last columns of dpre_h and dpre_x (KH rows of a tile each),
   or what the sums over time need after the steps, whichever is more: a panel of dpre and the
   tiles of h's block and x's (threaded.c: gradients), each of GRADIENT_BLOCK rows, the tiles
   from a line's start (64 bytes of room). */
int64_t backward_scratch(int64_t itemsize, int64_t KH, int64_t H, int64_t I) {
    const int64_t tile = tile_columns(itemsize), tails = 2 * KH * tile;
    const int64_t sums = GRADIENT_BLOCK * (PANEL_ROWS + round_up(H, tile) + round_up(I, tile)) +
                         64 / itemsize;
    return tails > sums ? tails : sums;
}

/* The threads of a pass meet at a barrier once per step: a count of arrivals and a generation
   that the last one to arrive moves on. Waiting spins (a step takes microseconds), then yields
   the core, which on a loaded machine may be needed by the thread being waited for. */
typedef struct {
    atomic_llong arrived, generation;
    int64_t threads;
} barrier;

static inline void spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void meet(barrier *m) {
    long long generation = atomic_load_explicit(&m->generation, memory_order_acquire);
    if (atomic_fetch_add_explicit(&m->arrived, 1, memory_order_acq_rel) == m->threads - 1) {
        atomic_store_explicit(&m->arrived, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&m->generation, 1, memory_order_release);
        return;
    }
    for (long spins = 0;
         atomic_load_explicit(&m->generation, memory_order_acquire) == generation; spins++) {
        if (spins < SPINS) spin_pause(); else sched_yield();
    }
}

/* One pass, shared by its threads: the tables of its steps (rows of int64, `*_width` apart) */
typedef struct pass_context {
    const int64_t *before, *steps, *products;
    int64_t before_width, step_width, product_width, count;
    const pass_args *pass;
    barrier meeting;
    void (*units)(struct pass_context *, int64_t thread, int64_t u0, int64_t u1);
} pass_context;

/* The threads passes run on, started on first use and kept, so that each stays on the core
   it ran on (a thread started anew per pass was often put on its starter's core, after the
   machine had been idle for a while, and shared it until Linux moved it: 2-5x slower passes).
   A pass hands out shares, moves `job` on and wakes the workers; a worker spins a little
   after its share, then sleeps until the next job. One pass at a time has the pool (`busy`):
   another, from another thread of the process, runs on its calling thread. */
typedef struct {
    pass_context *context;
    int64_t u0, u1;
} share;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    atomic_flag busy;
    atomic_llong job, finished; /* passes handed out; workers done with the last one */
    atomic_llong warmups;       /* calls of wake_workers */
    int64_t started, threads;   /* workers running; threads of the last job, the caller's too */
    share shares[MAX_THREADS];
    long long first_job[MAX_THREADS]; /* the job each worker was started after */
    pthread_t ids[MAX_THREADS];       /* the workers, 1 .. started */
    int away_from;                    /* the CPU the workers are kept off, -1 for none */
    atomic_int pin;                   /* keep the workers off the caller's CPU: only when asked */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
          .busy = ATOMIC_FLAG_INIT, .away_from = -1};

/* Whether the pool may change its workers' CPU affinity (keep_off_callers_cpu): a library does
   not touch a user's threads unless asked; `bptt train` asks, as it owns its process. */
void set_pinning(int64_t on) { atomic_store(&pool.pin, on != 0); }

/* A worker's wait for the job after `seen`: it spins IDLE_SPINS pauses, then sleeps until a
   job or wake_workers wakes it; woken by wake_workers, it spins WARM_SPINS before it sleeps
   again. Returns the job. */
static long long next_job(long long seen) {
    long long job, warmups = atomic_load(&pool.warmups);
    for (long spins = IDLE_SPINS;;) {
        while ((job = atomic_load_explicit(&pool.job, memory_order_acquire)) == seen && spins > 0) {
            spin_pause();
            spins--;
        }
        if (job != seen) return job;
        pthread_mutex_lock(&pool.lock);
        while ((job = atomic_load_explicit(&pool.job, memory_order_acquire)) == seen &&
               atomic_load(&pool.warmups) == warmups)
            pthread_cond_wait(&pool.wake, &pool.lock);
        warmups = atomic_load(&pool.warmups);
        pthread_mutex_unlock(&pool.lock);
        if (job != seen) return job;
        spins = WARM_SPINS;
    }
}

/* Wakes the sleeping workers ahead of a pass, which the engine calls before it plans one: a
   sleeping worker woken only when the pass began started its share 0.1 to 0.9 ms late on this
   VM (its CPU had to be woken), while the caller's share ran alone. */
void wake_workers(void) {
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add(&pool.warmups, 1);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
}

static void *work(void *arg) {
    const int64_t t = (int64_t)(intptr_t)arg;
    long long seen = pool.first_job[t];
#if defined(__linux__)
    pthread_setname_np(pthread_self(), "bptt-worker"); /* as top -H and debuggers show it */
#endif
    for (;;) {
        seen = next_job(seen);
        if (t < pool.threads) {
            const share *s = &pool.shares[t];
            s->context->units(s->context, t, s->u0, s->u1);
        }
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
    }
    return 0;
}

/* a child of fork() has none of the workers: it starts its own */
static void forget_workers(void) {
    pthread_mutex_init(&pool.lock, 0);
    pthread_cond_init(&pool.wake, 0);
    atomic_flag_clear(&pool.busy);
    atomic_store(&pool.finished, 0);
    pool.started = 0;
    pool.away_from = -1;
}

static void register_fork_handler(void) { pthread_atfork(0, 0, forget_workers); }

/* Workers started until `wanted` are running or one cannot be; returns how many run. */
static int64_t start_workers(int64_t wanted) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_fork_handler);
    while (pool.started < wanted) {
        const int64_t t = pool.started + 1; /* thread 0 is the caller */
        pool.first_job[t] = atomic_load(&pool.job);
        pthread_attr_t attributes;
        pthread_t id;
        if (pthread_attr_init(&attributes)) break;
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        const int failed = pthread_create(&id, &attributes, work, (void *)(intptr_t)t);
        pthread_attr_destroy(&attributes);
        if (failed) break;
        pool.ids[t] = id;
        pool.started++;
        pool.away_from = -1; /* the new worker may run anywhere its starter may */
    }
    return pool.started;
}

/* Keeps the workers off the CPU the caller runs on, where pinning was asked for (set_pinning).
   After the machine had been idle for a
   while, Linux often put a worker woken by the caller on the caller's CPU, where it began its
   share 0.7 ms late and the two shared the CPU until one was moved: passes 1.5-3x slower. A
   mask without the caller's CPU leaves the scheduler the others. Linux only; it costs a system
   call per worker only when the caller has moved to another CPU. */
static void keep_off_callers_cpu(void) {
#if defined(__linux__)
    cpu_set_t set;
    if (!atomic_load(&pool.pin)) { /* not asked: workers pinned before get the caller's CPUs back */
        if (pool.away_from < 0 || sched_getaffinity(0, sizeof set, &set)) return;
        for (int64_t t = 1; t <= pool.started; t++)
            pthread_setaffinity_np(pool.ids[t], sizeof set, &set);
        pool.away_from = -1;
        return;
    }
    const int cpu = sched_getcpu();
    if (cpu < 0 || cpu == pool.away_from || sched_getaffinity(0, sizeof set, &set)) return;
    CPU_CLR(cpu, &set);
    if (CPU_COUNT(&set) == 0) return;
    for (int64_t t = 1; t <= pool.started; t++)
        pthread_setaffinity_np(pool.ids[t], sizeof set, &set);
    pool.away_from = cpu;
#endif
}

/* Where thread t of `threads` begins its share of n rows: a multiple of `rows`, or n */
static int64_t share_start(int64_t n, int64_t t, int64_t threads, int64_t rows) {
    const int64_t panels = (n + rows - 1) / rows;
    const int64_t start = panels * t / threads * rows;
    return start < n ? start : n;
}

/* Runs context->units on `threads` threads, thread t on units [u_t, u_{t+1}), each u_t a
   multiple of the `rows` of a panel: the caller and the pool's workers, fewer where the pool
   cannot grow or is in use by another pass, which then runs on the calling thread alone. */
static void run_threads(pass_context *context, int64_t H, int64_t rows) {
    int64_t threads = context->pass->threads;
    const int64_t panels = (H + rows - 1) / rows;
    threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
    threads = threads > panels ? panels : threads;
    const int pooled = threads > 1 && !atomic_flag_test_and_set(&pool.busy);
    if (pooled) {
        const int64_t running = start_workers(threads - 1);
        threads = running + 1 < threads ? running + 1 : threads;
        keep_off_callers_cpu();
    } else {
        threads = 1;
    }
    atomic_init(&context->meeting.arrived, 0);
    atomic_init(&context->meeting.generation, 0);
    context->meeting.threads = threads;
    share shares[MAX_THREADS];
    for (int64_t t = 0; t < threads; t++) {
        shares[t] = (share){context, share_start(H, t, threads, rows),
                            share_start(H, t + 1, threads, rows)};
    }
    if (!pooled) {
        context->units(context, 0, shares[0].u0, shares[0].u1);
        return;
    }
    memcpy(pool.shares, shares, (size_t)threads * sizeof shares[0]);
    pool.threads = threads;
    atomic_store_explicit(&pool.finished, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool.lock);
    atomic_fetch_add_explicit(&pool.job, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    context->units(context, 0, shares[0].u0, shares[0].u1);
    for (long spins = 0;
         atomic_load_explicit(&pool.finished, memory_order_acquire) < pool.started; spins++) {
        if (spins < SPINS) spin_pause(); else sched_yield();
    }
    atomic_flag_clear(&pool.busy);
}

/* A pass over `count` steps of the tables (rows `*_width` int64 apart; `before` only backward),
   its units shared out by run_threads in panels of `rows` units. */
static void run_pass(const int64_t *before, int64_t before_width, const int64_t *steps,
                     int64_t step_width, const int64_t *products, int64_t product_width,
                     const int64_t *pass, int64_t count, int64_t rows,
                     void (*units)(pass_context *, int64_t, int64_t, int64_t)) {
    if (count <= 0) return;
    pass_context context = {.before = before, .steps = steps, .products = products,
                            .before_width = before_width, .step_width = step_width,
                            .product_width = product_width, .count = count,
                            .pass = (const pass_args *)pass, .units = units};
    run_threads(&context, ((const step_args *)steps)->H, rows);
}

/* The typed kernels, once per element type: cells.c (the cells' steps, the product at B = 1
   and whole passes at B = 1) and threaded.c (the threaded passes at B > 1). */
#define real float
#define NAME(x) x##_f32
#include "cells.c"
#include "threaded.c"
#undef real
#undef NAME

#define real double
#define NAME(x) x##_f64
#include "cells.c"
#include "threaded.c"
#undef real
#undef NAME
