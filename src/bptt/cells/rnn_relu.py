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
SUMMED_GATES = 1  # pre_x and pre_h enter only as their sum
CACHE_WIDTHS = ()  # backward needs h_t only, which the engine keeps as the state
REMEMBER_GATE = None  # no gate keeps the state


def step(pre_x, pre_h, state, out=None):
    """One step. ``pre_x``, ``pre_h``: (B, H). ``state``: ``(h_prev,)``.

    ``out``: None to allocate, or ``((h,), ())`` to write h (B, H) into; ``pre_h`` is then
    overwritten. Returns ``((h,), (h,))``: the cache is h_t.
    """
    if out is None:
        h = np.maximum(pre_x + pre_h, 0.0)  # B,H
    else:
        ((h,), ()) = out
        np.maximum(np.add(pre_x, pre_h, out=pre_h), 0.0, out=h)
    return (h,), (h,)


def step_back(dstate, cache, out=None):
    """Backward of :func:`step`. ``dstate``: ``(dh,)`` with dh (B, H); ``cache``: ``(h,)``, h (B, H).

    ``out``: None to allocate, or ``(dpre, dpre_h, work)`` (``dpre`` is written; it is
    ``dpre_h`` too). Returns ``(dpre, dpre, (None,))``.
    """
    (h,) = cache
    (dh,) = dstate
    dpre = np.multiply(dh, h > 0, out=None if out is None else out[0])  # B,H  h = relu(pre)
    return dpre, dpre, (None,)
