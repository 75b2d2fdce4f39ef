"""The logistic sigmoid the gated cells share."""

import numpy as np


def sigmoid(a):
    """σ(a) = 1 / (1 + exp(-a)); its derivative is σ(1 - σ)."""
    return 1.0 / (1.0 + np.exp(-a))
