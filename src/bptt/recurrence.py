"""The engine: one pass, forward and backward, of one layer and direction, for every cell.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

:func:`forward` asks the fast backend (``bptt.kernels.passes``: whole passes in C, built at
install) once per pass whether it takes it, and runs the readable reference
(``bptt.reference``, the loop the derivation links to) where it declines: no compiled kernels
(no compiler at install, or ``kernels.use("reference")``), a dtype other than float32 and
float64, a pass of fewer than ``kernels.MIN_STEPS`` steps, a mask that is not a right-padded
batch's.
:func:`backward` runs the implementation whose cache it is given. Both compute the same up to
rounding; tests/test_reference.py holds them together.

A right-padded batch runs with a boolean ``mask`` (T, B, 1): where it is False the state is
carried through unchanged, the output is zero, and neither gets any gradient, which is the
semantics of PyTorch's packed sequences.

The variants of the backward that proofs ask for (a path through time left out, the edges where
windows restart the gradient) are the reference's (``bptt.layers.layer_backward`` replays a
backend pass for them); :class:`Window` describes truncation as people write it, and
:func:`backward_by_depth` computes every per-loss depth at once.
"""

from typing import NamedTuple

import numpy as np

from . import reference
from .kernels import passes
from .reference import Weights


def length_mask(lengths, steps, dtype=bool):
    """``mask[t, b] = t < lengths[b]``, shaped (T, B, 1). ``lengths``: (B,) ints."""
    return (np.arange(steps)[:, None] < np.asarray(lengths)[None, :])[:, :, None].astype(dtype)


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


def forward(cell, weights, x, state0, mask=None, keep_cache=True):
    """Run ``cell`` over a sequence, on the backend where it takes the pass, else on the reference.

    Parameters
    ----------
    cell : module of ``bptt.cells``
    weights : Weights
    x : (T, B, I)
    state0 : tuple of (B, H) arrays, one per ``cell.STATE_NAMES``
    mask : (T, B, 1) bool or None
    keep_cache : False for inference: nothing is kept for backward, and the returned cache is None

    Returns
    -------
    y : (T, B, H), the hidden state at every step, zero past each sequence's end
    state : tuple of (B, H), the state after each sequence's last step
    cache : ``passes.Cache`` or ``reference.Cache``, or None without ``keep_cache``
    """
    compiled = passes.supports(cell, x.dtype, x.shape[0], x.shape[1], mask)
    if compiled is not None:
        return passes.forward(compiled, weights, x, state0, mask, keep_cache)
    y, state, cache = reference.forward(cell, weights, x, state0, mask)
    return y, state, cache if keep_cache else None


def backward(dy, dstate, cache):
    """Exact BPTT through :func:`forward`, by the implementation that ran it.

    Parameters
    ----------
    dy : (T, B, H), gradient of the loss with respect to ``y``
    dstate : tuple of (B, H) arrays or None entries (zero), gradient of the final state
    cache : what :func:`forward` returned

    Returns
    -------
    grads : Weights of gradients, same shapes as ``cache.weights``
    dx : (T, B, I)
    dstate0 : tuple of (B, H), gradient of the initial state
    """
    if isinstance(cache, passes.Cache):
        return passes.backward(dy, dstate, cache)
    return reference.backward(dy, dstate, cache)


def states(cache):
    """The states a pass went through, from its cache: per part of the state, (T+1, B, H),
    slot t entering step t and slot T the last."""
    if isinstance(cache, passes.Cache):
        return cache.states
    return tuple(np.stack(parts) for parts in zip(*cache.states))


def slice_cache(cache, start, stop):
    """The cache of steps ``start`` to ``stop - 1`` alone, as if the sequence began at
    ``start`` with the state that entered that step held constant."""
    if isinstance(cache, passes.Cache):
        return passes.slice_cache(cache, start, stop)
    return reference.slice_cache(cache, start, stop)


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
