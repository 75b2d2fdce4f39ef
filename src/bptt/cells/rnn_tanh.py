"""Vanilla RNN cell with tanh, PyTorch's ``nn.RNN(nonlinearity="tanh")`` (K = 1).

    h_t = tanh(pre_x + pre_h)          pre_x = W_ih x_t + b_ih,  pre_h = W_hh h_{t-1} + b_hh

and back, with ``dh`` the total gradient reaching ``h_t``: ``dpre = dh * (1 - h_t²)``, the same
for ``pre_x`` and ``pre_h`` (a sum passes its gradient to both terms unchanged). There is no
direct path to ``h_{t-1}``: all of it goes through ``W_hh``, in the engine.
"""

import numpy as np

NAME = "rnn_tanh"
NUM_GATES = 1
STATE_NAMES = ("h",)
SUMMED_GATES = 1  # pre_x and pre_h enter only as their sum
CACHE_WIDTHS = ()  # the fast kernels keep nothing but h_t, which the engine keeps as the state
REMEMBER_GATE = None  # no gate keeps the state


def forward(pre_x, pre_h, state):
    """``pre_x``, ``pre_h``: (B, H); ``state``: ``(h_prev,)``. Returns ``((h,), cache)``."""
    h = np.tanh(pre_x + pre_h)
    return (h,), (h,)


def backward(dstate, cache):
    """``dstate``: ``(dh,)``, (B, H). Returns ``(dpre_x, dpre_h, (None,))``."""
    (dh,), (h,) = dstate, cache
    dpre = dh * (1 - h**2)  # h = tanh(pre)
    return dpre, dpre, (None,)
