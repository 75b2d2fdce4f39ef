"""The fused NumPy kernel of :mod:`bptt.cells.lstm`: the same arithmetic, every line one
NumPy call writing into an array the engine gives it (``out=``), so that the buffered passes
of :mod:`bptt.recurrence` run a whole sequence without allocating. The cell's module holds its
equations and the readable reference; this is speed.
"""

import numpy as np

from .activations import sigmoid


def _blocks(a, H):
    return a[:, 0 * H:1 * H], a[:, 1 * H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:4 * H]


def step(pre_x, pre_h, state, out=None):
    """One step. ``pre_x``, ``pre_h``: (B, 4H). ``state``: ``(h_prev, c_prev)``, each (B, H).

    ``out``: None to allocate the results, or ``((h, c), (gates, tanh_c))`` to write them into:
    the new state (B, H) each, the gates (B, 4H) and tanh(c_t) (B, H); ``pre_h`` is then
    overwritten.

    Returns ``((h, c), cache)`` with cache ``(gates, tanh_c, c_prev)``.
    """
    _, c_prev = state
    H = c_prev.shape[-1]
    if out is None:
        out = ((np.empty_like(c_prev), np.empty_like(c_prev)), (np.empty_like(pre_h), np.empty_like(c_prev)))
        pre_h = pre_h.copy()
    (h, c), (gates, tanh_c) = out
    pre = np.add(pre_x, pre_h, out=pre_h)  # B,4H
    i, f, g, o = _blocks(gates, H)
    sigmoid(pre, out=gates)  # i, f, o; the g block is overwritten on the next line
    np.tanh(pre[:, 2 * H:3 * H], out=g)
    # c = f * c_prev + i * g
    np.multiply(f, c_prev, out=c)
    np.multiply(i, g, out=tanh_c)  # i * g; tanh_c gets its own value below
    c += tanh_c
    # h = o * tanh(c)
    np.tanh(c, out=tanh_c)
    np.multiply(o, tanh_c, out=h)
    return (h, c), (gates, tanh_c, c_prev)


def step_back(dstate, cache, out=None):
    """Backward of :func:`step`. ``dstate``: ``(dh, dc)``, each (B, H).

    ``out``: None to allocate, or ``(dpre, dpre_h, work)``: (B, 4H) arrays for the result and
    for scratch (``dpre_h`` is unused: it equals ``dpre``); ``dc`` is then overwritten with
    ``dc_prev``.

    Returns ``(dpre, dpre, (None, dc_prev))`` with dpre (B, 4H).
    """
    dh, dc = dstate
    gates, tanh_c, c_prev = cache
    H = tanh_c.shape[-1]
    if out is None:
        out = (np.empty_like(gates), None, np.empty_like(gates))
        dc = dc.copy()
    dpre, _, work = out
    i, f, g, o = _blocks(gates, H)
    dpre_i, dpre_f, dpre_g, dpre_o = _blocks(dpre, H)
    # the activations' derivatives: σ' = σ(1-σ) for i, f, o and tanh' = 1 - g² for g
    np.subtract(1.0, gates, out=work)
    work *= gates
    dg_dpre = work[:, 2 * H:3 * H]
    np.multiply(g, g, out=dg_dpre)
    np.subtract(1.0, dg_dpre, out=dg_dpre)
    # h = o * tanh(c): to o, and into c on top of what c_t gets from step t+1
    np.multiply(dh, tanh_c, out=dpre_o)  # do = dh * tanh(c)
    into_c = dpre_i  # scratch until di is written
    np.multiply(tanh_c, tanh_c, out=into_c)
    np.subtract(1.0, into_c, out=into_c)
    into_c *= o
    into_c *= dh
    dc += into_c  # dc_total = dc + dh * o * (1 - tanh²(c))
    # c = f * c_prev + i * g
    np.multiply(dc, g, out=dpre_i)  # di
    np.multiply(dc, c_prev, out=dpre_f)  # df
    np.multiply(dc, i, out=dpre_g)  # dg
    dpre *= work  # through σ and tanh
    dc *= f  # dc_prev = dc_total * f
    return dpre, dpre, (None, dc)
