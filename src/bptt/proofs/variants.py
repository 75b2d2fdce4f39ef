"""The variants of BPTT that a learner's gradients are compared with, and how they are found.

Legend: T time steps, B batch, I input features, H hidden units.

A truncation, however it is written (per-loss depth k, windows of k steps, TBPTT(k1, k2),
counted from the first step or from the last), is known by its *reach profile*: the steps
whose losses reach step t are t .. t + r(t) - 1, and every gradient at step t (of x_t, of the
pre-activations, hence of the weights' term at t) is the sum over those losses. So the
learner's ``dx`` alone tells r(t): one backward over T replicas of the batch, replica s
carrying the loss at step s alone, gives the part of dx_t from each loss, and their partial
sums are dx_t at every reach. The profiles of all truncations (k1 <= k2 < T, both alignments)
are computed at once, and those that fit the learner's dx at every step are the candidates;
each is then computed exactly by the engine and judged on every tensor. Without ``dx``, the
depths and windows are each computed and tried.
"""

import functools
from typing import NamedTuple

import numpy as np

from ..layers import layer_weights, stack_backward, stack_backward_by_depth
from ..recurrence import ALIGNS, PATHS, Window, window_edges
from .slips import slip_variants, slipped_backward

MAX_CANDIDATES = 8  # distinct reach profiles computed exactly, per path (the closest first)


class Reference(NamedTuple):
    """The gradients of one variant of BPTT, in the learner's layout and names."""

    status: str  # "correct", "truncated", "path-cut", or "wrong" for a slip alone
    window: Window | None  # the truncation; Window(1, k) is per-loss depth k
    path: str | None  # the path through time cut, "hidden" or "cell"
    slip: tuple | None  # (id, ((key, value), ...)) of a slip of bptt.proofs.slips, or None
    grads: dict  # "d" + name -> float64 array

    @property
    def kind(self):
        return self.status, self.window, self.path, self.slip


def gradients(model, cache, dy, dh_n=None, **variant):
    """The library's gradients, keyed by what they are the gradient of: parameter names, ``x``,
    ``h0`` and, for LSTM, ``c0``. ``variant``: ``window`` and ``cut`` of ``model.backward``."""
    grads, dx, dstate0 = model.backward(cache, dy, dh_n, **variant)
    return {**grads, "x": dx, **state_grads(dstate0)}


def state_grads(dstate0):
    """``{"h0": ...}``, and ``"c0"`` for an LSTM's tuple; each (1, B, H)."""
    if isinstance(dstate0, tuple):
        return {"h0": dstate0[0], "c0": dstate0[1]}
    return {"h0": dstate0}


def variants(model, cache, x, state0, dy, dh_n, given_dx, tolerance):
    """Every variant but full BPTT, as ``(status, window, path, torch_grads)``, in the order
    that breaks ties: for no cut, then each cut, the truncations (simplest first), then the cut
    alone; each cut also with the initial state as a learner's step 0 computes it.

    ``x`` (T, B, I), ``state0`` and ``dh_n`` (the final state's gradient, or None) as
    ``model.forward`` and ``model.backward`` take them, ``dy`` (T, B, H). ``given_dx``: the
    learner's dx (T, B, I) in the library's layout, or None: then every depth and window is
    tried without a cut, and each cut alone.
    """
    steps = x.shape[0]
    found = []
    for path in (None,) + PATHS:
        if given_dx is not None:
            windows = windows_fitting(model, x, state0, dy, dh_n, given_dx, path, tolerance)
        elif path is None:
            found += depths(model, cache, dy, dh_n)
            windows = [w for w in reach_profiles(steps)[1] if w.k1 == w.k2 and w.k1 > 1]
        else:
            windows = []
        if path is not None:
            windows.append(None)  # the cut alone
        for window in windows:
            grads = gradients(model, cache, dy, dh_n, window=window, cut=path)
            status = "truncated" if window is not None else "path-cut"
            found.append((status, window, path, grads))
            if path is not None and steps > 1 and (window is None or window.k1 == window.k2):
                slipped = {**grads, **initial_state_of_slip(model, x, state0, dy, dh_n, path, window)}
                found.append((status, window, path, slipped))
    return found


def depths(model, cache, dy, dh_n):
    """Per-loss depth k = 1 .. T-1, all at once (``stack_backward_by_depth``)."""
    by_depth = stack_backward_by_depth(dy, _state_tuple(model, dh_n), cache.stack)[:-1]
    return [
        ("truncated", Window(1, depth), None, {**grads, "x": dx, **state_grads(dstate0 if len(dstate0) > 1
                                                                            else dstate0[0])})
        for depth, (grads, dx, dstate0) in enumerate(by_depth, start=1)
    ]


def windows_fitting(model, x, state0, dy, dh_n, given_dx, path, tolerance):
    """The truncations whose reach profile fits the learner's ``given_dx`` (T, B, I) at every
    step, with ``path`` cut (or None), at most :data:`MAX_CANDIDATES`, the closest first."""
    steps = x.shape[0]
    if steps < 2:
        return []
    reach_dx = dx_by_reach(model, x, state0, dy, dh_n, path)  # T,T+1,B,I
    scale = np.max(np.abs(reach_dx[:, -1])) or np.max(np.abs(given_dx)) or 1.0
    error = np.max(np.abs(reach_dx - given_dx[:, None]), axis=(2, 3)) / scale  # T,T+1: step t, reach r
    profiles, windows = reach_profiles(steps)
    at_step = np.arange(steps)
    errors = error[at_step, profiles]  # P,T
    fits = np.flatnonzero(np.all(errors <= tolerance, axis=1))
    fits = sorted(fits, key=lambda p: (np.floor(errors[p].max() / 1e-9), p))[:MAX_CANDIDATES]
    return [windows[p] for p in sorted(fits)]


def dx_by_reach(model, x, state0, dy, dh_n, path):
    """dx_t when the losses that reach step t are those at t .. t + r - 1, for every r.

    One backward over T replicas of the batch, replica s with the loss at step s alone (the
    final state's gradient ``dh_n`` counts as a loss at step T-1).
    Returns (T, T+1, B, I): ``[t, r]`` (zero at r = 0; r > T - t repeats r = T - t).
    """
    T, B, I = x.shape
    tiled = np.broadcast_to(x[:, None], (T, T, B, I)).reshape(T, T * B, I)  # replica s, sequence b: s*B + b
    parts = state0 if isinstance(state0, tuple) else (state0,)
    tiled_state0 = tuple(np.tile(part, (1, T, 1)) for part in parts)  # 1,T*B,H each
    _, _, cache = model.forward(tiled, tiled_state0 if len(parts) > 1 else tiled_state0[0])
    one_loss = np.zeros((T, T, B, dy.shape[2]))  # step, replica, B, H
    one_loss[np.arange(T), np.arange(T)] = dy
    last_only = [None if d is None else np.concatenate([np.zeros((1, (T - 1) * B, d.shape[2])), d], axis=1)
                 for d in _state_tuple(model, dh_n)]  # the final state's gradient, in replica T-1
    _, dx, _ = model.backward(cache, one_loss.reshape(T, T * B, -1), _public(last_only), cut=path)
    by_loss = dx.reshape(T, T, B, I)  # step t, loss s
    ahead = np.zeros((T, T + 1, B, I))  # step t, distance d = s - t: the part of loss t + d
    for t in range(T):
        ahead[t, 1:T - t + 1] = by_loss[t, t:]
    np.cumsum(ahead, axis=1, out=ahead)
    return ahead


@functools.lru_cache(maxsize=8)
def reach_profiles(steps):
    """Every truncation of a T-step sequence but full BPTT, one per distinct reach profile.

    Returns ``(profiles, windows)``: (P, T) ints, the reach of step t under each, and the P
    Windows named for them, simplest first: depths (1, k), then windows (k, k), then
    TBPTT(k1, k2), each counted from the last step before the first (where both give the same
    chunks, T a multiple of k1, the name counts from the last).
    """
    t = np.arange(steps)
    kinds = [Window(1, k) for k in range(1, steps)]
    from_end_first = ALIGNS[::-1]
    kinds += [Window(k, k, align) for k in range(2, steps) for align in from_end_first]
    kinds += [Window(k1, k2, align)
              for k1 in range(2, steps) for k2 in range(k1 + 1, steps) for align in from_end_first]
    k1 = np.array([w.k1 for w in kinds])[:, None]
    k2 = np.array([w.k2 for w in kinds])[:, None]
    from_start = np.array([w.align == "start" for w in kinds])[:, None]
    # the last chunk end e whose chunk's reach, max(0, e - k2) (or its start minus k2 - k1), is <= t
    end_from_start = np.minimum(steps, ((t + k2 - k1) // k1 + 1) * k1)
    end_from_end = steps - np.maximum(0, -(-(steps - t - k2) // k1)) * k1
    ends = np.where(from_start, end_from_start, end_from_end)
    profiles = ends - t  # P,T
    full = steps - t
    _, first = np.unique(profiles, axis=0, return_index=True)
    keep = [p for p in sorted(first) if not np.array_equal(profiles[p], full)]
    return profiles[keep], [kinds[p] for p in keep]


def initial_state_of_slip(model, x, state0, dy, dh_n, path, window=None):
    """The initial-state gradients of a learner whose loop drops ``path`` between steps (and
    restarts at ``window``'s edges, k1 == k2) but differentiates step 0 whole: steps 1 .. T-1
    run with the cut and hand step 0 what the cut lets through; step 0 is then differentiated
    exactly. Needs T >= 2."""
    _, state1, head = model.forward(x[:1], state0)
    _, _, tail = model.forward(x[1:], state1)
    if window is None:
        _, _, dstate1 = model.backward(tail, dy[1:], dh_n, cut=path)
    else:  # the tail's steps are the sequence's 1 .. T-1: its edges are the sequence's, shifted
        edges = window_edges(window, x.shape[0])[1:]  # T-1,1
        _, _, dstate1 = stack_backward(dy[1:], _state_tuple(model, dh_n), tail.stack, path, edges)
        dstate1 = _public(dstate1)
    _, _, dstate0 = model.backward(head, dy[:1], dstate1)
    return state_grads(dstate0)


def _state_tuple(model, dh_n):
    """``dh_n`` as the tuple of per-part arrays or None entries that the stack functions take."""
    if dh_n is None:
        return (None,) * len(model.cell.STATE_NAMES)
    return dh_n if isinstance(dh_n, tuple) else (dh_n,)


def _public(state):
    """A tuple of state parts as ``model.backward`` takes it: a tuple for LSTM, else its array."""
    return tuple(state) if len(state) > 1 else state[0]


def slip_references(model, cell_name, x, state0, dy, dh_n):
    """Every slip of :mod:`bptt.proofs.slips` for ``cell_name``, alone and with each path cut,
    as ``(status, window, path, slip, torch_grads)``; with a cut also with the initial state
    as a learner's step 0 computes it (the slip in it, the cut not)."""
    weights = layer_weights(model.params, 0, 0)
    parts = _state_tuple(model, state0)
    state0_bh = tuple(part[0] for part in parts)  # B,H each
    dstate_n = tuple(None if d is None else d[0] for d in _state_tuple(model, dh_n))
    found = []
    for path in (None,) + (PATHS if len(parts) > 1 or cell_name == "gru" else ("hidden",)):
        slips = slip_variants(cell_name, weights, x, state0_bh, dy, dstate_n, cut=path)
        step0 = _slipped_initial_states(model, cell_name, weights, x, state0, dy, dstate_n, path, slips)
        for slip, initial in zip(slips, step0):
            key = (slip.id, tuple(sorted(slip.detail.items())))
            status = "wrong" if path is None else "path-cut"
            found.append((status, None, path, key, slip.grads))
            if initial is not None:
                found.append((status, None, path, key, {**slip.grads, **initial}))
    return found


def _slipped_initial_states(model, cell_name, weights, x, state0, dy, dstate_n, path, slips):
    """Per slip, the initial-state gradients of a learner whose loop drops ``path`` between
    steps, with the slip in every step, step 0 differentiated whole; None without a cut or at
    T = 1."""
    if path is None or x.shape[0] < 2:
        return [None] * len(slips)
    _, state1, _ = model.forward(x[:1], state0)
    state1_bh = tuple(part[0] for part in _state_tuple(model, state1))
    ids = [(slip.id, slip.detail) for slip in slips]
    tails = slipped_backward(cell_name, weights, x[1:], state1_bh, dy[1:], dstate_n, slips=ids, cut=path)
    state0_bh = tuple(part[0] for part in _state_tuple(model, state0))
    initial = []
    for slip_id, tail in zip(ids, tails):
        into_step0 = tuple(tail[name][0] for name in ("h0", "c0") if name in tail)  # B,H each
        head = slipped_backward(cell_name, weights, x[:1], state0_bh, dy[:1], into_step0, slips=[slip_id])[0]
        initial.append({name: head[name] for name in ("h0", "c0") if name in head})
    return initial
