"""The ``coursera-lstm`` layout: the course's LSTM, each gate with its own weight applied to
the concatenation ``[a_prev; x_t]``, which is the library's LSTM with the blocks regrouped.

Legend: T time steps, B batch, I input features, H hidden units
(course: T_x, m, n_x, n_a).

The course's gates are the library's: ``Γf = f``, ``Γu = i``, ``c̃ = g``, ``Γo = o``::

    Γf = σ(Wf [a_prev; x_t] + bf)      Γu = σ(Wi [a_prev; x_t] + bi)
    c̃ = tanh(Wc [a_prev; x_t] + bc)    Γo = σ(Wo [a_prev; x_t] + bo)
    c_t = Γf * c_prev + Γu * c̃         a_t = Γo * tanh(c_t)

- params: ``Wf, Wi, Wc, Wo`` (n_a, n_a + n_x), whose first n_a columns multiply ``a_prev``
  and the other n_x columns ``x_t``; ``bf, bi, bc, bo`` (n_a, 1). Other keys of the course's
  ``parameters`` (the output layer's ``Wy``, ``by``) are not looked at.
- data: ``x`` (n_x, m, T_x), ``a0`` (n_a, m), ``c0`` (n_a, m) (zero in the course, optional
  here), upstream ``da`` (n_a, m, T_x), the loss being ``sum(da * a)``;
  see :mod:`bptt.interop.coursera`.
- To torch: ``weight_ih_l0`` stacks the ``x`` columns of ``Wi, Wf, Wc, Wo`` (torch's order
  i, f, g, o), ``weight_hh_l0`` their ``a_prev`` columns; ``bias_ih_l0`` stacks the biases
  and ``bias_hh_l0`` is zero. Back, each bias is the sum of its two torch blocks.
- Gradients convert like their parameters, except the biases: a course bias enters torch's
  LSTM as ``bias_ih + bias_hh``, so both torch bias gradients equal it and, back, the course's
  bias gradient is ``dbias_ih`` (not the sum of the two, which would count it twice).
"""

import numpy as np

from .arrays import LayoutError, bias_grads_for_single_bias, bias_grads_to_torch, check_arrays, require
from .coursera import (  # the course's data layout, part of this layout's interface
    sequence_from_torch, sequence_shape, sequence_to_torch, state_from_torch, state_shape, state_to_torch,
)

NAME = "coursera-lstm"
DATA_NAMES = {"x": "x", "h0": "a0", "c0": "c0", "dy": "da"}  # library name -> this layout's
GATES = ("i", "f", "c", "o")  # the course's letters, in torch's gate order i, f, g, o


def param_shapes(cell, input_size, hidden_size):
    """Names and shapes of the parameters; ``cell`` must be ``lstm``."""
    _check_cell(cell)
    shapes = {}
    for gate in ("f", "i", "c", "o"):  # the course's order
        shapes["W" + gate] = (hidden_size, hidden_size + input_size)
        shapes["b" + gate] = (hidden_size, 1)
    return shapes


def describe(params):
    """Check ``params`` and return ``("lstm", n_x, n_a)``."""
    wf = require(params, "Wf", 2, "params")
    hidden_size, width = wf.shape
    if width <= hidden_size:
        raise LayoutError(
            f"params: Wf of shape {wf.shape} should be (n_a, n_a + n_x) with n_x >= 1, "
            f"but it has {width} <= n_a = {hidden_size} columns"
        )
    check_arrays(params, param_shapes("lstm", width - hidden_size, hidden_size), "params")
    return "lstm", width - hidden_size, hidden_size


def params_to_torch(params):
    """The library's LSTM ``state_dict`` from ``Wf, bf, Wi, bi, Wc, bc, Wo, bo``."""
    _, _, hidden_size = describe(params)
    weights = [np.asarray(params["W" + gate]) for gate in GATES]  # 4 of (H, H+I)
    bias = np.concatenate([np.asarray(params["b" + gate])[:, 0] for gate in GATES])  # 4H
    return {
        "weight_ih_l0": np.concatenate([w[:, hidden_size:] for w in weights]),  # 4H,I  the x columns
        "weight_hh_l0": np.concatenate([w[:, :hidden_size] for w in weights]),  # 4H,H  the a_prev columns
        "bias_ih_l0": bias,
        "bias_hh_l0": np.zeros_like(bias),
    }


def params_from_torch(state_dict, cell):
    """``Wf, bf, Wi, bi, Wc, bc, Wo, bo`` from the library's LSTM ``state_dict``."""
    _check_cell(cell)
    w_ih = np.split(np.asarray(state_dict["weight_ih_l0"]), 4)  # 4 of (H, I)
    w_hh = np.split(np.asarray(state_dict["weight_hh_l0"]), 4)  # 4 of (H, H)
    bias = np.split(np.asarray(state_dict["bias_ih_l0"]) + np.asarray(state_dict["bias_hh_l0"]), 4)
    params = {}
    for gate, w_x, w_a, b in zip(GATES, w_ih, w_hh, bias):
        params["W" + gate] = np.concatenate([w_a, w_x], axis=1)  # H,H+I  applied to [a_prev; x]
        params["b" + gate] = b[:, None]  # H,1
    return {name: params[name] for name in param_shapes(cell, w_ih[0].shape[1], w_hh[0].shape[1])}


def grads_to_torch(grads):
    """The library's gradients from the course's: both torch bias gradients are the course's."""
    return bias_grads_to_torch(params_to_torch(grads))


def grads_from_torch(grads, cell):
    """The course's gradients from the library's: a bias gradient is ``dbias_ih``'s block."""
    return params_from_torch(bias_grads_for_single_bias(grads), cell)


def _check_cell(cell):
    if cell != "lstm":
        raise LayoutError(f"the coursera-lstm layout holds an LSTM, not {cell}")
