"""The one BPTT engine, shared by every cell.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

Forward: the input projection of all T steps is one GEMM; each step adds one recurrent GEMM
and calls the cell's elementwise ``step``. Backward walks time in reverse: at every step the
gradient arriving from the future (``dstate``) is added to the gradient from the output at
that step, the cell's ``step_back`` turns it into gradients of the pre-activations, and one
GEMM with ``W_hh`` carries it to ``h_{t-1}``. The parameter gradients are the sums over all
steps of per-step outer products; each is computed once, after the loop, as one GEMM over
the stacked steps: ``dW_hh = Σ_t dpre_h_tᵀ h_{t-1}`` is the "sum over time" that BPTT is.

A right-padded batch is run with a boolean ``mask`` (T, B, 1): where it is False the state is
carried through unchanged, the output is zero, and neither gets any gradient, which is the
semantics of PyTorch's packed sequences.
"""

from typing import NamedTuple

import numpy as np


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
    h_prev: np.ndarray  # T,B,H  the state h_{t-1} entering each step
    steps: list  # T cell caches
    mask: np.ndarray | None  # T,B,1


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


def forward(cell, weights, x, state0, mask=None):
    """Run ``cell`` over a sequence.

    Parameters
    ----------
    cell : module of ``bptt.cells``
    weights : Weights
    x : (T, B, I)
    state0 : tuple of (B, H) arrays, one per ``cell.STATE_NAMES``
    mask : (T, B, 1) bool or None

    Returns
    -------
    y : (T, B, H), the hidden state at every step, zero past each sequence's end
    state : tuple of (B, H), the state after each sequence's last step
    cache : Cache
    """
    T, B, I = x.shape
    H = weights.w_hh.shape[1]
    pre_x = (x.reshape(T * B, I) @ weights.w_ih.T + weights.b_ih).reshape(T, B, -1)  # T,B,KH
    y = np.empty((T, B, H), dtype=x.dtype)
    h_prev = np.empty((T, B, H), dtype=x.dtype)
    steps = []
    state = state0
    for t in range(T):
        h_prev[t] = state[0]
        pre_h = state[0] @ weights.w_hh.T + weights.b_hh  # B,KH
        new_state, step_cache = cell.step(pre_x[t], pre_h, state)
        if mask is not None:
            new_state = tuple(np.where(mask[t], new, old) for new, old in zip(new_state, state))
            y[t] = np.where(mask[t], new_state[0], 0.0)
        else:
            y[t] = new_state[0]
        steps.append(step_cache)
        state = new_state
    return y, state, Cache(cell, weights, x, h_prev, steps, mask)


PATHS = ("hidden", "cell")


def slice_cache(cache, start, stop):
    """The cache of steps ``start`` to ``stop - 1`` alone, as if the sequence began at
    ``start`` with the state that entered that step held constant."""
    mask = None if cache.mask is None else cache.mask[start:stop]
    return cache._replace(
        x=cache.x[start:stop], h_prev=cache.h_prev[start:stop], steps=cache.steps[start:stop], mask=mask
    )


def backward(dy, dstate, cache, cut=None):
    """Exact BPTT through :func:`forward`, or BPTT with one path through time removed.

    Parameters
    ----------
    dy : (T, B, H), gradient of the loss with respect to ``y``
    dstate : tuple of (B, H) arrays or None entries (zero), gradient of the final state
    cache : Cache
    cut : None, ``"hidden"`` or ``"cell"``. None is exact BPTT. ``"hidden"`` drops the
        gradient reaching ``h_{t-1}`` through ``W_hh`` (the slip of not adding ``dh_prev`` to
        the next step's ``dh``); ``"cell"`` drops the paths that skip ``W_hh`` (LSTM's
        ``dc_{t-1}``, GRU's ``z * dh``). The gradient of the initial state is cut the same way.

    Returns
    -------
    grads : Weights of gradients, same shapes as ``cache.weights``
    dx : (T, B, I)
    dstate0 : tuple of (B, H), gradient of the initial state
    """
    cell, weights, x, h_prev, steps, mask = cache
    T, B, I = x.shape
    H = h_prev.shape[-1]
    KH = weights.w_hh.shape[0]
    dstate = tuple(np.zeros((B, H), x.dtype) if d is None else d for d in dstate)
    dpre_x = np.empty((T, B, KH), dtype=x.dtype)
    dpre_h = np.empty((T, B, KH), dtype=x.dtype)
    for t in reversed(range(T)):
        if mask is None:
            # h_t feeds the output at t and step t+1: the two gradients add
            through = (dstate[0] + dy[t],) + dstate[1:]
        else:
            # y_t = mask * h_t; past a sequence's end the state passed through unchanged
            through = (np.where(mask[t], dstate[0] + dy[t], 0.0),) + tuple(
                np.where(mask[t], d, 0.0) for d in dstate[1:]
            )
            kept = tuple(np.where(mask[t], 0.0, d) for d in dstate)
        dpre_x[t], dpre_h[t], direct = cell.step_back(through, steps[t])
        # pre_h = h_{t-1} W_hhᵀ + b_hh, plus the paths to the previous state that skip W_hh
        if cut == "cell":
            direct = (None,) * len(direct)
        dh_prev = np.zeros((B, H), x.dtype) if cut == "hidden" else dpre_h[t] @ weights.w_hh  # B,H
        if direct[0] is not None:
            dh_prev += direct[0]
        dstate = (dh_prev,) + tuple(
            np.zeros((B, H), x.dtype) if d is None else d for d in direct[1:]
        )
        if mask is not None:
            dstate = tuple(d + k for d, k in zip(dstate, kept))
    dpre_x_2d = dpre_x.reshape(T * B, KH)
    dpre_h_2d = dpre_h.reshape(T * B, KH)
    grads = Weights(
        w_ih=dpre_x_2d.T @ x.reshape(T * B, I),  # KH,I   Σ_t dpre_x_tᵀ x_t
        w_hh=dpre_h_2d.T @ h_prev.reshape(T * B, H),  # KH,H   Σ_t dpre_h_tᵀ h_{t-1}
        b_ih=dpre_x_2d.sum(axis=0),
        b_hh=dpre_h_2d.sum(axis=0),
    )
    dx = (dpre_x_2d @ weights.w_ih).reshape(T, B, I)
    return grads, dx, dstate
