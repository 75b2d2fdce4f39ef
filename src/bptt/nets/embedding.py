"""Token ids into vectors: a learned embedding, or a fixed one-hot code.

Legend: T time steps, B batch, V vocabulary (input tokens), E embedding size.

``embedding_forward`` is a row lookup, ``x[t, b] = W[ids[t, b]]``. Its exact backward adds the
gradient of every position into the row it read: a token that occurs n times gets the sum of
n gradients, which is a scatter-add (``np.add.at``), not an assignment (``dW[ids] = dx`` would
keep one of the n). The one-hot code has no parameters and integer inputs, so it has no backward.
"""

from typing import NamedTuple

import numpy as np


def check_ids(ids, name, size, shape=None):
    """``ids`` as an int64 array with every entry in [0, ``size``).

    ``shape``: the expected shape, None entries matching any size, or None for any shape.
    Floats holding whole numbers are not accepted: token ids are never silently cast.
    """
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        raise TypeError(f"expected {name} of integer token ids but got dtype {array.dtype}")
    if shape is not None and (
        array.ndim != len(shape) or any(s is not None and s != got for s, got in zip(shape, array.shape))
    ):
        shown = ", ".join("*" if s is None else str(s) for s in shape)
        raise ValueError(f"expected {name} of shape ({shown}) but got {array.shape}")
    bad = np.argwhere((array < 0) | (array >= size))
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"expected every token id of {name} in [0, {size}) but got {array[where]} at {where} "
            f"({len(bad)} out of range)"
        )
    return array.astype(np.int64, copy=False)


class EmbeddingCache(NamedTuple):
    """What :func:`embedding_forward` keeps: the ids read and the table's shape and dtype."""

    ids: np.ndarray  # T,B
    weight_shape: tuple  # V,E
    dtype: np.dtype


def embedding_forward(params, ids):
    """Look up one row of ``params["weight"]`` per token id.

    Parameters
    ----------
    params : {"weight": (V, E)}
    ids : (T, B) ints in [0, V) (any leading shape works), checked by the caller

    Returns
    -------
    x : (T, B, E)
    cache : EmbeddingCache
    """
    weight = params["weight"]
    x = weight[ids]  # T,B,E  a copy: fancy indexing never returns a view
    return x, EmbeddingCache(ids, weight.shape, weight.dtype)


def embedding_backward(dx, cache):
    """Backward of :func:`embedding_forward`: ``x[t, b] = W[ids[t, b]]`` sends ``dx[t, b]`` to
    row ``ids[t, b]`` of ``dW``, summed over repeats.

    Parameters
    ----------
    dx : (T, B, E)
    cache : EmbeddingCache

    Returns
    -------
    grads : {"weight": (V, E)}. There is no gradient of the input: ids are integers.
    """
    dweight = np.zeros(cache.weight_shape, dtype=cache.dtype)  # V,E
    E = cache.weight_shape[1]
    np.add.at(dweight, cache.ids.reshape(-1), dx.reshape(-1, E))
    return {"weight": dweight}


def one_hot(ids, size, dtype):
    """The one-hot code of ``ids``: ``x[t, b, v] = 1`` where ``v == ids[t, b]``, else 0.

    Parameters
    ----------
    ids : (T, B) ints in [0, ``size``), checked by the caller
    size : V, the length of each code vector
    dtype : float32 or float64

    Returns
    -------
    x : (T, B, V)
    """
    return np.eye(size, dtype=dtype)[ids]  # T,B,V
