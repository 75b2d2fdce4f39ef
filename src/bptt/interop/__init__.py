"""Interop: the library's parameters, data and gradients in other layouts, both ways.

Layouts (one layer, one direction): ``torch`` (the library's own ``state_dict``),
``coursera-rnn`` and ``coursera-lstm`` (the popular course's notation, weights applied to
``[a_prev; x]``, data (n_x, m, T_x)), ``keras`` (``kernel``, ``recurrent_kernel``, ``bias``,
batch-first data).
"""

from . import coursera, coursera_lstm, coursera_rnn, keras, torch_layout
from .arrays import LayoutError
from .layouts import LAYOUTS, get_layout, new_model, to_model

__all__ = [
    "LAYOUTS", "LayoutError", "coursera", "coursera_lstm", "coursera_rnn", "get_layout", "keras",
    "new_model", "to_model", "torch_layout",
]
