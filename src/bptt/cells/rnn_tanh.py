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
SUMMED_GATES = 1  # pre_x and pre_h enter only as their sum
CACHE_WIDTHS = ()  # backward needs h_t only, which the engine keeps as the state
REMEMBER_GATE = None  # no gate keeps the state


def step(pre_x, pre_h, state, out=None):
    """One step. ``pre_x``, ``pre_h``: (B, H). ``state``: ``(h_prev,)``.

    ``out``: None to allocate, or ``((h,), ())`` to write h (B, H) into; ``pre_h`` is then
    overwritten. Returns ``((h,), (h,))``: the cache is h_t.
    """
    if out is None:
        h = np.tanh(pre_x + pre_h)  # B,H
    else:
        ((h,), ()) = out
        np.tanh(np.add(pre_x, pre_h, out=pre_h), out=h)
    return (h,), (h,)


def step_back(dstate, cache, out=None):
    """Backward of :func:`step`. ``dstate``: ``(dh,)`` with dh (B, H); ``cache``: ``(h,)``, h (B, H).

    ``out``: None to allocate, or ``(dpre, dpre_h, work)`` (``dpre`` is written; it is
    ``dpre_h`` too). Returns ``(dpre, dpre, (None,))``.
    """
    (h,) = cache
    (dh,) = dstate
    dpre = np.empty_like(h) if out is None else out[0]  # B,H
    # h = tanh(pre): dpre = dh * (1 - h²)
    np.multiply(h, h, out=dpre)
    np.subtract(1.0, dpre, out=dpre)
    dpre *= dh
    return dpre, dpre, (None,)
