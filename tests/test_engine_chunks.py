"""The engine takes long sequences in chunks of steps (the input projection, the sums over
time of the backward pass); any chunk size computes the same pass up to rounding."""

import numpy as np
import pytest

import bptt
from bptt.kernels import passes

# every test here runs on the reference and on the compiled passes
pytestmark = pytest.mark.usefixtures("each_kernels")


@pytest.mark.parametrize("lengths", [None, [9, 4, 1]], ids=["full", "padded"])
@pytest.mark.parametrize("cls", [bptt.RNN, bptt.LSTM, bptt.GRU], ids=["rnn", "lstm", "gru"])
def test_chunked_pass_equals_one_chunk(cls, lengths, monkeypatch):
    rng = np.random.default_rng(6)
    model = cls(3, 4, 2, bidirectional=True, dtype=np.float64, seed=2)
    x = rng.normal(size=(9, 3, 3))  # T,B,I
    dy = rng.normal(size=(9, 3, 8))  # T,B,D*H
    y, h_n, cache = model.forward(x, lengths=lengths)
    grads, dx, dh0 = model.backward(cache, dy, h_n)
    monkeypatch.setattr(passes, "GEMM_COLUMNS", 7)  # two steps of B=3 per chunk, and a rest of one
    y_c, h_n_c, cache_c = model.forward(x, lengths=lengths)
    grads_c, dx_c, dh0_c = model.backward(cache_c, dy, h_n_c)
    np.testing.assert_array_equal(y_c, y)  # the forward differs in no operation's order
    np.testing.assert_allclose(dx_c, dx, rtol=1e-12, atol=1e-14)
    for name in grads:
        np.testing.assert_allclose(grads_c[name], grads[name], rtol=1e-12, atol=1e-13, err_msg=name)
    for a, b in zip(dh0 if isinstance(dh0, tuple) else (dh0,), dh0_c if isinstance(dh0_c, tuple) else (dh0_c,)):
        # BLAS may round a product differently by the alignment of its operands (seen with
        # OpenBLAS on AVX2): equal up to rounding, not bit for bit
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
