"""The ``cs231n-rnn`` layout: the vanilla RNN of CS231n's assignment (``rnn_layers.py``),
``next_h = tanh(x @ Wx + prev_h @ Wh + b)``, which is the library's tanh RNN with its weights
transposed (row vectors times matrices, where torch has matrices times column vectors).

Legend: T time steps, B batch, I input features, H hidden units
(assignment: T, N, D, H).

- params: ``Wx`` (D, H), ``Wh`` (H, H), ``b`` (H,). H is read from ``Wh``, D from ``Wx``.
  Other keys (the assignment's ``W_embed``, ``W_vocab``, ``b_vocab``) are not looked at.
- data: ``x`` (N, T, D), ``h0`` (N, H), upstream ``dh`` (N, T, H), the loss being
  ``sum(dh * h)``; see :mod:`bptt.interop.batch_first`. The assignment's ``rnn_backward`` returns
  ``dx, dh0, dWx, dWh, db``.
- To torch: ``weight_ih_l0 = Wx.T``, ``weight_hh_l0 = Wh.T``; the one bias ``b`` becomes
  ``bias_ih_l0``, with ``bias_hh_l0`` zero. Back, ``b`` is ``bias_ih_l0 + bias_hh_l0`` (only
  the sum enters the RNN).
- Gradients convert like their parameters, except the bias: ``b`` enters torch's RNN as
  ``bias_ih + bias_hh``, so ``dbias_ih = dbias_hh = db`` and, back, ``db = dbias_ih`` (not the
  sum of the two, which would count it twice).
"""

import numpy as np

from .arrays import LayoutError, bias_grads_for_single_bias, bias_grads_to_torch, describe_row_major
from .batch_first import (  # the assignment's data layout, part of this layout's interface
    sequence_from_torch, sequence_shape, sequence_to_torch, state_from_torch, state_shape, state_to_torch,
)

NAME = "cs231n-rnn"
DATA_NAMES = {"x": "x", "h0": "h0", "dy": "dh"}  # library name -> this layout's


def param_shapes(cell, input_size, hidden_size):
    """Names and shapes of the parameters; ``cell`` must be ``rnn_tanh``."""
    _check_cell(cell)
    return {"Wx": (input_size, hidden_size), "Wh": (hidden_size, hidden_size), "b": (hidden_size,)}


def describe(params):
    """Check ``params`` and return ``("rnn_tanh", D, H)``."""
    return describe_row_major(params, "rnn_tanh", 1, param_shapes,
                              (4, "an LSTM's Wh, (H, 4H): use the cs231n-lstm layout"))


def params_to_torch(params):
    """The library's ``state_dict`` of a tanh RNN from ``Wx``, ``Wh``, ``b``."""
    describe(params)
    b = np.asarray(params["b"])  # H
    return {
        "weight_ih_l0": np.asarray(params["Wx"]).T,  # H,I
        "weight_hh_l0": np.asarray(params["Wh"]).T,  # H,H
        "bias_ih_l0": b,
        "bias_hh_l0": np.zeros_like(b),
    }


def params_from_torch(state_dict, cell):
    """``Wx``, ``Wh``, ``b`` from the library's ``state_dict`` of a tanh RNN."""
    _check_cell(cell)
    return {
        "Wx": np.asarray(state_dict["weight_ih_l0"]).T,  # D,H
        "Wh": np.asarray(state_dict["weight_hh_l0"]).T,  # H,H
        "b": np.asarray(state_dict["bias_ih_l0"]) + np.asarray(state_dict["bias_hh_l0"]),  # H
    }


def grads_to_torch(grads):
    """The library's gradients from ``dWx``, ``dWh``, ``db`` (keyed ``Wx``, ``Wh``, ``b``):
    both torch bias gradients are ``db``."""
    return bias_grads_to_torch(params_to_torch(grads))


def grads_from_torch(grads, cell):
    """``Wx``, ``Wh``, ``b`` gradients from the library's: ``db`` is ``dbias_ih``."""
    return params_from_torch(bias_grads_for_single_bias(grads), cell)


def _check_cell(cell):
    if cell != "rnn_tanh":
        raise LayoutError(f"the cs231n-rnn layout holds a tanh RNN, not {cell}")
