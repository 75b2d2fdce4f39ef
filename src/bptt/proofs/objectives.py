"""Scalar objectives over a recurrent stack, as functions of a dict of arrays, for checks.

The objective ``L = Σ y · dy + Σ_s state_n[s] · dstate_n[s]`` with fixed random ``dy`` and
``dstate_n`` has exactly ``dy`` and ``dstate_n`` as its upstream gradients, so its analytic
gradient is what ``backward(cache, dy, dh_n)`` returns, and every path through time counts.
"""

import numpy as np

from ..layers import stack_backward, stack_forward


def state_keys(cell):
    """The names of the initial states among the arrays: ``("h0",)`` or ``("h0", "c0")``."""
    return tuple(name + "0" for name in cell.STATE_NAMES)


def split_arrays(arrays, cell):
    """``arrays`` as (parameters dict, tuple of initial states)."""
    params = {k: v for k, v in arrays.items() if k not in ("x",) + state_keys(cell)}
    state0 = tuple(arrays[name] for name in state_keys(cell))
    return params, state0


def stack_objective(cell, arrays, dy, dstate_n, lengths, num_layers, num_directions):
    """Value of the linear objective and its analytic gradients.

    Parameters
    ----------
    cell : module of ``bptt.cells``
    arrays : dict with the parameters (torch names), ``"x"`` (T, B, I) and the initial states
        ``"h0"`` (and ``"c0"`` for LSTM), each (L*D, B, H)
    dy : (T, B, D*H)
    dstate_n : tuple of (L*D, B, H), one per state name
    lengths : (B,) ints or None

    Returns
    -------
    value : float
    grads : dict with the keys of ``arrays``
    """
    params, state0 = split_arrays(arrays, cell)
    y, state_n, cache = stack_forward(cell, params, arrays["x"], state0, lengths, num_layers, num_directions)
    value = float(np.sum(y * dy) + sum(np.sum(s * d) for s, d in zip(state_n, dstate_n)))
    grads, dx, dstate0 = stack_backward(dy, dstate_n, cache)
    grads["x"] = dx
    grads.update(zip(state_keys(cell), dstate0))
    return value, grads
