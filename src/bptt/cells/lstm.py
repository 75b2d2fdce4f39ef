"""LSTM cell, PyTorch's ``nn.LSTM``: gates in the order i, f, g, o (K = 4).

Forward, with ``pre = pre_x + pre_h = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` split in four::

    i = σ(pre_i)    f = σ(pre_f)    g = tanh(pre_g)    o = σ(pre_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

Backward, with ``dh`` the total gradient reaching ``h_t`` (from the output at t and from
step t+1 through ``W_hh``) and ``dc`` the gradient reaching ``c_t`` from step t+1::

    do = dh * tanh(c_t)
    dc_total = dc + dh * o * (1 - tanh²(c_t))       both paths into c_t
    di = dc_total * g      df = dc_total * c_{t-1}      dg = dc_total * i
    dpre_i = di * i(1-i)   dpre_f = df * f(1-f)   dpre_g = dg * (1-g²)   dpre_o = do * o(1-o)
    dc_{t-1} (direct) = dc_total * f

``dpre_x = dpre_h = dpre``; ``h_{t-1}`` has no direct path (only through ``W_hh``).
"""

import numpy as np

NUM_GATES = 4
STATE_NAMES = ("h", "c")


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def step(pre_x, pre_h, state):
    """One step. ``pre_x``, ``pre_h``: (B, 4H). ``state``: ``(h_prev, c_prev)``, each (B, H).

    Returns ``((h, c), cache)``.
    """
    _, c_prev = state
    pre = pre_x + pre_h  # B,4H
    H = c_prev.shape[-1]
    i = _sigmoid(pre[:, 0 * H:1 * H])  # B,H
    f = _sigmoid(pre[:, 1 * H:2 * H])
    g = np.tanh(pre[:, 2 * H:3 * H])
    o = _sigmoid(pre[:, 3 * H:4 * H])
    c = f * c_prev + i * g  # B,H
    tanh_c = np.tanh(c)
    h = o * tanh_c
    return (h, c), (i, f, g, o, c_prev, tanh_c)


def step_back(dstate, cache):
    """Backward of :func:`step`. ``dstate``: ``(dh, dc)``, each (B, H).

    Returns ``(dpre, dpre, (None, dc_prev))`` with dpre (B, 4H).
    """
    dh, dc = dstate
    i, f, g, o, c_prev, tanh_c = cache
    # h = o * tanh(c): to o, and into c on top of what c_t gets from step t+1
    do = dh * tanh_c
    dc_total = dc + dh * o * (1.0 - tanh_c * tanh_c)
    # c = f * c_prev + i * g
    dpre = np.empty(i.shape[:-1] + (4 * i.shape[-1],), dtype=i.dtype)  # B,4H
    H = i.shape[-1]
    dpre[:, 0 * H:1 * H] = dc_total * g * i * (1.0 - i)  # σ' = σ(1-σ)
    dpre[:, 1 * H:2 * H] = dc_total * c_prev * f * (1.0 - f)
    dpre[:, 2 * H:3 * H] = dc_total * i * (1.0 - g * g)  # tanh' = 1 - tanh²
    dpre[:, 3 * H:4 * H] = do * o * (1.0 - o)
    dc_prev = dc_total * f
    return dpre, dpre, (None, dc_prev)
