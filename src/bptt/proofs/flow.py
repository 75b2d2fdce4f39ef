"""Gradients through time, shown: per-step contributions and how far back gradient reaches.

BPTT's parameter gradient is a sum over steps: ``dW_hh = Σ_t dpre_h_tᵀ h_{t-1}``. Walking
the engine's backward one step at a time (each step a one-step slice of the cache, fed the
gradient that arrived from the future) yields each step's term on its own; their sum is the
total that a single backward returns.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.
"""

import numpy as np

from .. import recurrence
from ..layers import layer_backward


def walk_back(dy, dstate, cache, cut=None):
    """Yield ``(t, weight_grads_t, dstate_{t-1})`` for t = T-1 .. 0, one step at a time.

    ``cut``: None, or a path through time to leave out, as in :func:`bptt.reference.backward`.
    """
    for t in reversed(range(cache.x.shape[0])):
        grads_t, _, dstate = layer_backward(dy[t:t + 1], dstate, recurrence.slice_cache(cache, t, t + 1), cut)
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


def gradient_reach(cell, weights, x, state0, direction, part="h", cut=None):
    """How much gradient of a loss at the last step reaches each earlier state.

    The loss is ``L = Σ_b h_{T-1}[b] · direction[b]``, a function of the state that step s
    hands to step s+1 (``h_s``, and the LSTM's ``c_s``). The result is ``||∂L/∂h_s||`` (``part="h"``) or, for the
    LSTM, ``||∂L/∂c_s||`` with ``h_s`` held fixed (``part="c"``: what reaches ``c_s`` from
    step s+1 through ``c_{s+1} = f ⊙ c_s + ...``, the course's ``dc_next``), averaged over the
    batch, at s = T-1-k for k = 0 .. T-1 (k steps back). At k = 0 the ``c`` entry is 0: the
    loss reads ``h_{T-1}`` alone.

    Parameters
    ----------
    x : (T, B, I)
    state0 : tuple of (B, H)
    direction : (B, H), the upstream gradient at the last step
    part : a name of ``cell.STATE_NAMES``
    cut : None, or a path through time to leave out (:func:`bptt.reference.backward`)

    Returns
    -------
    (T,) float64, entry k the mean norm k steps back
    """
    if part not in cell.STATE_NAMES:
        raise ValueError(f"expected part among {', '.join(cell.STATE_NAMES)} but got {part!r}")
    index = cell.STATE_NAMES.index(part)
    T = x.shape[0]
    _, _, cache = recurrence.forward(cell, weights, x, state0)
    dy = np.zeros(x.shape[:2] + (weights.w_hh.shape[1],), dtype=x.dtype)  # T,B,H
    dy[-1] = direction
    reach = np.empty(T)
    reach[0] = np.linalg.norm(direction, axis=-1).mean() if index == 0 else 0.0
    for t, _, dstate in walk_back(dy, (None,) * len(state0), cache, cut):
        if t > 0:
            reach[T - t] = np.linalg.norm(dstate[index], axis=-1).mean()  # ∂L/∂(h or c)_{t-1}
    return reach


CELL_NAMES = {"rnn": "rnn_tanh", "rnn_relu": "rnn_relu", "lstm": "lstm", "gru": "gru"}
PATH_LABELS = {"c": "cell"}  # the curve of a state part other than h: "lstm (cell)"


def reach_by_cell(cells=("rnn", "lstm", "gru"), length=100, hidden_size=64, input_size=8, batch=16,
                  gate_bias=2.0, seed=0, paths=False, cut=None):
    """:func:`gradient_reach` of freshly initialised float64 cells on random N(0, 1) inputs.

    Parameters follow PyTorch's initialisation (uniform in ±1/sqrt(H)), plus ``gate_bias``
    added to the bias of the gate that keeps the state (LSTM's forget gate, GRU's update gate),
    a common initialisation that vanilla RNNs have no counterpart of. ``paths``: also a curve
    for every other part of a cell's state, named after its path (LSTM: ``"lstm (cell)"``,
    ``||∂L/∂c_{T-1-k}||``), from the same run. ``cut``: None, or a path through time to leave
    out (:func:`bptt.reference.backward`).

    Returns dict curve name -> (length,) array, entry k the mean ``||∂L/∂h_{T-1-k}||`` (or of
    the curve's part of the state).
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
        weights = layer_weights(params, 0, 0)
        result[name] = gradient_reach(cell, weights, x, state0, direction, cut=cut)
        for part in cell.STATE_NAMES[1:] if paths else ():
            result[f"{name} ({PATH_LABELS[part]})"] = gradient_reach(cell, weights, x, state0, direction, part, cut)
    return result
