"""The ``cs231n-lstm`` layout: the LSTM of CS231n's assignment (``rnn_layers.py``), which is the
library's LSTM with its weights transposed and two gate blocks swapped.

Legend: T time steps, B batch, I input features, H hidden units
(assignment: T, N, D, H).

The assignment computes, with row vectors, one product for all four gates::

    a = x_t @ Wx + prev_h @ Wh + b                         (N, 4H), blocks ai, af, ao, ag
    i = σ(ai)    f = σ(af)    o = σ(ao)    g = tanh(ag)
    next_c = f * prev_c + i * g                            next_h = o * tanh(next_c)

- params: ``Wx`` (D, 4H), ``Wh`` (H, 4H), ``b`` (4H,), the gate blocks as columns in the order
  i, f, o, g (torch's rows: i, f, g, o). H is read from ``Wh``, D from ``Wx``. Other keys (the
  assignment's ``W_embed``, ``W_vocab``, ``b_vocab``) are not looked at.
- data: ``x`` (N, T, D), ``h0`` (N, H), ``c0`` (N, H) (zero in the assignment, optional here),
  upstream ``dh`` (N, T, H), the loss being ``sum(dh * h)``; see :mod:`bptt.interop.batch_first`.
  The assignment's ``lstm_backward`` returns ``dx, dh0, dWx, dWh, db``.
- To torch: ``weight_ih_l0`` is ``Wx.T`` with its blocks put in torch's order, ``weight_hh_l0``
  likewise from ``Wh``; ``b``, reordered, becomes ``bias_ih_l0``, with ``bias_hh_l0`` zero.
  Back, ``b`` is ``bias_ih_l0 + bias_hh_l0`` reordered (only the sum enters the LSTM).
- Gradients convert like their parameters, except the bias: ``b`` enters torch's LSTM as
  ``bias_ih + bias_hh``, so both torch bias gradients equal ``db`` and, back, ``db`` is
  ``dbias_ih`` reordered (not the sum of the two, which would count it twice).
"""

import numpy as np

from .arrays import LayoutError, bias_grads_for_single_bias, bias_grads_to_torch, describe_row_major, reorder_gates
from .batch_first import (  # the assignment's data layout, part of this layout's interface
    sequence_from_torch, sequence_shape, sequence_to_torch, state_from_torch, state_shape, state_to_torch,
)

NAME = "cs231n-lstm"
DATA_NAMES = {"x": "x", "h0": "h0", "c0": "c0", "dy": "dh"}  # library name -> this layout's
TORCH_ORDER = (0, 1, 3, 2)  # torch block j (i, f, g, o) = the assignment's block [j] (i, f, o, g);
# swapping two blocks is its own inverse, so the same order converts back


def param_shapes(cell, input_size, hidden_size):
    """Names and shapes of the parameters; ``cell`` must be ``lstm``."""
    _check_cell(cell)
    return {"Wx": (input_size, 4 * hidden_size), "Wh": (hidden_size, 4 * hidden_size), "b": (4 * hidden_size,)}


def describe(params):
    """Check ``params`` and return ``("lstm", D, H)``."""
    return describe_row_major(params, "lstm", 4, param_shapes,
                              (1, "a vanilla RNN's Wh, (H, H): use the cs231n-rnn layout"))


def params_to_torch(params):
    """The library's LSTM ``state_dict`` from ``Wx``, ``Wh``, ``b``."""
    describe(params)
    b = reorder_gates(params["b"], TORCH_ORDER)  # 4H
    return {
        "weight_ih_l0": reorder_gates(np.asarray(params["Wx"]).T, TORCH_ORDER),  # 4H,I
        "weight_hh_l0": reorder_gates(np.asarray(params["Wh"]).T, TORCH_ORDER),  # 4H,H
        "bias_ih_l0": b,
        "bias_hh_l0": np.zeros_like(b),
    }


def params_from_torch(state_dict, cell):
    """``Wx``, ``Wh``, ``b`` from the library's LSTM ``state_dict``."""
    _check_cell(cell)
    return {
        "Wx": reorder_gates(state_dict["weight_ih_l0"], TORCH_ORDER).T,  # D,4H
        "Wh": reorder_gates(state_dict["weight_hh_l0"], TORCH_ORDER).T,  # H,4H
        "b": reorder_gates(np.asarray(state_dict["bias_ih_l0"]) + np.asarray(state_dict["bias_hh_l0"]), TORCH_ORDER),
    }


def grads_to_torch(grads):
    """The library's gradients from ``dWx``, ``dWh``, ``db`` (keyed ``Wx``, ``Wh``, ``b``):
    both torch bias gradients are ``db``, reordered."""
    return bias_grads_to_torch(params_to_torch(grads))


def grads_from_torch(grads, cell):
    """``Wx``, ``Wh``, ``b`` gradients from the library's: ``db`` is ``dbias_ih``, reordered."""
    return params_from_torch(bias_grads_for_single_bias(grads), cell)


def _check_cell(cell):
    if cell != "lstm":
        raise LayoutError(f"the cs231n-lstm layout holds an LSTM, not {cell}")
