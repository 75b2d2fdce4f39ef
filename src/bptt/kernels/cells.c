/* The cells' elementwise step, forward and backward, fused into one pass over memory.

   The same arithmetic as the modules of bptt/cells (read those first: they carry the
   derivation), for the engine's layout: every array is feature-major, F rows of B numbers, B
   contiguous, rows `ld` numbers apart. One call does one time step of one layer and direction;
   at B = 1 a whole pass runs the steps with the recurrent product between them (matvec_t and
   the passes at the end), at B > 1 the threaded passes of threaded.c run the cells tile by tile.

   A call takes one row of a plan (bptt/kernels/plan.py), a step_args of contract.h, whose
   arrays come in the order the comment above each kernel gives. The transcendental functions are
   written out below (no libm calls), so that the compiler vectorizes the loops; they are
   accurate to a few units in the last place (tests/test_kernels.py measures at most 2.5), and
   NaN in gives NaN out, as in NumPy.

   A template on the element type: recurrence.c includes it once per type, with `real` the type
   and NAME(x) the name of x for it (NAME(tanh) is tanh_f32 for float, tanh_f64 for double). */

/* a vector of the element type, LANES numbers (VECTOR_BYTES: recurrence.c), that may lie at
   any address of a `real` and alias `real`s */
typedef real NAME(vector) __attribute__((vector_size(VECTOR_BYTES), aligned(sizeof(real)), may_alias));
enum { NAME(LANES) = VECTOR_BYTES / sizeof(real) };

/* the vector at p, and a vector stored at p: one move each. A memcpy of a vector's size is not
   that: tuned for AMD's cores, GCC splits a 32-byte copy into two 16-byte moves, and a vector
   read back from the two halves waits for them (the AVX2 tile ran 5x slower that way). */
static inline NAME(vector) NAME(load)(const real *p) { return *(const NAME(vector) *)p; }
static inline void NAME(store)(real *p, NAME(vector) value) { *(NAME(vector) *)p = value; }

/* row r of an array (its address as a `real *`) */
static inline real *NAME(row)(array_arg a, int64_t r) { return (real *)(intptr_t)a.addr + r * a.ld; }

/* array k's `rows` of the step that runs next (prefetch_rows), where the step asks for it (bit k
   of s->prefetch) */
static inline void NAME(prefetch)(const step_args *s, int k, int64_t rows) {
    if (s->prefetch & (1 << k))
        prefetch_rows(s[s->next].a[k], rows, s->B * (int64_t)sizeof(real), sizeof(real));
}

/* exp, expm1 and tanh on the range reduction of recurrence.c (reduce_f32, reduce_f64), which
   says how they are computed */

/* expm1(r) for |r| <= ln2/2 by its Taylor series to r^DEGREE / DEGREE!, in Horner's form:
   r + r^2 (1/2! + r (1/3! + ...)); the loop has a fixed count and unrolls. DEGREE is the type's:
   8 for float, 13 for double. */
INLINE real NAME(expm1_series)(real r) {
    enum { DEGREE = sizeof(real) == sizeof(float) ? 8 : 13 };
    real p = (real)inverse_factorial[DEGREE];
    for (int k = DEGREE - 1; k >= 2; k--) p = p * r + (real)inverse_factorial[k];
    return r + r * r * p;
}

/* exp's argument is clamped to [LOW, HIGH], where 2^n is a normal number of the type: [-87.3,
   88.3] for float, [-708, 709] for double. Past the clamp exp is 0 or infinity (so that a
   sigmoid of -inf is 0, not a subnormal); expm1 is for x <= 0 only (below the clamp it is -1 to
   the last bit) */
static const real NAME(LOW) = sizeof(real) == sizeof(float) ? -87.3f : -708.0;
static const real NAME(HIGH) = sizeof(real) == sizeof(float) ? 88.3f : 709.0;

INLINE real NAME(exp)(real x_in) {
    real x = x_in < NAME(LOW) ? NAME(LOW) : x_in;
    x = x > NAME(HIGH) ? NAME(HIGH) : x;
    real scale;
    real r = NAME(reduce)(x, &scale);
    real result = x_in < NAME(LOW) ? (real)0 : scale + scale * NAME(expm1_series)(r);
    return x_in > NAME(HIGH) ? (real)INFINITY : result;
}

INLINE real NAME(expm1_neg)(real x) {
    x = x < NAME(LOW) ? NAME(LOW) : x;
    real scale;
    real r = NAME(reduce)(x, &scale);
    return scale * NAME(expm1_series)(r) + (scale - (real)1);
}

/* σ(x) = 1 / (1 + exp(-x)); tanh(x) = sign(x) u / (2 - u) with u = -expm1(-2|x|). The
   activations are inlined wherever called (INLINE): a call of one inside a cell's vector loop
   stops its vectorization, and GCC's own budget stopped inlining tanh into the B = 1 kernels
   once threaded.c grew (the B = 1 LSTM pass 1.1 -> 2.2 ms) */
INLINE real NAME(sigmoid)(real x) { return (real)1 / ((real)1 + NAME(exp)(-x)); }

INLINE real NAME(tanh)(real x) {
    real u = -NAME(expm1_neg)(x < 0 ? 2 * x : -2 * x);
    real t = u / ((real)2 - u);
    return x < 0 ? -t : t;
}

/* The kernels. A kernel's arithmetic is `<cell>_<pass>_units(s, j0, j1)`, for the hidden units
   j0 to j1 - 1 of a step (the threaded passes of threaded.c give each thread its own units); the
   kernel the engine calls per step, `<cell>_<pass>(s)`, prefetches and runs all H of them.

   Each runs for_each_element with its cell's arithmetic for one element, `<cell>_<pass>_element`:
   one unit j of one column b, given a[k], the element of array k of the step at unit j (row j)
   and column b, and gate[k], the distance from one gate's row of array k to the next (H rows):
   gate g of unit j lies at a[k][g * gate[k]]. The loop nest takes the batch as the vector
   dimension, or, at B = 1, the units: the vector lanes are then H hidden units, whose elements
   lie s->a[k].ld apart. The loops are vectorized (omp simd): the arrays of a kernel never
   overlap. The element's function is a constant, which inlines into the loops. */
INLINE void NAME(element_at)(const step_args *s, int64_t j, int64_t b,
                             void (*element)(real *const *a, const int64_t *gate)) {
    real *a[MAX_ARRAYS];
    int64_t gate[MAX_ARRAYS];
#pragma GCC unroll 8
    for (int k = 0; k < MAX_ARRAYS; k++) {
        a[k] = NAME(row)(s->a[k], j) + b;
        gate[k] = s->H * s->a[k].ld;
    }
    element(a, gate);
}

INLINE void NAME(for_each_element)(const step_args *s, int64_t j0, int64_t j1,
                                   void (*element)(real *const *a, const int64_t *gate)) {
    const int64_t B = s->B;
    if (B == 1) {
#pragma omp simd
        for (int64_t j = j0; j < j1; j++) NAME(element_at)(s, j, 0, element);
    } else {
        for (int64_t j = j0; j < j1; j++) {
#pragma omp simd
            for (int64_t b = 0; b < B; b++) NAME(element_at)(s, j, b, element);
        }
    }
}

/* element_at where every array's rows lie one number apart: unit j of array k at a[k] + j.
   Its own function, not a flag of element_at: with the flag in the loop the threaded passes
   inline, GCC's inlining of them changed and the threaded forward took 10 % more CPU time
   (scripts/performance_levers.md, 2026-12-03) */
INLINE void NAME(element_of_adjacent)(const step_args *s, int64_t j,
                                      void (*element)(real *const *a, const int64_t *gate)) {
    real *a[MAX_ARRAYS];
    int64_t gate[MAX_ARRAYS];
#pragma GCC unroll 8
    for (int k = 0; k < MAX_ARRAYS; k++) {
        a[k] = NAME(row)(s->a[k], 0) + j;
        gate[k] = s->H;
    }
    element(a, gate);
}

/* whether the rows of every array of the step lie one number apart (an array a kernel does
   not take has address 0) */
static inline int NAME(adjacent_rows)(const step_args *s) {
    for (int k = 0; k < MAX_ARRAYS; k++)
        if (s->a[k].addr && s->a[k].ld != 1) return 0;
    return 1;
}

/* A kernel the engine calls per step: all H units. At B = 1 in the engine's layout (every
   array's rows adjacent) the loop is written for it, so that a vector of units is one load,
   not a gather; the threaded passes call the units kernels below instead. */
INLINE void NAME(every_unit)(const step_args *s,
                             void (*element)(real *const *a, const int64_t *gate)) {
    if (s->B == 1 && NAME(adjacent_rows)(s)) {
#pragma omp simd
        for (int64_t j = 0; j < s->H; j++) NAME(element_of_adjacent)(s, j, element);
    } else {
        NAME(for_each_element)(s, 0, s->H, element);
    }
}

/* 0 pre_x, 1 pre_h (4H rows), 2 h_prev, 3 c_prev, 4 h, 5 c (H), 6 gates (4H), 7 tanh_c */
INLINE void NAME(lstm_step_element)(real *const *a,
                                                                         const int64_t *gate) {
    real i = NAME(sigmoid)(a[0][0] + a[1][0]);
    real f = NAME(sigmoid)(a[0][gate[0]] + a[1][gate[1]]);
    real g = NAME(tanh)(a[0][2 * gate[0]] + a[1][2 * gate[1]]);
    real o = NAME(sigmoid)(a[0][3 * gate[0]] + a[1][3 * gate[1]]);
    real c = f * a[3][0] + i * g;
    real tanh_c = NAME(tanh)(c);
    a[6][0] = i, a[6][gate[6]] = f, a[6][2 * gate[6]] = g, a[6][3 * gate[6]] = o;
    a[5][0] = c, a[7][0] = tanh_c, a[4][0] = o * tanh_c;
}

/* 0 dh, 1 dc (H; dc becomes dc_prev), 2 gates (4H), 3 tanh_c, 4 c_prev (H), 5 dpre (4H) */
INLINE void NAME(lstm_step_back_element)(real *const *a,
                                                                              const int64_t *gate) {
    real i = a[2][0], f = a[2][gate[2]], g = a[2][2 * gate[2]], o = a[2][3 * gate[2]];
    real dh = a[0][0], tanh_c = a[3][0];
    real dc = a[1][0] + dh * o * (1 - tanh_c * tanh_c);
    a[5][0] = dc * g * i * (1 - i);
    a[5][gate[5]] = dc * a[4][0] * f * (1 - f);
    a[5][2 * gate[5]] = dc * i * (1 - g * g);
    a[5][3 * gate[5]] = dh * tanh_c * o * (1 - o);
    a[1][0] = dc * f;
}

/* 0 pre_x, 1 pre_h (3H rows, b_hn in pre_h), 2 h_prev, 3 h (H), 4 gates (3H), 5 pre_h_n */
INLINE void NAME(gru_step_element)(real *const *a,
                                                                        const int64_t *gate) {
    real r = NAME(sigmoid)(a[0][0] + a[1][0]);
    real z = NAME(sigmoid)(a[0][gate[0]] + a[1][gate[1]]);
    real pre_h_n = a[1][2 * gate[1]];
    real n = NAME(tanh)(a[0][2 * gate[0]] + r * pre_h_n);
    a[4][0] = r, a[4][gate[4]] = z, a[4][2 * gate[4]] = n, a[5][0] = pre_h_n;
    a[3][0] = n + z * (a[2][0] - n);
}

/* 0 dh (H; becomes dh * z), 1 gates (3H), 2 pre_h_n, 3 h_prev (H), 4 dpre_x, 5 dpre_h */
INLINE void NAME(gru_step_back_element)(real *const *a,
                                                                             const int64_t *gate) {
    real r = a[1][0], z = a[1][gate[1]], n = a[1][2 * gate[1]], dh = a[0][0];
    real dpre_n = dh * (1 - z) * (1 - n * n);
    real dpre_z = dh * (a[3][0] - n) * z * (1 - z);
    real dpre_r = dpre_n * a[2][0] * r * (1 - r);
    a[4][0] = dpre_r, a[4][gate[4]] = dpre_z, a[4][2 * gate[4]] = dpre_n;
    a[5][0] = dpre_r, a[5][gate[5]] = dpre_z, a[5][2 * gate[5]] = dpre_n * r;
    a[0][0] = dh * z;
}

/* 0 pre_x, 1 pre_h, 2 h_prev, 3 h (H rows each) */
INLINE void NAME(rnn_tanh_step_element)(real *const *a,
                                                                             const int64_t *gate) {
    (void)gate; /* the RNN cells have one block of H rows */
    a[3][0] = NAME(tanh)(a[0][0] + a[1][0]);
}

/* 0 dh, 1 h, 2 dpre (H rows each) */
INLINE void NAME(rnn_tanh_step_back_element)(
    real *const *a, const int64_t *gate) {
    (void)gate;
    a[2][0] = a[0][0] * (1 - a[1][0] * a[1][0]);
}

/* as rnn_tanh; a NaN sum fails `a < 0` and passes through, as in np.maximum */
INLINE void NAME(rnn_relu_step_element)(real *const *a,
                                                                             const int64_t *gate) {
    (void)gate;
    real sum = a[0][0] + a[1][0];
    a[3][0] = sum < 0 ? 0 : sum;
}

/* 0 dh, 1 h, 2 dpre; dh * [h > 0] keeps a NaN dh where h > 0 fails, as NumPy's dh * 0 */
INLINE void NAME(rnn_relu_step_back_element)(
    real *const *a, const int64_t *gate) {
    (void)gate;
    a[2][0] = a[0][0] * (real)(a[1][0] > 0);
}

static inline void NAME(lstm_step_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(lstm_step_element));
}
static inline void NAME(lstm_step_back_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(lstm_step_back_element));
}
static inline void NAME(gru_step_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(gru_step_element));
}
static inline void NAME(gru_step_back_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(gru_step_back_element));
}
static inline void NAME(rnn_tanh_step_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(rnn_tanh_step_element));
}
static inline void NAME(rnn_tanh_step_back_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(rnn_tanh_step_back_element));
}
static inline void NAME(rnn_relu_step_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(rnn_relu_step_element));
}
static inline void NAME(rnn_relu_step_back_units)(const step_args *s, int64_t j0, int64_t j1) {
    NAME(for_each_element)(s, j0, j1, NAME(rnn_relu_step_back_element));
}

/* the kernels the engine calls per step: the arrays of the next step that come from far
   prefetched, then all H units */
void NAME(lstm_step)(const step_args *s) {
    NAME(prefetch)(s, 0, 4 * s->H);
    NAME(every_unit)(s, NAME(lstm_step_element));
}
void NAME(lstm_step_back)(const step_args *s) {
    NAME(prefetch)(s, 2, 4 * s->H);
    NAME(prefetch)(s, 3, s->H);
    NAME(prefetch)(s, 4, s->H);
    NAME(every_unit)(s, NAME(lstm_step_back_element));
}
void NAME(gru_step)(const step_args *s) { NAME(every_unit)(s, NAME(gru_step_element)); }
void NAME(gru_step_back)(const step_args *s) { NAME(every_unit)(s, NAME(gru_step_back_element)); }
void NAME(rnn_tanh_step)(const step_args *s) {
    NAME(prefetch)(s, 0, s->H);
    NAME(every_unit)(s, NAME(rnn_tanh_step_element));
}
void NAME(rnn_tanh_step_back)(const step_args *s) {
    NAME(prefetch)(s, 1, s->H);
    NAME(every_unit)(s, NAME(rnn_tanh_step_back_element));
}
void NAME(rnn_relu_step)(const step_args *s) {
    NAME(prefetch)(s, 0, s->H);
    NAME(every_unit)(s, NAME(rnn_relu_step_element));
}
void NAME(rnn_relu_step_back)(const step_args *s) {
    NAME(prefetch)(s, 1, s->H);
    NAME(every_unit)(s, NAME(rnn_relu_step_back_element));
}

/* The recurrent product at B = 1 (matvec_args), where BLAS spends more on the call than on
   the arithmetic: out (N) = wᵀ v, v (M), as a sum of rows, out = Σ_i v_i w_i. Forward, w is
   [W_hh | b]ᵀ (the engine transposes it once per pass), backward W_hh. The columns of out are
   taken MATVEC_VECTORS vectors at a time, their sums held in registers while every row goes
   by; the rows in pairs, into two sets of sums, so that two independent chains of additions
   are in flight for each vector. */
void NAME(matvec_t)(const matvec_args *s) {
    enum { WIDTH = MATVEC_VECTORS * NAME(LANES) };
    const int64_t M = s->M, N = s->N, ld_w = s->w.ld, ld_v = s->v.ld, ld_out = s->out.ld;
    const real *restrict w = NAME(row)(s->w, 0), *restrict v = NAME(row)(s->v, 0);
    real *restrict out = NAME(row)(s->out, 0);
    real sums[WIDTH];
    int64_t j0 = 0;
    for (; j0 + WIDTH <= N; j0 += WIDTH) {
        NAME(vector) even[MATVEC_VECTORS], odd[MATVEC_VECTORS];
        for (int c = 0; c < MATVEC_VECTORS; c++) even[c] = odd[c] = (NAME(vector)){0};
        int64_t i = 0;
        for (; i + 2 <= M; i += 2) {
            const real *w0 = w + i * ld_w + j0, *w1 = w0 + ld_w;
            const real v0 = v[i * ld_v], v1 = v[(i + 1) * ld_v];
            for (int c = 0; c < MATVEC_VECTORS; c++) {
                even[c] += v0 * NAME(load)(w0 + c * NAME(LANES));
                odd[c] += v1 * NAME(load)(w1 + c * NAME(LANES));
            }
        }
        if (i < M) { /* M odd: the last row */
            const real *w0 = w + i * ld_w + j0;
            const real v0 = v[i * ld_v];
            for (int c = 0; c < MATVEC_VECTORS; c++) even[c] += v0 * NAME(load)(w0 + c * NAME(LANES));
        }
        for (int c = 0; c < MATVEC_VECTORS; c++) NAME(store)(sums + c * NAME(LANES), even[c] + odd[c]);
        for (int64_t j = 0; j < WIDTH; j++) out[(j0 + j) * ld_out] = sums[j];
    }
    if (j0 < N) { /* the last N % WIDTH columns */
        const int64_t width = N - j0;
        for (int64_t j = 0; j < width; j++) sums[j] = 0;
        for (int64_t i = 0; i < M; i++) {
            const real *w0 = w + i * ld_w + j0;
            const real v0 = v[i * ld_v];
#pragma omp simd
            for (int64_t j = 0; j < width; j++) sums[j] += v0 * w0[j];
        }
        for (int64_t j = 0; j < width; j++) out[(j0 + j) * ld_out] = sums[j];
    }
}

/* y += x, n numbers (add_args) */
static void NAME(add)(const add_args *a) {
    const real *restrict x = NAME(row)(a->x, 0);
    real *restrict y = NAME(row)(a->y, 0);
    for (int64_t j = 0; j < a->n; j++) y[j * a->y.ld] += x[j * a->x.ld];
}

/* A whole forward pass at B = 1 in one call: step i's recurrent product (row i of `products`)
   and then its cell (row i of `steps`), for i = 0 .. count - 1. Rows are `width` int64 apart.
   Between the steps of a pass nothing else happens at B = 1 without lengths, and a call from
   Python costs more than a step. Written once, for the cell's step kernel `step`; each cell's
   pass below calls it with its own, a constant. */
INLINE void NAME(forward_pass)(
    const int64_t *products, int64_t product_width, const int64_t *steps, int64_t step_width,
    int64_t count, void (*step)(const step_args *)) {
    for (int64_t i = 0; i < count; i++) {
        NAME(matvec_t)((const matvec_args *)(products + i * product_width));
        step((const step_args *)(steps + i * step_width));
    }
}

void NAME(lstm_forward_pass)(const int64_t *products, int64_t product_width,
                             const int64_t *steps, int64_t step_width, int64_t count) {
    NAME(forward_pass)(products, product_width, steps, step_width, count, NAME(lstm_step));
}
void NAME(gru_forward_pass)(const int64_t *products, int64_t product_width,
                            const int64_t *steps, int64_t step_width, int64_t count) {
    NAME(forward_pass)(products, product_width, steps, step_width, count, NAME(gru_step));
}
void NAME(rnn_tanh_forward_pass)(const int64_t *products, int64_t product_width,
                                 const int64_t *steps, int64_t step_width, int64_t count) {
    NAME(forward_pass)(products, product_width, steps, step_width, count, NAME(rnn_tanh_step));
}
void NAME(rnn_relu_forward_pass)(const int64_t *products, int64_t product_width,
                                 const int64_t *steps, int64_t step_width, int64_t count) {
    NAME(forward_pass)(products, product_width, steps, step_width, count, NAME(rnn_relu_step));
}

/* A whole backward pass at B = 1 in one call, steps i = count - 1 down to 0: the output's
   gradient added to the one from the future (row i of `before`), the cell's backward (row i of
   `steps`), the product with W_hh into the previous step's gradient (row i of `products`),
   and, where the cell has one, the direct path added to it (row i of `after`, or none).
   Written once, for the cell's backward step kernel `step_back`, as forward_pass. */
INLINE void NAME(backward_pass)(
    const int64_t *before, int64_t before_width, const int64_t *steps, int64_t step_width,
    const int64_t *products, int64_t product_width, const int64_t *after, int64_t after_width,
    int64_t count, void (*step_back)(const step_args *)) {
    for (int64_t i = count - 1; i >= 0; i--) {
        NAME(add)((const add_args *)(before + i * before_width));
        step_back((const step_args *)(steps + i * step_width));
        NAME(matvec_t)((const matvec_args *)(products + i * product_width));
        if (after) NAME(add)((const add_args *)(after + i * after_width));
    }
}

void NAME(lstm_backward_pass)(const int64_t *before, int64_t before_width,
                              const int64_t *steps, int64_t step_width,
                              const int64_t *products, int64_t product_width,
                              const int64_t *after, int64_t after_width, int64_t count) {
    NAME(backward_pass)(before, before_width, steps, step_width, products, product_width, after,
                        after_width, count, NAME(lstm_step_back));
}
void NAME(gru_backward_pass)(const int64_t *before, int64_t before_width,
                             const int64_t *steps, int64_t step_width,
                             const int64_t *products, int64_t product_width,
                             const int64_t *after, int64_t after_width, int64_t count) {
    NAME(backward_pass)(before, before_width, steps, step_width, products, product_width, after,
                        after_width, count, NAME(gru_step_back));
}
void NAME(rnn_tanh_backward_pass)(const int64_t *before, int64_t before_width,
                                  const int64_t *steps, int64_t step_width,
                                  const int64_t *products, int64_t product_width,
                                  const int64_t *after, int64_t after_width, int64_t count) {
    NAME(backward_pass)(before, before_width, steps, step_width, products, product_width, after,
                        after_width, count, NAME(rnn_tanh_step_back));
}
void NAME(rnn_relu_backward_pass)(const int64_t *before, int64_t before_width,
                                  const int64_t *steps, int64_t step_width,
                                  const int64_t *products, int64_t product_width,
                                  const int64_t *after, int64_t after_width, int64_t count) {
    NAME(backward_pass)(before, before_width, steps, step_width, products, product_width, after,
                        after_width, count, NAME(rnn_relu_step_back));
}
