/* A chunk of steps of the recurrence in one call, on several threads, for B > 1, with or
   without the lengths of a right-padded batch (pass_args in contract.h).

   Per step the engine otherwise calls BLAS for `pre_h = W_hh h_{t-1}` (forward) or
   `dh_{t-1} = W_hhᵀ dpre_h` (backward) and then the cell on one core. BLAS packs W_hh anew at
   every call and reads it from memory, and the cell's arithmetic leaves the second core idle.
   Here each thread owns a range of hidden units, whole panels of them, and packs its share of
   the weights once per pass, at its start (pack_gate_panels_, pack_column_panels_): forward, it
   computes the rows of the products that feed its units' gates, tile by tile, and runs its
   units' cell on each tile while it is in L1; backward, its units' cells, then its units' rows
   of W_hhᵀ dpre_h and its rows of dx. Its share of the packed weights stays in its core's
   cache from step to step. The threads meet once per step, where one step needs what all
   threads wrote in the one before: all of h_t (forward) or all of dpre_h (backward). After a
   backward's steps each adds up its units' rows of the parameter gradients.

   One translation unit with cells.c, so that the cells' arithmetic inlines into these loops. */

#define _GNU_SOURCE /* pthreads, sched_yield; on Linux sched_getcpu and CPU affinity */
#include "cells.c"
/* contract.h, included by cells.c: pass_args and gradient_args, the structs Python fills */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

/* A tile of the product is PANEL_ROWS rows by VECTORS vectors of columns (the batch), its
   accumulators held in registers: 12 x 2 of the 32 AVX-512 registers, 12 x 1 of AVX2's 16. */
#if defined(__AVX512F__)
#define VECTOR_BYTES 64
#define VECTORS 2
#elif defined(__AVX__)
#define VECTOR_BYTES 32
#define VECTORS 1
#else
#define VECTOR_BYTES 16
#define VECTORS 1
#endif
/* a multiple of every cell's gate count (1, 3, 4): a forward panel holds whole units */
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

int64_t panel_rows(void) { return PANEL_ROWS; }

/* the sizes of the structs of contract.h, which Python checks against the fields it reads there */
int64_t sizeof_pass_args(void) { return sizeof(pass_args); }
int64_t sizeof_gradient_args(void) { return sizeof(gradient_args); }

/* the columns of one tile for numbers of `itemsize` bytes */
int64_t tile_columns(int64_t itemsize) { return VECTORS * (VECTOR_BYTES / itemsize); }

/* the scratch numbers a thread's sums over time need: a panel and a tail per target, each of
   GRADIENT_BLOCK rows */
int64_t gradient_scratch(int64_t itemsize) {
    return GRADIENT_BLOCK * (PANEL_ROWS + GRADIENT_TARGETS * tile_columns(itemsize));
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

/* out[r][0 .. cols) = Σ_k a[k][r] m[k][...] (+= with `accumulate`), for the PANEL_ROWS rows r
   of a packed panel `a` (n x PANEL_ROWS) and a tile of columns of m (n rows, `ld` apart); a
   NULL out[r] is a padding row of the panel, not written. */
#define DEFINE_TILE(T, S)                                                                         \
    typedef T vector_##S __attribute__((vector_size(VECTOR_BYTES), aligned(sizeof(T))));          \
    enum { LANES_##S = VECTOR_BYTES / sizeof(T), TILE_##S = VECTORS * LANES_##S };                \
    static inline void tile_##S(int64_t n, const T *restrict a, const T *restrict m,              \
                                  int64_t ld, T *const *out, int64_t cols,                        \
                                  int accumulate) {                                               \
        vector_##S total[PANEL_ROWS][VECTORS];                                                    \
        for (int r = 0; r < PANEL_ROWS; r++)                                                      \
            for (int v = 0; v < VECTORS; v++) total[r][v] = (vector_##S){0};                      \
        for (int64_t k = 0; k < n; k++) {                                                         \
            vector_##S row[VECTORS];                                                              \
            for (int v = 0; v < VECTORS; v++)                                                     \
                memcpy(&row[v], m + k * ld + v * LANES_##S, sizeof row[v]);                       \
            for (int r = 0; r < PANEL_ROWS; r++) {                                                \
                T weight = a[k * PANEL_ROWS + r];                                                 \
                for (int v = 0; v < VECTORS; v++) total[r][v] += weight * row[v];                 \
            }                                                                                     \
        }                                                                                         \
        for (int r = 0; r < PANEL_ROWS; r++) {                                                    \
            if (!out[r]) continue;                                                                \
            if (cols == TILE_##S) { /* whole vectors: a memcpy of variable size is a call */      \
                for (int v = 0; v < VECTORS; v++) {                                               \
                    vector_##S sum = total[r][v], before;                                         \
                    if (accumulate) {                                                             \
                        memcpy(&before, out[r] + v * LANES_##S, sizeof before);                   \
                        sum += before;                                                            \
                    }                                                                             \
                    memcpy(out[r] + v * LANES_##S, &sum, sizeof sum);                             \
                }                                                                                 \
                continue;                                                                         \
            }                                                                                     \
            T whole[TILE_##S];                                                                    \
            memcpy(whole, total[r], sizeof whole);                                                \
            if (accumulate) {                                                                     \
                for (int64_t c = 0; c < cols; c++) out[r][c] += whole[c];                         \
            } else {                                                                              \
                memcpy(out[r], whole, (size_t)cols * sizeof(T));                                  \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* The last B % TILE columns of m (n rows, `ld` apart), copied into `tail` (n x TILE, zeros   \
       beyond B), so that every tile reads whole vectors; returns where the tail begins. */       \
    static int64_t pack_tail_##S(const T *m, int64_t ld, int64_t n, int64_t B, T *tail) {         \
        const int64_t start = B - B % TILE_##S;                                                   \
        if (start == B) return B;                                                                 \
        for (int64_t k = 0; k < n; k++) {                                                         \
            for (int64_t c = 0; c < TILE_##S; c++)                                                \
                tail[k * TILE_##S + c] = start + c < B ? m[k * ld + start + c] : 0;               \
        }                                                                                         \
        return start;                                                                             \
    }                                                                                             \
                                                                                                  \
    /* out rows (PANEL_ROWS, B each, NULL for padding) = (+= with `accumulate`) panel a (n x      \
       PANEL_ROWS) times m (n rows of B, `ld` apart), whose last columns pack_tail_ put in `tail` \
       from `start` on */                                                                         \
    static void panel_product_##S(const T *a, int64_t n, const T *m, int64_t ld, int64_t B,       \
                                  const T *tail, int64_t start, T *const *rows, int accumulate) { \
        T *out[PANEL_ROWS];                                                                       \
        for (int64_t c = 0; c < start; c += TILE_##S) {                                           \
            for (int r = 0; r < PANEL_ROWS; r++) out[r] = rows[r] ? rows[r] + c : 0;              \
            tile_##S(n, a, m + c, ld, out, TILE_##S, accumulate);                                 \
        }                                                                                         \
        if (start < B) {                                                                          \
            for (int r = 0; r < PANEL_ROWS; r++) out[r] = rows[r] ? rows[r] + start : 0;          \
            tile_##S(n, a, tail, TILE_##S, out, B - start, accumulate);                           \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* panel (n x PANEL_ROWS) [k][r] = w[offsets[r] + k * stride], 0 where offsets[r] < 0 */      \
    static void pack_panel_##S(const T *w, const int64_t *offsets, int64_t stride, int64_t n,     \
                               T *panel) {                                                        \
        for (int64_t k = 0; k < n; k++) {                                                         \
            for (int r = 0; r < PANEL_ROWS; r++)                                                  \
                panel[k * PANEL_ROWS + r] = offsets[r] < 0 ? 0 : w[offsets[r] + k * stride];      \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Forward, the panels of the units u0 .. u1 - 1 of w (K*H rows of n, `ld` apart) into        \
       `packed` (n x PANEL_ROWS each): panel p holds the `gates` gates of PANEL_ROWS / gates      \
       units, its row g * units + u being w's row g * H + p * units + u, zero past u1. */         \
    static void pack_gate_panels_##S(const T *w, int64_t ld, int64_t n, int64_t gates, int64_t H, \
                                     int64_t u0, int64_t u1, T *packed) {                         \
        const int64_t units = PANEL_ROWS / gates;                                                 \
        for (int64_t j0 = u0; j0 < u1; j0 += units) {                                             \
            int64_t offsets[PANEL_ROWS];                                                          \
            for (int r = 0; r < PANEL_ROWS; r++) {                                                \
                const int64_t unit = j0 + r % units;                                              \
                offsets[r] = unit < u1 ? (r / units * H + unit) * ld : -1;                        \
            }                                                                                     \
            pack_panel_##S(w, offsets, 1, n, packed + j0 / units * n * PANEL_ROWS);               \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Backward, the panels of the rows r0 .. r1 - 1 of wᵀ, for w (n rows, `ld` apart): panel p   \
       holds wᵀ's rows p * PANEL_ROWS + r, w's columns, zero past r1. */                          \
    static void pack_column_panels_##S(const T *w, int64_t ld, int64_t n, int64_t r0, int64_t r1, \
                                       T *packed) {                                               \
        for (int64_t j0 = r0; j0 < r1; j0 += PANEL_ROWS) {                                        \
            int64_t offsets[PANEL_ROWS];                                                          \
            for (int r = 0; r < PANEL_ROWS; r++) offsets[r] = j0 + r < r1 ? j0 + r : -1;          \
            pack_panel_##S(w, offsets, ld, n, packed + j0 / PANEL_ROWS * n * PANEL_ROWS);         \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* y[j] += x[j] for the rows j = u0 .. u1 - 1 of B numbers (rows ldy and ldx apart) */        \
    static void add_rows_##S(T *restrict y, int64_t ldy, const T *restrict x, int64_t ldx,        \
                             int64_t u0, int64_t u1, int64_t B) {                                 \
        for (int64_t j = u0; j < u1; j++) {                                                       \
            SIMD for (int64_t b = 0; b < B; b++) y[j * ldy + b] += x[j * ldx + b];                \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Past the ends of the sequences (pass_args: lengths): the columns b with lengths[b] <= t.   \
       Forward, after step t's cell, each of the `parts` of the state leaving the step (the       \
       step's arrays 2 + parts + k) gets the units j0 .. j1 - 1 of the part entering it (2 + k),  \
       in the columns c0 .. c1 - 1. */                                                            \
    static void carry_past_end_##S(const step_args *s, const int64_t *lengths, int64_t t,         \
                                   int64_t parts, int64_t c0, int64_t c1, int64_t j0, int64_t j1) {\
        for (int64_t b = c0; b < c1; b++) {                                                       \
            if (t < lengths[b]) continue;                                                         \
            for (int64_t k = 0; k < parts; k++) {                                                 \
                const array_arg in = s->a[2 + k], out = s->a[2 + parts + k];                      \
                for (int64_t j = j0; j < j1; j++) ROW(T, out, j)[b] = ROW(T, in, j)[b];           \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Backward, before step t's cell: each of the `parts` of the gradient reaching the state     \
       (the step's arrays 0 .. parts - 1) moves, in the columns past the end and the units j0 ..  \
       j1 - 1, into `kept` (parts x H x B numbers), and the step gets zero there; then dy_t       \
       (`dy`, rows `ld_dy` apart) is added to the gradient of h_t (array 0) in the other columns. */\
    static void hold_past_end_##S(const step_args *s, const int64_t *lengths, int64_t t,          \
                                  int64_t parts, const T *dy, int64_t ld_dy, int64_t j0,          \
                                  int64_t j1, T *kept) {                                          \
        const int64_t B = s->B, H = s->H;                                                         \
        for (int64_t b = 0; b < B; b++) {                                                         \
            const int within = t < lengths[b];                                                    \
            for (int64_t k = 0; k < parts; k++) {                                                 \
                T *d = ROW(T, s->a[k], 0);                                                        \
                const int64_t ld = s->a[k].ld;                                                    \
                for (int64_t j = j0; j < j1; j++) {                                               \
                    if (within) {                                                                 \
                        if (k == 0) d[j * ld + b] += dy[j * ld_dy + b];                           \
                    } else {                                                                      \
                        kept[(k * H + j) * B + b] = d[j * ld + b];                                \
                        d[j * ld + b] = 0;                                                        \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* Backward, after step t: what hold_past_end_ kept passes to the state entering the step,    \
       h's part into `dh_prev` (rows `ld_prev` apart), the others into the step's arrays 1 ..     \
       parts - 1, which the cell has written with its (zero) gradient there. */                   \
    static void release_past_end_##S(const step_args *s, const int64_t *lengths, int64_t t,       \
                                     int64_t parts, T *dh_prev, int64_t ld_prev, int64_t j0,      \
                                     int64_t j1, const T *kept) {                                 \
        const int64_t B = s->B, H = s->H;                                                         \
        for (int64_t b = 0; b < B; b++) {                                                         \
            if (t < lengths[b]) continue;                                                         \
            for (int64_t k = 0; k < parts; k++) {                                                 \
                T *d = k == 0 ? dh_prev : ROW(T, s->a[k], 0);                                     \
                const int64_t ld = k == 0 ? ld_prev : s->a[k].ld;                                 \
                for (int64_t j = j0; j < j1; j++) d[j * ld + b] += kept[(k * H + j) * B + b];     \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* the rows r0 .. r1 - 1 of out (B each, `ld_out` apart; r0 a multiple of PANEL_ROWS) = the   \
       panels of those rows in `packed` (n x PANEL_ROWS each) times m, as panel_product_ */       \
    static void row_range_product_##S(const T *packed, int64_t n, const T *m, int64_t ld,         \
                                      int64_t B, const T *tail, int64_t start, T *out,            \
                                      int64_t ld_out, int64_t r0, int64_t r1) {                   \
        for (int64_t j0 = r0; j0 < r1; j0 += PANEL_ROWS) {                                        \
            T *rows[PANEL_ROWS];                                                                  \
            for (int r = 0; r < PANEL_ROWS; r++)                                                  \
                rows[r] = j0 + r < r1 ? out + (j0 + r) * ld_out : 0;                              \
            panel_product_##S(packed + j0 / PANEL_ROWS * n * PANEL_ROWS, n, m, ld, B, tail, start,\
                              rows, 0);                                                           \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* One sum over time of gradient_rows_: dw[r][0 .. N) from m (rows `ld_m` apart) */           \
    typedef struct {                                                                              \
        const T *m;                                                                               \
        int64_t ld_m, N;                                                                          \
        T *dw;                                                                                    \
        int64_t ld_dw;                                                                            \
    } gradient_target_##S;                                                                        \
                                                                                                  \
    /* For each of the `count` (at most GRADIENT_TARGETS) targets, dw[r][0 .. N) (+= with         \
       `accumulate`) Σ_k dpre[r][k] m[k][0 .. N), k < K, for the rows r = g * H + j of the gates  \
       g < `gates` and the units u0 <= j < u1 (dpre's rows `ld_dpre` apart, k contiguous), a      \
       block of GRADIENT_BLOCK k at a time: each panel of PANEL_ROWS rows of dpre packed once     \
       into `panel` for every target, each m's last columns into its own of the `tails`. */       \
    static void gradient_rows_##S(const T *dpre, int64_t ld_dpre, int64_t K,                      \
                                  const gradient_target_##S *targets, int count, int64_t gates,   \
                                  int64_t H, int64_t u0, int64_t u1, int accumulate, T *panel,    \
                                  T *tails) {                                                     \
        for (int64_t k0 = 0; k0 < K; k0 += GRADIENT_BLOCK) {                                      \
            const int64_t kc = K - k0 < GRADIENT_BLOCK ? K - k0 : GRADIENT_BLOCK;                 \
            int64_t starts[GRADIENT_TARGETS];                                                     \
            for (int t = 0; t < count; t++) {                                                     \
                starts[t] = pack_tail_##S(targets[t].m + k0 * targets[t].ld_m, targets[t].ld_m, kc,\
                                          targets[t].N, tails + t * GRADIENT_BLOCK * TILE_##S);   \
            }                                                                                     \
            for (int64_t g = 0; g < gates; g++) {                                                 \
                for (int64_t j0 = u0; j0 < u1; j0 += PANEL_ROWS) {                                \
                    for (int r = 0; r < PANEL_ROWS; r++) {                                        \
                        const T *row = dpre + (g * H + j0 + r) * ld_dpre + k0;                    \
                        for (int64_t k = 0; k < kc; k++)                                          \
                            panel[k * PANEL_ROWS + r] = j0 + r < u1 ? row[k] : 0;                 \
                    }                                                                             \
                    for (int t = 0; t < count; t++) {                                             \
                        const gradient_target_##S *to = &targets[t];                              \
                        T *out[PANEL_ROWS];                                                       \
                        for (int r = 0; r < PANEL_ROWS; r++)                                      \
                            out[r] = j0 + r < u1 ? to->dw + (g * H + j0 + r) * to->ld_dw : 0;     \
                        panel_product_##S(panel, kc, to->m + k0 * to->ld_m, to->ld_m, to->N,      \
                                          tails + t * GRADIENT_BLOCK * TILE_##S, starts[t], out,  \
                                          accumulate || k0 > 0);                                  \
                    }                                                                             \
                }                                                                                 \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* out[r * stride] (+= with `accumulate`) Σ_k dpre[r][k], k < K, for the rows of              \
       gradient_rows_ */                                                                          \
    static void row_sums_##S(const T *dpre, int64_t ld_dpre, int64_t K, T *out, int64_t stride,   \
                             int64_t gates, int64_t H, int64_t u0, int64_t u1, int accumulate) {  \
        for (int64_t g = 0; g < gates; g++) {                                                     \
            for (int64_t j = u0; j < u1; j++) {                                                   \
                const T *row = dpre + (g * H + j) * ld_dpre;                                      \
                T sum = 0;                                                                        \
                _Pragma("omp simd reduction(+ : sum)")                                            \
                for (int64_t k = 0; k < K; k++) sum += row[k];                                    \
                T *to = out + (g * H + j) * stride;                                               \
                *to = accumulate ? *to + sum : sum;                                               \
            }                                                                                     \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* a thread's share of the sums over time of a backward pass (gradient_args); where dpre_x    \
       is dpre_h (LSTM, RNN) both weights' sums read each packed panel of it */                   \
    static void gradients_##S(const gradient_args *d, int64_t gates, int64_t H, int64_t u0,       \
                              int64_t u1, T *scratch) {                                           \
        T *panel = scratch, *tails = scratch + GRADIENT_BLOCK * PANEL_ROWS;                       \
        const T *dpre_h = (const T *)(intptr_t)d->dpre_h, *dpre_x = (const T *)(intptr_t)d->dpre_x;\
        T *dw_hh = (T *)(intptr_t)d->dw_hh;                                                       \
        const int accumulate = (int)d->accumulate;                                                \
        const gradient_target_##S targets[GRADIENT_TARGETS] = {                                   \
            {(const T *)(intptr_t)d->h_rows, H, H, dw_hh, d->ld_dw_hh},                           \
            {(const T *)(intptr_t)d->x_rows, d->I, d->I, (T *)(intptr_t)d->dw_ih, d->ld_dw_ih}};  \
        if (dpre_x == dpre_h && d->ld_dpre_x == d->ld_dpre_h) {                                   \
            gradient_rows_##S(dpre_h, d->ld_dpre_h, d->K, targets, 2, gates, H, u0, u1,           \
                              accumulate, panel, tails);                                          \
        } else {                                                                                  \
            gradient_rows_##S(dpre_h, d->ld_dpre_h, d->K, targets, 1, gates, H, u0, u1,           \
                              accumulate, panel, tails);                                          \
            gradient_rows_##S(dpre_x, d->ld_dpre_x, d->K, targets + 1, 1, gates, H, u0, u1,       \
                              accumulate, panel, tails);                                          \
        }                                                                                         \
        row_sums_##S(dpre_h, d->ld_dpre_h, d->K, dw_hh + H, d->ld_dw_hh, gates, H, u0, u1,        \
                     accumulate);                                                                 \
        if (d->db_ih)                                                                             \
            row_sums_##S(dpre_x, d->ld_dpre_x, d->K, (T *)(intptr_t)d->db_ih, 1, gates, H, u0, u1,\
                         accumulate);                                                             \
    }
DEFINE_TILE(float, f32)
DEFINE_TILE(double, f64)

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

static void *work(void *arg) {
    const int64_t t = (int64_t)(intptr_t)arg;
    long long seen = pool.first_job[t], job;
    for (;;) {
        for (long spins = 0; (job = atomic_load_explicit(&pool.job, memory_order_acquire)) == seen;
             spins++) {
            if (spins < IDLE_SPINS) {
                spin_pause();
                continue;
            }
            pthread_mutex_lock(&pool.lock);
            while (atomic_load_explicit(&pool.job, memory_order_acquire) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = job;
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

/* Forward, steps 0 .. count - 1: row i of `products` holds h_{t-1} (n rows, the product's
   input), [x_t; 1] (input_n rows), h_t (H rows, as the cell writes it) and h_t as B rows of H
   (`h_rows`, y and what the backward's sums over time read); row i of `steps` the cell's
   arrays, whose pre_x and pre_h the threads replace with their own. A forward panel holds
   PANEL_ROWS / K units: its rows are gate g of unit j0 + u at row g * (PANEL_ROWS / K) + u.
   Each tile of the products goes to the thread's scratch, and the cell runs on it while it is
   in L1: pre_x and pre_h, and the arrays of the cache that `discard` marks (bit k: the step's
   array k; inference keeps no cache), each have a `region` of K*H + PANEL_ROWS rows of a tile,
   where row g * H + j of a panel's units lies at H + g * H + j - j0: the same few rows for
   every panel, which stay in L1 instead of taking room from the weights in L2. */
#define DEFINE_FORWARD_THREADS(CELL, S, T)                                                        \
    static void CELL##_forward_units_##S(pass_context *c, int64_t thread, int64_t u0,             \
                                         int64_t u1) {                                            \
        const pass_args *p = c->pass;                                                             \
        const int64_t n = p->n, n_x = p->input_n, gates = p->gates, per_panel = PANEL_ROWS / gates;\
        const int64_t H = ((const step_args *)c->steps)->H;                                       \
        const int64_t region = (gates * H + PANEL_ROWS) * TILE_##S;                               \
        T *packed = (T *)(intptr_t)p->packed, *packed_x = (T *)(intptr_t)p->input_packed;         \
        T *tail = (T *)(intptr_t)p->scratch + thread * p->scratch_numbers;                        \
        T *tail_x = tail + n * TILE_##S, *regions = tail_x + n_x * TILE_##S;                      \
        const int64_t *lengths = (const int64_t *)(intptr_t)p->lengths;                           \
        pack_gate_panels_##S((const T *)(intptr_t)p->weights, p->ld_weights, n, gates, H, u0, u1, \
                             packed);                                                             \
        pack_gate_panels_##S((const T *)(intptr_t)p->input_weights, p->ld_input_weights, n_x,     \
                             gates, H, u0, u1, packed_x);                                         \
        for (int64_t i = 0; i < c->count; i++) {                                                  \
            const step_args *product = (const step_args *)(c->products + i * c->product_width);   \
            const step_args *s = (const step_args *)(c->steps + i * c->step_width);               \
            const int64_t B = s->B, ld_h = product->a[0].ld, ld_x = product->a[1].ld;             \
            const T *h = ROW(T, product->a[0], 0), *x = ROW(T, product->a[1], 0);                 \
            const int64_t start = pack_tail_##S(h, ld_h, n, B, tail);                             \
            pack_tail_##S(x, ld_x, n_x, B, tail_x);                                               \
            for (int64_t j0 = u0; j0 < u1; j0 += per_panel) {                                     \
                const int64_t j1 = j0 + per_panel < u1 ? j0 + per_panel : u1;                     \
                const int64_t panel = j0 / per_panel;                                             \
                T *base = regions + (H - j0) * TILE_##S, *rows_x[PANEL_ROWS], *rows_h[PANEL_ROWS];\
                for (int r = 0; r < PANEL_ROWS; r++) {                                            \
                    const int64_t gate = r / per_panel, unit = j0 + r % per_panel;                \
                    rows_x[r] = unit < j1 ? base + (gate * H + unit) * TILE_##S : 0;              \
                    rows_h[r] = unit < j1 ? rows_x[r] + region : 0;                               \
                }                                                                                 \
                for (int64_t c0 = 0; c0 < B; c0 += TILE_##S) {                                    \
                    const int in_tail = c0 >= start;                                              \
                    const int64_t cols = B - c0 < TILE_##S ? B - c0 : TILE_##S;                   \
                    tile_##S(n_x, packed_x + panel * n_x * PANEL_ROWS, in_tail ? tail_x : x + c0, \
                             in_tail ? TILE_##S : ld_x, rows_x, cols, 0);                         \
                    tile_##S(n, packed + panel * n * PANEL_ROWS, in_tail ? tail : h + c0,         \
                             in_tail ? TILE_##S : ld_h, rows_h, cols, 0);                         \
                    step_args local = *s;                                                         \
                    local.B = cols;                                                               \
                    for (int k = 0, d = 2; k < (int)(sizeof local.a / sizeof local.a[0]); k++) {  \
                        local.a[k].addr += c0 * (int64_t)sizeof(T);                               \
                        if (k < 2 || (p->discard >> k & 1))                                       \
                            local.a[k] = (array_arg){(intptr_t)(base + (k < 2 ? k : d++) * region),\
                                                     TILE_##S};                                   \
                    }                                                                             \
                    CELL##_step_units_##S(&local, j0, j1);                                        \
                    if (lengths)                                                                  \
                        carry_past_end_##S(s, lengths, p->first_step + i, p->states, c0,          \
                                           c0 + cols, j0, j1);                                    \
                }                                                                                 \
                const T *h_t = ROW(T, product->a[2], 0);                                          \
                T *h_rows = ROW(T, product->a[3], 0);                                             \
                const int64_t ld_t = product->a[2].ld, ld_rows = product->a[3].ld;                \
                for (int64_t j = j0; j < j1; j++)                                                 \
                    for (int64_t b = 0; b < B; b++) h_rows[b * ld_rows + j] = h_t[j * ld_t + b];  \
            }                                                                                     \
            meet(&c->meeting);                                                                    \
        }                                                                                         \
    }                                                                                             \
    void CELL##_forward_threads_##S(const int64_t *products, int64_t product_width,               \
                                    const int64_t *steps, int64_t step_width,                     \
                                    const int64_t *pass, int64_t pass_width, int64_t count) {     \
        (void)pass_width;                                                                         \
        run_pass(0, 0, steps, step_width, products, product_width, pass, count,                   \
                 PANEL_ROWS / ((const pass_args *)pass)->gates, CELL##_forward_units_##S);         \
    }

/* Backward, steps count - 1 down to 0: row i of `before` holds dy_t and dh_t (H rows each; dy_t
   is added to dh_t), row i of `steps` the cell's backward arrays (dh_t first), row i of
   `products` dpre_h (n = K*H rows) and dh_{t-1} (H rows), which gets W_hhᵀ dpre_h and, with
   `direct`, the cell's direct gradient left in dh_t, then, with input_n = I, dpre_x (n rows)
   and dx_tᵀ (I rows), which gets W_ihᵀ dpre_x. Backward panels are PANEL_ROWS units, or rows
   of dx_tᵀ, of which each thread has a share as of its units. */
#define DEFINE_BACKWARD_THREADS(CELL, S, T)                                                       \
    static void CELL##_backward_units_##S(pass_context *c, int64_t thread, int64_t u0,            \
                                          int64_t u1) {                                           \
        const pass_args *p = c->pass;                                                             \
        const int64_t n = p->n, threads = c->meeting.threads;                                     \
        const int64_t x0 = share_start(p->input_n, thread, threads, PANEL_ROWS);                  \
        const int64_t x1 = share_start(p->input_n, thread + 1, threads, PANEL_ROWS);              \
        T *packed = (T *)(intptr_t)p->packed, *packed_x = (T *)(intptr_t)p->input_packed;         \
        T *tail = (T *)(intptr_t)p->scratch + thread * p->scratch_numbers;                        \
        T *tail_x = tail + n * TILE_##S;                                                          \
        const int64_t *lengths = (const int64_t *)(intptr_t)p->lengths;                           \
        T *kept = (T *)(intptr_t)p->kept;                                                         \
        pack_column_panels_##S((const T *)(intptr_t)p->weights, p->ld_weights, n, u0, u1,         \
                               packed);                                                           \
        if (x0 < x1) {                                                                            \
            pack_column_panels_##S((const T *)(intptr_t)p->input_weights, p->ld_input_weights, n, \
                                   x0, x1, packed_x);                                             \
        }                                                                                         \
        for (int64_t i = c->count - 1; i >= 0; i--) {                                             \
            const step_args *before = (const step_args *)(c->before + i * c->before_width);       \
            const step_args *s = (const step_args *)(c->steps + i * c->step_width);               \
            const step_args *product = (const step_args *)(c->products + i * c->product_width);   \
            const int64_t B = s->B;                                                               \
            const T *dy = ROW(T, before->a[0], 0);                                                \
            T *dh = ROW(T, before->a[1], 0);                                                      \
            const int64_t t = p->first_step + i;                                                  \
            if (lengths)                                                                          \
                hold_past_end_##S(s, lengths, t, p->states, dy, before->a[0].ld, u0, u1, kept);   \
            else                                                                                  \
                add_rows_##S(dh, before->a[1].ld, dy, before->a[0].ld, u0, u1, B);                \
            CELL##_step_back_units_##S(s, u0, u1);                                                \
            meet(&c->meeting);                                                                    \
            const T *dpre = ROW(T, product->a[0], 0);                                             \
            T *dh_prev = ROW(T, product->a[1], 0);                                                \
            const int64_t ld_dpre = product->a[0].ld, ld_prev = product->a[1].ld;                 \
            const int64_t start = pack_tail_##S(dpre, ld_dpre, n, B, tail);                       \
            row_range_product_##S(packed, n, dpre, ld_dpre, B, tail, start, dh_prev, ld_prev, u0, \
                                  u1);                                                            \
            if (p->direct) /* GRU: z * dh, left in dh by the cell */                              \
                add_rows_##S(dh_prev, ld_prev, ROW(T, s->a[0], 0), s->a[0].ld, u0, u1, B);        \
            if (lengths)                                                                          \
                release_past_end_##S(s, lengths, t, p->states, dh_prev, ld_prev, u0, u1, kept);   \
            if (x0 < x1) {                                                                        \
                const T *dpre_x = ROW(T, product->a[2], 0);                                       \
                T *dx = ROW(T, product->a[3], 0);                                                 \
                const int64_t ld_dpre_x = product->a[2].ld;                                       \
                const int same = dpre_x == dpre && ld_dpre_x == ld_dpre; /* LSTM, RNN */          \
                const int64_t start_x =                                                           \
                    same ? start : pack_tail_##S(dpre_x, ld_dpre_x, n, B, tail_x);                \
                row_range_product_##S(packed_x, n, dpre_x, ld_dpre_x, B, same ? tail : tail_x,    \
                                      start_x, dx, product->a[3].ld, x0, x1);                     \
            }                                                                                     \
        }                                                                                         \
        if (p->gradients) {                                                                       \
            const step_args *s = (const step_args *)c->steps;                                     \
            gradients_##S((const gradient_args *)(intptr_t)p->gradients, p->gates, s->H, u0, u1,  \
                          tail);                                                                  \
        }                                                                                         \
    }                                                                                             \
    void CELL##_backward_threads_##S(const int64_t *before, int64_t before_width,                 \
                                     const int64_t *steps, int64_t step_width,                    \
                                     const int64_t *products, int64_t product_width,              \
                                     const int64_t *pass, int64_t pass_width, int64_t count) {    \
        (void)pass_width;                                                                         \
        run_pass(before, before_width, steps, step_width, products, product_width, pass, count,   \
                 PANEL_ROWS, CELL##_backward_units_##S);                                          \
    }

FOR_EACH_CELL(DEFINE_FORWARD_THREADS, f32, float)
FOR_EACH_CELL(DEFINE_FORWARD_THREADS, f64, double)
FOR_EACH_CELL(DEFINE_BACKWARD_THREADS, f32, float)
FOR_EACH_CELL(DEFINE_BACKWARD_THREADS, f64, double)
