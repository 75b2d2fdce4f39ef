"""Vanilla RNN cell with tanh, PyTorch's ``nn.RNN(nonlinearity="tanh")``.

Forward (K = 1)::

    h_t = tanh(pre_x + pre_h)          pre_x = W_ih x_t + b_ih,  pre_h = W_hh h_{t-1} + b_hh

Backward, with ``dh`` the total gradient reaching ``h_t``::

    dpre = dh * (1 - h_t²)             d tanh(a)/da = 1 - tanh(a)²
    dpre_x = dpre_h = dpre             the sum splits the gradient unchanged to both terms

There is no direct path to ``h_{t-1}``: all of it goes through ``W_hh``.
"""

import numpy as np

NUM_GATES = 1
STATE_NAMES = ("h",)


def step(pre_x, pre_h, state):
    """One step. ``pre_x``, ``pre_h``: (B, H). ``state``: ``(h_prev,)``. Returns ``((h,), h)``."""
    h = np.tanh(pre_x + pre_h)  # B,H
    return (h,), h


def step_back(dstate, cache):
    """Backward of :func:`step`. ``dstate``: ``(dh,)`` with dh (B, H); ``cache``: h (B, H)."""
    h = cache
    (dh,) = dstate
    dpre = dh * (1.0 - h * h)  # B,H  h = tanh(pre)
    return dpre, dpre, (None,)
