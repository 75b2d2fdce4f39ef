"""A forward pass that keeps no cache (inference, sampling) computes exactly what the
training forward computes."""

import numpy as np
import pytest

import bptt
from bptt import recurrence
from bptt.cells import CELLS

# every test here runs with the NumPy cells and with the compiled ones
pytestmark = pytest.mark.usefixtures("each_kernels")


def as_tuple(state):
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("lengths", [None, [6, 2, 1]], ids=["full", "padded"])
@pytest.mark.parametrize("cls", [bptt.RNN, bptt.LSTM, bptt.GRU], ids=["rnn", "lstm", "gru"])
def test_no_cache_forward_equals_cached_forward_exactly(cls, lengths, dtype):
    rng = np.random.default_rng(3)
    model = cls(4, 5, 2, bidirectional=True, dtype=dtype, seed=1)
    x = rng.normal(size=(6, 3, 4)).astype(dtype)  # T,B,I
    shape = (4, 3, 5)  # L*D,B,H
    h0 = tuple(rng.normal(size=shape).astype(dtype) for _ in model.cell.STATE_NAMES)
    h0 = h0 if len(h0) > 1 else h0[0]
    y, h_n, cache = model.forward(x, h0, lengths)
    y_nc, h_n_nc, cache_nc = model.forward(x, h0, lengths, keep_cache=False)
    assert cache is not None and cache_nc is None
    assert y_nc.dtype == dtype and np.array_equal(y, y_nc)
    for a, b in zip(as_tuple(h_n), as_tuple(h_n_nc)):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("cell_name", sorted(CELLS))
def test_engine_without_cache_equals_engine_with_cache(cell_name):
    cell = CELLS[cell_name]
    rng = np.random.default_rng(4)
    T, B, I, H = 7, 2, 3, 4
    K = cell.NUM_GATES
    weights = recurrence.Weights(*(rng.normal(size=s) for s in [(K * H, I), (K * H, H), (K * H,), (K * H,)]))
    x = rng.normal(size=(T, B, I))
    state0 = tuple(rng.normal(size=(B, H)) for _ in cell.STATE_NAMES)
    y, state, cache = recurrence.forward(cell, weights, x, state0)
    y_nc, state_nc, cache_nc = recurrence.forward(cell, weights, x, state0, keep_cache=False)
    assert cache_nc is None and len(cache.x) == T
    assert np.array_equal(y, y_nc)
    assert all(np.array_equal(a, b) for a, b in zip(state, state_nc))


def test_sampling_one_step_at_a_time_equals_one_pass():
    """What a sampler does: one step per call, the state carried, no cache."""
    rng = np.random.default_rng(5)
    model = bptt.LSTM(3, 6, 2, seed=0)
    x = rng.normal(size=(5, 1, 3)).astype(np.float32)  # T,B,I
    y, (h, c), _ = model.forward(x)
    state = None
    for t in range(5):
        y_t, state, cache = model.forward(x[t:t + 1], state, keep_cache=False)
        assert cache is None
        np.testing.assert_allclose(y_t[0], y[t], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state[0], h, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(state[1], c, rtol=1e-6, atol=1e-7)
