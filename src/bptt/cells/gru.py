"""GRU cell, PyTorch's ``nn.GRU``: gates in the order r, z, n (K = 3).

With ``pre_x = W_ih x_t + b_ih`` and ``pre_h = W_hh h_{t-1} + b_hh`` split in three blocks::

    r = σ(pre_x_r + pre_h_r)
    z = σ(pre_x_z + pre_h_z)
    n = tanh(pre_x_n + r * pre_h_n)       the reset gate scales W_hn h + b_hn, bias included
    h_t = (1 - z) * n + z * h_{t-1}

Unlike RNN and LSTM, ``dpre_x`` and ``dpre_h`` differ in the n block (``dpre_h_n = dpre_x_n *
r``), which is why ``b_ih`` and ``b_hh`` do not enter as a sum; ``h_{t-1}`` has a direct path,
``dh * z``, beside the one through ``W_hh``.
"""

import numpy as np

from .activations import sigmoid

NAME = "gru"
NUM_GATES = 3
STATE_NAMES = ("h",)
SUMMED_GATES = 2  # r and z see pre_x + pre_h only as a sum; n does not
CACHE_WIDTHS = (3, 1)  # the fast kernels keep the gates r, z, n and pre_h_n
REMEMBER_GATE = 1  # z: where it is near 1, h_t keeps h_{t-1}


def forward(pre_x, pre_h, state):
    """``pre_x``, ``pre_h``: (B, 3H); ``state``: ``(h_prev,)``. Returns ``((h,), cache)``."""
    (h_prev,) = state
    pre_x_r, pre_x_z, pre_x_n = np.split(pre_x, 3, axis=-1)
    pre_h_r, pre_h_z, pre_h_n = np.split(pre_h, 3, axis=-1)
    r = sigmoid(pre_x_r + pre_h_r)
    z = sigmoid(pre_x_z + pre_h_z)
    n = np.tanh(pre_x_n + r * pre_h_n)
    h = (1 - z) * n + z * h_prev
    return (h,), (r, z, n, pre_h_n, h_prev)


def backward(dstate, cache):
    """``dstate``: ``(dh,)``, (B, H). Returns ``(dpre_x, dpre_h, (dh_prev_direct,))``, (B, 3H)
    and (B, H)."""
    (dh,) = dstate
    r, z, n, pre_h_n, h_prev = cache
    dn = dh * (1 - z)  # h = (1 - z) * n + z * h_prev
    dz = dh * (h_prev - n)
    dh_prev = dh * z
    dpre_n = dn * (1 - n**2)  # n = tanh(pre_x_n + r * pre_h_n)
    dr = dpre_n * pre_h_n
    dpre_r = dr * r * (1 - r)
    dpre_z = dz * z * (1 - z)
    dpre_x = np.concatenate([dpre_r, dpre_z, dpre_n], axis=-1)
    dpre_h = np.concatenate([dpre_r, dpre_z, dpre_n * r], axis=-1)
    return dpre_x, dpre_h, (dh_prev,)
