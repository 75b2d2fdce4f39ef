"""Input checks of the core: each failure is a ValueError or TypeError that names what was
expected and what came, raised before any arithmetic starts."""

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_integer(value, minimum=None):
    """Whether ``value`` is a Python or NumPy integer (a bool is not) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return False
    return minimum is None or value >= minimum


def as_float_array(value, name, dtype):
    """``value`` as an ndarray of exactly ``dtype`` (float32 or float64), never cast silently.

    Accepts ndarrays and anything ``np.asarray`` takes (CPU torch tensors included).
    """
    array = np.asarray(value)
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"expected {name} of dtype {dtype.name} but got {array.dtype}, which is not float32 or float64")
    if array.dtype != dtype:
        raise TypeError(
            f"expected {name} of dtype {dtype.name} (the model's dtype) but got {array.dtype}; "
            f"convert it with .astype(np.{dtype.name}) or build the model with dtype=np.{array.dtype}"
        )
    return array


def check_shape(array, name, expected, letters):
    """Raise unless ``array.shape`` matches ``expected``, where None entries match any size.

    ``letters`` names the dimensions, e.g. ``("T", "B", "I")``.
    """
    shown = ", ".join(letter if size is None else str(size) for letter, size in zip(letters, expected))
    if array.ndim != len(expected) or any(
        size is not None and size != got for size, got in zip(expected, array.shape)
    ):
        raise ValueError(f"expected {name} of shape ({shown}) but got {tuple(array.shape)}")


def check_lengths(lengths, batch, steps):
    """``lengths`` as a (B,) int64 array of values in [1, T]."""
    array = np.asarray(lengths)
    if array.shape != (batch,):
        raise ValueError(f"expected lengths of shape ({batch},), one per sequence, but got {array.shape}")
    if array.dtype.kind not in "iu":
        if array.dtype.kind != "f":
            raise TypeError(f"expected lengths of integers but got dtype {array.dtype}")
        fractional = np.flatnonzero(~np.isfinite(array) | (np.floor(array) != array))
        if fractional.size:
            shown = ", ".join(f"lengths[{i}]={array[i]}" for i in fractional[:5])
            raise TypeError(f"expected lengths of integers but got {shown}")
        array = array.astype(np.int64)
    bad = np.flatnonzero((array < 1) | (array > steps))
    if bad.size:
        shown = ", ".join(f"lengths[{i}]={array[i]}" for i in bad[:5])
        raise ValueError(f"expected every length in [1, {steps}] (T={steps}) but got {shown}")
    return array.astype(np.int64)


def check_state(state, name, part_names, shape, dtype, listed=None, allow_none=False):
    """A recurrent state a user gave, as a tuple of checked arrays, one per part.

    Parameters
    ----------
    state : one array, or for a cell whose state has several parts (LSTM) a tuple or list of them
    name : how messages name the whole, e.g. ``"h0"``
    part_names : how messages name each part, e.g. ``("h0", "c0")``
    shape : (L*D, B, H), the shape of every part
    dtype : the model's dtype
    listed : the parts as a message lists them in the tuple expected (default ``part_names``)
    allow_none : a part may be None (a zero gradient); it stays None
    """
    shown = f"({', '.join(str(size) for size in shape)})"
    if len(part_names) > 1:
        if not isinstance(state, (tuple, list)) or len(state) != len(part_names):
            got = type(state).__name__ + (f" of {len(state)}" if isinstance(state, (tuple, list)) else "")
            raise ValueError(f"expected {name} as a tuple ({', '.join(listed or part_names)}) of arrays "
                             f"of shape {shown} but got {got}")
        parts = tuple(state)
    else:
        parts = (state,)
    checked = []
    for part, part_name in zip(parts, part_names):
        if part is None and allow_none:
            checked.append(None)
            continue
        if part is None:
            raise ValueError(f"expected {part_name} of shape {shown} but got None")
        array = as_float_array(part, part_name, dtype)
        check_shape(array, part_name, shape, ("L*D", "B", "H"))
        checked.append(array)
    return tuple(checked)
