"""Vanilla RNN cell with ReLU, PyTorch's ``nn.RNN(nonlinearity="relu")``.

Forward (K = 1)::

    h_t = relu(pre_x + pre_h)

Backward::

    dpre = dh * [h_t > 0]              relu'(a) = 1 where a > 0, else 0 (torch's choice at 0)
    dpre_x = dpre_h = dpre
"""

import numpy as np

NUM_GATES = 1
STATE_NAMES = ("h",)


def step(pre_x, pre_h, state):
    """One step. ``pre_x``, ``pre_h``: (B, H). ``state``: ``(h_prev,)``. Returns ``((h,), h)``."""
    h = np.maximum(pre_x + pre_h, 0.0)  # B,H
    return (h,), h


def step_back(dstate, cache):
    """Backward of :func:`step`. ``dstate``: ``(dh,)`` with dh (B, H); ``cache``: h (B, H)."""
    h = cache
    (dh,) = dstate
    dpre = dh * (h > 0)  # B,H  h = relu(pre)
    return dpre, dpre, (None,)
