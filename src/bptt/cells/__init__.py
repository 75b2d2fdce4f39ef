"""The cells: their elementwise gate arithmetic only, forward and backward, as the derivation
writes it (docs/derivation.md): one equation a line, allocating its results. This is the
reference the fast backend (``bptt.kernels``, compiled C) is checked against; with
``bptt.reference`` it runs every pass the backend does not take.

Each cell module exposes

- ``NAME``, its name in ``CELLS``;
- ``NUM_GATES`` (K): how many H-wide blocks the projections have;
- ``STATE_NAMES``: the names of the arrays of the state, ``("h",)`` or ``("h", "c")``;
- ``SUMMED_GATES``: how many leading gate blocks see ``pre_x`` and ``pre_h`` only through
  their sum (all K for RNN and LSTM, r and z for GRU). For those blocks ``b_hh`` may be folded
  into ``b_ih``, and ``dpre_x = dpre_h``;
- ``CACHE_WIDTHS``: the widths, in units of H, of the arrays the fast kernels keep per step for
  backward (LSTM ``(4, 1)``: the gates and tanh(c)), so that the engine can preallocate them;
- ``REMEMBER_GATE``: the block of the gate that, near 1, keeps the state from step to step
  (LSTM's f, GRU's z), or None (vanilla RNN);
- ``forward(pre_x, pre_h, state) -> (state, cache)``;
- ``backward(dstate, cache) -> (dpre_x, dpre_h, dstate_direct)``.

``pre_x = x_t W_ihᵀ + b_ih`` and ``pre_h = h_{t-1} W_hhᵀ + b_hh`` are both ``(B, K*H)``; the
engine computes them, the cell never sees a weight matrix. ``dstate`` is the gradient reaching
the new state (for ``h`` the total: from the output at t and from step t+1); ``dstate_direct``
is the gradient reaching the previous state by paths that do not pass through ``W_hh`` (the
LSTM cell state ``c``, the GRU's ``z * h``), an entry ``None`` where there is no such path.
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
