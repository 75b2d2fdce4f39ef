"""The cells: only their elementwise gate arithmetic, forward and backward.

Each cell module exposes

- ``NUM_GATES`` (K): how many H-wide blocks the projections have;
- ``STATE_NAMES``: the names of the arrays of the state, ``("h",)`` or ``("h", "c")``;
- ``step(pre_x, pre_h, state) -> (state, cache)``;
- ``step_back(dstate, cache) -> (dpre_x, dpre_h, dstate_direct)``.

``pre_x = x_t W_ihᵀ + b_ih`` and ``pre_h = h_{t-1} W_hhᵀ + b_hh`` are both ``(B, K*H)``; the
recurrence engine computes them, the cell never sees a weight matrix. ``dstate_direct`` is
the gradient reaching the previous state by paths that do not pass through ``W_hh``
(the LSTM cell state ``c``, the GRU's ``z * h``); an entry is ``None`` where there is no
such path.
"""

from types import ModuleType

from . import gru, lstm, rnn_relu, rnn_tanh

CELLS: dict[str, ModuleType] = {
    "rnn_tanh": rnn_tanh,
    "rnn_relu": rnn_relu,
    "lstm": lstm,
    "gru": gru,
}

__all__ = ["CELLS", "gru", "lstm", "rnn_relu", "rnn_tanh"]
