"""The layouts by name, and a library model built from a layout's parameters.

A layout is a module with the interface of :mod:`bptt.interop.torch_layout`: ``NAME``,
``DATA_NAMES``, ``describe``, ``param_shapes``, ``params_to_torch``/``params_from_torch``,
``grads_to_torch``/``grads_from_torch``, ``sequence_to_torch``/``sequence_from_torch``,
``state_to_torch``/``state_from_torch``, ``sequence_shape``, ``state_shape`` (the step
layouts of :mod:`bptt.interop.steps` are objects with the same names).
"""

import numpy as np

from ..layers import GRU, LSTM, RNN
from . import coursera_lstm, coursera_rnn, cs231n_lstm, cs231n_rnn, keras, torch_layout
from .arrays import LayoutError
from .steps import STEP_LAYOUTS

LAYOUTS = {
    layout.NAME: layout
    for layout in (torch_layout, coursera_rnn, coursera_lstm, cs231n_rnn, cs231n_lstm, keras, *STEP_LAYOUTS)
}


def get_layout(name):
    """The layout module called ``name``; LayoutError naming the known ones otherwise."""
    if name not in LAYOUTS:
        raise LayoutError(f"unknown layout {name!r}; expected one of: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def new_model(cell, input_size, hidden_size, dtype=np.float64):
    """A one-layer, one-direction library model of ``cell`` (a name of ``bptt.cells.CELLS``)."""
    if cell == "lstm":
        return LSTM(input_size, hidden_size, dtype=dtype)
    if cell == "gru":
        return GRU(input_size, hidden_size, dtype=dtype)
    return RNN(input_size, hidden_size, nonlinearity=cell.removeprefix("rnn_"), dtype=dtype)


def to_model(layout, params, dtype=np.float64):
    """The library model that computes what ``params`` of ``layout`` (a name) compute.

    ``params``: dict name -> array in that layout. Returns a :class:`bptt.RNN`, ``LSTM`` or
    ``GRU`` of ``dtype`` holding the converted parameters.
    """
    layout = get_layout(layout)
    cell, input_size, hidden_size = layout.describe(params)
    model = new_model(cell, input_size, hidden_size, dtype)
    state_dict = layout.params_to_torch(params)
    model.load_state_dict({name: np.asarray(value, dtype=dtype) for name, value in state_dict.items()})
    return model
