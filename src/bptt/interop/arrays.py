"""What every layout shares: the error for arrays that do not fit, the check that raises it,
and the reordering of gate blocks.

Legend: K gates per cell, H hidden units.
"""

import numpy as np


class LayoutError(ValueError):
    """Arrays that do not fit a layout: an unknown layout, a missing key, a wrong shape."""


def check_arrays(arrays, shapes, what):
    """Raise one :class:`LayoutError` naming every key of ``shapes`` that ``arrays`` lacks or
    holds with another shape or a non-numeric dtype. Keys of ``arrays`` not in ``shapes`` are
    not looked at.

    Parameters
    ----------
    arrays : dict name -> array-like
    shapes : dict name -> tuple of ints, the expected shapes
    what : how the message names ``arrays``, e.g. ``"params"``
    """
    missing = [name for name in shapes if name not in arrays]
    bad = []
    for name, shape in shapes.items():
        if name not in arrays:
            continue
        array = np.asarray(arrays[name])
        if array.dtype.kind not in "fiu":
            bad.append(f"{name}: expected real numbers but got dtype {array.dtype}")
        elif array.shape != tuple(shape):
            bad.append(f"{name}: expected shape {tuple(shape)} but got {array.shape}")
    problems = []
    if missing:
        problems.append("missing " + ", ".join(f"{name} {tuple(shapes[name])}" for name in missing))
    problems.extend(bad)
    if problems:
        raise LayoutError(f"{what}: " + "; ".join(problems))


def require(arrays, name, ndim, what):
    """``arrays[name]`` as an ndarray with ``ndim`` dimensions, or a :class:`LayoutError`."""
    if name not in arrays:
        raise LayoutError(f"{what}: missing {name}")
    array = np.asarray(arrays[name])
    if array.ndim != ndim:
        raise LayoutError(f"{what}: expected {name} with {ndim} dimensions but got shape {array.shape}")
    return array


def bias_grads_to_torch(torch_grads):
    """For a layout with one bias vector per layer, whose gradient ``params_to_torch`` has put
    in ``bias_ih_l0``: torch's ``bias_hh_l0`` gets the same gradient, since ``b_ih + b_hh``
    enters where the single bias did. Returns ``torch_grads``, completed."""
    torch_grads["bias_hh_l0"] = torch_grads["bias_ih_l0"].copy()
    return torch_grads


def bias_grads_for_single_bias(grads):
    """torch gradients prepared for ``params_from_torch`` of a one-bias layout, which sums the two
    biases: the single bias's gradient is ``dbias_ih`` alone (``dbias_hh`` equals it, and adding
    it would count it twice)."""
    return {**grads, "bias_hh_l0": np.zeros_like(grads["bias_hh_l0"])}


def reorder_gates(array, order):
    """The K gate blocks of ``array`` (K*H, ...) put in ``order``: block j of the result is
    block ``order[j]`` of ``array``."""
    blocks = np.split(np.asarray(array), len(order), axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


CELL_OF_GATES = {1: "rnn_tanh", 3: "gru", 4: "lstm"}


def cell_of_gates(name, shape, gate_axis):
    """The cell of the recurrent weight ``name`` of ``shape`` (K*H, H), or (H, K*H) with
    ``gate_axis=1``: ``rnn_tanh`` for K = 1 (the layouts do not record the nonlinearity),
    ``gru`` for 3, ``lstm`` for 4."""
    gates, hidden_size = shape[gate_axis], shape[1 - gate_axis]
    if hidden_size == 0 or gates % hidden_size or gates // hidden_size not in CELL_OF_GATES:
        raise LayoutError(
            f"params: expected {name} of shape {'(K*H, H)' if gate_axis == 0 else '(H, K*H)'} "
            f"with K = 1 (RNN), 3 (GRU) or 4 (LSTM) but got {shape}"
        )
    return CELL_OF_GATES[gates // hidden_size]


def describe_row_major(params, cell, gates, shapes, other):
    """Check the CS231n layouts' ``params``, ``Wx`` (D, K*H), ``Wh`` (H, K*H), ``b`` (K*H,) of
    a ``cell`` of ``gates`` gates K (``shapes(cell, D, H)``, their names and shapes), and return
    ``(cell, D, H)``. ``other``: the gates of the layout a learner may have meant instead and
    the hint for its ``Wh`` (e.g. ``(4, "an LSTM's Wh, (H, 4H): use the cs231n-lstm layout")``)."""
    width = "H" if gates == 1 else f"{gates}H"
    wh = require(params, "Wh", 2, "params")
    hidden_size = wh.shape[0]
    if wh.shape[1] != gates * hidden_size:
        hint = f" ({other[1]})" if wh.shape[1] == other[0] * hidden_size else ""
        raise LayoutError(f"params: expected Wh of shape (H, {width}) but got {wh.shape}{hint}")
    wx = require(params, "Wx", 2, "params")
    if wx.shape[1] != gates * hidden_size:
        raise LayoutError(
            f"params: expected Wx of shape (D, {width}) = (D, {gates * hidden_size}) but got {wx.shape} "
            f"(H = {hidden_size} from Wh of shape {wh.shape})"
        )
    check_arrays(params, shapes(cell, wx.shape[0], hidden_size), "params")
    return cell, wx.shape[0], hidden_size
