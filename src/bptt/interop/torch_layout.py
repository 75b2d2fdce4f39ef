"""The ``torch`` layout: PyTorch's ``state_dict`` of a one-layer, one-direction
``nn.RNN``/``nn.LSTM``/``nn.GRU``, which is the library's own. Every conversion is the identity.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

- params: ``weight_ih_l0`` (K*H, I), ``weight_hh_l0`` (K*H, H), ``bias_ih_l0``, ``bias_hh_l0``
  (K*H,); rows in torch's gate order (LSTM i, f, g, o; GRU r, z, n).
- data: ``x`` (T, B, I), ``h0`` and, for LSTM, ``c0`` (1, B, H), upstream ``dy`` (T, B, H).
- The cell follows from K = rows of ``weight_hh_l0`` / H; K = 1 is read as a tanh RNN.

Every layout module of :mod:`bptt.interop` has the functions and constants of this one.
"""

import numpy as np

from ..cells import CELLS
from ..layers import param_shapes as stack_param_shapes
from .arrays import cell_of_gates, check_arrays, require

NAME = "torch"
DATA_NAMES = {"x": "x", "h0": "h0", "c0": "c0", "dy": "dy"}  # library name -> this layout's


def param_shapes(cell, input_size, hidden_size):
    """Names and shapes of the parameters of ``cell`` (a name of ``bptt.cells.CELLS``)."""
    return stack_param_shapes(CELLS[cell], input_size, hidden_size, 1, 1)


def describe(params):
    """Check ``params`` and return ``(cell, input_size, hidden_size)``; LayoutError if they do
    not fit the layout."""
    w_hh = require(params, "weight_hh_l0", 2, "params")
    w_ih = require(params, "weight_ih_l0", 2, "params")
    hidden_size = w_hh.shape[1]
    cell = cell_of_gates("weight_hh_l0", w_hh.shape, gate_axis=0)
    check_arrays(params, param_shapes(cell, w_ih.shape[1], hidden_size), "params")
    return cell, w_ih.shape[1], hidden_size


def params_to_torch(params):
    """The library's ``state_dict``: the four arrays of ``params``."""
    cell, input_size, hidden_size = describe(params)
    return {name: np.asarray(params[name]) for name in param_shapes(cell, input_size, hidden_size)}


def params_from_torch(state_dict, cell):
    """This layout's params from the library's ``state_dict`` of ``cell``: the same arrays
    (``cell`` matters to the other layouts only)."""
    return {name: np.asarray(value) for name, value in state_dict.items()}


def grads_to_torch(grads):
    """Gradients named as params, converted like them: the identity."""
    return params_to_torch(grads)


def grads_from_torch(grads, cell):
    """Inverse of :func:`grads_to_torch`."""
    return params_from_torch(grads, cell)


def sequence_to_torch(x):
    """(T, B, n) -> (T, B, n): the library's layout already."""
    return np.asarray(x)


def sequence_from_torch(x):
    """(T, B, n) -> (T, B, n)."""
    return np.asarray(x)


def state_to_torch(h0):
    """(1, B, H) -> (1, B, H)."""
    return np.asarray(h0)


def state_from_torch(h0):
    """(1, B, H) -> (1, B, H)."""
    return np.asarray(h0)


def sequence_shape(steps, batch, size):
    """The shape of a sequence of ``size`` features (``x``, ``dy``) in this layout."""
    return (steps, batch, size)


def state_shape(batch, hidden_size):
    """The shape of an initial state (``h0``, ``c0``) in this layout."""
    return (1, batch, hidden_size)
