"""The fused NumPy kernel of :mod:`bptt.cells.gru`: the same arithmetic, every line one
NumPy call writing into an array the engine gives it (``out=``), so that the buffered passes
of :mod:`bptt.recurrence` run a whole sequence without allocating. The cell's module holds its
equations and the readable reference; this is speed.
"""

import numpy as np

from .activations import sigmoid


def _blocks(a, H):
    return a[:, 0 * H:1 * H], a[:, 1 * H:2 * H], a[:, 2 * H:3 * H]


def step(pre_x, pre_h, state, out=None):
    """One step. ``pre_x``, ``pre_h``: (B, 3H). ``state``: ``(h_prev,)`` with h_prev (B, H).

    ``out``: None to allocate the results, or ``((h,), (gates, pre_h_n))`` to write them into:
    the new state (B, H), the gates (B, 3H) and pre_h_n (B, H).

    Returns ``((h,), cache)`` with cache ``(gates, pre_h_n, h_prev)``.
    """
    (h_prev,) = state
    H = h_prev.shape[-1]
    if out is None:
        out = ((np.empty_like(h_prev),), (np.empty_like(pre_h), np.empty_like(h_prev)))
    (h,), (gates, pre_h_n) = out
    r, z, n = _blocks(gates, H)
    rz = np.add(pre_x[:, :2 * H], pre_h[:, :2 * H], out=gates[:, :2 * H])  # B,2H
    sigmoid(rz, out=rz)
    np.copyto(pre_h_n, pre_h[:, 2 * H:])  # backward needs it: dr = dpre_n * pre_h_n
    # n = tanh(pre_x_n + r * pre_h_n)
    np.multiply(r, pre_h_n, out=n)
    n += pre_x[:, 2 * H:]
    np.tanh(n, out=n)
    # h = (1-z) n + z h_prev = n + z * (h_prev - n)
    np.subtract(h_prev, n, out=h)
    h *= z
    h += n
    return (h,), (gates, pre_h_n, h_prev)


def step_back(dstate, cache, out=None):
    """Backward of :func:`step`. ``dstate``: ``(dh,)`` with dh (B, H).

    ``out``: None to allocate, or ``(dpre_x, dpre_h, work)``: (B, 3H) arrays for the results and
    for scratch; ``dh`` is then overwritten with ``dh_prev_direct``.

    Returns ``(dpre_x, dpre_h, (dh_prev_direct,))`` with dpre_x, dpre_h (B, 3H).
    """
    (dh,) = dstate
    gates, pre_h_n, h_prev = cache
    H = pre_h_n.shape[-1]
    if out is None:
        out = (np.empty_like(gates), np.empty_like(gates), np.empty_like(gates))
        dh = dh.copy()
    dpre_x, dpre_h, work = out
    r, z, n = _blocks(gates, H)
    dpre_r, dpre_z, dpre_n = _blocks(dpre_x, H)
    scratch = work[:, :H]
    # h = (1-z) n + z h_prev, then n = tanh(...): dpre_n = dh * (1 - z) * (1 - n²)
    np.subtract(1.0, z, out=dpre_n)
    dpre_n *= dh
    np.multiply(n, n, out=scratch)
    np.subtract(1.0, scratch, out=scratch)
    dpre_n *= scratch
    # z: dz = dh * (h_prev - n), dpre_z = dz * z(1-z)
    np.subtract(h_prev, n, out=dpre_z)
    dpre_z *= dh
    np.subtract(1.0, z, out=scratch)
    scratch *= z
    dpre_z *= scratch
    # r enters n as r * pre_h_n: dr = dpre_n * pre_h_n, dpre_r = dr * r(1-r)
    np.multiply(dpre_n, pre_h_n, out=dpre_r)
    np.subtract(1.0, r, out=scratch)
    scratch *= r
    dpre_r *= scratch
    # pre_h has the same r and z blocks; its n block is scaled by r before the sum
    np.copyto(dpre_h[:, :2 * H], dpre_x[:, :2 * H])
    np.multiply(dpre_n, r, out=dpre_h[:, 2 * H:])
    # h = ... + z * h_prev: the direct path to h_prev
    dh *= z
    return dpre_x, dpre_h, (dh,)
