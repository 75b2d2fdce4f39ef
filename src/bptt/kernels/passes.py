"""The fast backend's whole passes: a forward pass and a backward pass of one layer and
direction, in C, planned here. :func:`supports` says what it takes; the engine
(``bptt.recurrence``) asks once per pass and runs the reference (``bptt.reference``) where it
declines. Both compute the same up to rounding, and the tests hold them together.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

At B > 1 one call of the threaded passes (``threaded.c``) runs a whole pass on
``kernels.threads()`` threads (:meth:`plan.CompiledCell.threaded_forward`,
``threaded_backward``): each thread owns hidden units and packs its share of the weights once;
forward, the input projection, the recurrent product and the cell, tile by tile; backward, the
cell, the recurrent product and dx per step, and after the steps its units' rows of the
parameter gradients, the sums over time ``dW_hh = Σ_t dpre_h_tᵀ h_{t-1}`` that BPTT is. A
right-padded batch runs on the same threads (``pass_args.lengths``). At B = 1 a call runs a
chunk of steps, each a matrix-vector product in C (``matvec_t``, a sum of the rows of
``[W_hh | b]ᵀ`` with its sums in registers) and the cell (``cells.c``); the input projection
before and the sums over time after are one GEMM per chunk, and each step's arrays are
contiguous, so the cell's vector loop over the units loads them whole.

Layout (docs/performance.md has the measurements). The per-step matrices are feature-major,
(F, B), B contiguous: the recurrent product is ``pre_hᵀ = W_hh h_{t-1}ᵀ``. What the sums over
time read later is stored as (F, T, B): one step is a strided (F, B) slice and all steps
together the (F, T*B) matrix of a single GEMM; what only the cell reads, (T, F, B). Biases ride
in the products on a row of ones: ``pre_x = [W_ih | b] [x_t; 1]``, where ``b`` is ``b_ih`` plus
the blocks of ``b_hh`` that a cell sees only through ``pre_x + pre_h`` (``cell.SUMMED_GATES``);
the rest of ``b_hh`` (GRU's ``b_hn``) enters the recurrent product as ``[W_hh | b_hh_rest]
[h_{t-1}; 1]``, so the sum that gives ``dW_hh`` gives ``db_hh`` as its last column.
"""

from typing import NamedTuple

import numpy as np

from .. import kernels
from ..pool import POOL
from .plan import gradient_args


class Cache(NamedTuple):
    """What :func:`forward` keeps for :func:`backward`, and nothing more."""

    compiled: object  # the plan.CompiledCell that ran the pass
    weights: object  # recurrence.Weights
    x: np.ndarray  # T,B,I
    h_prev: np.ndarray  # H+1,T,B  [h_{t-1}; 1], the state entering each step and a row of ones
    mask: np.ndarray | None  # T,B,1
    states: tuple  # per part of the state, (T+1, B, H): slot t enters step t
    buffers: tuple  # per CACHE_WIDTHS array of the cell, (T, B, width*H)
    h_rows: np.ndarray | None = None  # T,B,H  h_{t-1} with contiguous rows (B > 1)

    @property
    def cell(self):
        return self.compiled.cell


# columns (steps times batch) of one GEMM over time at B = 1 (the input projection, the
# parameter gradients), and of a backward chunk on threads: large enough to run near the GEMM
# peak, small enough that a long sequence does not hold K*H numbers per step and sequence
GEMM_COLUMNS = 4096


def prefix_lengths(mask):
    """The lengths (B,) int64 of the sequences of a right-padded batch's ``mask`` (T, B, 1),
    or None where some sequence's mask is not True for its first steps and False after."""
    within = mask[:, :, 0]
    lengths = within.sum(axis=0, dtype=np.int64)
    return lengths if np.array_equal(within, np.arange(len(within))[:, None] < lengths) else None


def supports(cell, dtype, T, B, mask):
    """The compiled cell that runs this pass, or None where the backend declines it: the
    reference is selected or the install built no kernels, the dtype is neither float32 nor
    float64, the pass is shorter than ``kernels.MIN_STEPS`` (planning costs more than a few
    steps), or the mask is not a right-padded batch's."""
    compiled = kernels.compiled(cell, dtype, T)
    if compiled is None or mask is None:
        return compiled
    return compiled if prefix_lengths(mask) is not None else None


def forward(compiled, weights, x, state0, mask=None, keep_cache=True):
    """Run ``compiled`` (:func:`supports`) over a sequence.

    Parameters
    ----------
    weights : recurrence.Weights
    x : (T, B, I)
    state0 : tuple of (B, H) arrays, one per ``cell.STATE_NAMES``
    mask : (T, B, 1) bool (a right-padded batch) or None
    keep_cache : False for inference: the cell's cache goes to scratch, the returned cache is None

    Returns
    -------
    y : (T, B, H), zero past each sequence's end; state : tuple of (B, H); cache : Cache or None
    """
    if x.shape[1] > 1 and kernels.threads() > 1:
        compiled.wake()  # the threads' workers wake while the pass is planned
    w_ih_1, w_hh_1 = _with_biases(compiled.cell, weights, x.dtype)
    if x.shape[1] > 1:
        return _threaded_forward(compiled, weights, w_ih_1, w_hh_1, x, state0, mask, keep_cache)
    length = len(x) if mask is None else int(prefix_lengths(mask)[0])
    y, state, cache = _single_forward(compiled, weights, w_ih_1, w_hh_1, x[:length], state0, keep_cache)
    if length == len(x):
        return y, state, cache
    # one padded sequence: its steps up to its length, then zeros, and the state carried
    y = np.concatenate([y, np.zeros((len(x) - length, *y.shape[1:]), y.dtype)])
    return y, state, None if cache is None else _padded(cache, x, mask)


def _padded(cache, x, mask):
    """The cache of a B = 1 pass over the steps of a sequence shorter than ``x`` (T, 1, I), as
    a pass over all of ``x`` with ``mask`` keeps it: the state carried through the steps past
    the end, the cell's arrays zero there (:func:`backward` reads only the steps up to the
    end)."""
    steps_past = len(x) - len(cache.x)

    def extended(array, axis, fill):  # `array` and `steps_past` copies of `fill` along `axis`
        return np.concatenate([array, np.repeat(fill, steps_past, axis=axis)], axis=axis)

    h_end = cache.states[0][-1].T  # H,1  the state after the last step, entering every one past it
    entering = np.concatenate([h_end, np.ones((1, 1), h_end.dtype)])[:, None, :]  # H+1,1,1  [h; 1]
    return cache._replace(
        x=x, mask=mask, h_prev=extended(cache.h_prev, 1, entering),
        states=tuple(extended(history, 0, history[-1:]) for history in cache.states),
        buffers=tuple(extended(buffer, 0, np.zeros_like(buffer[:1])) for buffer in cache.buffers),
    )


def _with_biases(cell, weights, dtype):
    """``[W_ih | b]`` (K*H, I+1) with b = b_ih (+ the summed blocks of b_hh), and W_hh, or
    where b_hh has blocks that are not summed (GRU's b_hn), ``[W_hh | 0 ... b_hh_rest]`` (K*H,
    H+1), each with contiguous rows."""
    KH, H = weights.w_hh.shape
    I = weights.w_ih.shape[1]
    summed = cell.SUMMED_GATES * H
    w_ih_1 = np.empty((KH, I + 1), dtype)
    w_ih_1[:, :I] = weights.w_ih
    w_ih_1[:, I] = weights.b_ih
    w_ih_1[:summed, I] += weights.b_hh[:summed]
    if summed == KH:
        return w_ih_1, np.ascontiguousarray(weights.w_hh)
    w_hh_1 = np.zeros((KH, H + 1), dtype)
    w_hh_1[:, :H] = weights.w_hh
    w_hh_1[summed:, H] = weights.b_hh[summed:]
    return w_ih_1, w_hh_1


def _state_buffers(cell, x, state0, keep_cache):
    """The states and the cell's cache by step.

    Slot t of a state holds the state entering step t (for h with a row of ones below,
    [h_{t-1}; 1]), step t writes slot t+1. h keeps every step even without a cache; the other
    states (LSTM's c) then keep two slots, taken in turn, and the cache one. Every step's
    arrays are contiguous: h_hist is a view of (T+1, H+1, B), each step's [h; 1] one block, as
    the threads and, at B = 1, the cell's vector loop over the hidden units read it.

    Returns h_hist (H+1, T+1, B), its views h_steps (T+1, B, H), the other states (slots, B,
    H) and the cache buffers (T or 1, B, width*H), slots 0 holding ``state0``.
    """
    T, B, _ = x.shape
    H = state0[0].shape[1]
    h_hist = POOL.empty((T + 1, H + 1, B), x.dtype).transpose(1, 0, 2)  # H+1,T+1,B
    h_hist[H] = 1.0
    h_steps = h_hist[:H].transpose(1, 2, 0)  # T+1,B,H views
    h_steps[0] = state0[0]
    slots = T + 1 if keep_cache else 2
    other_steps = [POOL.empty((slots, H, B), x.dtype).transpose(0, 2, 1) for _ in state0[1:]]  # slots,B,H
    for history, s in zip(other_steps, state0[1:]):
        history[0] = s
    cache_steps = [
        POOL.empty((T if keep_cache else 1, width * H, B), x.dtype).transpose(0, 2, 1)  # T,B,width*H
        for width in cell.CACHE_WIDTHS
    ]
    return h_hist, h_steps, other_steps, cache_steps


def _threaded_forward(compiled, weights, w_ih_1, w_hh_1, x, state0, mask, keep_cache):
    """B > 1: one call of the threaded passes (``threaded.c``) runs every step on
    ``kernels.threads()`` threads, its input projection from x_t (each thread transposes it,
    with a row of ones for the bias), its recurrent product, and its cell, which takes pre_x and
    pre_h from the threads' scratch; with a ``mask``, the threads carry each sequence's state
    past its end."""
    cell = compiled.cell
    T, B, _ = x.shape
    KH, H = weights.w_hh.shape
    rows = w_hh_1.shape[1]
    h_hist, h_steps, other_steps, cache_steps = _state_buffers(cell, x, state0, keep_cache)
    x_rows = x if x.strides[2] == x.itemsize else np.ascontiguousarray(x)  # T,B,I  each x_t as rows
    t_all = np.arange(T)
    # the threads copy each h_t into rows of H: y, and the backward's sums over time
    h_rows = POOL.empty((T + 1, B, H), x.dtype)  # T+1,B,H  slot t enters step t
    h_rows[0] = state0[0]
    h_stack = h_hist[:rows].transpose(1, 2, 0)  # T+1,B,rows
    products = compiled.threaded_forward(
        w_hh_1, w_ih_1, (h_stack, t_all), (x_rows, t_all), (h_stack, t_all + 1), (h_rows, t_all + 1), T,
        kernels.threads(), keep_cache, None if mask is None else prefix_lengths(mask),
    )
    unused = POOL.empty((KH, B), x.dtype).T  # B,KH  pre_x and pre_h of the table: the threads have their own
    run = _forward_steps(compiled, (unused[None], 0), unused, h_steps, other_steps, cache_steps, 0, T)
    compiled.forward_pass(products, run, 0, T)
    state = (h_steps[T].copy(), *(history[T % len(history)].copy() for history in other_steps))
    # y: without a cache, a view no one else holds; with one, a copy, as h_rows stays in the cache
    y = h_rows[1:] if not keep_cache else h_rows[1:].copy()
    if mask is not None:
        y *= mask  # zero past each sequence's end
    if not keep_cache:
        return y, state, None
    return y, state, Cache(compiled, weights, x, h_hist[:, :T], mask, (h_steps, *other_steps), tuple(cache_steps),
                           h_rows[:T])


def _single_forward(compiled, weights, w_ih_1, w_hh_1, x, state0, keep_cache):
    """B = 1: per chunk of ``GEMM_COLUMNS`` steps, the input projection as one GEMM, then one
    call that runs each step's recurrent product and cell in C."""
    cell = compiled.cell
    T, _, I = x.shape
    KH, H = weights.w_hh.shape
    rows = w_hh_1.shape[1]
    h_hist, h_steps, other_steps, cache_steps = _state_buffers(cell, x, state0, keep_cache)
    pre_h = POOL.empty((KH, 1), x.dtype)  # KH,1
    w_hh_1_t = np.ascontiguousarray(w_hh_1.T)  # rows,KH: the product is a sum of its rows
    products = compiled.product_steps(w_hh_1_t, (h_hist[:rows, :, 0].T, np.arange(T)), (pre_h[:, 0][None], 0), T)
    for start in range(0, T, GEMM_COLUMNS):
        n = min(GEMM_COLUMNS, T - start)
        x_1 = POOL.empty((n, I + 1), x.dtype)  # [x_t; 1] of the chunk's steps, as rows
        x_1[:, :I] = x[start:start + n, 0]
        x_1[:, I] = 1.0
        pre_x = np.matmul(x_1, w_ih_1.T, out=POOL.empty((n, KH), x.dtype))  # n,KH  each step's contiguous
        run = _forward_steps(compiled, (pre_x[:, None, :], np.arange(n)), pre_h.T, h_steps, other_steps,
                             cache_steps, start, n)
        compiled.forward_pass(products, run, start, n)
    y = h_steps[1:].copy()  # T,1,H
    state = (h_steps[T].copy(), *(history[T % len(history)].copy() for history in other_steps))
    if not keep_cache:
        return y, state, None
    return y, state, Cache(compiled, weights, x, h_hist[:, :T], None, (h_steps, *other_steps), tuple(cache_steps))


def _forward_steps(compiled, pre_x, pre_h, h_steps, other_steps, cache_steps, start, n):
    """The planned cells of steps ``start`` to ``start + n - 1``: ``pre_x`` a ``(stack,
    index)`` pair, ``stack`` (slots, B, KH) and ``index`` the slot of each of the n steps,
    ``pre_h`` (B, KH), the state histories (slots, B, H) and the cache buffers (T or 1, B,
    width*H)."""
    B, H = h_steps.shape[1:]
    t = np.arange(start, start + n)
    histories = [(h_steps, t + 1, t)] + [(history, (t + 1) % len(history), t % len(history)) for history in other_steps]
    return compiled.forward_steps(
        B, H, pre_x, (pre_h[None], 0),
        [(history, entering) for history, _, entering in histories],
        [(history, leaving) for history, leaving, _ in histories],
        [(buffer, t if len(buffer) > 1 else 0) for buffer in cache_steps],
        n,
    )


def backward(dy, dstate, cache):
    """Exact BPTT through :func:`forward`.

    Parameters
    ----------
    dy : (T, B, H), gradient of the loss with respect to ``y``
    dstate : tuple of (B, H) arrays or None entries (zero), gradient of the final state
    cache : Cache

    Returns
    -------
    grads : recurrence.Weights of gradients, same shapes as ``cache.weights``
    dx : (T, B, I)
    dstate0 : tuple of (B, H), gradient of the initial state
    """
    compiled, weights, x = cache.compiled, cache.weights, cache.x
    cell = compiled.cell
    T, B, I = x.shape
    lengths = None if cache.mask is None else prefix_lengths(cache.mask)
    if B == 1 and lengths is not None and lengths[0] < T:
        # one padded sequence: BPTT over its steps; past its end y is zero and the state carried
        length = int(lengths[0])
        grads, dx, dstate0 = backward(dy[:length], dstate, slice_cache(cache, 0, length))
        return grads, np.concatenate([dx, np.zeros((T - length, 1, I), dx.dtype)]), dstate0
    if B > 1 and kernels.threads() > 1:
        compiled.wake()  # the threads' workers wake while the pass is planned
    KH, H = weights.w_hh.shape
    shared = cell.SUMMED_GATES == cell.NUM_GATES  # dpre_x is dpre_h
    # the gradient reaching each part of the state from the future, feature-major; h's part
    # alternates between two buffers, the one a step reads and the one it writes for the step before
    carried = [np.zeros((H, B), x.dtype) if d is None else d.T.copy() for d in dstate]  # H,B each
    dh_pair = np.empty((2, H, B), x.dtype)
    dh_pair[0] = carried[0]
    chunk = min(T, max(1, GEMM_COLUMNS // B))  # steps, last chunk first
    dy = dy if dy.dtype == x.dtype and dy.strides[2] == dy.itemsize else np.ascontiguousarray(dy, x.dtype)
    # the gates' gradients by step, (chunk, B, KH) views of (chunk, KH, B): each step's rows
    # contiguous, as its product reads them (at B = 1 a step is a contiguous row, for the cell)
    dpre_x = _gate_steps(chunk, B, KH, x.dtype)
    dpre_h = dpre_x if shared else _gate_steps(chunk, B, KH, x.dtype)
    w_hh, w_ih = np.ascontiguousarray(weights.w_hh), np.ascontiguousarray(weights.w_ih)
    dw_hh_1 = POOL.empty((KH, H + 1), x.dtype)  # [dW_hh | db_hh]
    dw_ih = POOL.empty((KH, I), x.dtype)
    db_ih = None if shared else np.zeros(KH, x.dtype)
    dx = POOL.empty((T, B, I), x.dtype)
    for stop in range(T, 0, -chunk):
        start = max(0, stop - chunk)
        n, t_here = stop - start, np.arange(start, stop)
        parity = (T - 1 - t_here) % 2  # which of dh_pair step t reads
        run = _backward_steps(compiled, cache, dh_pair, carried[1:], dpre_x, None if shared else dpre_h, start, stop)
        if B > 1:  # the threads also compute dx_t = dpre_x_tᵀ W_ih, and the sums over time
            sums = gradient_args(
                dpre_h[:n].transpose(0, 2, 1), dpre_x[:n].transpose(0, 2, 1),
                cache.h_rows[start:stop].reshape(n * B, H),
                np.ascontiguousarray(x[start:stop]).reshape(n * B, I), dw_hh_1, dw_ih, db_ih, accumulate=stop != T)
            products = compiled.threaded_backward(
                w_hh, w_ih, (dpre_h, t_here - start), (dh_pair.transpose(0, 2, 1), 1 - parity), (dpre_x, t_here - start),
                (dx, t_here), n, kernels.threads(), sums, lengths, start,
            )
        else:
            products = compiled.product_steps(w_hh, (dpre_h[:, 0], t_here - start), (dh_pair[:, :, 0], 1 - parity), n)
        compiled.backward_pass(run, products, dy[start:stop], dh_pair, parity, n)
        if B > 1:
            continue
        # at B = 1 this chunk's share of the sums over time, one GEMM each
        first = stop == T
        _add_product(dw_hh_1, dpre_h[:n, 0].T, cache.h_prev[:, start:stop, 0].T, first)  # Σ_t dpre_h_t [h_{t-1}; 1]ᵀ
        _add_product(dw_ih, dpre_x[:n, 0].T, x[start:stop, 0], first)  # Σ_t dpre_x_t x_tᵀ
        if not shared:
            db_ih += dpre_x[:n, 0].sum(axis=0)
        np.matmul(dpre_x[:n, 0], w_ih, out=dx[start:stop, 0])  # dx_t = dpre_x_t W_ih
    dh0 = dh_pair[T % 2]  # step 0 wrote the buffer step -1 would read
    dw_hh = POOL.empty((KH, H), x.dtype)
    np.copyto(dw_hh, dw_hh_1[:, :H])
    db_hh = dw_hh_1[:, H].copy()
    grads = type(weights)(w_ih=dw_ih, w_hh=dw_hh, b_ih=db_hh.copy() if shared else db_ih, b_hh=db_hh)
    return grads, dx, tuple(np.ascontiguousarray(d.T) for d in [dh0] + carried[1:])


def _gate_steps(chunk, B, KH, dtype):
    """Room for the gates' gradients of ``chunk`` steps, (chunk, B, KH): a view of (chunk, KH,
    B), whose steps' (KH, B) blocks are contiguous."""
    return POOL.empty((chunk, KH, B), dtype).transpose(0, 2, 1)


def _backward_steps(compiled, cache, dh_pair, carried, dpre_x, dpre_h, start, stop):
    """The planned cells of steps ``stop - 1`` down to ``start``, indexed from ``start``:
    ``dh_pair`` (2, H, B), h's gradient buffers taken in turn, the other parts' (H, B), and the
    stores ``dpre_x``, ``dpre_h`` (chunk, B, KH) (None where it is dpre_x)."""
    T = len(cache.x)
    _, H, B = dh_pair.shape
    t = np.arange(start, stop)
    part, offset = compiled.cache_state
    stores = [store for store in (dpre_x, dpre_h) if store is not None]
    return compiled.backward_steps(
        B, H,
        [(dh_pair.transpose(0, 2, 1), (T - 1 - t) % 2)] + [(d.T[None], 0) for d in carried],
        [(buffer, t) for buffer in cache.buffers] + [(cache.states[part], t + offset)],
        [(store, t - start) for store in stores],
        stop - start,
    )


def _add_product(total, a, b, first):
    """``total = a @ b`` on the first call, ``total += a @ b`` after."""
    if first:
        np.matmul(a, b, out=total)
    else:
        total += np.matmul(a, b, out=POOL.empty(total.shape, total.dtype))


def slice_cache(cache, start, stop):
    """The cache of steps ``start`` to ``stop - 1`` alone, as if the sequence began at
    ``start`` with the state that entered that step held constant."""
    mask = None if cache.mask is None else cache.mask[start:stop]
    return cache._replace(
        x=cache.x[start:stop], h_prev=cache.h_prev[:, start:stop], mask=mask,
        states=tuple(history[start:stop + 1] for history in cache.states),
        buffers=tuple(buffer[start:stop] for buffer in cache.buffers),
        h_rows=None if cache.h_rows is None else cache.h_rows[start:stop],
    )
