/* The cells' elementwise step, forward and backward, fused into one pass over memory.

   The same arithmetic as the modules of bptt/cells (read those first: they carry the
   derivation), for the engine's layout: every array is feature-major, F rows of B numbers, B
   contiguous, rows `ld` numbers apart. One call does one time step of one layer and direction:
   the engine calls BLAS for the recurrent product between calls (at B = 1, matvec below).

   A call takes one row of a plan (bptt/kernels/plan.py), a step_args of contract.h, whose
   arrays come in the order the comment above each kernel gives. The transcendental functions are
   written out below (no libm calls), so that the compiler vectorizes the loops; they are
   accurate to a few units in the last place (tests/test_kernels.py measures at most 2.5), and
   NaN in gives NaN out, as in NumPy. */

#include "contract.h" /* step_args, matvec_args, add_args: the structs Python fills, by name */

#include <math.h> /* INFINITY only: no libm function is called */
#include <stdint.h>
#include <string.h>

/* the sizes of the structs of contract.h, which Python checks against the fields it reads there */
int64_t sizeof_step_args(void) { return sizeof(step_args); }
int64_t sizeof_matvec_args(void) { return sizeof(matvec_args); }
int64_t sizeof_add_args(void) { return sizeof(add_args); }

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
#define PREFETCH(T, k, rows)                                                                      \
    if (s->prefetch & (1 << (k)))                                                                 \
    prefetch_rows(s[s->next].a[k], (rows), s->B * (int64_t)sizeof(T), sizeof(T))

/* the loops over B are vectorized: the pointers of a kernel never overlap (restrict) */
#define SIMD _Pragma("omp simd")

#define ROW(type, arg, row) ((type *)(intptr_t)(arg).addr + (int64_t)(row) * (arg).ld)

/* exp and expm1 share one range reduction: x = n ln2 + r with |r| <= ln2/2, so that
   exp(x) = 2^n (1 + expm1(r)) and expm1(x) = 2^n expm1(r) + (2^n - 1), with expm1(r) by its
   Taylor series and 2^n put into the exponent bits. The argument is clamped to where 2^n is a
   normal number; NaN fails every comparison and stays NaN. Writing tanh with expm1 keeps it
   accurate near 0, where 1 - exp(-2x) would cancel, with one series instead of two. */

/* r of x, and 2^n in *scale; x within [-87.3, 88.3] */
static inline float reduce_f32(float x, float *scale) {
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

static inline double reduce_f64(double x, double *scale) {
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

/* expm1(r) for |r| <= ln2/2 by its Taylor series to r^DEGREE / DEGREE!, in Horner's form:
   r + r^2 (1/2! + r (1/3! + ...)); the loop has a fixed count and unrolls */
#define DEFINE_EXPM1_SERIES(T, S, DEGREE)                                                         \
    static inline T expm1_series_##S(T r) {                                                       \
        T p = (T)inverse_factorial[DEGREE];                                                       \
        for (int k = DEGREE - 1; k >= 2; k--) p = p * r + (T)inverse_factorial[k];                \
        return r + r * r * p;                                                                     \
    }
DEFINE_EXPM1_SERIES(float, f32, 8)
DEFINE_EXPM1_SERIES(double, f64, 13)

/* exp: past the clamp, 0 or infinity (so that a sigmoid of -inf is 0, not a subnormal);
   expm1 for x <= 0 only (below the clamp it is -1 to the last bit) */
#define DEFINE_EXP(T, S, LOW, HIGH)                                                               \
    static inline T exp_##S(T x_in) {                                                             \
        T x = x_in < LOW ? LOW : x_in;                                                            \
        x = x > HIGH ? HIGH : x;                                                                  \
        T scale;                                                                                  \
        T r = reduce_##S(x, &scale);                                                              \
        T result = x_in < LOW ? (T)0 : scale + scale * expm1_series_##S(r);                       \
        return x_in > HIGH ? (T)INFINITY : result;                                                \
    }                                                                                             \
    static inline T expm1_neg_##S(T x) {                                                          \
        x = x < LOW ? LOW : x;                                                                    \
        T scale;                                                                                  \
        T r = reduce_##S(x, &scale);                                                              \
        return scale * expm1_series_##S(r) + (scale - (T)1);                                      \
    }
DEFINE_EXP(float, f32, -87.3f, 88.3f)
DEFINE_EXP(double, f64, -708.0, 709.0)

/* σ(x) = 1 / (1 + exp(-x)); tanh(x) = sign(x) u / (2 - u) with u = -expm1(-2|x|) */
#define DEFINE_ACTIVATIONS(T, SUFFIX)                                                             \
    static inline T sigmoid_##SUFFIX(T x) { return (T)1 / ((T)1 + exp_##SUFFIX(-x)); }            \
    static inline T tanh_##SUFFIX(T x) {                                                          \
        T u = -expm1_neg_##SUFFIX(x < 0 ? 2 * x : -2 * x);                                        \
        T t = u / ((T)2 - u);                                                                     \
        return x < 0 ? -t : t;                                                                    \
    }
DEFINE_ACTIVATIONS(float, f32)
DEFINE_ACTIVATIONS(double, f64)

/* The kernels, once per element type. Array k of a call is p<k>, its rows l<k> numbers apart;
   AT(k, row) is the element of the current column b in that row. The loop nest takes the
   batch as the vector dimension, or, at B = 1, the rows: the vector lanes are then H hidden
   units, whose elements lie l<k> apart. */
#define ARRAYS(T, n) ARRAYS_##n(T)
#define ARRAY(T, k) T *restrict p##k = (T *)(intptr_t)s->a[k].addr; const int64_t l##k = s->a[k].ld;
#define ARRAYS_3(T) ARRAY(T, 0) ARRAY(T, 1) ARRAY(T, 2)
#define ARRAYS_4(T) ARRAYS_3(T) ARRAY(T, 3)
#define ARRAYS_6(T) ARRAYS_4(T) ARRAY(T, 4) ARRAY(T, 5)
#define ARRAYS_8(T) ARRAYS_6(T) ARRAY(T, 6) ARRAY(T, 7)
#define AT(k, row) p##k[(row) * l##k + b]
#define FOR_EACH_ELEMENT(...)                                                                     \
    const int64_t B = s->B, H = s->H;                                                             \
    (void)H; /* the RNN cells have one block of H rows */                                        \
    if (B == 1) {                                                                                 \
        const int64_t b = 0;                                                                      \
        SIMD for (int64_t j = j0; j < j1; j++) { __VA_ARGS__ }                                    \
    } else {                                                                                      \
        for (int64_t j = j0; j < j1; j++) {                                                       \
            SIMD for (int64_t b = 0; b < B; b++) { __VA_ARGS__ }                                  \
        }                                                                                         \
    }

/* A kernel's arithmetic is `<cell>_<pass>_units_<S>(s, j0, j1)`, for the hidden units j0 to j1 - 1
   of a step (the threaded passes of recurrence.c give each thread its own units); the kernel
   the engine calls per step, `<cell>_<pass>_<S>(s)`, prefetches and runs all H of them. */
#define DEFINE_STEP(NAME, S, PREFETCHES)                                                           \
    void NAME##_##S(const step_args *s) {                                                         \
        PREFETCHES;                                                                               \
        NAME##_units_##S(s, 0, s->H);                                                             \
    }

#define DEFINE_KERNELS(T, S)                                                                      \
                                                                                                  \
    /* 0 pre_x, 1 pre_h (4H rows), 2 h_prev, 3 c_prev, 4 h, 5 c (H), 6 gates (4H), 7 tanh_c */    \
    static inline void lstm_step_units_##S(const step_args *s, int64_t j0, int64_t j1) {          \
        ARRAYS(T, 8)                                                                              \
        (void)p2, (void)l2;                                                                       \
        FOR_EACH_ELEMENT(                                                                         \
            T i = sigmoid_##S(AT(0, j) + AT(1, j));                                               \
            T f = sigmoid_##S(AT(0, H + j) + AT(1, H + j));                                       \
            T g = tanh_##S(AT(0, 2 * H + j) + AT(1, 2 * H + j));                                  \
            T o = sigmoid_##S(AT(0, 3 * H + j) + AT(1, 3 * H + j));                               \
            T c = f * AT(3, j) + i * g;                                                           \
            T tanh_c = tanh_##S(c);                                                               \
            AT(6, j) = i, AT(6, H + j) = f, AT(6, 2 * H + j) = g, AT(6, 3 * H + j) = o;           \
            AT(5, j) = c, AT(7, j) = tanh_c, AT(4, j) = o * tanh_c;                               \
        )                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* 0 dh, 1 dc (H; dc becomes dc_prev), 2 gates (4H), 3 tanh_c, 4 c_prev (H), 5 dpre (4H) */   \
    static inline void lstm_step_back_units_##S(const step_args *s, int64_t j0, int64_t j1) {     \
        ARRAYS(T, 6)                                                                              \
        FOR_EACH_ELEMENT(                                                                         \
            T i = AT(2, j), f = AT(2, H + j), g = AT(2, 2 * H + j), o = AT(2, 3 * H + j);         \
            T dh = AT(0, j), tanh_c = AT(3, j);                                                   \
            T dc = AT(1, j) + dh * o * (1 - tanh_c * tanh_c);                                     \
            AT(5, j) = dc * g * i * (1 - i);                                                      \
            AT(5, H + j) = dc * AT(4, j) * f * (1 - f);                                           \
            AT(5, 2 * H + j) = dc * i * (1 - g * g);                                              \
            AT(5, 3 * H + j) = dh * tanh_c * o * (1 - o);                                         \
            AT(1, j) = dc * f;                                                                    \
        )                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* 0 pre_x, 1 pre_h (3H rows, b_hn in pre_h), 2 h_prev, 3 h (H), 4 gates (3H), 5 pre_h_n */   \
    static inline void gru_step_units_##S(const step_args *s, int64_t j0, int64_t j1) {           \
        ARRAYS(T, 6)                                                                              \
        FOR_EACH_ELEMENT(                                                                         \
            T r = sigmoid_##S(AT(0, j) + AT(1, j));                                               \
            T z = sigmoid_##S(AT(0, H + j) + AT(1, H + j));                                       \
            T pre_h_n = AT(1, 2 * H + j);                                                         \
            T n = tanh_##S(AT(0, 2 * H + j) + r * pre_h_n);                                       \
            AT(4, j) = r, AT(4, H + j) = z, AT(4, 2 * H + j) = n, AT(5, j) = pre_h_n;             \
            AT(3, j) = n + z * (AT(2, j) - n);                                                    \
        )                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* 0 dh (H; becomes dh * z), 1 gates (3H), 2 pre_h_n, 3 h_prev (H), 4 dpre_x, 5 dpre_h */     \
    static inline void gru_step_back_units_##S(const step_args *s, int64_t j0, int64_t j1) {      \
        ARRAYS(T, 6)                                                                              \
        FOR_EACH_ELEMENT(                                                                         \
            T r = AT(1, j), z = AT(1, H + j), n = AT(1, 2 * H + j), dh = AT(0, j);                \
            T dpre_n = dh * (1 - z) * (1 - n * n);                                                \
            T dpre_z = dh * (AT(3, j) - n) * z * (1 - z);                                         \
            T dpre_r = dpre_n * AT(2, j) * r * (1 - r);                                           \
            AT(4, j) = dpre_r, AT(4, H + j) = dpre_z, AT(4, 2 * H + j) = dpre_n;                  \
            AT(5, j) = dpre_r, AT(5, H + j) = dpre_z, AT(5, 2 * H + j) = dpre_n * r;              \
            AT(0, j) = dh * z;                                                                    \
        )                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* 0 pre_x, 1 pre_h, 2 h_prev, 3 h (H rows each) */                                           \
    static inline void rnn_tanh_step_units_##S(const step_args *s, int64_t j0, int64_t j1) {      \
        ARRAYS(T, 4)                                                                              \
        (void)p2, (void)l2;                                                                       \
        FOR_EACH_ELEMENT(AT(3, j) = tanh_##S(AT(0, j) + AT(1, j));)                               \
    }                                                                                             \
                                                                                                  \
    /* 0 dh, 1 h, 2 dpre (H rows each) */                                                         \
    static inline void rnn_tanh_step_back_units_##S(const step_args *s, int64_t j0, int64_t j1) { \
        ARRAYS(T, 3)                                                                              \
        FOR_EACH_ELEMENT(AT(2, j) = AT(0, j) * (1 - AT(1, j) * AT(1, j));)                        \
    }                                                                                             \
                                                                                                  \
    /* as rnn_tanh; a NaN sum fails `a < 0` and passes through, as in np.maximum */               \
    static inline void rnn_relu_step_units_##S(const step_args *s, int64_t j0, int64_t j1) {      \
        ARRAYS(T, 4)                                                                              \
        (void)p2, (void)l2;                                                                       \
        FOR_EACH_ELEMENT(T a = AT(0, j) + AT(1, j); AT(3, j) = a < 0 ? 0 : a;)                    \
    }                                                                                             \
                                                                                                  \
    /* 0 dh, 1 h, 2 dpre; dh * [h > 0] keeps a NaN dh where h > 0 fails, as NumPy's dh * 0 */     \
    static inline void rnn_relu_step_back_units_##S(const step_args *s, int64_t j0, int64_t j1) { \
        ARRAYS(T, 3)                                                                              \
        FOR_EACH_ELEMENT(AT(2, j) = AT(0, j) * (T)(AT(1, j) > 0);)                                \
    }                                                                                             \
    DEFINE_STEP(lstm_step, S, PREFETCH(T, 0, 4 * s->H))                                           \
    DEFINE_STEP(lstm_step_back, S,                                                                 \
                PREFETCH(T, 2, 4 * s->H); PREFETCH(T, 3, s->H); PREFETCH(T, 4, s->H))             \
    DEFINE_STEP(gru_step, S, (void)0)                                                             \
    DEFINE_STEP(gru_step_back, S, (void)0)                                                        \
    DEFINE_STEP(rnn_tanh_step, S, PREFETCH(T, 0, s->H))                                           \
    DEFINE_STEP(rnn_tanh_step_back, S, PREFETCH(T, 1, s->H))                                      \
    DEFINE_STEP(rnn_relu_step, S, PREFETCH(T, 0, s->H))                                           \
    DEFINE_STEP(rnn_relu_step_back, S, PREFETCH(T, 1, s->H))

/* The recurrent product at B = 1 (matvec_args), where BLAS spends more on the call than on
   the arithmetic. Rows are taken four at a time, so that four independent sums are in flight
   and each pass over the scratch does four rows' work. */

#define DEFINE_MATVEC(T, SUFFIX)                                                                  \
                                                                                                  \
    /* out (M) = w v, v (N), gathered into the scratch */                                         \
    void matvec_##SUFFIX(const matvec_args *s) {                                                  \
        const int64_t M = s->M, N = s->N;                                                         \
        const T *restrict v = ROW(T, s->v, 0);                                                    \
        T *restrict out = ROW(T, s->out, 0), *restrict vv = ROW(T, s->scratch, 0);                \
        for (int64_t j = 0; j < N; j++) vv[j] = v[j * s->v.ld];                                   \
        int64_t i = 0;                                                                            \
        for (; i + 4 <= M; i += 4) {                                                              \
            const T *restrict w0 = ROW(T, s->w, i), *restrict w1 = ROW(T, s->w, i + 1);           \
            const T *restrict w2 = ROW(T, s->w, i + 2), *restrict w3 = ROW(T, s->w, i + 3);       \
            T t0 = 0, t1 = 0, t2 = 0, t3 = 0;                                                     \
            _Pragma("omp simd reduction(+:t0,t1,t2,t3)")                                          \
            for (int64_t j = 0; j < N; j++) {                                                     \
                t0 += w0[j] * vv[j], t1 += w1[j] * vv[j];                                         \
                t2 += w2[j] * vv[j], t3 += w3[j] * vv[j];                                         \
            }                                                                                     \
            out[i * s->out.ld] = t0, out[(i + 1) * s->out.ld] = t1;                               \
            out[(i + 2) * s->out.ld] = t2, out[(i + 3) * s->out.ld] = t3;                         \
        }                                                                                         \
        for (; i < M; i++) {                                                                      \
            const T *restrict w0 = ROW(T, s->w, i);                                               \
            T t0 = 0;                                                                             \
            _Pragma("omp simd reduction(+:t0)")                                                   \
            for (int64_t j = 0; j < N; j++) t0 += w0[j] * vv[j];                                  \
            out[i * s->out.ld] = t0;                                                              \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* out (N) = wᵀ v, v (M); the sum is built in the scratch */                                  \
    void matvec_t_##SUFFIX(const matvec_args *s) {                                                \
        const int64_t M = s->M, N = s->N;                                                         \
        const T *restrict v = ROW(T, s->v, 0);                                                    \
        T *restrict out = ROW(T, s->out, 0), *restrict total = ROW(T, s->scratch, 0);             \
        for (int64_t j = 0; j < N; j++) total[j] = 0;                                             \
        int64_t i = 0;                                                                            \
        for (; i + 4 <= M; i += 4) {                                                              \
            const T *restrict w0 = ROW(T, s->w, i), *restrict w1 = ROW(T, s->w, i + 1);           \
            const T *restrict w2 = ROW(T, s->w, i + 2), *restrict w3 = ROW(T, s->w, i + 3);       \
            const T v0 = v[i * s->v.ld], v1 = v[(i + 1) * s->v.ld];                               \
            const T v2 = v[(i + 2) * s->v.ld], v3 = v[(i + 3) * s->v.ld];                         \
            SIMD for (int64_t j = 0; j < N; j++) {                                                \
                total[j] += (v0 * w0[j] + v1 * w1[j]) + (v2 * w2[j] + v3 * w3[j]);                \
            }                                                                                     \
        }                                                                                         \
        for (; i < M; i++) {                                                                      \
            const T *restrict w0 = ROW(T, s->w, i);                                               \
            const T v0 = v[i * s->v.ld];                                                          \
            SIMD for (int64_t j = 0; j < N; j++) total[j] += v0 * w0[j];                          \
        }                                                                                         \
        for (int64_t j = 0; j < N; j++) out[j * s->out.ld] = total[j];                            \
    }

DEFINE_KERNELS(float, f32)
DEFINE_KERNELS(double, f64)
DEFINE_MATVEC(float, f32)
DEFINE_MATVEC(double, f64)

/* A whole forward pass at B = 1 in one call: step i's recurrent product (row i of `products`)
   and then its cell (row i of `steps`), for i = 0 .. count - 1. Rows are `width` int64 apart.
   Between the steps of a pass nothing else happens at B = 1 without lengths, and a call from
   Python costs more than a step. */
/* defines a function of each cell, for one element type */
#define FOR_EACH_CELL(DEFINE, S, T)                                                               \
    DEFINE(lstm, S, T) DEFINE(gru, S, T) DEFINE(rnn_tanh, S, T) DEFINE(rnn_relu, S, T)

#define DEFINE_FORWARD_PASS(CELL, S, T)                                                         \
    void CELL##_forward_pass_##S(const int64_t *products, int64_t product_width,                  \
                                 const int64_t *steps, int64_t step_width, int64_t count) {       \
        for (int64_t i = 0; i < count; i++) {                                                     \
            matvec_##S((const matvec_args *)(products + i * product_width));                      \
            CELL##_step_##S((const step_args *)(steps + i * step_width));                         \
        }                                                                                         \
    }
FOR_EACH_CELL(DEFINE_FORWARD_PASS, f32, float)
FOR_EACH_CELL(DEFINE_FORWARD_PASS, f64, double)


/* A whole backward pass at B = 1 in one call, steps i = count - 1 down to 0: the output's
   gradient added to the one from the future (row i of `before`), the cell's backward (row i of
   `steps`), the product with W_hh into the previous step's gradient (row i of `products`),
   and, where the cell has one, the direct path added to it (row i of `after`, or none). */
#define DEFINE_BACKWARD_PASS(CELL, S, T)                                                        \
    void CELL##_backward_pass_##S(const int64_t *before, int64_t before_width,                    \
                                  const int64_t *steps, int64_t step_width,                       \
                                  const int64_t *products, int64_t product_width,                 \
                                  const int64_t *after, int64_t after_width, int64_t count) {     \
        for (int64_t i = count - 1; i >= 0; i--) {                                                \
            add_##S((const add_args *)(before + i * before_width));                               \
            CELL##_step_back_##S((const step_args *)(steps + i * step_width));                    \
            matvec_t_##S((const matvec_args *)(products + i * product_width));                    \
            if (after) add_##S((const add_args *)(after + i * after_width));                      \
        }                                                                                         \
    }
#define DEFINE_BACKWARD_PASSES(S, T)                                                              \
    static void add_##S(const add_args *a) {                                                      \
        const T *restrict x = ROW(T, a->x, 0);                                                    \
        T *restrict y = ROW(T, a->y, 0);                                                          \
        for (int64_t j = 0; j < a->n; j++) y[j * a->y.ld] += x[j * a->x.ld];                      \
    }                                                                                             \
    FOR_EACH_CELL(DEFINE_BACKWARD_PASS, S, T)
DEFINE_BACKWARD_PASSES(f32, float)
DEFINE_BACKWARD_PASSES(f64, double)
