"""The per-step linear head, ``torch.nn.Linear``'s convention: ``out = y Wᵀ + b``.

Legend: B batch (any leading shape: (T, B) for a many-to-many head, (B,) for many-to-one),
D*H the recurrent stack's output width, V outputs (classes or regression targets).
"""

from typing import NamedTuple

import numpy as np


class HeadCache(NamedTuple):
    """What :func:`head_forward` keeps: its input and its weight."""

    y: np.ndarray  # ...,D*H
    weight: np.ndarray  # V,D*H


def head_forward(params, y):
    """Apply the same affine map at every step.

    Parameters
    ----------
    params : {"weight": (V, D*H), "bias": (V,)}
    y : (..., D*H), e.g. (T, B, D*H)

    Returns
    -------
    out : (..., V)
    cache : HeadCache
    """
    weight, bias = params["weight"], params["bias"]
    # one GEMM over all leading positions (a stacked matmul would run one per step)
    out = (y.reshape(-1, y.shape[-1]) @ weight.T + bias).reshape(y.shape[:-1] + (weight.shape[0],))  # ...,V
    return out, HeadCache(y, weight)


def head_backward(dout, cache):
    """Backward of :func:`head_forward`, ``out = y Wᵀ + b``: the weight's gradient is summed
    over every step and sequence, as one GEMM.

    Parameters
    ----------
    dout : (..., V)
    cache : HeadCache

    Returns
    -------
    grads : {"weight": (V, D*H), "bias": (V,)}
    dy : (..., D*H)
    """
    y, weight = cache
    V, DH = weight.shape
    dout_2d = dout.reshape(-1, V)  # N,V   N = all leading positions
    grads = {
        "weight": dout_2d.T @ y.reshape(-1, DH),  # V,D*H   Σ_n dout_nᵀ y_n
        "bias": dout_2d.sum(axis=0),  # V
    }
    dy = (dout_2d @ weight).reshape(y.shape)  # ...,D*H
    return grads, dy
