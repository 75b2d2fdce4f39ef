"""LSTM cell, PyTorch's ``nn.LSTM``: gates in the order i, f, g, o (K = 4).

With ``pre = pre_x + pre_h = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` split in four blocks::

    i = σ(pre_i)    f = σ(pre_f)    g = tanh(pre_g)    o = σ(pre_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Back, with ``dh`` the total gradient reaching ``h_t`` (from the output at t and from step t+1
through ``W_hh``) and ``dc_next`` the gradient reaching ``c_t`` from step t+1: see
:func:`backward`, one equation a line. ``dpre_x = dpre_h``; ``h_{t-1}`` has no direct path
(only through ``W_hh``), ``c_{t-1}`` has one: ``dc_t * f``.
"""

import numpy as np

from .activations import sigmoid

NAME = "lstm"
NUM_GATES = 4
STATE_NAMES = ("h", "c")
SUMMED_GATES = 4  # all four gates see pre_x + pre_h only as a sum
CACHE_WIDTHS = (4, 1)  # the fast kernels keep the gates i, f, g, o and tanh(c_t)
REMEMBER_GATE = 1  # f: where it is near 1, c_t keeps c_{t-1}


def forward(pre_x, pre_h, state):
    """``pre_x``, ``pre_h``: (B, 4H); ``state``: ``(h_prev, c_prev)``, (B, H) each.
    Returns ``((h, c), cache)``."""
    _, c_prev = state
    pre_i, pre_f, pre_g, pre_o = np.split(pre_x + pre_h, 4, axis=-1)
    i, f, g, o = sigmoid(pre_i), sigmoid(pre_f), np.tanh(pre_g), sigmoid(pre_o)
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return (h, c), (i, f, g, o, c_prev, tanh_c)


def backward(dstate, cache):
    """``dstate``: ``(dh, dc_next)``, (B, H) each. Returns ``(dpre, dpre, (None, dc_prev))``,
    dpre (B, 4H)."""
    dh, dc_next = dstate
    i, f, g, o, c_prev, tanh_c = cache
    do = dh * tanh_c  # h = o * tanh(c)
    dc = dc_next + dh * o * (1 - tanh_c**2)  # both paths into c_t: from step t+1, and through h_t
    di = dc * g  # c = f * c_prev + i * g
    df = dc * c_prev
    dg = dc * i
    dc_prev = dc * f
    dpre = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=-1)
    return dpre, dpre, (None, dc_prev)
