"""Comparisons the proof tests share (a helper module, not a test file)."""

import numpy as np

RTOL = 1e-10  # float64 against float64 computed in another order


def max_rel_err(actual, expected):
    """max|actual - expected| relative to the scale of ``expected``: max(max|expected|, tiny)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(np.max(np.abs(expected), initial=0.0), np.finfo(np.float64).tiny)
    return float(np.max(np.abs(actual - expected), initial=0.0) / scale)


def assert_close(name, actual, expected, rtol=RTOL):
    """Same shape, same dtype, and a relative error of at most ``rtol``."""
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    err = max_rel_err(actual, expected)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.0e}"


def as_tuple(state):
    """A state as a tuple of arrays: ``(h,)`` or LSTM's ``(h, c)``."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)
