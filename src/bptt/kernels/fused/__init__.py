"""The fused NumPy kernels of the cells, by cell name: ``step(pre_x, pre_h, state, out=None)
-> (state, cache)`` and ``step_back(dstate, cache, out=None) -> (dpre_x, dpre_h,
dstate_direct)``, the arithmetic of :mod:`bptt.cells` written into the engine's buffers; the
compiled kernels keep the same step cache (``CACHE_WIDTHS`` of each cell).
"""

from . import gru, lstm, rnn_relu, rnn_tanh

FUSED = {module.__name__.rsplit(".", 1)[1]: module for module in (rnn_tanh, rnn_relu, lstm, gru)}

__all__ = ["FUSED"]
