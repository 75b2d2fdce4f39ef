"""Interop: the library's parameters, data and gradients in other layouts, both ways.

Layouts (one layer, one direction): ``torch`` (the library's own ``state_dict``),
``coursera-rnn`` and ``coursera-lstm`` (the popular course's notation, weights applied to
``[a_prev; x]``, data (n_x, m, T_x)), ``cs231n-rnn`` and ``cs231n-lstm`` (CS231n's assignment,
``Wx``, ``Wh``, ``b`` applied to row vectors, LSTM gates i, f, o, g, data (N, T, D)), ``keras``
(``kernel``, ``recurrent_kernel``, ``bias``, batch-first data); and one step of the course's
and CS231n's cells: ``coursera-rnn-cell``, ``coursera-lstm-cell``, ``cs231n-rnn-step``,
``cs231n-lstm-step`` (:mod:`bptt.interop.steps`).
"""

from . import batch_first, coursera, coursera_lstm, coursera_rnn, cs231n_lstm, cs231n_rnn, keras, steps, torch_layout
from .arrays import LayoutError
from .layouts import LAYOUTS, get_layout, new_model, to_model

__all__ = [
    "LAYOUTS", "LayoutError", "batch_first", "coursera", "coursera_lstm", "coursera_rnn", "cs231n_lstm", "cs231n_rnn",
    "get_layout", "keras", "new_model", "steps", "to_model", "torch_layout",
]
