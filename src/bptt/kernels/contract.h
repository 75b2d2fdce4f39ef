/* The contract between Python and C: the structs that Python fills and the kernels read
   (bptt/kernels/plan.py reads the fields of each typedef here, by name, in this order; every
   field an int64_t, a count, a flag or an address, or an array_arg, two of them). An edit
   here is the whole edit: Python builds its rows from these names, and checks their size
   against sizeof() of the compiled struct. */
#ifndef BPTT_CONTRACT_H
#define BPTT_CONTRACT_H

#include <stdint.h>

/* An array a kernel reads or writes: its address, and the distance between its rows (or, for
   a vector, its elements) in numbers. */
typedef struct {
    int64_t addr, ld;
} array_arg;

#define MAX_ARRAYS 8

/* One time step of a cell (cells.c): B, H, which arrays of the step run next to prefetch (bit
   k: array k) and where that step's row is, relative to this one (+1 forward, -1 backward),
   then the step's arrays, each one time step's (F, B) slice of a buffer, in the order the
   comment above each kernel gives. */
typedef struct {
    int64_t B, H, prefetch, next;
    array_arg a[MAX_ARRAYS];
} step_args;

/* The recurrent product at B = 1 (cells.c: matvec_t), out = wᵀ v: w has M rows of N
   numbers, contiguous; v (M numbers) and out (N) are vectors. */
typedef struct {
    int64_t M, N;
    array_arg w, v, out;
} matvec_args;

/* y += x, n numbers (cells.c) */
typedef struct {
    int64_t n;
    array_arg x, y;
} add_args;

/* What a pass takes besides its tables: the threads to run on, the inner length `n` of the
   product (the rows of h_{t-1} read, H, or H + 1 with GRU's row of ones; K*H backward), the
   cell's gates K, room for the packed panels, which the threads fill (n x PANEL_ROWS each:
   element [k][r] is W's row r of the panel at column k), whether the cell's backward leaves a direct gradient of h_{t-1} in dh
   (GRU), per thread `scratch_numbers` numbers of scratch, and where `input_n` is not 0, the
   product with the input's weights of each step too, packed the same way (`input_packed`):
   forward, the input projection `pre_x = [W_ih | b] [x_t; 1]` (panels of input_n = I + 1
   columns); backward, the input's gradient `dx_tᵀ = W_ihᵀ dpre_x` (input_n = I rows, panels of
   K*H columns), which the threads write as dx_t, B rows of I. */
typedef struct {
    int64_t threads, n, gates, packed, direct, scratch, scratch_numbers, input_n, input_packed;
    int64_t gradients; /* backward: a gradient_args, or 0 */
    /* the weights the threads pack their own panels of, at the start of the pass, with their
       row strides: forward [W_hh | b] (K*H, n) and [W_ih | b] (K*H, input_n); backward W_hh
       (K*H, H) and W_ih (K*H, I), whose columns are the rows of W_hhᵀ and W_ihᵀ */
    int64_t weights, ld_weights, input_weights, ld_input_weights;
    int64_t discard; /* forward: bit k marks the step's array k, of the cache, as not kept */
    /* Right-padded batches (packed sequences): `lengths` the address of B int64, each
       sequence's length, or 0 for none; `first_step` the time step of the tables' row 0; the
       cell's `states` parts (h, and LSTM's c). Past a sequence's end the forward carries each
       part of the state through unchanged, and the backward passes each part's gradient
       through unchanged, holding it meanwhile in `kept` (states x H x B numbers), while the
       step gets none. */
    int64_t lengths, first_step, states, kept;
} pass_args;

/* Backward, what a pass adds up over its steps once they have run, each thread for the rows
   of its units (k = step x B + b over the `steps` steps; rows of the matrices `ld_*` numbers
   apart): [dW_hh | db_hh] (K*H, H+1) += Σ_k dpre_h[:, k] [h_{t-1}; 1]ᵀ and dW_ih (K*H, I) +=
   Σ_k dpre_x[:, k] x_kᵀ, and, where `db_ih` is not 0, db_ih += Σ_k dpre_x[:, k]; dpre_h and
   dpre_x (steps, K*H, B) contiguous, as the steps wrote them; h_rows (steps x B, H) and x_rows
   (steps x B, I) a step's features. They are overwritten instead where `accumulate` is 0. */
typedef struct {
    int64_t steps, B, dpre_h, dpre_x, h_rows, x_rows, I;
    int64_t dw_hh, ld_dw_hh, dw_ih, ld_dw_ih, db_ih, accumulate;
} gradient_args;

#endif
