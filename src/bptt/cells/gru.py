"""GRU cell, PyTorch's ``nn.GRU``: gates in the order r, z, n (K = 3).

Forward, with ``pre_x = W_ih x_t + b_ih`` and ``pre_h = W_hh h_{t-1} + b_hh`` split in three::

    r = σ(pre_x_r + pre_h_r)
    z = σ(pre_x_z + pre_h_z)
    n = tanh(pre_x_n + r * pre_h_n)       the reset gate scales W_hn h + b_hn, bias included
    h_t = (1 - z) * n + z * h_{t-1}

Backward, with ``dh`` the total gradient reaching ``h_t``::

    dn = dh * (1 - z)          dz = dh * (h_{t-1} - n)
    dpre_x_n = dn * (1 - n²)   dpre_h_n = dpre_x_n * r      dr = dpre_x_n * pre_h_n
    dpre_r = dr * r(1-r)       dpre_z = dz * z(1-z)         (the same in pre_x and pre_h)
    dh_{t-1} (direct) = dh * z

Unlike RNN and LSTM, ``dpre_x`` and ``dpre_h`` differ (in the n block), which is why
``b_ih`` and ``b_hh`` do not enter as a sum.
"""

import numpy as np

NUM_GATES = 3
STATE_NAMES = ("h",)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def step(pre_x, pre_h, state):
    """One step. ``pre_x``, ``pre_h``: (B, 3H). ``state``: ``(h_prev,)`` with h_prev (B, H).

    Returns ``((h,), cache)``.
    """
    (h_prev,) = state
    H = h_prev.shape[-1]
    rz = _sigmoid(pre_x[:, :2 * H] + pre_h[:, :2 * H])  # B,2H
    r = rz[:, :H]
    z = rz[:, H:]
    pre_h_n = pre_h[:, 2 * H:]  # B,H
    n = np.tanh(pre_x[:, 2 * H:] + r * pre_h_n)
    h = n + z * (h_prev - n)  # = (1-z) n + z h_prev
    return (h,), (r, z, n, pre_h_n, h_prev)


def step_back(dstate, cache):
    """Backward of :func:`step`. ``dstate``: ``(dh,)`` with dh (B, H).

    Returns ``(dpre_x, dpre_h, (dh_prev_direct,))`` with dpre_x, dpre_h (B, 3H).
    """
    (dh,) = dstate
    r, z, n, pre_h_n, h_prev = cache
    H = r.shape[-1]
    dpre_x = np.empty(r.shape[:-1] + (3 * H,), dtype=r.dtype)  # B,3H
    # h = (1-z) n + z h_prev
    dpre_n = dh * (1.0 - z) * (1.0 - n * n)  # through n = tanh(pre_x_n + r * pre_h_n)
    dpre_x[:, 0 * H:1 * H] = dpre_n * pre_h_n * r * (1.0 - r)  # r enters n as r * pre_h_n
    dpre_x[:, 1 * H:2 * H] = dh * (h_prev - n) * z * (1.0 - z)
    dpre_x[:, 2 * H:3 * H] = dpre_n
    dpre_h = dpre_x.copy()
    dpre_h[:, 2 * H:] *= r  # pre_h_n is scaled by r before the sum
    return dpre_x, dpre_h, (dh * z,)
