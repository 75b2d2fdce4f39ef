"""Vanilla RNN cell with ReLU, PyTorch's ``nn.RNN(nonlinearity="relu")`` (K = 1).

    h_t = relu(pre_x + pre_h)

and back: ``dpre = dh * [h_t > 0]``, relu'(a) = 1 where a > 0, else 0 (torch's choice at 0).
"""

import numpy as np

NAME = "rnn_relu"
NUM_GATES = 1
STATE_NAMES = ("h",)
SUMMED_GATES = 1  # pre_x and pre_h enter only as their sum
CACHE_WIDTHS = ()  # the fast kernels keep nothing but h_t, which the engine keeps as the state
REMEMBER_GATE = None  # no gate keeps the state


def forward(pre_x, pre_h, state):
    """``pre_x``, ``pre_h``: (B, H); ``state``: ``(h_prev,)``. Returns ``((h,), cache)``."""
    h = np.maximum(pre_x + pre_h, 0.0)
    return (h,), (h,)


def backward(dstate, cache):
    """``dstate``: ``(dh,)``, (B, H). Returns ``(dpre_x, dpre_h, (None,))``."""
    (dh,), (h,) = dstate, cache
    dpre = dh * (h > 0)  # h = relu(pre)
    return dpre, dpre, (None,)
