/* A chunk of steps of the recurrence in one call, on several threads, for B > 1, with or
   without the lengths of a right-padded batch (pass_args in contract.h).

   Per step the engine otherwise calls BLAS for `pre_h = W_hh h_{t-1}` (forward) or
   `dh_{t-1} = W_hhᵀ dpre_h` (backward) and then the cell on one core. BLAS packs W_hh anew at
   every call and reads it from memory, and the cell's arithmetic leaves the second core idle.
   Here each thread owns a range of hidden units, whole panels of them, and packs its share of
   the weights once per pass, at its start (pack_gate_panels, pack_column_panels): forward, it
   computes the rows of the products that feed its units' gates, tile by tile, and runs its
   units' cell on each tile while it is in L1; backward, its units' cells, then its units' rows
   of W_hhᵀ dpre_h and its features of dx. Its share of the packed weights stays in its core's
   cache from step to step. The threads meet once per step, where one step needs what all
   threads wrote in the one before: all of h_t (forward) or all of dpre_h (backward). After a
   backward's steps each adds up the parameter gradients' rows of an even share of the units.

   A template on the element type, as cells.c, which recurrence.c includes before it: the cells'
   arithmetic inlines into these loops. The barrier, the pool of threads and the sharing out of
   the units are recurrence.c's. */

/* a tile's columns: TILE numbers, VECTORS vectors (cells.c: NAME(vector)) */
enum { NAME(TILE) = VECTORS * NAME(LANES) };

/* out[r][0 .. cols) = Σ_k a[k][r] m[k][...] (+= with `accumulate`), for the PANEL_ROWS rows r
   of a packed panel `a` (n x PANEL_ROWS) and a tile of columns of m (n rows, `ld` apart); a
   NULL out[r] is a padding row of the panel, not written. ROW_BLOCK rows at a time, their sums
   in registers: the whole panel with AVX-512's 32 registers, half of it with AVX2's 16. */
static inline void NAME(tile)(int64_t n, const real *restrict a, const real *restrict m,
                              int64_t ld, real *const *out, int64_t cols,
                              int accumulate) {
    if (accumulate) /* the rows added to, which may come from far, on their way during the loop */
        for (int r = 0; r < PANEL_ROWS; r++)
            if (out[r])
                for (int64_t c = 0; c < cols; c += 64 / (int64_t)sizeof(real))
                    __builtin_prefetch(out[r] + c, 1);
    for (int r0 = 0; r0 < PANEL_ROWS; r0 += ROW_BLOCK) {
        NAME(vector) total[ROW_BLOCK][VECTORS];
        for (int r = 0; r < ROW_BLOCK; r++)
            for (int v = 0; v < VECTORS; v++) total[r][v] = (NAME(vector)){0};
        for (int64_t k = 0; k < n; k++) {
            NAME(vector) row[VECTORS];
            for (int v = 0; v < VECTORS; v++) row[v] = NAME(load)(m + k * ld + v * NAME(LANES));
            for (int r = 0; r < ROW_BLOCK; r++) {
                real weight = a[k * PANEL_ROWS + r0 + r];
                for (int v = 0; v < VECTORS; v++) total[r][v] += weight * row[v];
            }
        }
        for (int r = 0; r < ROW_BLOCK; r++) {
            real *to = out[r0 + r];
            if (!to) continue;
            if (cols == NAME(TILE)) { /* whole vectors: a memcpy of variable size is a call */
                for (int v = 0; v < VECTORS; v++) {
                    real *at = to + v * NAME(LANES);
                    NAME(vector) sum = total[r][v];
                    if (accumulate) sum += NAME(load)(at);
                    NAME(store)(at, sum);
                }
                continue;
            }
            real whole[NAME(TILE)];
            memcpy(whole, total[r], sizeof whole);
            if (accumulate) {
                for (int64_t c = 0; c < cols; c++) to[c] += whole[c];
            } else {
                memcpy(to, whole, (size_t)cols * sizeof(real));
            }
        }
    }
}

/* The last B % TILE columns of m (n rows, `ld` apart), copied into `tail` (n x TILE, zeros
   beyond B), so that every tile reads whole vectors; returns where the tail begins. */
static int64_t NAME(pack_tail)(const real *m, int64_t ld, int64_t n, int64_t B, real *tail) {
    const int64_t start = B - B % NAME(TILE);
    if (start == B) return B;
    for (int64_t k = 0; k < n; k++) {
        for (int64_t c = 0; c < NAME(TILE); c++)
            tail[k * NAME(TILE) + c] = start + c < B ? m[k * ld + start + c] : 0;
    }
    return start;
}

/* out rows (PANEL_ROWS, B each, NULL for padding) = panel a (n x PANEL_ROWS) times m (n rows
   of B, `ld` apart), whose last columns pack_tail_ put in `tail` from `start` on */
static void NAME(panel_product)(const real *a, int64_t n, const real *m, int64_t ld, int64_t B,
                              const real *tail, int64_t start, real *const *rows) {
    real *out[PANEL_ROWS];
    for (int64_t c = 0; c < start; c += NAME(TILE)) {
        for (int r = 0; r < PANEL_ROWS; r++) out[r] = rows[r] ? rows[r] + c : 0;
        NAME(tile)(n, a, m + c, ld, out, NAME(TILE), 0);
    }
    if (start < B) {
        for (int r = 0; r < PANEL_ROWS; r++) out[r] = rows[r] ? rows[r] + start : 0;
        NAME(tile)(n, a, tail, NAME(TILE), out, B - start, 0);
    }
}

/* panel (n x PANEL_ROWS) [k][r] = w[offsets[r] + k * stride], 0 where offsets[r] < 0 */
static void NAME(pack_panel)(const real *w, const int64_t *offsets, int64_t stride, int64_t n,
                           real *panel) {
    for (int64_t k = 0; k < n; k++) {
        for (int r = 0; r < PANEL_ROWS; r++)
            panel[k * PANEL_ROWS + r] = offsets[r] < 0 ? 0 : w[offsets[r] + k * stride];
    }
}

/* Forward, the panels of the units u0 .. u1 - 1 of w (K*H rows of n, `ld` apart) into
   `packed` (n x PANEL_ROWS each): panel p holds the `gates` gates of PANEL_ROWS / gates
   units, its row g * units + u being w's row g * H + p * units + u, zero past u1. */
static void NAME(pack_gate_panels)(const real *w, int64_t ld, int64_t n, int64_t gates, int64_t H,
                                 int64_t u0, int64_t u1, real *packed) {
    const int64_t units = PANEL_ROWS / gates;
    for (int64_t j0 = u0; j0 < u1; j0 += units) {
        int64_t offsets[PANEL_ROWS];
        for (int r = 0; r < PANEL_ROWS; r++) {
            const int64_t unit = j0 + r % units;
            offsets[r] = unit < u1 ? (r / units * H + unit) * ld : -1;
        }
        NAME(pack_panel)(w, offsets, 1, n, packed + j0 / units * n * PANEL_ROWS);
    }
}

/* Backward, the panels of the rows r0 .. r1 - 1 of wᵀ, for w (n rows, `ld` apart): panel p
   holds wᵀ's rows p * PANEL_ROWS + r, w's columns, zero past r1. */
static void NAME(pack_column_panels)(const real *w, int64_t ld, int64_t n, int64_t r0, int64_t r1,
                                   real *packed) {
    for (int64_t j0 = r0; j0 < r1; j0 += PANEL_ROWS) {
        int64_t offsets[PANEL_ROWS];
        for (int r = 0; r < PANEL_ROWS; r++) offsets[r] = j0 + r < r1 ? j0 + r : -1;
        NAME(pack_panel)(w, offsets, ld, n, packed + j0 / PANEL_ROWS * n * PANEL_ROWS);
    }
}

/* y[j] += x[j] for the rows j = u0 .. u1 - 1 of B numbers (rows ldy and ldx apart) */
static void NAME(add_rows)(real *restrict y, int64_t ldy, const real *restrict x, int64_t ldx,
                         int64_t u0, int64_t u1, int64_t B) {
    for (int64_t j = u0; j < u1; j++) {
#pragma omp simd
        for (int64_t b = 0; b < B; b++) y[j * ldy + b] += x[j * ldx + b];
    }
}

/* y[j][b] += x[b][j] for the rows j = u0 .. u1 - 1 of y (B numbers each, ldy apart) and the B
   rows of x (ldx apart): dy_t, which the user gives as B rows of H, into the gradient of h_t,
   whose rows are the units. A block of units at a time, so that each line of x is read once. */
static void NAME(add_columns)(real *restrict y, int64_t ldy, const real *restrict x, int64_t ldx,
                            int64_t u0, int64_t u1, int64_t B) {
    for (int64_t j0 = u0; j0 < u1; j0 += NAME(LANES)) {
        const int64_t j1 = j0 + NAME(LANES) < u1 ? j0 + NAME(LANES) : u1;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = j0; j < j1; j++) y[j * ldy + b] += x[b * ldx + j];
    }
}

/* Past the ends of the sequences (pass_args: lengths): the columns b with lengths[b] <= t.
   Forward, after step t's cell, each of the `parts` of the state leaving the step (the
   step's arrays 2 + parts + k) gets the units j0 .. j1 - 1 of the part entering it (2 + k),
   in the columns c0 .. c1 - 1. */
static void NAME(carry_past_end)(const step_args *s, const int64_t *lengths, int64_t t,
                               int64_t parts, int64_t c0, int64_t c1, int64_t j0, int64_t j1) {
    for (int64_t b = c0; b < c1; b++) {
        if (t < lengths[b]) continue;
        for (int64_t k = 0; k < parts; k++) {
            const array_arg in = s->a[2 + k], out = s->a[2 + parts + k];
            for (int64_t j = j0; j < j1; j++) NAME(row)(out, j)[b] = NAME(row)(in, j)[b];
        }
    }
}

/* Backward, before step t's cell: each of the `parts` of the gradient reaching the state
   (the step's arrays 0 .. parts - 1) moves, in the columns past the end and the units j0 ..
   j1 - 1, into `kept` (parts x H x B numbers), and the step gets zero there; then dy_t
   (`dy`, B rows of H, `ld_dy` apart) is added to the gradient of h_t (array 0) in the other
   columns. */
static void NAME(hold_past_end)(const step_args *s, const int64_t *lengths, int64_t t,
                              int64_t parts, const real *dy, int64_t ld_dy, int64_t j0,
                              int64_t j1, real *kept) {
    const int64_t B = s->B, H = s->H;
    for (int64_t b = 0; b < B; b++) {
        const int within = t < lengths[b];
        for (int64_t k = 0; k < parts; k++) {
            real *d = NAME(row)(s->a[k], 0);
            const int64_t ld = s->a[k].ld;
            for (int64_t j = j0; j < j1; j++) {
                if (within) {
                    if (k == 0) d[j * ld + b] += dy[b * ld_dy + j];
                } else {
                    kept[(k * H + j) * B + b] = d[j * ld + b];
                    d[j * ld + b] = 0;
                }
            }
        }
    }
}

/* Backward, after step t: what hold_past_end_ kept passes to the state entering the step,
   h's part into `dh_prev` (rows `ld_prev` apart), the others into the step's arrays 1 ..
   parts - 1, which the cell has written with its (zero) gradient there. */
static void NAME(release_past_end)(const step_args *s, const int64_t *lengths, int64_t t,
                                 int64_t parts, real *dh_prev, int64_t ld_prev, int64_t j0,
                                 int64_t j1, const real *kept) {
    const int64_t B = s->B, H = s->H;
    for (int64_t b = 0; b < B; b++) {
        if (t < lengths[b]) continue;
        for (int64_t k = 0; k < parts; k++) {
            real *d = k == 0 ? dh_prev : NAME(row)(s->a[k], 0);
            const int64_t ld = k == 0 ? ld_prev : s->a[k].ld;
            for (int64_t j = j0; j < j1; j++) d[j * ld + b] += kept[(k * H + j) * B + b];
        }
    }
}

/* the rows r0 .. r1 - 1 of out (B each, `ld_out` apart; r0 a multiple of PANEL_ROWS) = the
   panels of those rows in `packed` (n x PANEL_ROWS each) times m, as panel_product_ */
static void NAME(row_range_product)(const real *packed, int64_t n, const real *m, int64_t ld,
                                  int64_t B, const real *tail, int64_t start, real *out,
                                  int64_t ld_out, int64_t r0, int64_t r1) {
    for (int64_t j0 = r0; j0 < r1; j0 += PANEL_ROWS) {
        real *rows[PANEL_ROWS];
        for (int r = 0; r < PANEL_ROWS; r++)
            rows[r] = j0 + r < r1 ? out + (j0 + r) * ld_out : 0;
        NAME(panel_product)(packed + j0 / PANEL_ROWS * n * PANEL_ROWS, n, m, ld, B, tail, start,
                          rows);
    }
}

/* dx_t's features r0 .. r1 - 1 (r0 a multiple of PANEL_ROWS) in its B rows (`ld_out` apart) =
   the panels of those rows of W_ihᵀ in `packed` times dpre_x, as row_range_product_ computes
   dx_tᵀ: each tile of dx_tᵀ goes through a block on the stack into dx_t's rows, so that dx
   leaves the pass in the user's layout, (T, B, I), with no transposing copy after it. */
static void NAME(transposed_range_product)(const real *packed, int64_t n, const real *m,
                                         int64_t ld, int64_t B, const real *tail, int64_t start,
                                         real *out, int64_t ld_out, int64_t r0, int64_t r1) {
    real block[PANEL_ROWS][NAME(TILE)];
    for (int64_t j0 = r0; j0 < r1; j0 += PANEL_ROWS) {
        const int rows = r1 - j0 < PANEL_ROWS ? (int)(r1 - j0) : PANEL_ROWS;
        real *to[PANEL_ROWS];
        for (int r = 0; r < PANEL_ROWS; r++) to[r] = r < rows ? block[r] : 0;
        const real *panel = packed + j0 / PANEL_ROWS * n * PANEL_ROWS;
        for (int64_t c = 0; c < B; c += NAME(TILE)) {
            const int in_tail = c >= start;
            const int64_t cols = B - c < NAME(TILE) ? B - c : NAME(TILE);
            NAME(tile)(n, panel, in_tail ? tail : m + c, in_tail ? NAME(TILE) : ld, to, cols, 0);
            for (int64_t b = 0; b < cols; b++)
                for (int r = 0; r < rows; r++) out[(c + b) * ld_out + j0 + r] = block[r][b];
        }
    }
}

/* One sum over time of gradient_rows_: dw[r][0 .. N) from m (rows `ld_m` apart) */
typedef struct {
    const real *m;
    int64_t ld_m, N;
    real *dw;
    int64_t ld_dw;
} NAME(gradient_target);

/* panel[k][r] = dpre's row `row` at k0 + k, k < kc, where dpre holds, step after step, `rows`
   rows of B numbers each, so that k = step x B + b: the runs of one step at a time */
static void NAME(pack_step_row)(const real *dpre, int64_t rows, int64_t B, int64_t row,
                              int64_t k0, int64_t kc, real *panel, int r) {
    for (int64_t k = 0; k < kc;) {
        const int64_t at = k0 + k, b = at % B, run = B - b < kc - k ? B - b : kc - k;
        const real *from = dpre + (at / B * rows + row) * B + b;
        for (int64_t i = 0; i < run; i++) panel[(k + i) * PANEL_ROWS + r] = from[i];
        k += run;
    }
}

/* The kc rows k0 .. k0 + kc - 1 of m (N columns, rows `ld` apart) as the tiles read them:
   tile c (columns c * TILE ..) is kc x TILE numbers in `tiles`, contiguous, zeros past N.
   Every panel of dpre reads the whole block: in place, m's rows are 1 or 2 KiB apart (H = 256,
   512), each tile's rows in a few sets of L1; packed, each tile is one contiguous run. */
static void NAME(pack_tiles)(const real *m, int64_t ld, int64_t N, int64_t kc, real *tiles) {
    for (int64_t c = 0; c < N; c += NAME(TILE)) {
        real *to = tiles + c * kc;
        if (N - c >= NAME(TILE)) {
            for (int64_t k = 0; k < kc; k++)
                memcpy(to + k * NAME(TILE), m + k * ld + c, sizeof(real) * NAME(TILE));
            continue;
        }
        for (int64_t k = 0; k < kc; k++)
            for (int64_t j = 0; j < NAME(TILE); j++)
                to[k * NAME(TILE) + j] = c + j < N ? m[k * ld + c + j] : 0;
    }
}

/* For each of the `count` (at most GRADIENT_TARGETS) targets, dw[r][0 .. N) (+= with
   `accumulate`) Σ_k dpre[r][k] m[k][0 .. N), k < K, for the rows r = g * H + j of the gates
   g < `gates` and the units u0 <= j < u1, where dpre holds, step after step, its gates * H
   rows of B numbers (k = step x B + b; a step's rows contiguous, as the steps' products read
   them), a block of GRADIENT_BLOCK k at a time: each target's block of m packed into its
   `tiles` (pack_tiles), each panel of PANEL_ROWS rows of dpre packed once into `panel` for
   every target. */
static void NAME(gradient_rows)(const real *dpre, int64_t B, int64_t K,
                              const NAME(gradient_target) *targets, int count, int64_t gates,
                              int64_t H, int64_t u0, int64_t u1, int accumulate, real *panel,
                              real *const *tiles) {
    for (int64_t k0 = 0; k0 < K; k0 += GRADIENT_BLOCK) {
        const int64_t kc = K - k0 < GRADIENT_BLOCK ? K - k0 : GRADIENT_BLOCK;
        for (int t = 0; t < count; t++)
            NAME(pack_tiles)(targets[t].m + k0 * targets[t].ld_m, targets[t].ld_m, targets[t].N, kc,
                           tiles[t]);
        for (int64_t g = 0; g < gates; g++) {
            for (int64_t j0 = u0; j0 < u1; j0 += PANEL_ROWS) {
                for (int r = 0; r < PANEL_ROWS; r++) {
                    if (j0 + r < u1) {
                        NAME(pack_step_row)(dpre, gates * H, B, g * H + j0 + r, k0, kc, panel, r);
                    } else {
                        for (int64_t k = 0; k < kc; k++) panel[k * PANEL_ROWS + r] = 0;
                    }
                }
                for (int t = 0; t < count; t++) {
                    const NAME(gradient_target) *to = &targets[t];
                    for (int64_t c = 0; c < to->N; c += NAME(TILE)) {
                        real *out[PANEL_ROWS];
                        for (int r = 0; r < PANEL_ROWS; r++)
                            out[r] = j0 + r < u1 ? to->dw + (g * H + j0 + r) * to->ld_dw + c : 0;
                        const int64_t cols = to->N - c < NAME(TILE) ? to->N - c : NAME(TILE);
                        NAME(tile)(kc, panel, tiles[t] + c * kc, NAME(TILE), out, cols,
                                   accumulate || k0 > 0);
                    }
                }
            }
        }
    }
}

/* out[r * stride] (+= with `accumulate`) Σ_k dpre[r][k] over the `steps` steps of dpre, for
   the rows of gradient_rows_, reading dpre in its order, step after step */
static void NAME(row_sums)(const real *dpre, int64_t steps, int64_t B, real *out, int64_t stride,
                         int64_t gates, int64_t H, int64_t u0, int64_t u1, int accumulate) {
    for (int64_t s = 0; s < steps; s++) {
        for (int64_t g = 0; g < gates; g++) {
            for (int64_t j = u0; j < u1; j++) {
                const real *row = dpre + (s * gates * H + g * H + j) * B;
                real sum = 0;
#pragma omp simd reduction(+ : sum)
                for (int64_t b = 0; b < B; b++) sum += row[b];
                real *to = out + (g * H + j) * stride;
                *to = accumulate || s > 0 ? *to + sum : sum;
            }
        }
    }
}

/* a thread's share of the sums over time of a backward pass (gradient_args); where dpre_x
   is dpre_h (LSTM, RNN) both weights' sums read each packed panel of it */
static void NAME(gradients)(const gradient_args *d, int64_t gates, int64_t H, int64_t u0,
                          int64_t u1, real *scratch) {
    const real *dpre_h = (const real *)(intptr_t)d->dpre_h, *dpre_x = (const real *)(intptr_t)d->dpre_x;
    real *dw_hh = (real *)(intptr_t)d->dw_hh;
    const int accumulate = (int)d->accumulate;
    const NAME(gradient_target) targets[GRADIENT_TARGETS] = {
        {(const real *)(intptr_t)d->h_rows, H, H, dw_hh, d->ld_dw_hh},
        {(const real *)(intptr_t)d->x_rows, d->I, d->I, (real *)(intptr_t)d->dw_ih, d->ld_dw_ih}};
    /* the scratch, as backward_scratch sizes it: a panel of dpre, then h's tiles and x's, from
       a line's start, so that no vector of a tile's row spans two lines */
    real *panel = scratch, *tiles[GRADIENT_TARGETS];
    tiles[0] = (real *)round_up((intptr_t)(scratch + GRADIENT_BLOCK * PANEL_ROWS), 64);
    tiles[1] = tiles[0] + GRADIENT_BLOCK * round_up(H, NAME(TILE));
    const int64_t B = d->B, K = d->steps * d->B;
    if (dpre_x == dpre_h) {
        NAME(gradient_rows)(dpre_h, B, K, targets, 2, gates, H, u0, u1, accumulate, panel, tiles);
    } else {
        NAME(gradient_rows)(dpre_h, B, K, targets, 1, gates, H, u0, u1, accumulate, panel, tiles);
        NAME(gradient_rows)(dpre_x, B, K, targets + 1, 1, gates, H, u0, u1, accumulate, panel,
                          tiles + 1);
    }
    NAME(row_sums)(dpre_h, d->steps, B, dw_hh + H, d->ld_dw_hh, gates, H, u0, u1, accumulate);
    if (d->db_ih)
        NAME(row_sums)(dpre_x, d->steps, B, (real *)(intptr_t)d->db_ih, 1, gates, H, u0, u1,
                     accumulate);
}

/* [x_t; 1] as the tiles read it, `input_n` rows of `width` numbers (B rounded up to whole
   tiles): inputs[k][b] = x[b][k] for x's B rows of input_n - 1 numbers (`ld` apart), a row of
   ones below, zero in the columns from B on. Each thread transposes the step's x_t for itself,
   into its scratch: a few thousand numbers, where a copy of all of x in the layout of the tiles
   beforehand was a pass over memory on one core. */
static void NAME(pack_inputs)(const real *x, int64_t ld, int64_t B, int64_t input_n,
                              int64_t width, real *inputs) {
    const int64_t I = input_n - 1;
    for (int64_t k = 0; k < I; k++)
        for (int64_t b = 0; b < B; b++) inputs[k * width + b] = x[b * ld + k];
    for (int64_t b = 0; b < B; b++) inputs[I * width + b] = 1;
    for (int64_t k = 0; k < input_n; k++)
        for (int64_t b = B; b < width; b++) inputs[k * width + b] = 0;
}

/* Forward, steps 0 .. count - 1: row i of `products` holds h_{t-1} (n rows, the product's
   input), h_t (H rows, as the cell writes it), h_t as B rows of H (`h_rows`, y and what the
   backward's sums over time read) and x_t as B rows of input_n - 1 (the input projection's
   input, with a row of ones below: pack_inputs); row i of `steps` the cell's arrays, whose
   pre_x and pre_h the threads replace with their own. A forward panel holds
   PANEL_ROWS / K units: its rows are gate g of unit j0 + u at row g * (PANEL_ROWS / K) + u.
   Each tile of the products goes to the thread's scratch, and the cell runs on it while it is
   in L1: pre_x and pre_h, and the arrays of the cache that `discard` marks (bit k: the step's
   array k; inference keeps no cache), each have a `region` of K*H + PANEL_ROWS rows of a tile,
   where row g * H + j of a panel's units lies at H + g * H + j - j0: the same few rows for
   every panel, which stay in L1 instead of taking room from the weights in L2.

   A thread's share, units u0 .. u1 - 1, written once for the cell's kernel `step_units`; each
   cell's `<cell>_forward_units` below calls it with its own, a constant, which inlines into the
   loop over the tiles, and `<cell>_forward_threads` runs a pass of those on the threads. */
INLINE void NAME(forward_units)(
    pass_context *c, int64_t thread, int64_t u0, int64_t u1,
    void (*step_units)(const step_args *, int64_t, int64_t)) {
    const pass_args *p = c->pass;
    const int64_t n = p->n, n_x = p->input_n, gates = p->gates, per_panel = PANEL_ROWS / gates;
    const int64_t H = ((const step_args *)c->steps)->H;
    const int64_t region = (gates * H + PANEL_ROWS) * NAME(TILE);
    real *packed = (real *)(intptr_t)p->packed, *packed_x = (real *)(intptr_t)p->input_packed;
    const int64_t B = ((const step_args *)c->steps)->B;
    const int64_t width = (B + NAME(TILE) - 1) / NAME(TILE) * NAME(TILE);
    /* the thread's scratch, as forward_scratch sizes it: h's tail, [x_t; 1], the regions */
    real *tail = (real *)(intptr_t)p->scratch + thread * p->scratch_numbers;
    real *inputs = tail + n * NAME(TILE), *regions = inputs + n_x * width;
    const int64_t *lengths = (const int64_t *)(intptr_t)p->lengths;
    NAME(pack_gate_panels)((const real *)(intptr_t)p->weights, p->ld_weights, n, gates, H, u0, u1,
                         packed);
    NAME(pack_gate_panels)((const real *)(intptr_t)p->input_weights, p->ld_input_weights, n_x,
                         gates, H, u0, u1, packed_x);
    for (int64_t i = 0; i < c->count; i++) {
        const step_args *product = (const step_args *)(c->products + i * c->product_width);
        const step_args *s = (const step_args *)(c->steps + i * c->step_width);
        const int64_t ld_h = product->a[0].ld;
        const real *h = NAME(row)(product->a[0], 0);
        const int64_t start = NAME(pack_tail)(h, ld_h, n, B, tail);
        NAME(pack_inputs)(NAME(row)(product->a[3], 0), product->a[3].ld, B, n_x, width, inputs);
        for (int64_t j0 = u0; j0 < u1; j0 += per_panel) {
            const int64_t j1 = j0 + per_panel < u1 ? j0 + per_panel : u1;
            const int64_t panel = j0 / per_panel;
            real *base = regions + (H - j0) * NAME(TILE), *rows_x[PANEL_ROWS], *rows_h[PANEL_ROWS];
            for (int r = 0; r < PANEL_ROWS; r++) {
                const int64_t gate = r / per_panel, unit = j0 + r % per_panel;
                rows_x[r] = unit < j1 ? base + (gate * H + unit) * NAME(TILE) : 0;
                rows_h[r] = unit < j1 ? rows_x[r] + region : 0;
            }
            for (int64_t c0 = 0; c0 < B; c0 += NAME(TILE)) {
                const int in_tail = c0 >= start;
                const int64_t cols = B - c0 < NAME(TILE) ? B - c0 : NAME(TILE);
                NAME(tile)(n_x, packed_x + panel * n_x * PANEL_ROWS, inputs + c0, width, rows_x,
                           cols, 0);
                NAME(tile)(n, packed + panel * n * PANEL_ROWS, in_tail ? tail : h + c0,
                         in_tail ? NAME(TILE) : ld_h, rows_h, cols, 0);
                step_args local = *s;
                local.B = cols;
                for (int k = 0, d = 2; k < (int)(sizeof local.a / sizeof local.a[0]); k++) {
                    local.a[k].addr += c0 * (int64_t)sizeof(real);
                    if (k < 2 || (p->discard >> k & 1))
                        local.a[k] = (array_arg){(intptr_t)(base + (k < 2 ? k : d++) * region),
                                                 NAME(TILE)};
                }
                step_units(&local, j0, j1);
                if (lengths)
                    NAME(carry_past_end)(s, lengths, p->first_step + i, p->states, c0,
                                       c0 + cols, j0, j1);
            }
            const real *h_t = NAME(row)(product->a[1], 0);
            real *h_rows = NAME(row)(product->a[2], 0);
            const int64_t ld_t = product->a[1].ld, ld_rows = product->a[2].ld;
            for (int64_t j = j0; j < j1; j++)
                for (int64_t b = 0; b < B; b++) h_rows[b * ld_rows + j] = h_t[j * ld_t + b];
        }
        meet(&c->meeting);
    }
}
static void NAME(lstm_forward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(forward_units)(c, thread, u0, u1, NAME(lstm_step_units));
}
void NAME(lstm_forward_threads)(const int64_t *products, int64_t product_width,
                                  const int64_t *steps, int64_t step_width, const int64_t *pass,
                                  int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(0, 0, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS / ((const pass_args *)pass)->gates, NAME(lstm_forward_units));
}

static void NAME(gru_forward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(forward_units)(c, thread, u0, u1, NAME(gru_step_units));
}
void NAME(gru_forward_threads)(const int64_t *products, int64_t product_width,
                                  const int64_t *steps, int64_t step_width, const int64_t *pass,
                                  int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(0, 0, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS / ((const pass_args *)pass)->gates, NAME(gru_forward_units));
}

static void NAME(rnn_tanh_forward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(forward_units)(c, thread, u0, u1, NAME(rnn_tanh_step_units));
}
void NAME(rnn_tanh_forward_threads)(const int64_t *products, int64_t product_width,
                                  const int64_t *steps, int64_t step_width, const int64_t *pass,
                                  int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(0, 0, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS / ((const pass_args *)pass)->gates, NAME(rnn_tanh_forward_units));
}

static void NAME(rnn_relu_forward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(forward_units)(c, thread, u0, u1, NAME(rnn_relu_step_units));
}
void NAME(rnn_relu_forward_threads)(const int64_t *products, int64_t product_width,
                                  const int64_t *steps, int64_t step_width, const int64_t *pass,
                                  int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(0, 0, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS / ((const pass_args *)pass)->gates, NAME(rnn_relu_forward_units));
}

/* Backward, steps count - 1 down to 0: row i of `before` holds dh_t (H rows) and dy_t (B rows
   of H, as the user gives it; it is added to dh_t), row i of `steps` the cell's backward
   arrays (dh_t first), row i of `products` dpre_h (n = K*H rows) and dh_{t-1} (H rows), which
   gets W_hhᵀ dpre_h and, with `direct`, the cell's direct gradient left in dh_t, then, with
   input_n = I, dpre_x (n rows) and dx_t (B rows of I), which gets (W_ihᵀ dpre_x)ᵀ. Backward
   panels are PANEL_ROWS units, or features of dx_t, of which each thread has a share as of
   its units. Written once for the cell's kernel `step_back_units`, as forward_units. */
INLINE void NAME(backward_units)(
    pass_context *c, int64_t thread, int64_t u0, int64_t u1,
    void (*step_back_units)(const step_args *, int64_t, int64_t)) {
    const pass_args *p = c->pass;
    const int64_t n = p->n, threads = c->meeting.threads;
    const int64_t x0 = share_start(p->input_n, thread, threads, PANEL_ROWS);
    const int64_t x1 = share_start(p->input_n, thread + 1, threads, PANEL_ROWS);
    real *packed = (real *)(intptr_t)p->packed, *packed_x = (real *)(intptr_t)p->input_packed;
    real *tail = (real *)(intptr_t)p->scratch + thread * p->scratch_numbers;
    real *tail_x = tail + n * NAME(TILE);
    const int64_t *lengths = (const int64_t *)(intptr_t)p->lengths;
    real *kept = (real *)(intptr_t)p->kept;
    NAME(pack_column_panels)((const real *)(intptr_t)p->weights, p->ld_weights, n, u0, u1,
                           packed);
    if (x0 < x1) {
        NAME(pack_column_panels)((const real *)(intptr_t)p->input_weights, p->ld_input_weights, n,
                               x0, x1, packed_x);
    }
    for (int64_t i = c->count - 1; i >= 0; i--) {
        const step_args *before = (const step_args *)(c->before + i * c->before_width);
        const step_args *s = (const step_args *)(c->steps + i * c->step_width);
        const step_args *product = (const step_args *)(c->products + i * c->product_width);
        const int64_t B = s->B;
        real *dh = NAME(row)(before->a[0], 0);
        const real *dy = NAME(row)(before->a[1], 0);
        const int64_t t = p->first_step + i;
        if (lengths)
            NAME(hold_past_end)(s, lengths, t, p->states, dy, before->a[1].ld, u0, u1, kept);
        else
            NAME(add_columns)(dh, before->a[0].ld, dy, before->a[1].ld, u0, u1, B);
        step_back_units(s, u0, u1);
        meet(&c->meeting);
        const real *dpre = NAME(row)(product->a[0], 0);
        real *dh_prev = NAME(row)(product->a[1], 0);
        const int64_t ld_dpre = product->a[0].ld, ld_prev = product->a[1].ld;
        const int64_t start = NAME(pack_tail)(dpre, ld_dpre, n, B, tail);
        NAME(row_range_product)(packed, n, dpre, ld_dpre, B, tail, start, dh_prev, ld_prev, u0,
                              u1);
        if (p->direct) /* GRU: z * dh, left in dh by the cell */
            NAME(add_rows)(dh_prev, ld_prev, NAME(row)(s->a[0], 0), s->a[0].ld, u0, u1, B);
        if (lengths)
            NAME(release_past_end)(s, lengths, t, p->states, dh_prev, ld_prev, u0, u1, kept);
        if (x0 < x1) {
            const real *dpre_x = NAME(row)(product->a[2], 0);
            real *dx = NAME(row)(product->a[3], 0);
            const int64_t ld_dpre_x = product->a[2].ld;
            const int same = dpre_x == dpre && ld_dpre_x == ld_dpre; /* LSTM, RNN */
            const int64_t start_x =
                same ? start : NAME(pack_tail)(dpre_x, ld_dpre_x, n, B, tail_x);
            NAME(transposed_range_product)(packed_x, n, dpre_x, ld_dpre_x, B,
                                         same ? tail : tail_x, start_x, dx, product->a[3].ld,
                                         x0, x1);
        }
    }
    if (p->gradients) { /* every thread's dpre is written: the units shared out evenly */
        const int64_t H = ((const step_args *)c->steps)->H;
        NAME(gradients)((const gradient_args *)(intptr_t)p->gradients, p->gates, H,
                      H * thread / threads, H * (thread + 1) / threads, tail);
    }
}
static void NAME(lstm_backward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(backward_units)(c, thread, u0, u1, NAME(lstm_step_back_units));
}
void NAME(lstm_backward_threads)(const int64_t *before, int64_t before_width,
                                   const int64_t *steps, int64_t step_width,
                                   const int64_t *products, int64_t product_width,
                                   const int64_t *pass, int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(before, before_width, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS, NAME(lstm_backward_units));
}

static void NAME(gru_backward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(backward_units)(c, thread, u0, u1, NAME(gru_step_back_units));
}
void NAME(gru_backward_threads)(const int64_t *before, int64_t before_width,
                                   const int64_t *steps, int64_t step_width,
                                   const int64_t *products, int64_t product_width,
                                   const int64_t *pass, int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(before, before_width, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS, NAME(gru_backward_units));
}

static void NAME(rnn_tanh_backward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(backward_units)(c, thread, u0, u1, NAME(rnn_tanh_step_back_units));
}
void NAME(rnn_tanh_backward_threads)(const int64_t *before, int64_t before_width,
                                   const int64_t *steps, int64_t step_width,
                                   const int64_t *products, int64_t product_width,
                                   const int64_t *pass, int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(before, before_width, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS, NAME(rnn_tanh_backward_units));
}

static void NAME(rnn_relu_backward_units)(pass_context *c, int64_t thread, int64_t u0, int64_t u1) {
    NAME(backward_units)(c, thread, u0, u1, NAME(rnn_relu_step_back_units));
}
void NAME(rnn_relu_backward_threads)(const int64_t *before, int64_t before_width,
                                   const int64_t *steps, int64_t step_width,
                                   const int64_t *products, int64_t product_width,
                                   const int64_t *pass, int64_t pass_width, int64_t count) {
    (void)pass_width;
    run_pass(before, before_width, steps, step_width, products, product_width, pass, count,
             PANEL_ROWS, NAME(rnn_relu_backward_units));
}
