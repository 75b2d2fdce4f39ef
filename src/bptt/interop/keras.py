"""The ``keras`` layout: the weights of a Keras ``SimpleRNN``, ``LSTM`` or ``GRU`` layer, whose
matrices are the transposes of torch's with the gate blocks as columns.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell.

- params: ``kernel`` (I, K*H), ``recurrent_kernel`` (H, K*H), ``bias``: (K*H,) for SimpleRNN
  and LSTM, (2, 3H) for GRU (row 0 the input bias, row 1 the recurrent bias). The cell follows
  from K = columns of ``recurrent_kernel`` / H.
- gate order: LSTM i, f, c, o (torch's i, f, g, o); GRU z, r, h, where torch has r, z, n.
- data, batch first as in Keras: ``x`` (B, T, I), ``h0`` and, for LSTM, ``c0`` (B, H),
  upstream ``dy`` (B, T, H) (a layer with ``return_sequences=True``).
- Equations: Keras's defaults, ``activation="tanh"`` and ``recurrent_activation="sigmoid"``,
  and for GRU ``reset_after=True`` (the default of Keras 2.x and 3), where the reset gate
  scales ``h W_h + b_h`` as torch's does. A GRU built with ``reset_after=False`` (one bias of
  (3H,)) computes another function and is refused.
- SimpleRNN and LSTM have one bias: to torch it goes whole into ``bias_ih_l0``, with
  ``bias_hh_l0`` zero; back, ``bias`` is ``bias_ih_l0 + bias_hh_l0``. Its gradient: both torch
  bias gradients equal ``dbias`` and, back, ``dbias`` is ``dbias_ih`` (not the sum of the two,
  which would count it twice). GRU's two biases and all weights convert one to one.
"""

import numpy as np

from .arrays import (
    LayoutError, bias_grads_for_single_bias, bias_grads_to_torch, cell_of_gates, check_arrays, reorder_gates, require,
)
from .batch_first import (  # Keras's data layout, part of this layout's interface
    sequence_from_torch, sequence_shape, sequence_to_torch, state_from_torch, state_shape, state_to_torch,
)

NAME = "keras"
DATA_NAMES = {"x": "x", "h0": "h0", "c0": "c0", "dy": "dy"}  # library name -> this layout's
TORCH_ORDER = {"rnn_tanh": (0,), "rnn_relu": (0,), "lstm": (0, 1, 2, 3), "gru": (1, 0, 2)}  # torch block j = Keras block [j]


def param_shapes(cell, input_size, hidden_size):
    """Names and shapes of the parameters of ``cell``: ``rnn_tanh``, ``lstm`` or ``gru``."""
    _check_cell(cell)
    KH = len(TORCH_ORDER[cell]) * hidden_size
    return {
        "kernel": (input_size, KH),
        "recurrent_kernel": (hidden_size, KH),
        "bias": (2, KH) if cell == "gru" else (KH,),
    }


def describe(params):
    """Check ``params`` and return ``(cell, input_size, hidden_size)``."""
    recurrent = require(params, "recurrent_kernel", 2, "params")
    kernel = require(params, "kernel", 2, "params")
    hidden_size = recurrent.shape[0]
    cell = cell_of_gates("recurrent_kernel", recurrent.shape, gate_axis=1)
    if cell == "gru" and np.shape(params.get("bias")) == (3 * hidden_size,):
        raise LayoutError(
            "params: a GRU bias of shape (3H,) is Keras's reset_after=False, which computes another "
            "function than torch's GRU; build the layer with reset_after=True (bias of shape (2, 3H))"
        )
    check_arrays(params, param_shapes(cell, kernel.shape[0], hidden_size), "params")
    return cell, kernel.shape[0], hidden_size


def params_to_torch(params):
    """The library's ``state_dict`` from ``kernel``, ``recurrent_kernel`` and ``bias``."""
    cell, _, _ = describe(params)
    order = TORCH_ORDER[cell]
    bias = np.asarray(params["bias"])
    bias_ih, bias_hh = (bias[0], bias[1]) if cell == "gru" else (bias, np.zeros_like(bias))
    return {
        "weight_ih_l0": reorder_gates(np.asarray(params["kernel"]).T, order),  # KH,I
        "weight_hh_l0": reorder_gates(np.asarray(params["recurrent_kernel"]).T, order),  # KH,H
        "bias_ih_l0": reorder_gates(bias_ih, order),
        "bias_hh_l0": reorder_gates(bias_hh, order),
    }


def params_from_torch(state_dict, cell):
    """``kernel``, ``recurrent_kernel`` and ``bias`` from the library's ``state_dict`` of ``cell``."""
    _check_cell(cell)
    order = np.argsort(TORCH_ORDER[cell])  # Keras block j = torch block [j]
    bias_ih = reorder_gates(state_dict["bias_ih_l0"], order)
    bias_hh = reorder_gates(state_dict["bias_hh_l0"], order)
    return {
        "kernel": reorder_gates(state_dict["weight_ih_l0"], order).T,  # I,KH
        "recurrent_kernel": reorder_gates(state_dict["weight_hh_l0"], order).T,  # H,KH
        "bias": np.stack([bias_ih, bias_hh]) if cell == "gru" else bias_ih + bias_hh,
    }


def grads_to_torch(grads):
    """The library's gradients from Keras's: one to one, and both torch bias gradients equal a
    single ``dbias``."""
    cell, _, _ = describe(grads)
    torch_grads = params_to_torch(grads)
    if cell != "gru":
        bias_grads_to_torch(torch_grads)
    return torch_grads


def grads_from_torch(grads, cell):
    """Keras's gradients from the library's: a single ``dbias`` is ``dbias_ih``."""
    if cell != "gru":
        grads = bias_grads_for_single_bias(grads)
    return params_from_torch(grads, cell)


def _check_cell(cell):
    if cell not in TORCH_ORDER:
        raise LayoutError(f"the keras layout holds SimpleRNN, LSTM or GRU, not {cell}")
