"""The activations the fused kernels share, written into arrays they are given."""

import numpy as np


def sigmoid(a, out):
    """σ(a) = 1 / (1 + exp(-a)) into ``out``, in place where ``out`` is ``a``. Returns ``out``.

    Its derivative, which the cells' backwards use, is σ(1 - σ).
    """
    np.negative(a, out=out)
    np.exp(out, out=out)
    out += 1.0
    return np.divide(1.0, out, out=out)
