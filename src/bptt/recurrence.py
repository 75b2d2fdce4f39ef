"""The one BPTT engine, shared by every cell.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

Forward: the input projection of all T steps is one GEMM (per few thousand steps and sequences
on long inputs); each step adds one recurrent GEMM
and calls the cell's elementwise ``step``. Backward walks time in reverse: at every step the
gradient arriving from the future (``dstate``) is added to the gradient from the output at
that step, the cell's ``step_back`` turns it into gradients of the pre-activations, and one
GEMM with ``W_hh`` carries it to ``h_{t-1}``. The parameter gradients are the sums over all
steps of per-step outer products; each is computed once, after the loop, as one GEMM over
the stacked steps: ``dW_hh = Σ_t dpre_h_tᵀ h_{t-1}`` is the "sum over time" that BPTT is. (With
the compiled kernels on threads, ``kernels/recurrence.c`` runs whole chunks of steps, and its
threads add these sums up themselves after a chunk's steps: the same products, in C.)

A right-padded batch is run with a boolean ``mask`` (T, B, 1): where it is False the state is
carried through unchanged, the output is zero, and neither gets any gradient, which is the
semantics of PyTorch's packed sequences.

Layout, for speed (docs/performance.md has the measurements). Inside a pass the per-step
matrices are feature-major, (F, B): the recurrent product is ``pre_hᵀ = W_hh h_{t-1}ᵀ``, a
(K*H, B) matrix. It is the same product as ``h_{t-1} W_hhᵀ``, but OpenBLAS runs this
orientation much faster in float32 at small B (177 against 108 GFLOP/s at B=32, H=256 on 2
threads). What a sum over time reads later is stored as (F, T, B): one step is a strided
(F, B) slice, which BLAS takes as it is, and all steps together are the (F, T*B) matrix of a
single GEMM. What only the cell reads is stored as (T, F, B), contiguous per step. The cells
get (B, F) views of these buffers (transposes, not copies) and write into them with ``out=``,
so a pass allocates its buffers once, before its loop.

Biases ride in the GEMMs on a row of ones: ``pre_x = [W_ih | b] [x_t; 1]``, where ``b`` is
``b_ih`` plus the blocks of ``b_hh`` that a cell sees only through ``pre_x + pre_h``
(``cell.SUMMED_GATES``); the rest of ``b_hh`` (GRU's ``b_hn``) enters the per-step product as
``[W_hh | b_hh_rest] [h_{t-1}; 1]``. The stored inputs of the steps, ``[h_{t-1}; 1]``, carry
that row of ones, so the GEMM that gives ``dW_hh`` gives ``db_hh`` as its last column.
"""

from typing import NamedTuple

import numpy as np

from . import kernels
from .kernels.fused import FUSED
from .pool import POOL


class Weights(NamedTuple):
    """One layer and direction: ``w_ih`` (K*H, I), ``w_hh`` (K*H, H), biases (K*H,)."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


class Cache(NamedTuple):
    """What :func:`forward` keeps for :func:`backward`, and nothing more."""

    cell: object
    weights: Weights
    x: np.ndarray  # T,B,I
    h_prev: np.ndarray  # H+1,T,B  [h_{t-1}; 1], the state entering each step and a row of ones
    steps: list  # T cell caches, views of buffers that hold all steps
    mask: np.ndarray | None  # T,B,1
    states: tuple  # per part of the state, (T+1, B, H): slot t enters step t
    buffers: tuple  # per CACHE_WIDTHS array of the cell, (T, B, width*H)
    h_rows: np.ndarray | None = None  # T,B,H  h_{t-1} with contiguous rows, from the threaded passes


def length_mask(lengths, steps, dtype=bool):
    """``mask[t, b] = t < lengths[b]``, shaped (T, B, 1). ``lengths``: (B,) ints."""
    return (np.arange(steps)[:, None] < np.asarray(lengths)[None, :])[:, :, None].astype(dtype)


def prefix_lengths(mask):
    """The lengths (B,) int64 of the sequences of a right-padded batch's ``mask`` (T, B, 1),
    or None where some sequence's mask is not True for its first steps and False after."""
    within = mask[:, :, 0]
    lengths = within.sum(axis=0, dtype=np.int64)
    return lengths if np.array_equal(within, np.arange(len(within))[:, None] < lengths) else None


def reverse_time(a, lengths=None):
    """Reverse each sequence of ``a`` (T, B, ...) within its own length.

    Positions past a sequence's end stay where they are. The map is its own inverse, so the
    backward of a reversal is the same reversal.
    """
    if lengths is None:
        return a[::-1]
    T, B = a.shape[:2]
    t = np.arange(T)[:, None]  # T,1
    lengths = np.asarray(lengths)[None, :]  # 1,B
    index = np.where(t < lengths, lengths - 1 - t, t)  # T,B
    return a[index, np.arange(B)[None, :]]


def reverse_edges(edges, lengths=None):
    """The ``edges`` of ``bptt.reference.backward``, (T, B) bool, for the reverse direction.

    An edge at step e cuts the gradient between steps e-1 and e; in a sequence reversed within
    its length n (:func:`reverse_time`) those are steps n-e and n-e-1, so the edge sits at
    step n-e.
    """
    later = np.zeros_like(edges)
    later[:-1] = edges[1:]  # later[t] = edges[t + 1], the edge just after step t
    return reverse_time(later, lengths)


# columns (steps times batch) of one GEMM over time (the input projection, the parameter
# gradients): large enough to run near the GEMM peak, small enough that a long sequence does not
# hold K*H numbers per step and sequence
GEMM_COLUMNS = 4096


def forward(cell, weights, x, state0, mask=None, keep_cache=True):
    """Run ``cell`` over a sequence.

    Parameters
    ----------
    cell : module of ``bptt.cells``
    weights : Weights
    x : (T, B, I)
    state0 : tuple of (B, H) arrays, one per ``cell.STATE_NAMES``
    mask : (T, B, 1) bool or None
    keep_cache : False for inference: nothing is kept for backward, the cell's buffers are
        reused from step to step, and the returned cache is None

    Returns
    -------
    y : (T, B, H), the hidden state at every step, zero past each sequence's end
    state : tuple of (B, H), the state after each sequence's last step
    cache : Cache, or None without ``keep_cache``
    """
    T, B, I = x.shape
    KH, H = weights.w_hh.shape
    compiled = kernels.compiled(cell, x.dtype, T)  # None: the NumPy cell
    fused = FUSED[cell.NAME]  # the NumPy cell's buffered kernel
    w_ih_1, w_hh_1 = _with_biases(cell, weights, x.dtype)
    rows = w_hh_1.shape[1]
    if compiled is not None and B > 1 and kernels.threads() > 1 and (mask is None or prefix_lengths(mask) is not None):
        return _threaded_forward(compiled, weights, w_ih_1, w_hh_1, x, state0, mask, keep_cache)
    # pre_x for a chunk of steps at a time: one GEMM for short sequences, bounded memory for long
    chunk = max(1, GEMM_COLUMNS // B)
    h_hist, h_steps, other_steps, cache_steps = _state_buffers(cell, x, state0, keep_cache)
    pre_h = POOL.empty((KH, B), x.dtype)  # KH,B
    # every view a step reads or writes, made once before the loop: at B=1 a step is ~15 calls
    # of a microsecond, and building these per step cost a third of that again
    h_inputs = list(h_hist[:rows].transpose(1, 0, 2))  # T+1 views (rows, B), the GEMM's operand
    states = [(h_steps[t],) + tuple(history[t % len(history)] for history in other_steps) for t in range(T + 1)]
    if keep_cache:
        kept = [tuple(buffer[t] for buffer in cache_steps) for t in range(T)]
    else:
        kept = [tuple(buffer[0] for buffer in cache_steps)] * T
    pre_h_view = pre_h.T  # B,KH
    product = _vector_product(compiled, w_hh_1, (h_hist[:rows, :, 0].T, np.arange(T)), (pre_h[:, 0][None], 0), B, T)
    # with the compiled kernels and no lengths, nothing happens between the steps of a chunk but
    # C: one call runs them all, at B = 1 with the product in C
    chunk_products = product if mask is None else None
    whole_chunks = chunk_products is not None
    if compiled is not None:
        part, offset = compiled.cache_state  # the state the cell's step cache ends with
    if mask is not None:
        past_end = ~mask  # T,B,1
    steps = []
    for t in range(T):
        if t % chunk == 0:
            n = min(chunk, T - t)
            x_1 = POOL.empty((n * B, I + 1), x.dtype)  # [x_t; 1] of the chunk's steps, as rows
            x_1[:, :I] = x[t:t + n].reshape(n * B, I)
            x_1[:, I] = 1.0
            pre_x = np.matmul(w_ih_1, x_1.T, out=POOL.empty((KH, n * B), x.dtype))  # KH,chunk*B
            pre_x_stack = pre_x.reshape(KH, -1, B).transpose(1, 2, 0)  # chunk,B,KH
            if compiled is None:
                pre_x_steps = list(pre_x_stack)  # chunk views (B, KH)
            else:
                run = _compiled_forward(compiled, (pre_x_stack, np.arange(n)), pre_h_view, h_steps, other_steps,
                                        cache_steps, t, n)
            if whole_chunks:
                compiled.forward_pass(chunk_products, run, t, n)
        if whole_chunks:
            if keep_cache:
                steps.append(kept[t] + (states[t + offset][part],))
            continue
        if product is None:
            np.matmul(w_hh_1, h_inputs[t], out=pre_h)  # KH,B  W_hh h_{t-1} (+ b_hh_rest)
        else:
            product(t)
        if compiled is None:
            _, step_cache = fused.step(pre_x_steps[t % chunk], pre_h_view, states[t], out=(states[t + 1], kept[t]))
        else:
            run(t % chunk)
            step_cache = kept[t] + (states[t + offset][part],)
        if mask is not None:
            for new_part, prev_part in zip(states[t + 1], states[t]):
                np.copyto(new_part, prev_part, where=past_end[t])
        if keep_cache:
            steps.append(step_cache)
    y = POOL.empty((T, B, H), x.dtype)
    np.copyto(y, h_steps[1:])
    if mask is not None:
        y *= mask
    state = tuple(part.copy() for part in states[T])
    if not keep_cache:
        return y, state, None
    return y, state, Cache(cell, weights, x, h_hist[:, :T], steps, mask, (h_steps, *other_steps), tuple(cache_steps))


def _with_biases(cell, weights, dtype):
    """``[W_ih | b]`` (K*H, I+1) with b = b_ih (+ the summed blocks of b_hh): the input
    projection's bias rides in its product on a row of ones below x; and W_hh, or where b_hh has
    blocks that are not summed (GRU's b_hn, which the reset gate scales), ``[W_hh | 0 ...
    b_hh_rest]`` (K*H, H+1), for a row of ones below h."""
    KH, H = weights.w_hh.shape
    I = weights.w_ih.shape[1]
    summed = cell.SUMMED_GATES * H
    w_ih_1 = np.empty((KH, I + 1), dtype)
    w_ih_1[:, :I] = weights.w_ih
    w_ih_1[:, I] = weights.b_ih
    w_ih_1[:summed, I] += weights.b_hh[:summed]
    if summed == KH:
        return w_ih_1, weights.w_hh
    w_hh_1 = np.zeros((KH, H + 1), dtype)
    w_hh_1[:, :H] = weights.w_hh
    w_hh_1[summed:, H] = weights.b_hh[summed:]
    return w_ih_1, w_hh_1


def _state_buffers(cell, x, state0, keep_cache, step_major=False):
    """The states and the cell's cache by step, for :func:`forward`.

    Slot t of a state holds the state entering step t (for h with a row of ones below,
    [h_{t-1}; 1]), step t writes slot t+1. h keeps every step even without a cache (it becomes y
    with one copy at the end: a transposing copy per step cost more than the pass's cell
    arithmetic); the other states (LSTM's c) then keep two slots, taken in turn, and the cache
    one, which every step overwrites. ``step_major``: h_hist is a view of (T+1, H+1, B), each
    step's [h; 1] contiguous, as the threaded forward's products read it.

    Returns h_hist (H+1, T+1, B), its views h_steps (T+1, B, H), the other states (slots, B,
    H) and the cache buffers (T or 1, B, width*H), slots 0 holding ``state0``.
    """
    T, B, _ = x.shape
    H = state0[0].shape[1]
    if step_major:
        h_hist = POOL.empty((T + 1, H + 1, B), x.dtype).transpose(1, 0, 2)  # H+1,T+1,B
    else:
        h_hist = POOL.empty((H + 1, T + 1, B), x.dtype)  # H+1,T+1,B
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
    """:func:`forward` at B > 1 on ``kernels.threads()`` threads: one call of ``recurrence.c``
    runs every step, its input projection from [x_t; 1] feature-major, its recurrent product,
    and its cell, which takes pre_x and pre_h from the threads' scratch; with a ``mask`` of a
    right-padded batch, the threads carry each sequence's state past its end."""
    cell = compiled.cell
    T, B, I = x.shape
    KH, H = weights.w_hh.shape
    rows = w_hh_1.shape[1]
    h_hist, h_steps, other_steps, cache_steps = _state_buffers(cell, x, state0, keep_cache, step_major=True)
    x_1_steps = POOL.empty((T, I + 1, B), x.dtype)  # T,I+1,B  [x_t; 1]
    np.copyto(x_1_steps[:, :I], x.transpose(0, 2, 1))
    x_1_steps[:, I] = 1.0
    t_all = np.arange(T)
    # the threads copy each h_t into rows of H: y, and the backward's sums over time
    h_rows = POOL.empty((T + 1, B, H), x.dtype)  # T+1,B,H  slot t enters step t
    h_rows[0] = state0[0]
    h_stack = h_hist[:rows].transpose(1, 2, 0)  # T+1,B,rows
    products = compiled.threaded_forward(
        w_hh_1, w_ih_1, (h_stack, t_all), (x_1_steps.transpose(0, 2, 1), t_all), (h_stack, t_all + 1),
        (h_rows, t_all + 1), T, kernels.threads(), keep_cache, None if mask is None else prefix_lengths(mask),
    )
    unused = POOL.empty((KH, B), x.dtype).T  # B,KH  pre_x and pre_h of the table: the threads have their own
    run = _compiled_forward(compiled, (unused[None], 0), unused, h_steps, other_steps, cache_steps, 0, T)
    compiled.forward_pass(products, run, 0, T)
    state = (h_steps[T].copy(), *(history[T % len(history)].copy() for history in other_steps))
    # y: without a cache, a view no one else holds; with one, a copy, as h_rows stays in the cache
    y = h_rows[1:] if not keep_cache else h_rows[1:].copy()
    if mask is not None:
        y *= mask  # zero past each sequence's end
    if not keep_cache:
        return y, state, None
    part, offset = compiled.cache_state  # the state the cell's step cache ends with
    histories = (h_steps, *other_steps)
    steps = [tuple(buffer[t] for buffer in cache_steps) + (histories[part][t + offset],) for t in range(T)]
    return y, state, Cache(cell, weights, x, h_hist[:, :T], steps, mask, histories, tuple(cache_steps), h_rows[:T])


def _compiled_forward(compiled, pre_x, pre_h, h_steps, other_steps, cache_steps, start, n):
    """The planned steps ``start`` to ``start + n - 1`` of :func:`forward`'s loop, with its
    buffers: ``pre_x`` a ``(stack, index)`` pair, ``stack`` (slots, B, KH) and ``index`` the
    slot of each of the n steps, ``pre_h`` (B, KH), the state histories (slots, B, H) and the
    cache buffers (T or 1, B, width*H)."""
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


PATHS = ("hidden", "cell")
ALIGNS = ("start", "end")


class Window(NamedTuple):
    """Truncated BPTT on one sequence as people write it: TBPTT(k1, k2).

    The sequence is cut into chunks of ``k1`` steps, counted from its first step (``align``
    ``"start"``: a loop over chunks of the forward, the last chunk shorter) or from its last
    (``"end"``: a loop from the last step that restarts every k1 steps, the first chunk
    shorter). The losses of a chunk [s, e) flow back to step s - (k2 - k1) and no further: the
    chunk itself and the k2 - k1 steps before it, so in a whole chunk the loss at its j-th step
    (j = 1 .. k1) reaches back k2 - k1 + j steps. The gradient of the final state belongs to
    the last chunk.

    - ``k1 == k2``: windows of k steps, the gradient restarted at each window's edge;
    - ``k1 == 1``: per-loss depth k2, each loss reaching back k2 steps (either align).
    """

    k1: int
    k2: int
    align: str = "start"

    def chunks(self, length):
        """The chunks ``(s, e)`` of a sequence of ``length`` steps, first to last."""
        if self.align == "start":
            return [(s, min(length, s + self.k1)) for s in range(0, length, self.k1)]
        return [(max(0, e - self.k1), e) for e in range(length, 0, -self.k1)][::-1]

    def reach(self, start):
        """The first step that the losses of a chunk starting at ``start`` reach."""
        return max(0, start - (self.k2 - self.k1))


def window_edges(window, steps, lengths=None):
    """The edges of windows (``window.k1 == window.k2``) for ``bptt.reference.backward``'s ``edges``.

    Returns (T, B) bool, True at the first step of every window but the first, counted within
    each sequence's own length (``lengths``, (B,) ints, or None: all ``steps`` long); B is 1
    without lengths.
    """
    lengths = [steps] if lengths is None else [int(n) for n in lengths]
    edges = np.zeros((steps, len(lengths)), bool)
    for b, length in enumerate(lengths):
        for start, _ in window.chunks(length)[1:]:
            edges[start, b] = True
    return edges


def slice_cache(cache, start, stop):
    """The cache of steps ``start`` to ``stop - 1`` alone, as if the sequence began at
    ``start`` with the state that entered that step held constant."""
    mask = None if cache.mask is None else cache.mask[start:stop]
    return cache._replace(
        x=cache.x[start:stop], h_prev=cache.h_prev[:, start:stop], steps=cache.steps[start:stop], mask=mask,
        states=tuple(history[start:stop + 1] for history in cache.states),
        buffers=tuple(buffer[start:stop] for buffer in cache.buffers),
        h_rows=None if cache.h_rows is None else cache.h_rows[start:stop],
    )


def backward(dy, dstate, cache):
    """Exact BPTT through :func:`forward`. (The variants that leave out a path through time or
    restart at the edges of windows are the reference engine's: ``bptt.reference.backward``.)

    Parameters
    ----------
    dy : (T, B, H), gradient of the loss with respect to ``y``
    dstate : tuple of (B, H) arrays or None entries (zero), gradient of the final state
    cache : Cache

    Returns
    -------
    grads : Weights of gradients, same shapes as ``cache.weights``
    dx : (T, B, I)
    dstate0 : tuple of (B, H), gradient of the initial state
    """
    cell, weights, x, h_prev, steps, mask = cache[:6]
    T, B, I = x.shape
    KH, H = weights.w_hh.shape
    shared = cell.SUMMED_GATES == cell.NUM_GATES  # dpre_x is dpre_h
    compiled = kernels.compiled(cell, x.dtype, T)  # None: the NumPy cell
    fused = FUSED[cell.NAME]  # the NumPy cell's buffered kernel
    # the gradient reaching each part of the state from the future, feature-major, updated in
    # place; h's part alternates between two buffers, the one the step reads and the one the
    # GEMM writes for the step before
    carried = [np.zeros((H, B), x.dtype) if d is None else d.T.copy() for d in dstate]  # H,B each
    dh_pair = np.empty((2, H, B), x.dtype)
    dh_pair[0] = carried[0]
    dh_buffers = (dh_pair[0], dh_pair[1])
    carried[0] = dh_buffers[0]
    throughs = [tuple(d.T for d in [dh] + carried[1:]) for dh in dh_buffers]  # (B, H) views
    # the steps are taken in chunks of GEMM_COLUMNS // B, last chunk first; after each chunk its
    # sums over time are added to the gradients, one GEMM each: one chunk for short sequences,
    # and a long one does not hold K*H numbers per step and sequence
    chunk = min(T, max(1, GEMM_COLUMNS // B))
    dy_steps = POOL.empty((chunk, H, B), x.dtype)  # chunk,H,B
    dpre_x = POOL.empty((KH, chunk, B), x.dtype)  # KH,chunk,B
    dpre_h = dpre_x if shared else POOL.empty((KH, chunk, B), x.dtype)
    dpre_x_slots = list(dpre_x.transpose(1, 0, 2))  # chunk views (KH, B)
    dpre_h_slots = list(dpre_h.transpose(1, 0, 2))
    # the cell writes one step's dpre into contiguous scratch, copied into dpre_x[:, t] after:
    # elementwise ops on a strided (KH, B) slice cost NumPy a loop per row, 2-3x the arithmetic
    dpre_x_step = POOL.empty((KH, B), x.dtype)  # KH,B
    dpre_h_step = dpre_x_step if shared else POOL.empty((KH, B), x.dtype)
    out = (dpre_x_step.T, dpre_h_step.T, POOL.empty((KH, B), x.dtype).T)  # and B,KH scratch
    w_hh_t = weights.w_hh.T  # H,KH
    dw_hh_1 = POOL.empty((KH, H + 1), x.dtype)  # [dW_hh | db_hh]
    dw_ih = POOL.empty((KH, I), x.dtype)
    db_ih = None if shared else np.zeros(KH, x.dtype)
    dx = POOL.empty((T, B, I), x.dtype)
    lengths = None if mask is None else prefix_lengths(mask)
    if mask is not None:
        within = mask.transpose(0, 2, 1).astype(x.dtype)  # T,1,B
        past_end = 1.0 - within
        kept = [np.empty((H, B), x.dtype) for _ in carried]
    for stop in range(T, 0, -chunk):
        start = max(0, stop - chunk)
        np.copyto(dy_steps[:stop - start], dy[start:stop].transpose(0, 2, 1))
        whole_chunk = threaded = False
        if compiled is not None:
            run = _compiled_backward(compiled, cache, dh_pair, carried[1:], dpre_x, None if shared else dpre_h, start, stop)
            t_here = np.arange(start, stop)
            product = _vector_product(compiled, weights.w_hh, (dpre_h[:, :, 0].T, t_here - start),
                                      (dh_pair[:, :, 0], 1 - (T - 1 - t_here) % 2), B, stop - start, transpose=True)
            # nothing happens between the steps of a chunk but C: one call runs them all, at
            # B > 1 on threads (which take the lengths of a right-padded batch), at B = 1 without
            # lengths with the product in C
            threaded = B > 1 and kernels.threads() > 1 and (mask is None or lengths is not None)
            whole_chunk = threaded or (mask is None and product is not None)
            if threaded:  # the threads compute dx_tᵀ = W_ihᵀ dpre_x_t too
                dx_steps = POOL.empty((chunk, I, B), x.dtype).transpose(0, 2, 1)  # chunk,B,I views
                sums = _threaded_sums(cache, dpre_x, dpre_h, dw_hh_1, dw_ih, db_ih, start, stop)
                product = compiled.threaded_backward(
                    weights.w_hh, weights.w_ih, (dpre_h.transpose(1, 2, 0), t_here - start),
                    (dh_pair.transpose(0, 2, 1), 1 - (T - 1 - t_here) % 2),
                    (dpre_x.transpose(1, 2, 0), t_here - start), (dx_steps, t_here - start), stop - start,
                    kernels.threads(), sums, lengths, start,
                )
        if whole_chunk:
            compiled.backward_pass(run, product, dy_steps[:stop - start], dh_pair, (T - 1 - t_here) % 2, stop - start)
            carried[0] = dh_buffers[1 - (T - 1 - start) % 2]
        steps_here = () if whole_chunk else reversed(range(start, stop))  # last first
        for t in steps_here:
            parity = (T - 1 - t) % 2
            dh, dh_prev = dh_buffers[parity], dh_buffers[1 - parity]
            through = throughs[parity]
            carried[0] = dh
            if mask is not None:
                # y_t = mask * h_t; past a sequence's end the state passed through unchanged
                for k, d in zip(kept, carried):
                    np.multiply(d, past_end[t], out=k)
            # h_t feeds the output at t and step t+1: the two gradients add
            dh += dy_steps[t - start]
            if mask is not None:
                for d in carried:
                    d *= within[t]
            if compiled is None:
                _, _, direct = fused.step_back(through, steps[t], out=out)
                np.copyto(dpre_x_slots[t - start], dpre_x_step)
                if not shared:
                    np.copyto(dpre_h_slots[t - start], dpre_h_step)
                dpre_h_t = dpre_h_step
            else:  # writes dpre straight into the store, where BLAS reads it as it is
                run(t - start)
                direct = compiled.direct(through)
                dpre_h_t = dpre_h_slots[t - start]
            # pre_h = W_hh h_{t-1} + b_hh, plus the paths to the previous state that skip W_hh
            if compiled is None or product is None:
                np.matmul(w_hh_t, dpre_h_t, out=dh_prev)  # H,B
            else:
                product(t - start)
            if direct[0] is not None:
                dh_prev += direct[0].T
            for d, passed, direct_part in zip(carried[1:], through[1:], direct[1:]):
                if direct_part is None:
                    d.fill(0.0)
                elif direct_part is not passed:
                    np.copyto(d, direct_part.T)
            carried[0] = dh_prev
            if mask is not None:
                for d, k in zip(carried, kept):
                    d += k
        # this chunk's share of the sums over time (the threads added them up where they ran)
        n = stop - start
        if threaded:
            np.copyto(dx[start:stop], dx_steps[:n])
            if sums is not None:
                continue
        dpre_x_2d = dpre_x[:, :n].reshape(KH, n * B)
        dpre_h_2d = dpre_h[:, :n].reshape(KH, n * B)
        first = stop == T
        # Σ_t dpre_h_t [h_{t-1}; 1]ᵀ = [dW_hh | db_hh]
        _add_product(dw_hh_1, dpre_h_2d, h_prev[:, start:stop].reshape(H + 1, n * B).T, first)
        _add_product(dw_ih, dpre_x_2d, x[start:stop].reshape(n * B, I), first)  # Σ_t dpre_x_t x_tᵀ
        if not shared:
            db_ih += dpre_x_2d.sum(axis=1)
        if not threaded:
            np.matmul(dpre_x_2d.T, weights.w_ih, out=dx[start:stop].reshape(n * B, I))  # dx_t = dpre_x_t W_ih
    dw_hh = POOL.empty((KH, H), x.dtype)
    np.copyto(dw_hh, dw_hh_1[:, :H])
    db_hh = dw_hh_1[:, H].copy()
    grads = Weights(w_ih=dw_ih, w_hh=dw_hh, b_ih=db_hh.copy() if shared else db_ih, b_hh=db_hh)
    return grads, dx, tuple(np.ascontiguousarray(d.T) for d in carried)


def _compiled_backward(compiled, cache, dh_pair, carried, dpre_x, dpre_h, start, stop):
    """The planned steps ``stop - 1`` down to ``start`` of :func:`backward`'s loop, indexed
    from ``start``: ``dh_pair`` (2, H, B), h's gradient buffers taken in turn, the other parts'
    (H, B), and the stores ``dpre_x``, ``dpre_h`` (KH, chunk, B) (None where it is dpre_x)."""
    T = len(cache.x)
    _, H, B = dh_pair.shape
    t = np.arange(start, stop)
    part, offset = compiled.cache_state
    stores = [store for store in (dpre_x, dpre_h) if store is not None]
    return compiled.backward_steps(
        B, H,
        [(dh_pair.transpose(0, 2, 1), (T - 1 - t) % 2)] + [(d.T[None], 0) for d in carried],
        [(buffer, t) for buffer in cache.buffers] + [(cache.states[part], t + offset)],
        [(store.transpose(1, 2, 0), t - start) for store in stores],
        stop - start,
    )


def _threaded_sums(cache, dpre_x, dpre_h, dw_hh_1, dw_ih, db_ih, start, stop):
    """The sums over steps ``start`` to ``stop - 1`` (:func:`plan.gradient_args`) that the
    threads of a backward pass add up, into the gradients, after the pass's steps; None where
    the forward left no ``h_rows`` (it did not run on threads), and BLAS adds them up."""
    if cache.h_rows is None:
        return None
    B, H = cache.h_rows.shape[1:]
    KH, I, n = dw_ih.shape[0], dw_ih.shape[1], stop - start
    x_rows = np.ascontiguousarray(cache.x[start:stop]).reshape(n * B, I)
    h_rows = cache.h_rows[start:stop].reshape(n * B, H)
    steps = (KH, n * B)
    return kernels.plan.gradient_args(dpre_h[:, :n].reshape(steps), dpre_x[:, :n].reshape(steps), h_rows, x_rows,
                                      dw_hh_1, dw_ih, db_ih, accumulate=stop != len(cache.x))


def _vector_product(compiled, w, v, out, B, count, transpose=False):
    """The compiled recurrent products of ``count`` steps at B = 1 (``out = w v``, or ``wᵀ v``),
    or None to call BLAS: for a small ``w`` it costs more to call BLAS than to compute the
    product. ``v``, ``out``: ``(stack, index)`` of (n, length) vectors."""
    if compiled is None or B != 1 or w.strides[1] != w.itemsize or w.nbytes > kernels.MAX_VECTOR_PRODUCT_BYTES:
        return None
    return compiled.product_steps(w, v, out, count, transpose)


def _add_product(total, a, b, first):
    """``total = a @ b`` on the first call, ``total += a @ b`` after."""
    if first:
        np.matmul(a, b, out=total)
    else:
        total += np.matmul(a, b, out=POOL.empty(total.shape, total.dtype))


def backward_by_depth(dy, dstate, cache):
    """Per-loss truncated BPTT at every depth k = 1 .. T at once.

    Loss term t (``dy[t]``, and at t = T-1 the final state's gradient) is walked back one step
    at a time from step t to step 0; what it adds to the gradients at step s lies t - s steps
    back and counts for every depth k > t - s, and what it hands the initial state counts for
    every k > t. Summing by distance costs T(T+1)/2 one-step backwards for all depths together,
    where T separate truncated backwards cost O(T³). Memory: O(T² B I) for the input gradients.

    Parameters
    ----------
    dy : (T, B, H)
    dstate : tuple of (B, H) arrays or None entries, gradient of the final state
    cache : Cache

    Returns
    -------
    list of T tuples ``(grads, dx, dstate0)`` for k = 1 .. T, each as :func:`backward` returns
    them; the last (k = T) is full BPTT.
    """
    x = cache.x
    T, B, _ = x.shape
    H = cache.weights.w_hh.shape[1]
    grads_at = {name: np.zeros((T,) + getattr(cache.weights, name).shape, x.dtype) for name in Weights._fields}
    dx_at = np.zeros((T,) + x.shape, x.dtype)  # distance, T,B,I
    dstate0_at = [np.zeros((T + 1, B, H), x.dtype) for _ in dstate]  # distance, B,H
    no_output = np.zeros((1, B, H), x.dtype)
    for t in range(T):
        if t < T - 1 and not dy[t].any():
            continue  # no loss term at step t
        carried = dstate if t == T - 1 else (None,) * len(dstate)
        for s in range(t, -1, -1):
            grads_s, dx_s, carried = backward(dy[t:t + 1] if s == t else no_output, carried, slice_cache(cache, s, s + 1))
            for name in Weights._fields:
                grads_at[name][t - s] += getattr(grads_s, name)
            dx_at[t - s, s] += dx_s[0]
        for at, part in zip(dstate0_at, carried):
            at[t + 1] += part
    grads_k = {name: np.cumsum(at, axis=0) for name, at in grads_at.items()}
    dx_k = np.cumsum(dx_at, axis=0)
    dstate0_k = [np.cumsum(at, axis=0) for at in dstate0_at]
    return [
        (Weights(*(grads_k[name][k - 1] for name in Weights._fields)), dx_k[k - 1], tuple(at[k] for at in dstate0_k))
        for k in range(1, T + 1)
    ]
