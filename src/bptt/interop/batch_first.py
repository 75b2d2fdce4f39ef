"""Batch-first data, shared by the ``keras`` layouts and CS231n's (``cs231n-rnn``,
``cs231n-lstm``): batch, then time, then features.

Legend: T time steps, B batch, I input features, H hidden units (CS231n: ``N = B``,
``D = I``).

- a sequence ``x`` (B, T, I) is the library's (T, B, I) with the first two axes swapped; the
  upstream gradient of the outputs (``dy``, CS231n's ``dh``) (B, T, H) likewise;
- an initial state ``h0`` (B, H) is the library's (1, B, H) without its first axis.
"""

import numpy as np


def sequence_to_torch(x):
    """(B, T, n) -> (T, B, n)."""
    return np.asarray(x).transpose(1, 0, 2)


def sequence_from_torch(x):
    """(T, B, n) -> (B, T, n)."""
    return np.asarray(x).transpose(1, 0, 2)


def state_to_torch(h0):
    """(B, H) -> (1, B, H)."""
    return np.asarray(h0)[None]


def state_from_torch(h0):
    """(1, B, H) -> (B, H)."""
    return np.asarray(h0)[0]


def sequence_shape(steps, batch, size):
    """The shape of a sequence of ``size`` features (``x``, ``dy``): (B, T, size)."""
    return (batch, steps, size)


def state_shape(batch, hidden_size):
    """The shape of an initial state (``h0``, ``c0``): (B, H)."""
    return (batch, hidden_size)
