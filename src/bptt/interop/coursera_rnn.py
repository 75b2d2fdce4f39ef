"""The ``coursera-rnn`` layout: the course's vanilla RNN,
``a_t = tanh(Wax x_t + Waa a_{t-1} + ba)``, which is the library's tanh RNN.

Legend: T time steps, B batch, I input features, H hidden units
(course: T_x, m, n_x, n_a).

- params: ``Wax`` (n_a, n_x), ``Waa`` (n_a, n_a), ``ba`` (n_a, 1). Other keys of the course's
  ``parameters`` (the output layer's ``Wya``, ``by``) are not looked at.
- data: ``x`` (n_x, m, T_x), ``a0`` (n_a, m), upstream ``da`` (n_a, m, T_x), the loss being
  ``sum(da * a)``; see :mod:`bptt.interop.coursera`.
- The one bias ``ba`` becomes ``bias_ih_l0``, with ``bias_hh_l0`` zero; back, ``ba`` is
  ``bias_ih_l0 + bias_hh_l0`` (only the sum enters the RNN).
- Gradients convert like their parameters, except the bias: ``ba`` enters torch's RNN as
  ``bias_ih + bias_hh``, so ``dbias_ih = dbias_hh = dba`` and, back, ``dba = dbias_ih``
  (not the sum of the two, which would count it twice).
"""

import numpy as np

from .arrays import LayoutError, bias_grads_for_single_bias, bias_grads_to_torch, check_arrays, require
from .coursera import (  # the course's data layout, part of this layout's interface
    sequence_from_torch, sequence_shape, sequence_to_torch, state_from_torch, state_shape, state_to_torch,
)

NAME = "coursera-rnn"
DATA_NAMES = {"x": "x", "h0": "a0", "dy": "da"}  # library name -> this layout's


def param_shapes(cell, input_size, hidden_size):
    """Names and shapes of the parameters; ``cell`` must be ``rnn_tanh``."""
    _check_cell(cell)
    return {"Wax": (hidden_size, input_size), "Waa": (hidden_size, hidden_size), "ba": (hidden_size, 1)}


def describe(params):
    """Check ``params`` and return ``("rnn_tanh", n_x, n_a)``."""
    wax = require(params, "Wax", 2, "params")
    hidden_size, input_size = wax.shape
    check_arrays(params, param_shapes("rnn_tanh", input_size, hidden_size), "params")
    return "rnn_tanh", input_size, hidden_size


def params_to_torch(params):
    """The library's ``state_dict`` of a tanh RNN from ``Wax``, ``Waa``, ``ba``."""
    describe(params)
    ba = np.asarray(params["ba"])[:, 0]  # H
    return {
        "weight_ih_l0": np.asarray(params["Wax"]),
        "weight_hh_l0": np.asarray(params["Waa"]),
        "bias_ih_l0": ba,
        "bias_hh_l0": np.zeros_like(ba),
    }


def params_from_torch(state_dict, cell):
    """``Wax``, ``Waa``, ``ba`` from the library's ``state_dict`` of a tanh RNN."""
    _check_cell(cell)
    return {
        "Wax": np.asarray(state_dict["weight_ih_l0"]),
        "Waa": np.asarray(state_dict["weight_hh_l0"]),
        "ba": (np.asarray(state_dict["bias_ih_l0"]) + np.asarray(state_dict["bias_hh_l0"]))[:, None],  # H,1
    }


def grads_to_torch(grads):
    """The library's gradients from ``Wax``, ``Waa``, ``ba`` ones: both bias gradients are ``dba``."""
    return bias_grads_to_torch(params_to_torch(grads))


def grads_from_torch(grads, cell):
    """``Wax``, ``Waa``, ``ba`` gradients from the library's: ``dba`` is ``dbias_ih``."""
    return params_from_torch(bias_grads_for_single_bias(grads), cell)


def _check_cell(cell):
    if cell != "rnn_tanh":
        raise LayoutError(f"the coursera-rnn layout holds a tanh RNN, not {cell}")
