"""Gradients through time, shown: per-step contributions and how far back gradient reaches.

BPTT's parameter gradient is a sum over steps: ``dW_hh = Σ_t dpre_h_tᵀ h_{t-1}``. Walking
the engine's backward one step at a time (each step a one-step slice of the cache, fed the
gradient that arrived from the future) yields each step's term on its own; their sum is the
total that a single backward returns.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.
"""

import numpy as np

from .. import recurrence


def walk_back(dy, dstate, cache):
    """Yield ``(t, weight_grads_t, dstate_{t-1})`` for t = T-1 .. 0, one step at a time."""
    for t in reversed(range(cache.x.shape[0])):
        grads_t, _, dstate = recurrence.backward(dy[t:t + 1], dstate, recurrence.slice_cache(cache, t, t + 1))
        yield t, grads_t, dstate


def per_step_grads(cell, weights, x, state0, dy, dstate_n=None):
    """Each step's contribution to the parameter gradients of one layer.

    Parameters
    ----------
    cell : module of ``bptt.cells``
    weights : recurrence.Weights
    x : (T, B, I)
    state0 : tuple of (B, H)
    dy : (T, B, H), upstream gradient of the outputs
    dstate_n : tuple of (B, H) or None

    Returns
    -------
    dict name -> (T, ...) array: ``w_ih`` (T, K*H, I), ``w_hh`` (T, K*H, H), ``b_ih`` and
    ``b_hh`` (T, K*H); summed over the first axis they are the gradients of full BPTT.
    """
    _, _, cache = recurrence.forward(cell, weights, x, state0)
    dstate = (None,) * len(state0) if dstate_n is None else dstate_n
    steps = [None] * x.shape[0]
    for t, grads_t, _ in walk_back(dy, dstate, cache):
        steps[t] = grads_t
    return {name: np.stack([getattr(g, name) for g in steps]) for name in recurrence.Weights._fields}


def gradient_reach(cell, weights, x, state0, direction):
    """How much gradient of a loss at the last step reaches each earlier hidden state.

    The loss is ``L = Σ_b h_{T-1}[b] · direction[b]``; the result is ``||dL/dh_{T-1-k}||``
    averaged over the batch, for k = 0 .. T-1 (k steps back).

    Parameters
    ----------
    x : (T, B, I)
    state0 : tuple of (B, H)
    direction : (B, H), the upstream gradient at the last step

    Returns
    -------
    (T,) float64, entry k the mean norm k steps back
    """
    T = x.shape[0]
    _, _, cache = recurrence.forward(cell, weights, x, state0)
    dy = np.zeros(x.shape[:2] + (weights.w_hh.shape[1],), dtype=x.dtype)  # T,B,H
    dy[-1] = direction
    reach = np.empty(T)
    reach[0] = np.linalg.norm(direction, axis=-1).mean()
    for t, _, dstate in walk_back(dy, (None,) * len(state0), cache):
        if t > 0:
            reach[T - t] = np.linalg.norm(dstate[0], axis=-1).mean()  # dL/dh_{t-1}
    return reach


CELL_NAMES = {"rnn": "rnn_tanh", "rnn_relu": "rnn_relu", "lstm": "lstm", "gru": "gru"}


def reach_by_cell(cells=("rnn", "lstm", "gru"), length=100, hidden_size=64, input_size=8, batch=16,
                  gate_bias=2.0, seed=0):
    """:func:`gradient_reach` of freshly initialised float64 cells on random N(0, 1) inputs.

    Parameters follow PyTorch's initialisation (uniform in ±1/sqrt(H)), plus ``gate_bias``
    added to the bias of the gate that keeps the state (LSTM's forget gate, GRU's update gate),
    a common initialisation that vanilla RNNs have no counterpart of.

    Returns dict cell name -> (length,) array, entry k the mean ``||dL/dh_{T-1-k}||``.
    """
    from ..cells import CELLS
    from ..layers import layer_weights, param_shapes, remember_bias

    unknown = [c for c in cells if c not in CELL_NAMES]
    if unknown:
        raise ValueError(f"expected cells among {', '.join(CELL_NAMES)} but got {', '.join(unknown)}")
    result = {}
    for name in cells:
        rng = np.random.default_rng(seed)
        cell = CELLS[CELL_NAMES[name]]
        bound = 1.0 / np.sqrt(hidden_size)
        params = {k: rng.uniform(-bound, bound, size=shape)
                  for k, shape in param_shapes(cell, input_size, hidden_size, 1, 1).items()}
        params = remember_bias(params, cell, hidden_size, gate_bias)
        x = rng.normal(size=(length, batch, input_size))
        direction = rng.normal(size=(batch, hidden_size))
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        state0 = tuple(np.zeros((batch, hidden_size)) for _ in cell.STATE_NAMES)
        result[name] = gradient_reach(cell, layer_weights(params, 0, 0), x, state0, direction)
    return result
