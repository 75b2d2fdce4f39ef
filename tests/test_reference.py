"""The reference engine (``bptt.reference``, the readable one the derivation links to) and the
fast one (``bptt.recurrence``, buffered NumPy and compiled C) compute the same: every cell,
both dtypes, lengths, B = 1 and T = 1, non-zero initial states and different biases; and the
variants only the reference computes (cut paths, window edges) replay the fast engine's pass
faithfully. (Their own correctness is proven against torch in tests/test_windows.py.)"""

import numpy as np
import pytest

from bptt import recurrence, reference
from bptt.kernels import passes
from bptt.cells import CELLS
from bptt.layers import layer_backward, layer_weights, param_shapes


def _problem(cell, T, B, dtype, seed, lengths=None):
    rng = np.random.default_rng(seed)
    I, H = 3, 4
    params = {k: rng.normal(0.0, 0.6, s).astype(dtype) for k, s in param_shapes(cell, I, H, 1, 1).items()}
    weights = layer_weights(params, 0, 0)
    x = rng.normal(size=(T, B, I)).astype(dtype)
    state0 = tuple(rng.normal(0.0, 0.5, (B, H)).astype(dtype) for _ in cell.STATE_NAMES)
    dy = rng.normal(size=(T, B, H)).astype(dtype)
    dstate = tuple(rng.normal(size=(B, H)).astype(dtype) for _ in cell.STATE_NAMES)
    mask = None if lengths is None else recurrence.length_mask(lengths, T)
    return weights, x, state0, dy, dstate, mask


def _assert_same(got, want, dtype, what):
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    scale = np.max(np.abs(want)) or 1.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


@pytest.mark.parametrize("cell_name", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T, B, lengths", [(6, 3, None), (7, 3, [7, 4, 1]), (1, 1, None), (9, 1, [9])])
def test_reference_equals_the_fast_engine(cell_name, dtype, T, B, lengths, each_kernels):
    cell = CELLS[cell_name]
    weights, x, state0, dy, dstate, mask = _problem(cell, T, B, dtype, seed=len(cell_name) + T, lengths=lengths)
    y, state_n, cache = recurrence.forward(cell, weights, x, state0, mask)
    ref_y, ref_state_n, ref_cache = reference.forward(cell, weights, x, state0, mask)
    _assert_same(ref_y, y, dtype, "y")
    for got, want in zip(ref_state_n, state_n):
        _assert_same(got, want, dtype, "state_n")
    _assert_same_grads(reference.backward(dy, dstate, ref_cache), recurrence.backward(dy, dstate, cache), dtype)


@pytest.mark.parametrize("cell_name", list(CELLS))
@pytest.mark.parametrize("lengths, cut, windows", [(None, "hidden", None), ([6, 3], "cell", None),
                                                   ([6, 4], None, 3), (None, "hidden", 2)])
def test_variants_replay_the_fast_engines_pass(cell_name, lengths, cut, windows, each_kernels):
    """A cut path or window edges run on the reference, replaying the pass the fast engine
    kept: the same as the reference's own pass."""
    cell = CELLS[cell_name]
    weights, x, state0, dy, dstate, mask = _problem(cell, 6, 2, np.float64, seed=3, lengths=lengths)
    edges = None if windows is None else recurrence.window_edges(recurrence.Window(windows, windows), 6, lengths)
    _, _, cache = recurrence.forward(cell, weights, x, state0, mask)
    _, _, ref_cache = reference.forward(cell, weights, x, state0, mask)
    _assert_same_grads(reference.backward(dy, dstate, ref_cache, cut, edges),
                       layer_backward(dy, dstate, cache, cut, edges), np.float64)


def _assert_same_grads(reference_result, engine_result, dtype):
    (ref_grads, ref_dx, ref_dstate0), (grads, dx, dstate0) = reference_result, engine_result
    for name in recurrence.Weights._fields:
        _assert_same(getattr(ref_grads, name), getattr(grads, name), dtype, name)
        assert getattr(ref_grads, name).dtype == dtype
    _assert_same(ref_dx, dx, dtype, "dx")
    for got, want in zip(ref_dstate0, dstate0):
        _assert_same(got, want, dtype, "dstate0")


@pytest.mark.parametrize("cell_name", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_padded_batch_runs_whole_on_the_threads(cell_name, dtype):
    """A right-padded batch at B > 1 runs on the compiled passes' threads (nothing falls back
    to a step at a time), over a backward of two chunks (``GEMM_COLUMNS // B`` steps each), and
    equals the reference: lengths from 1 to T, the longest not first, and dy non-zero past
    each end (which must not count)."""
    from bptt import kernels
    from bptt.kernels.library import choose

    if choose() is None:
        pytest.skip("the compiled kernels were not built at install (no C compiler then)")
    cell = CELLS[cell_name]
    T, B = 70, 70
    assert passes.GEMM_COLUMNS // B < T  # the backward runs in two chunks
    lengths = np.random.default_rng(5).integers(1, T + 1, B)
    lengths[[0, -1]], lengths[B // 2] = (1, 5), T
    weights, x, state0, dy, dstate, mask = _problem(cell, T, B, dtype, seed=11, lengths=lengths)
    before = kernels.selected(), kernels.threads()
    kernels.use("c", threads=2)
    try:
        y, state_n, cache = recurrence.forward(cell, weights, x, state0, mask)
        engine = recurrence.backward(dy, dstate, cache)
    finally:
        kernels.use(before[0], threads=before[1])
    assert cache.h_rows is not None  # the threads ran the forward (only they keep h_rows)
    ref_y, ref_state_n, ref_cache = reference.forward(cell, weights, x, state0, mask)
    _assert_same(ref_y, y, dtype, "y")
    for got, want in zip(ref_state_n, state_n):
        _assert_same(got, want, dtype, "state_n")
    _assert_same_grads(reference.backward(dy, dstate, ref_cache), engine, dtype)
