"""The fused NumPy kernel of :mod:`bptt.cells.rnn_relu`: the same arithmetic, every line one
NumPy call writing into an array the engine gives it (``out=``), so that the buffered passes
of :mod:`bptt.recurrence` run a whole sequence without allocating. The cell's module holds its
equations and the readable reference; this is speed.
"""

import numpy as np


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
