"""The data layout of the popular course's RNN assignments, shared by ``coursera-rnn`` and
``coursera-lstm``: features first, then the batch, then time.

Legend: T time steps, B batch, I input features, H hidden units. In the course's letters
``n_x = I``, ``n_a = H``, ``m = B``, ``T_x = T``, and ``a`` is the hidden state ``h``.

- a sequence ``x`` (n_x, m, T_x) is the library's (T, B, I) with the axes reversed;
  the upstream gradient ``da`` (n_a, m, T_x) and the outputs ``a`` likewise;
- an initial state ``a0`` (n_a, m) is the library's (1, B, H) transposed.
"""

import numpy as np


def sequence_to_torch(x):
    """(n, m, T_x) -> (T, B, n)."""
    return np.asarray(x).transpose(2, 1, 0)


def sequence_from_torch(x):
    """(T, B, n) -> (n, m, T_x)."""
    return np.asarray(x).transpose(2, 1, 0)


def state_to_torch(a0):
    """(n_a, m) -> (1, B, H)."""
    return np.asarray(a0).T[None]


def state_from_torch(h0):
    """(1, B, H) -> (n_a, m)."""
    return np.asarray(h0)[0].T


def sequence_shape(steps, batch, size):
    """The shape of a sequence of ``size`` features (``x``, ``da``): (size, m, T_x)."""
    return (size, batch, steps)


def state_shape(batch, hidden_size):
    """The shape of an initial state (``a0``, ``c0``): (n_a, m)."""
    return (hidden_size, batch)
