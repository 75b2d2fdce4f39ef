"""The reference engine: BPTT for one layer and direction, written the way the derivation
writes it (docs/derivation.md). Speed is not its job; the engine of :mod:`bptt.recurrence`
(buffered NumPy and compiled C) computes the same, and the tests hold the two together.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

Forward: each step projects its input and the state it enters, and the cell does the rest::

    pre_x_t = x_t W_ihᵀ + b_ih        pre_h_t = h_{t-1} W_hhᵀ + b_hh
    state_t = cell(pre_x_t, pre_h_t, state_{t-1})

Backward walks time in reverse. The gradient reaching ``h_t`` is the output's ``dy_t`` plus
what step t+1 sent back; the cell turns it into gradients of its pre-activations; those go to
``x_t`` and back to ``h_{t-1}`` through the weights, and every parameter's gradient is the sum
over steps of its per-step term: BPTT is that sum over time.

A right-padded batch runs with ``mask`` (T, B, 1): where it is False the state is carried
through unchanged, the output is zero, and neither gets any gradient (packed sequences).
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
    """What :func:`forward` keeps for :func:`backward`."""

    cell: object
    weights: Weights
    x: np.ndarray  # T,B,I
    states: list  # T+1 tuples of (B, H): slot t is the state entering step t
    steps: list  # T cell caches
    mask: np.ndarray | None  # T,B,1


def forward(cell, weights, x, state0, mask=None):
    """Run ``cell`` over ``x`` (T, B, I) from ``state0`` (a tuple of (B, H)).

    Returns ``y`` (T, B, H), the final state (a tuple of (B, H): each sequence's state at its
    own last step) and a :class:`Cache`.
    """
    states, steps, ys = [tuple(state0)], [], []
    for t in range(x.shape[0]):
        state = states[-1]
        pre_x = x[t] @ weights.w_ih.T + weights.b_ih  # B,KH
        pre_h = state[0] @ weights.w_hh.T + weights.b_hh  # B,KH
        new_state, step_cache = cell.forward(pre_x, pre_h, state)
        if mask is not None:  # past a sequence's end the state passes through unchanged
            new_state = tuple(np.where(mask[t], new, old) for new, old in zip(new_state, state))
        states.append(new_state)
        steps.append(step_cache)
        ys.append(new_state[0] if mask is None else new_state[0] * mask[t])
    return np.stack(ys), states[-1], Cache(cell, weights, x, states, steps, mask)


def backward(dy, dstate, cache, cut=None, edges=None):
    """BPTT through :func:`forward`; ``cut``, a path through time left out (``"hidden"``: the
    one through W_hh, ``"cell"``: the ones that skip it), and ``edges`` (T, B) bool, the steps
    where windows restart the gradient (``bptt.recurrence.window_edges``).

    Parameters
    ----------
    dy : (T, B, H), the gradient of the loss with respect to ``y``
    dstate : tuple of (B, H) arrays or None entries (zero), the gradient of the final state

    Returns
    -------
    grads : Weights of gradients; dx : (T, B, I); dstate0 : tuple of (B, H)
    """
    cell, weights, x, states, steps, mask = cache
    grads = Weights(*(np.zeros_like(w) for w in weights))
    dx = np.zeros_like(x)
    carried = [np.zeros_like(s) if d is None else d for s, d in zip(states[-1], dstate)]  # from the future
    for t in reversed(range(x.shape[0])):
        # h_t feeds the output at t and step t+1: the two gradients add
        dstate_t = (dy[t] + carried[0], *carried[1:])
        if mask is not None:  # past a sequence's end: the gradient passes the step untouched
            passed = [d * ~mask[t] for d in carried]
            dstate_t = tuple(d * mask[t] for d in dstate_t)
        dpre_x, dpre_h, direct = cell.backward(dstate_t, steps[t])
        h_prev = states[t][0]
        # the sums over time: each step adds its term
        grads.w_ih[...] += dpre_x.T @ x[t]  # pre_x = x_t W_ihᵀ + b_ih
        grads.b_ih[...] += dpre_x.sum(axis=0)
        grads.w_hh[...] += dpre_h.T @ h_prev  # pre_h = h_{t-1} W_hhᵀ + b_hh
        grads.b_hh[...] += dpre_h.sum(axis=0)
        dx[t] = dpre_x @ weights.w_ih
        # to the state entering step t: through W_hh, and by the paths that skip it
        dh_prev = np.zeros_like(h_prev) if cut == "hidden" else dpre_h @ weights.w_hh
        if cut == "cell":
            direct = (None,) * len(direct)
        carried = [dh_prev + (0 if direct[0] is None else direct[0])]
        carried += [np.zeros_like(s) if d is None else d for s, d in zip(states[t][1:], direct[1:])]
        if mask is not None:
            carried = [d + p for d, p in zip(carried, passed)]
        if edges is not None:  # a window's first step: what reaches the state entering it stops
            carried = [d * ~edges[t][:, None] for d in carried]
    return grads, dx, tuple(carried)


def replay(cache):
    """The reference's cache of the pass that ``cache`` holds (the backend's, re-run through
    :func:`forward`, or already the reference's), for a backward only the reference computes
    (a cut path, window edges)."""
    if isinstance(cache, Cache):
        return cache
    state0 = tuple(history[0] for history in cache.states)  # slot 0 enters step 0
    return forward(cache.cell, cache.weights, cache.x, state0, cache.mask)[2]


def slice_cache(cache, start, stop):
    """The cache of steps ``start`` to ``stop - 1`` alone, as if the sequence began at
    ``start`` with the state that entered that step held constant."""
    mask = None if cache.mask is None else cache.mask[start:stop]
    return cache._replace(x=cache.x[start:stop], states=cache.states[start:stop + 1], steps=cache.steps[start:stop],
                          mask=mask)
