"""The cells: only their elementwise gate arithmetic, forward and backward.

Each cell module exposes

- ``NUM_GATES`` (K): how many H-wide blocks the projections have;
- ``STATE_NAMES``: the names of the arrays of the state, ``("h",)`` or ``("h", "c")``;
- ``SUMMED_GATES``: how many leading gate blocks see ``pre_x`` and ``pre_h`` only through
  their sum (all K for RNN and LSTM, r and z for GRU). For those blocks ``b_hh`` may be folded
  into ``b_ih``, and ``dpre_x = dpre_h``;
- ``CACHE_WIDTHS``: the widths, in units of H, of the arrays ``step`` writes for backward
  (LSTM ``(4, 1)``: the gates and tanh(c)), so that the engine can preallocate them for all
  steps at once;
- ``REMEMBER_GATE``: the block of the gate that, near 1, keeps the state from step to step
  (LSTM's f, GRU's z), or None (vanilla RNN);
- ``step(pre_x, pre_h, state, out=None) -> (state, cache)``;
- ``step_back(dstate, cache, out=None) -> (dpre_x, dpre_h, dstate_direct)``.

``pre_x = x_t W_ihᵀ + b_ih`` and ``pre_h = h_{t-1} W_hhᵀ + b_hh`` are both ``(B, K*H)``; the
recurrence engine computes them, the cell never sees a weight matrix. ``dstate_direct`` is
the gradient reaching the previous state by paths that do not pass through ``W_hh``
(the LSTM cell state ``c``, the GRU's ``z * h``); an entry is ``None`` where there is no
such path.

Called without ``out``, ``step`` and ``step_back`` allocate their results and change none of
their arguments. The engine passes ``out``: ``step`` then writes the new state and its
``CACHE_WIDTHS`` arrays into ``out = (state_arrays, cache_arrays)`` and may use ``pre_h`` as
scratch; ``step_back`` writes into ``out = (dpre_x, dpre_h, work)`` (``work`` is (B, K*H)
scratch; where ``SUMMED_GATES == NUM_GATES`` only ``dpre_x`` is written and returned twice) and
may overwrite the arrays of ``dstate``, returning them as ``dstate_direct``. The arrays the
engine passes are views of feature-major buffers (a (B, F) view of (F, B) memory); the cells'
arithmetic is elementwise, so it neither knows nor cares.
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
