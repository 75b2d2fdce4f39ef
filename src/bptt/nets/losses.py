"""Losses over the positions that carry one: softmax cross-entropy and mean squared error.

Legend: N positions (any leading shape: (T, B) for many-to-many, (B,) for many-to-one),
V classes or outputs.

Both are means over the positions whose ``mask`` is True, like torch's ``cross_entropy`` and
``mse_loss`` (``reduction="mean"``) applied to ``out[mask]``: the cross-entropy divides by the
number n of such positions, the squared error by n * V (every output of every position is an
element of the mean). Positions outside the mask are ignored entirely: their targets are not
read and may hold anything (a padding id of -1, NaN). Where no position carries a loss the
loss is 0 and so is its gradient (torch would return NaN).
"""

from typing import NamedTuple

import numpy as np


def check_class_targets(targets, shape, num_classes, mask):
    """Class targets as an int64 array of ``shape``, in [0, V) where ``mask`` is True.

    Parameters
    ----------
    targets : (...) ints
    shape : the expected shape, e.g. (T, B)
    num_classes : V
    mask : bool array of ``shape``, or None for every position
    """
    array = np.asarray(targets)
    if array.dtype.kind not in "iu":
        raise TypeError(f"expected targets of integer class ids but got dtype {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"expected targets of shape {tuple(shape)} (class ids) but got {array.shape}")
    bad = (array < 0) | (array >= num_classes)
    if mask is not None:
        bad &= mask
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"expected every target class id in [0, {num_classes}) but got {array[where]} at {where}"
            f" ({int(bad.sum())} out of range)"
        )
    return array.astype(np.int64, copy=False)


def check_value_targets(targets, shape, dtype):
    """Regression targets as a float array of ``shape`` and exactly ``dtype``."""
    array = np.asarray(targets)
    if array.dtype != dtype:
        raise TypeError(f"expected targets of dtype {np.dtype(dtype).name} (the model's) but got {array.dtype}")
    if array.shape != tuple(shape):
        raise ValueError(f"expected targets of shape {tuple(shape)} but got {array.shape}")
    return array


def _count(mask, shape):
    """Number of positions carrying a loss, and the mask as 0/1 floats (None: all)."""
    if mask is None:
        return int(np.prod(shape)), None
    return int(mask.sum()), mask


class CrossEntropyCache(NamedTuple):
    """What :func:`cross_entropy_forward` keeps."""

    probs: np.ndarray  # ...,V  softmax of the logits
    targets: np.ndarray  # ...  class ids, 0 where masked out
    mask: np.ndarray | None  # ...  bool
    count: int  # n


def cross_entropy_forward(logits, targets, mask=None):
    """Mean softmax cross-entropy, ``-(1/n) Σ_{mask} log softmax(logits)[target]``.

    The log-softmax subtracts each row's max before exponentiating, so no logit overflows.

    Parameters
    ----------
    logits : (..., V) floats
    targets : (...) ints in [0, V) where ``mask`` is True (checked by the caller)
    mask : (...) bool, the positions that carry a loss; None for all

    Returns
    -------
    loss : float
    cache : CrossEntropyCache
    """
    count, mask = _count(mask, targets.shape)
    if mask is not None:
        targets = np.where(mask, targets, 0)  # ignored positions read class 0, then weigh 0
    shifted = logits - logits.max(axis=-1, keepdims=True)  # ...,V  ≤ 0, exp cannot overflow
    exp = np.exp(shifted)
    total = exp.sum(axis=-1, keepdims=True)  # ...,1
    log_probs = shifted - np.log(total)  # ...,V
    picked = np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]  # ...
    if mask is not None:
        picked = np.where(mask, picked, 0.0)
    loss = -picked.sum() / count if count else 0.0
    return float(loss), CrossEntropyCache(exp / total, targets, mask, count)


def cross_entropy_backward(dloss, cache):
    """Backward of :func:`cross_entropy_forward`: for ``ℓ = -log softmax(z)[y]``,
    ``dℓ/dz = softmax(z) - onehot(y)``, weighed by ``mask / n``.

    Parameters
    ----------
    dloss : float, the gradient of the objective with respect to the loss (1 for the loss itself)
    cache : CrossEntropyCache

    Returns
    -------
    dlogits : (..., V)
    """
    probs, targets, mask, count = cache
    if not count:
        return np.zeros_like(probs)
    dlogits = probs.copy()  # ...,V
    np.put_along_axis(dlogits, targets[..., None], np.take_along_axis(probs, targets[..., None], axis=-1) - 1.0,
                      axis=-1)
    dlogits *= dloss / count
    if mask is not None:
        dlogits = np.where(mask[..., None], dlogits, 0.0)  # a Python 0.0 keeps the dtype
    return dlogits


class SquaredErrorCache(NamedTuple):
    """What :func:`mse_forward` keeps."""

    diff: np.ndarray  # ...,V  prediction - target, 0 where masked out
    count: int  # n * V


def mse_forward(predictions, targets, mask=None):
    """Mean squared error, ``(1/(n V)) Σ_{mask} Σ_v (prediction - target)²``.

    Parameters
    ----------
    predictions : (..., V)
    targets : (..., V), same dtype (checked by the caller); read only where ``mask`` is True
    mask : (...) bool, the positions that carry a loss; None for all

    Returns
    -------
    loss : float
    cache : SquaredErrorCache
    """
    count, mask = _count(mask, predictions.shape[:-1])
    count *= predictions.shape[-1]
    diff = predictions - targets  # ...,V
    if mask is not None:
        diff = np.where(mask[..., None], diff, 0.0)
    loss = np.sum(diff * diff) / count if count else 0.0
    return float(loss), SquaredErrorCache(diff, count)


def mse_backward(dloss, cache):
    """Backward of :func:`mse_forward`: ``d (p - y)² / dp = 2 (p - y)``, over ``n V``.

    Parameters
    ----------
    dloss : float
    cache : SquaredErrorCache

    Returns
    -------
    dpredictions : (..., V)
    """
    diff, count = cache
    if not count:
        return np.zeros_like(diff)
    return diff * (2.0 * dloss / count)


LOSSES = {
    "cross_entropy": (cross_entropy_forward, cross_entropy_backward),
    "mse": (mse_forward, mse_backward),
}
