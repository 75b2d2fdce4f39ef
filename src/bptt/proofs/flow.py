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


def source_reach(model, source, source_lengths, target, target_lengths, *, source_reversed=False, params=None):
    """How much gradient of the loss at each target step of an encoder–decoder reaches each
    source token: ``||∂ℓ_j/∂e_s||``, averaged over the batch.

    ``ℓ_j = -log p(target[j] | target[:j], source)`` is the cross-entropy of target step j
    alone (teacher forcing), ``e_s`` the embedding of source token s as the encoder reads it
    (``x_src[s]``, (E_s,)). The only path from ``e_s`` to ``ℓ_j`` runs forward through the
    encoder's steps s..n-1 (n the source's length), through the bridge, and through the
    decoder's steps 0..j: ``n - 1 - s + j`` recurrent steps in all. Feeding the source
    reversed changes which token lies at which end of that path.

    One backward pass of :class:`~bptt.nets.Seq2Seq` does it all: the batch is replicated T
    times, replica j carrying the loss of step j alone (the masked cross-entropy's mask cut to
    step j, its count to 1, so that ``dlogits = softmax - onehot`` at step j and 0 elsewhere),
    and the model's own backward returns ``dsource``, whose column of replica j, example b is
    ``∂ℓ_j^b/∂x_src[:, b]``: examples do not mix.

    Parameters
    ----------
    model : a Seq2Seq with an encoder; any dtype (float64 for proofs)
    source : (S, B) token ids, as fed to the encoder (already reversed where the task reverses it)
    source_lengths : B ints in [1, S], or None for all S
    target : (T, B) token ids; target_lengths : B ints in [1, T], or None for all T
    source_reversed : whether ``source`` holds each sequence reversed; then column s of the
        result is token s of the source as written (its first token is column 0), read from
        fed position ``n_b - 1 - s``, so that the two feeding orders compare token for token
    params : None for ``model.params``, or a dict of the same names and shapes

    Returns
    -------
    (T, S) float64: entry [j, s] the mean of ``||∂ℓ_j^b/∂e_s^b||`` over the examples b that
    have both a target step j and a source token s (j < target_lengths[b], s < source_lengths[b]);
    NaN where no example has both
    """
    if model.encoder is None:
        raise ValueError("source_reach needs a Seq2Seq with an encoder; a conditioned decoder reads no source tokens")
    params = model.check_params(params)
    source, source_lengths, B = model.check_source(source, source_lengths)
    target, target_lengths, mask = model.check_target(target, target_lengths, B)
    S, T = source.shape[0], target.shape[0]
    source_lengths = np.full(B, S) if source_lengths is None else source_lengths  # B
    target_lengths = np.full(B, T) if target_lengths is None else target_lengths  # B
    # replica j (columns j*B .. j*B + B-1) of the batch carries the loss of step j alone
    _, cache = model.forward(np.tile(source, (1, T)), np.tile(source_lengths, T), np.tile(target, (1, T)),
                             np.tile(target_lengths, T), params=params, dropout_rng=False)
    only_step = np.zeros((T, T, B), dtype=bool)  # T,T,B  [t, j, b]: step t of replica j
    only_step[np.arange(T), np.arange(T)] = mask
    # dlogits = (softmax - onehot) · mask / count: with count 1 the gradient of Σ_b ℓ_j^b
    cache = cache._replace(loss=cache.loss._replace(mask=only_step.reshape(T, T * B), count=1))
    _, dsource = model.backward(cache)  # S,T*B,E_s
    norms = np.linalg.norm(dsource.astype(np.float64).reshape(S, T, B, -1), axis=-1)  # S,T,B
    if source_reversed:
        # token s as written was fed at position n_b - 1 - s
        fed = source_lengths[None, :] - 1 - np.arange(S)[:, None]  # S,B
        norms = np.take_along_axis(norms, np.where(fed >= 0, fed, 0)[:, None, :], axis=0)  # S,T,B
    both = (np.arange(T)[:, None, None] < target_lengths) & (np.arange(S)[None, :, None] < source_lengths)  # T,S,B
    total = np.where(both, norms.transpose(1, 0, 2), 0.0).sum(axis=-1)  # T,S
    count = both.sum(axis=-1)  # T,S
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
