"""The compiled kernels (``bptt.kernels``): the C computes what the reference computes,
through the public models and step by step; their activations are accurate to a few units in
the last place; NaN passes through; kernels the install did not build are reported as
KernelsUnavailable; every instruction set the install built computes it; a plan refuses arguments
that would let C touch memory outside its arrays.

Every test that runs C loads the kernels the install built (skipped where it built none) and
puts the selection back afterwards.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell,
L layers, D directions, F features of a kernel array (a multiple of H).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bptt import kernels
from bptt.cells import CELLS
from bptt.kernels import library, passes, plan
from bptt.layers import make_rnn

from assertions import as_tuple, assert_close  # noqa: E402

NOT_BUILT = "the install built no compiled kernels here (no C compiler then)"

# compiled against NumPy: the activations differ by a few ulp (see the accuracy tests), the
# products sum in another order than BLAS, with FMAs. float64 elementwise, with a floor
# relative to each array's largest element; float32 relative to it (measured 4.9e-7): the
# gradients are sums over time and batch in which a small element carries the rounding of the
# large terms that cancelled in it (float64: 1.7e-14 at 9e-4 in an array whose largest is 27)
FLOAT64_RTOL, FLOAT64_FLOOR = 1e-12, 1e-14
FLOAT32_RTOL = 1e-5
ULP_BOUND = 4  # measured at most 2.44 ulp on the grid below (2.5 over 800k random inputs)


@pytest.fixture(scope="module")
def built_kernels():
    """The variant the install built that this CPU runs best (``library.load`` as a user calls it)."""
    if library.choose() is None:
        pytest.skip(NOT_BUILT)
    return library.load()[1]


@pytest.fixture
def restore_kernels(built_kernels, monkeypatch):
    """The test may select either kernels; the ones selected before are put back after it."""
    monkeypatch.setattr(kernels, "MIN_STEPS", 1)  # the short sequences here run the compiled path
    before = kernels.selected()
    try:
        yield
    finally:
        kernels.use(before)


@pytest.fixture(params=library.VARIANTS)
def variant(request, restore_kernels, monkeypatch):
    """Each variant the install built and this CPU runs, loaded in place of the best: a user's
    CPU may run any of them."""
    if request.param not in library.built() or not library.runnable(request.param):
        pytest.skip(f"{request.param} not built at install, or this CPU does not run it")
    monkeypatch.setenv("BPTT_ISA", request.param)
    loaded, name = library.load()
    # unpinned: a variant's pool runs no pass after its tests, so no later pass would unpin it
    # (an earlier in-process `bptt train` leaves pin=True selected)
    monkeypatch.setitem(kernels._selected, "pin", False)
    monkeypatch.setitem(kernels._selected, "library", loaded)
    monkeypatch.setitem(kernels._selected, "isa", name)
    return name


# 1. compiled equals the reference through the public models

KINDS = ("rnn", "rnn_relu", "lstm", "gru")
CUTS = {"rnn": (None, "hidden"), "rnn_relu": (None, "hidden"), "lstm": (None, "hidden", "cell"),
        "gru": (None, "hidden", "cell")}
# B, T, lengths, L, bidirectional, depth (truncated backward), GEMM_COLUMNS (None: the engine's)
CONFIGS = {
    "B1-T1": (1, 1, None, 1, False, None, None),
    "B1-T6-L2-bi": (1, 6, None, 2, True, None, None),
    "B1-T6-padded": (1, 6, [4], 1, False, None, None),
    # one padded sequence on the backend (T >= MIN_STEPS): its steps, then the state carried
    "B1-T12-padded-L2-bi": (1, 12, [9], 2, True, None, None),
    "B1-T12-padded-chunks": (1, 12, [10], 1, False, None, 4),  # chunks of 4, 4 and 2 steps
    "B1-T6-chunks": (1, 6, None, 2, False, None, 4),  # chunks of 4 steps and 2
    "B3-T1-bi": (3, 1, None, 1, True, None, None),
    "B3-T6-padded-L2-bi": (3, 6, [6, 2, 1], 2, True, None, None),
    "B3-T6-padded-chunks": (3, 6, [6, 2, 1], 1, True, None, 4),  # chunks of one step
    "B3-T6-depth2": (3, 6, None, 2, False, 2, None),
    "B9-T4-padded": (9, 4, [4, 1, 3, 2, 4, 4, 1, 2, 3], 1, False, None, None),
    # the threaded passes: a tile of whole vectors and a tail of one column, and chunks of 4, 4, 1
    "B33-T9-L2-bi": (33, 9, None, 2, True, None, None),
    "B5-T9-chunks": (5, 9, None, 1, False, None, 20),
}
I, H = 4, 13  # H odd and above a vector's width: the loops' vector body and their remainder


def _assert_close64(got, want, name=""):
    """float64 elementwise within FLOAT64_RTOL, or FLOAT64_FLOOR of the largest finite |want|
    (at least 1); NaN where ``want`` has NaN."""
    largest = np.max(np.abs(want), where=np.isfinite(want), initial=1.0)
    np.testing.assert_allclose(got, want, rtol=FLOAT64_RTOL, atol=FLOAT64_FLOOR * largest, err_msg=name)


def _assert_same(name, got, want, dtype):
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    if got.dtype == np.float64:
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        _assert_close64(got, want, name)
    else:
        assert_close(name, got, want, rtol=FLOAT32_RTOL)


def _passes(model, x, h0, lengths, dy, dh_n, cuts, depth):
    """Forward with and without cache, and a backward per cut, all from the same cache."""
    y, h_n, cache = model.forward(x, h0, lengths)
    y_inference, h_n_inference, none = model.forward(x, h0, lengths, keep_cache=False)
    assert none is None
    backwards = {cut: model.backward(cache, dy, dh_n, depth=depth, cut=cut) for cut in cuts}
    return y, h_n, y_inference, h_n_inference, backwards


# threads: 1 and 3 on the threaded passes at B > 1 (H = 13
# is, backward, two panels of 12 units: two threads, one with a single unit; forward, panels of
# 12 / K units: LSTM 5 panels of 3 on three threads, the last with one unit)
@pytest.mark.parametrize("threads", [1, 3], ids=["one-thread", "threaded"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_model_equals_the_reference(kind, config, dtype, threads, variant, monkeypatch):
    B, T, lengths, L, bidirectional, depth, gemm_columns = CONFIGS[config]
    if gemm_columns is not None:
        monkeypatch.setattr(passes, "GEMM_COLUMNS", gemm_columns)
    rng = np.random.default_rng([KINDS.index(kind), list(CONFIGS).index(config), np.dtype(dtype).itemsize])
    model = make_rnn(kind, I, H, L, bidirectional=bidirectional, dtype=dtype, seed=7)
    for name, value in model.params.items():  # the default init: every bias non-zero, b_ih != b_hh
        if name.startswith("bias_ih"):
            assert np.all(value != 0) and np.all(value != model.params[name.replace("_ih", "_hh")]), name
    D = 2 if bidirectional else 1
    x = rng.normal(size=(T, B, I)).astype(dtype)  # T,B,I
    parts = len(model.cell.STATE_NAMES)
    h0 = tuple(rng.normal(size=(L * D, B, H)).astype(dtype) for _ in range(parts))  # L*D,B,H each
    dh_n = tuple(rng.normal(size=(L * D, B, H)).astype(dtype) for _ in range(parts))
    dy = rng.normal(size=(T, B, D * H)).astype(dtype)  # T,B,D*H
    public = (lambda s: s) if parts > 1 else (lambda s: s[0])
    arguments = (model, x, public(h0), lengths, dy, public(dh_n), CUTS[kind], depth)

    kernels.use("reference")
    want = _passes(*arguments)
    kernels.use("c", threads=threads)
    assert kernels.isa() == variant
    got = _passes(*arguments)
    kernels.use("reference", threads=1)
    again = _passes(*arguments)

    y, h_n, y_inference, h_n_inference, backwards = got
    y_np, h_n_np, _, _, backwards_np = want
    _assert_same("y", y, y_np, dtype)
    _assert_same("y without cache", y_inference, y_np, dtype)
    for k, (part, part_inference, part_np) in enumerate(zip(as_tuple(h_n), as_tuple(h_n_inference), as_tuple(h_n_np))):
        _assert_same(f"state {k}", part, part_np, dtype)
        _assert_same(f"state {k} without cache", part_inference, part_np, dtype)
    for cut, (grads, dx, dh0) in backwards.items():
        grads_np, dx_np, dh0_np = backwards_np[cut]
        assert list(grads) == list(grads_np) == list(model.params)
        for name in grads:
            _assert_same(f"cut={cut}: d{name}", grads[name], grads_np[name], dtype)
        _assert_same(f"cut={cut}: dx", dx, dx_np, dtype)
        for k, (part, part_np) in enumerate(zip(as_tuple(dh0), as_tuple(dh0_np))):
            _assert_same(f"cut={cut}: d state0 {k}", part, part_np, dtype)
    # the cuts change the gradients (they are not all the same pass), and the compiled pass
    # left nothing behind that changes the NumPy pass after it (equal up to rounding: BLAS may
    # round by the alignment of the buffers it is given, see test_engine_chunks)
    if len(backwards) > 1 and T > 1:
        assert not np.allclose(backwards[None][1], backwards["hidden"][1])
    _assert_same("y, NumPy again", again[0], want[0], dtype)
    for cut in backwards:
        _assert_same(f"cut={cut}: dx, NumPy again", again[4][cut][1], backwards_np[cut][1], dtype)


# 2. accuracy of the C activations

def _stack(n, B, F, dtype):
    """n arrays (B, F) as the engine lays them out: feature-major, B contiguous."""
    return np.zeros((n, F, B), dtype).transpose(0, 2, 1)  # n,B,F views


def _forward_step(cell, dtype, pre_x):
    """One compiled step of ``cell`` on (B, K*H) ``pre_x``, with ``pre_h`` and the state
    entering zero; returns the new state and the cache arrays, (B, ...) each."""
    compiled = kernels.compiled(cell, dtype, 1)
    B, KH = pre_x.shape
    H = KH // cell.NUM_GATES
    pre_x_stack, pre_h_stack = _stack(1, B, KH, dtype), _stack(1, B, KH, dtype)
    pre_x_stack[0] = pre_x
    entering = [_stack(1, B, H, dtype) for _ in cell.STATE_NAMES]
    leaving = [_stack(1, B, H, dtype) for _ in cell.STATE_NAMES]
    kept = [_stack(1, B, width * H, dtype) for width in cell.CACHE_WIDTHS]
    steps = compiled.forward_steps(B, H, (pre_x_stack, 0), (pre_h_stack, 0), [(s, 0) for s in entering],
                                   [(s, 0) for s in leaving], [(s, 0) for s in kept], 1)
    steps(0)
    return [s[0] for s in leaving], [s[0] for s in kept]


def _grid(dtype):
    """Values where the activations' formulas change (0.25: tanh's series and exp), tiny
    ones, large ones, infinities, and a dense sweep of the range where they vary."""
    edges = [0.0, 1e-30, 1e-8, 1e-5, 1e-3, 0.1, 0.24, 0.249, 0.2499999, 0.25, 0.2500001, 0.251, 0.26, 0.5,
             0.7, 1.0, 2.0, 3.0, 5.0, 10.0, 17.0, 20.0, 40.0, 87.0, 88.5, 100.0, 708.5, 710.0, 1e4, np.inf]
    sweep = np.linspace(-25.0, 25.0, 4001)
    logs = np.geomspace(1e-38, 1e3, 600)
    grid = np.concatenate([edges, np.negative(edges), sweep, logs, -logs]).astype(dtype)
    return np.resize(grid, -(-len(grid) // 8) * 8)  # a multiple of 8, for B=8


WIDER = {np.dtype(np.float32): np.float64, np.dtype(np.float64): np.longdouble}


def _reference(dtype, values):
    """tanh and the sigmoid of ``values`` computed by NumPy in a wider type (longdouble for
    float64, where the platform has one wider than double)."""
    wide = values.astype(WIDER[np.dtype(dtype)])
    with np.errstate(over="ignore"):  # exp(1e4): inf, and 1 / inf = 0, as it should
        return np.tanh(wide), 1 / (1 + np.exp(-wide))


def _ulp_error(got, reference, dtype):
    """|got - reference| in units in the last place of ``dtype`` at the reference, where the
    reference is a normal number (the others are for :func:`_assert_underflow`)."""
    tiny = np.finfo(dtype).tiny
    normal = np.abs(reference) >= tiny
    ulp = np.spacing(np.abs(reference[normal]).astype(dtype)).astype(reference.dtype)
    return np.abs(got[normal].astype(reference.dtype) - reference[normal]) / ulp


def _assert_accurate(name, got, reference, dtype, values):
    error = _ulp_error(got, reference, dtype)
    worst = np.argmax(error)
    assert error[worst] <= ULP_BOUND, (
        f"{name}({values[np.abs(reference) >= np.finfo(dtype).tiny][worst]!r}): {error[worst]:.2f} ulp")
    _assert_underflow(name, got, reference, dtype)


def _assert_underflow(name, got, reference, dtype):
    """Where the exact result is below the smallest normal number: tanh of a subnormal, and
    σ(x) for x < -87.3 in float32, x < -708 in float64, where the C exp clamps its argument
    (near the clamp σ is a subnormal of about the right size, past it 0, as NumPy's).
    Allowed within one smallest normal number, with the sign of the exact result or zero."""
    tiny = np.finfo(dtype).tiny
    below = np.abs(reference) < tiny
    got, reference = got[below].astype(reference.dtype), reference[below]
    assert np.all(got * reference >= 0) and np.all(np.abs(got - reference) <= tiny), name


def _columns(values, B):
    """The grid as (B, H), each value once."""
    return values.reshape(-1, B).T  # B,H


def _flat(a):
    """Inverse of :func:`_columns`."""
    return a.T.reshape(-1)


@pytest.mark.parametrize("B", [1, 8], ids=["B1", "B8"])  # cells.c's two loop nests
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_activations_are_accurate_to_a_few_ulp(dtype, B, restore_kernels):
    kernels.use("c")
    values = _grid(dtype)
    tanh, sigmoid = _reference(dtype, values)
    pre = _columns(values, B)  # B,H
    H = pre.shape[1]
    # rnn_tanh with pre_h = 0: h = tanh(pre_x)
    (h,), _ = _forward_step(CELLS["rnn_tanh"], dtype, pre)
    _assert_accurate("rnn_tanh: tanh", _flat(h), tanh, dtype, values)
    # lstm with every gate's pre_x the grid and c_prev = 0: gates σ, σ, tanh, σ, and tanh(c_t)
    (_, c), (gates, tanh_c) = _forward_step(CELLS["lstm"], dtype, np.tile(pre, 4))
    for k, (gate, reference) in enumerate(zip("ifgo", (sigmoid, sigmoid, tanh, sigmoid))):
        _assert_accurate(f"lstm: gate {gate}", _flat(gates[:, k * H:(k + 1) * H]), reference, dtype, values)
    tanh_of_c, _ = _reference(dtype, _flat(c))
    _assert_accurate("lstm: tanh(c)", _flat(tanh_c), tanh_of_c, dtype, _flat(c))
    # gru with pre_h = 0: r, z = σ, n = tanh
    _, (gru_gates, _) = _forward_step(CELLS["gru"], dtype, np.tile(pre, 3))
    for k, (gate, reference) in enumerate(zip("rzn", (sigmoid, sigmoid, tanh))):
        _assert_accurate(f"gru: gate {gate}", _flat(gru_gates[:, k * H:(k + 1) * H]), reference, dtype, values)


def test_activations_at_the_extremes(restore_kernels):
    """tanh(±0) = 0, tanh(±inf) = ±1, σ(0) = 1/2, σ(+inf) = 1 and σ(-inf) = σ(-1e4) = 0
    exactly: past the clamp of its argument exp gives infinity, not its value at the clamp."""
    kernels.use("c")
    for dtype in (np.float32, np.float64):
        values = np.array([0.0, -0.0, np.inf, -np.inf, 1e4, -1e4], dtype)
        (_, _), (gates, _) = _forward_step(CELLS["lstm"], dtype, np.tile(values[None], 4))
        H = len(values)
        i, g = gates[0, :H], gates[0, 2 * H:3 * H]
        np.testing.assert_array_equal(g, [0.0, 0.0, 1.0, -1.0, 1.0, -1.0])
        np.testing.assert_array_equal(i, [0.5, 0.5, 1.0, 0.0, 1.0, 0.0])


# 3. NaN in, NaN out

@pytest.mark.parametrize("B", [1, 3], ids=["B1", "B3"])
@pytest.mark.parametrize("kind", KINDS)
def test_nan_in_gives_nan_out(kind, B, restore_kernels):
    rng = np.random.default_rng(11)
    model = make_rnn(kind, I, H, 2, dtype=np.float64, seed=3)
    x = rng.normal(size=(5, B, I))  # T,B,I
    x[2, B - 1, 1] = np.nan  # the last sequence, from step 2 on
    dy = rng.normal(size=(5, B, H))
    kernels.use("c")
    y, h_n, cache = model.forward(x)
    _, dx, _ = model.backward(cache, dy)
    kernels.use("reference")
    y_np, _, cache_np = model.forward(x)
    _, dx_np, _ = model.backward(cache_np, dy)
    assert np.all(np.isnan(y[2:, B - 1])) and np.all(np.isnan(as_tuple(h_n)[0][:, B - 1]))
    assert np.all(np.isfinite(y[:2])) and np.all(np.isfinite(y[:, :B - 1]))  # the others untouched
    _assert_close64(y, y_np)  # NaN where NumPy has NaN
    if kind != "rnn_relu":  # relu'(NaN) = [NaN > 0] = 0 stops the NaN: dx stays finite
        assert np.all(np.isnan(dx[:3, B - 1]))  # step 2 and every step before it see the NaN
    _assert_close64(dx, dx_np)


@pytest.mark.parametrize("B", [1, 8], ids=["B1", "B8"])
def test_relu_backward_keeps_nan_and_inf_as_numpy(B, restore_kernels):
    """dpre = dh * [h > 0]: a NaN dh stays NaN where h = 0, and so does an infinite one
    (inf * 0), as in NumPy's multiply by a bool."""
    kernels.use("c")
    cell = CELLS["rnn_relu"]
    dh_values = np.array([np.nan, np.nan, np.inf, -np.inf, np.inf, 2.0, -3.0, 0.5] * 2)
    h_values = np.array([0.0, 1.5, 0.0, 0.0, 2.0, 0.0, 1.0, 3.0] * 2)
    dh, h = _stack(1, B, 16 // B, np.float64), _stack(1, B, 16 // B, np.float64)
    dh[0], h[0] = _columns(dh_values, B), _columns(h_values, B)
    dpre = _stack(1, B, 16 // B, np.float64)
    steps = kernels.compiled(cell, np.float64, 1).backward_steps(B, 16 // B, [(dh, 0)], [(h, 0)], [(dpre, 0)], 1)
    steps(0)
    with np.errstate(invalid="ignore"):  # inf * 0
        want, _, _ = cell.backward((dh_values[None],), (h_values[None],))
    np.testing.assert_array_equal(_flat(dpre[0]), want[0])
    assert np.isnan(want[0][:4]).all() and want[0][4] == np.inf  # the premise: NumPy's NaNs


# 4. selection and build errors

def test_unknown_kernels_are_refused_and_the_selection_kept():
    before = kernels.selected()
    with pytest.raises(ValueError, match="'reference' or 'c' but got 'fortran'"):
        kernels.use("fortran")
    assert kernels.selected() == before


def _nothing_built(tmp_path, monkeypatch):
    """As on a machine where the install found no C compiler."""
    monkeypatch.setattr(library, "path_of", lambda variant: tmp_path / f"_kernels_{variant}.so")
    monkeypatch.delenv("BPTT_ISA", raising=False)


def test_kernels_not_built_are_reported(tmp_path, monkeypatch):
    _nothing_built(tmp_path, monkeypatch)
    assert library.built() == [] and library.choose() is None
    with pytest.raises(library.KernelsUnavailable, match="not built when bptt was installed"):
        library.load()


def test_use_reports_kernels_not_built_at_once_and_keeps_the_selection(tmp_path, monkeypatch):
    before = kernels.selected()
    _nothing_built(tmp_path, monkeypatch)
    monkeypatch.setitem(kernels._selected, "library", None)  # as in a process that never loaded it
    with pytest.raises(kernels.KernelsUnavailable, match="not built when bptt was installed"):
        kernels.use("c")
    assert kernels.selected() == before


def test_the_cli_reports_kernels_it_cannot_use(tmp_path, monkeypatch, capsys):
    """A bad --kernels or $BPTT_KERNELS, or kernels the install did not build, is one line and exit 2."""
    from bptt.cli import main

    monkeypatch.setenv("BPTT_KERNELS", "fortran")
    monkeypatch.setitem(kernels._selected, "name", None)  # as in a new process
    assert main(["gradcheck"]) == 2
    assert "expected BPTT_KERNELS to be 'reference' or 'c' but got 'fortran'" in capsys.readouterr().err
    monkeypatch.delenv("BPTT_KERNELS")
    _nothing_built(tmp_path, monkeypatch)
    monkeypatch.setitem(kernels._selected, "library", None)
    assert main(["gradcheck", "--kernels", "c"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bptt gradcheck: the compiled kernels were not built") and err.count("\n") == 1


# 5. the instruction sets built at install

def test_the_best_variant_this_cpu_runs_is_chosen(monkeypatch):
    monkeypatch.delenv("BPTT_ISA", raising=False)
    monkeypatch.setattr(library, "built", lambda: list(library.VARIANTS))
    monkeypatch.setattr(library.platform, "machine", lambda: "x86_64")
    assert library.choose(library.REQUIRES["avx512"]) == "avx512"
    assert library.choose(library.REQUIRES["avx2"]) == "avx2"
    assert library.choose({"sse2", "avx"}) == "portable"
    monkeypatch.setattr(library.platform, "machine", lambda: "aarch64")
    assert library.choose(library.REQUIRES["avx512"]) == "portable"


def test_bptt_isa_asks_for_one_variant(monkeypatch):
    monkeypatch.setenv("BPTT_ISA", "sse9")
    with pytest.raises(library.KernelsUnavailable, match="one of avx512, avx2, portable but got 'sse9'"):
        library.choose()
    monkeypatch.setattr(library, "path_of", lambda variant: library.Path("/nonexistent") / variant)
    monkeypatch.setenv("BPTT_ISA", "avx2")
    with pytest.raises(library.KernelsUnavailable, match="avx2: that variant was not built"):
        library.choose()


def test_importing_and_loading_runs_no_compiler(built_kernels, tmp_path):
    """With no compiler on the PATH at all, the kernels the install built load and run."""
    empty = tmp_path / "bin"
    empty.mkdir()
    script = ("import bptt, bptt.kernels as k; k.use('c'); print(k.isa()); "
              "import numpy as np; m = bptt.GRU(3, 4, dtype=np.float64); print(m.forward(np.ones((9, 2, 3)))[0].shape)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PATH": str(empty), "CC": "/nonexistent/cc"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [built_kernels, "(9, 2, 4)"]


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils) to list the library's functions")
def test_the_activations_are_inlined_in_every_built_variant(built_kernels):
    """No out-of-line exp, expm1, σ or tanh in any built library: each is inlined into the
    cells' loops (cells.c: INLINE), where a call stops the loop's vectorization. GCC's own budget
    once turned tanh into a call in the B = 1 kernels after threaded.c grew (2x slower B = 1
    passes), with no test failing."""
    for variant in library.built():
        listed = subprocess.run(["nm", str(library.path_of(variant))], capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0, listed.stderr
        names = {line.split()[-1] for line in listed.stdout.splitlines() if line.strip()}
        out_of_line = sorted(name for name in names
                             if re.fullmatch(r"(exp|expm1_neg|expm1_series|sigmoid|tanh)_f(32|64)(\..*)?", name))
        assert not out_of_line, (variant, out_of_line)


def test_compiled_is_none_for_numpy_other_dtypes_and_short_passes(restore_kernels, monkeypatch):
    kernels.use("reference")
    assert kernels.compiled(CELLS["lstm"], np.float64, 100) is None
    kernels.use("c")
    assert kernels.compiled(CELLS["lstm"], np.float16, 100) is None
    assert kernels.compiled(CELLS["lstm"], np.float32, 100).dtype == np.float32
    monkeypatch.setattr(kernels, "MIN_STEPS", 8)
    assert kernels.compiled(CELLS["lstm"], np.float32, 7) is None  # planning would cost more
    assert kernels.compiled(CELLS["lstm"], np.float32, 8) is not None


# 6. plans refuse what would let C leave its arrays

def test_plan_points_each_row_at_its_step():
    B, H, float64 = 3, 2, np.dtype(np.float64)
    stack = _stack(4, B, 3 * H, np.float64)  # 4,B,3H
    rows = plan.plan(B, H, float64, [(stack, 3, [2, 0, 3])], 3, prefetch=(0,), step=-1)
    # step_args of contract.h: B, H, the prefetch mask, the next row, then (address, ld) pairs
    assert plan.contract_fields("step_args")[:6] == ("B", "H", "prefetch", "next", "a[0].addr", "a[0].ld")
    assert rows.shape == (3, 4 + 2 * plan.MAX_ARRAYS) and list(rows[0, :2]) == [B, H]
    assert list(rows[:, 2]) == [0, 1, 1] and list(rows[:, 3]) == [-1] * 3  # row 0 is run last
    assert [row[4] for row in rows] == [stack[k].__array_interface__["data"][0] for k in (2, 0, 3)]
    assert list(rows[:, 5]) == [B] * 3  # feature rows B numbers apart


def test_plan_refuses_unsafe_arrays():
    B, H, float64 = 3, 2, np.dtype(np.float64)  # a dtype, as CompiledCell passes it
    good = _stack(2, B, H, np.float64)
    with pytest.raises(ValueError, match=r"expected \(n, 3, 4\) float64"):
        plan.plan(B, H, float64, [(good, 2, 0)], 1)  # a gate block too few
    with pytest.raises(ValueError, match=r"expected \(n, 3, 2\) float64"):
        plan.plan(B, H, float64, [(good.astype(np.float32), 1, 0)], 1)
    with pytest.raises(ValueError, match=r"expected \(n, 3, 2\)"):
        plan.plan(B, H, float64, [(good[0], 1, 0)], 1)  # (B, F), not a stack
    with pytest.raises(ValueError, match="the batch must be contiguous"):
        plan.plan(B, H, float64, [(np.zeros((2, B, H)), 1, 0)], 1)  # C order: the features are
    with pytest.raises(ValueError, match=r"steps 0\.\.2 of a stack of 2"):
        plan.plan(B, H, float64, [(good, 1, [0, 2])], 2)
    with pytest.raises(ValueError, match=r"steps -1\.\.0 of a stack of 2"):
        plan.plan(B, H, float64, [(good, 1, [-1, 0])], 2)
    with pytest.raises(ValueError, match="at most 8 arrays"):
        plan.plan(B, H, float64, [(good, 1, 0)] * 9, 1)
    plan.plan(1, H, float64, [(np.zeros((2, 1, H)), 1, 1)], 1)  # at B=1 any layout of one column


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("M, N", [(1, 1), (7, 5), (128, 512), (129, 515), (512, 128), (3, 300), (2, 129)])
def test_matvec_t_is_the_sum_of_the_rows(dtype, M, N):
    """The product at B = 1, out = wᵀ v, by whole blocks of columns in registers, by the last
    columns apart, with an odd row left over, and with v and out strided, against NumPy."""
    if library.choose() is None:
        pytest.skip(NOT_BUILT)
    compiled = plan.CompiledCell.of(library.load()[0], CELLS["lstm"], dtype)  # whatever kernels are selected
    rng = np.random.default_rng(M * 1000 + N)
    w = rng.standard_normal((M, N)).astype(dtype)
    v = rng.standard_normal((3, M, 2)).astype(dtype)  # step t's v is v[t, :, 1]: elements 2 apart
    out = np.full((3, N, 2), np.nan, dtype)
    steps = compiled.product_steps(w, (v[:, :, 1], [0, 2]), (out[:, :, 1], [1, 2]), 2)
    steps(0), steps(1)
    tolerance = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out[1, :, 1], w.T.astype(np.float64) @ v[0, :, 1], rtol=tolerance, atol=tolerance * M)
    np.testing.assert_allclose(out[2, :, 1], w.T.astype(np.float64) @ v[2, :, 1], rtol=tolerance, atol=tolerance * M)
    assert np.isnan(out[0]).all() and np.isnan(out[:, :, 0]).all()  # nothing else written


def test_matvec_plan_refuses_unsafe_arrays():
    M, N = 6, 4  # out (N) = wᵀ v, v (M)
    w = np.zeros((M, N))
    v, out = (np.zeros((1, M)), 0), (np.zeros((1, N)), 0)
    plan.matvec_plan(w, v, out, 1)
    with pytest.raises(ValueError, match="contiguous rows"):
        plan.matvec_plan(np.zeros((N, M)).T, v, out, 1)
    with pytest.raises(ValueError, match=r"matvec v: expected \(n, 6\)"):
        plan.matvec_plan(w, out, out, 1)
    with pytest.raises(ValueError, match=r"matvec out: expected \(n, 4\)"):
        plan.matvec_plan(w, v, v, 1)
    with pytest.raises(ValueError, match=r"matvec out: steps 1\.\.1 of a stack of 1"):
        plan.matvec_plan(w, v, (out[0], 1), 1)
    with pytest.raises(ValueError, match="every array must be float64"):
        plan.matvec_plan(w, (v[0].astype(np.float32), 0), out, 1)


# 4. the threaded passes' settings

@pytest.mark.parametrize("value", [0, -1, 2.5, True, "2"])
def test_thread_counts_must_be_positive_integers(value, restore_kernels):
    with pytest.raises(ValueError, match="expected threads to be a positive integer"):
        kernels.use("c", threads=value)


def test_bptt_threads_is_read_and_checked(restore_kernels, monkeypatch):
    monkeypatch.setitem(kernels._selected, "threads", None)
    monkeypatch.setenv("BPTT_THREADS", "3")
    assert kernels.threads() == 3
    monkeypatch.setitem(kernels._selected, "threads", None)
    monkeypatch.setenv("BPTT_THREADS", "two")
    with pytest.raises(ValueError, match="expected BPTT_THREADS to be a positive integer but got 'two'"):
        kernels.threads()
    monkeypatch.setitem(kernels._selected, "threads", None)
    monkeypatch.delenv("BPTT_THREADS")
    assert kernels.threads() == kernels.cpus() == len(os.sched_getaffinity(0))  # every CPU unless asked


def _lstm_gradients(seed, B=6, T=9, H=40):
    """y and the gradients of an LSTM pass at B > 1, as the selected kernels compute them."""
    model = make_rnn("lstm", I, H, 1, dtype=np.float64, seed=seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, I))
    y, _, cache = model.forward(x)
    grads, dx, _ = model.backward(cache, rng.normal(size=y.shape))
    return y, dx, grads


def test_threaded_passes_from_several_python_threads_at_once(restore_kernels):
    """The pool runs one pass at a time: a pass that finds it taken runs on its own thread,
    and every pass gets the result it gets alone."""
    import threading

    kernels.use("c", threads=3)
    want = {seed: _lstm_gradients(seed) for seed in range(4)}
    got, failures = {}, []

    def run(seed):
        try:
            for _ in range(5):
                got[seed] = _lstm_gradients(seed)
        except Exception as error:  # reported below, not lost in the thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in want]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures and not any(thread.is_alive() for thread in threads)
    for seed, (y, dx, grads) in want.items():
        np.testing.assert_array_equal(got[seed][0], y)
        np.testing.assert_array_equal(got[seed][1], dx)
        for name in grads:
            np.testing.assert_array_equal(got[seed][2][name], grads[name], err_msg=name)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_threaded_passes_run_in_a_forked_child(restore_kernels):
    """A child of fork() has none of the pool's workers: it starts its own, and a pass there
    finishes with the parent's result."""
    kernels.use("c", threads=2)
    want = _lstm_gradients(1)  # the parent's pool is started
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only when its pass gives the parent's result
        try:
            y, dx, _ = _lstm_gradients(1)
            os._exit(0 if np.array_equal(y, want[0]) and np.array_equal(dx, want[1]) else 1)
        finally:
            os._exit(2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the pass in the forked child did not finish within 60 s")


def _allowed_cpus(task):
    """The CPUs thread ``task`` of this process may run on, from /proc."""
    with open(f"/proc/self/task/{task}/status") as status:
        line = next(line for line in status if line.startswith("Cpus_allowed_list:"))
    cpus = set()
    for part in line.split(":", 1)[1].strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs")
def test_the_pools_workers_are_kept_off_the_callers_cpu_only_when_asked(restore_kernels):
    """With pin=True, after a threaded pass the pool's worker may run on every CPU of the
    caller's but one, the CPU the caller ran the pass on, so that Linux cannot wake it onto the
    caller's; unasked (the default, and pin=False after), every worker may run on every CPU."""
    caller = os.sched_getaffinity(0)

    def masks():
        others = [task for task in os.listdir("/proc/self/task") if int(task) != threading.get_native_id()]
        return [_allowed_cpus(task) for task in others]

    try:
        kernels.use("c", threads=2, pin=True)
        _lstm_gradients(1)
        assert any(len(caller - mask) == 1 and mask < caller for mask in masks()), (caller, masks())
        kernels.use("c", threads=2, pin=False)
        _lstm_gradients(1)
        assert all(mask == caller for mask in masks()), (caller, masks())
    finally:
        kernels.use("c", pin=False)


def _workers_cpu_ns():
    """The CPU time, in ns, that the pool's workers (threads named bptt-worker) have run."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/comm") as comm, open(f"/proc/self/task/{task}/schedstat") as stat:
                if comm.read().strip() == "bptt-worker":
                    total += int(stat.read().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/schedstat"), reason="needs Linux's schedstat")
def test_the_engine_wakes_the_sleeping_workers_before_a_pass_and_they_sleep_again(restore_kernels):
    """Asleep after a pause, the pool's workers stay asleep (no CPU time) until the engine,
    planning a pass, wakes them (``wake``): they then spin for the pass, and without one go
    back to sleep; a pass after any number of wakes gives the result it gives alone."""
    kernels.use("c", threads=2)
    want = _lstm_gradients(1)  # starts the pool's worker
    compiled = kernels.compiled(CELLS["lstm"], np.float64, 100)
    time.sleep(0.2)
    asleep = _workers_cpu_ns()
    time.sleep(0.05)
    assert _workers_cpu_ns() - asleep < 20_000  # ns: asleep, not spinning
    compiled.wake()
    time.sleep(0.05)
    woken = _workers_cpu_ns()
    assert woken - asleep > 50_000  # spun after the wake
    time.sleep(0.05)
    assert _workers_cpu_ns() - woken < 20_000  # and went back to sleep without a pass
    for _ in range(3):
        compiled.wake()
    y, dx, grads = _lstm_gradients(1)
    np.testing.assert_array_equal(y, want[0])
    np.testing.assert_array_equal(dx, want[1])


def test_a_threaded_pass_refuses_cell_steps_that_do_not_go_with_its_products():
    """The threads size what they read and write by the cells' B and H: a pass whose two
    tables disagree, or that asks for more steps than they hold, is refused before C runs."""
    products = plan.Threaded(np.array([[32, 1], [32, 1]], np.int64), np.zeros(15, np.int64), (), units=12)

    def cells(B, H, count):
        return plan.Steps(None, np.tile(np.array([[B, H]], np.int64), (count, 1)), ())

    products.check(cells(32, 12, 2), 0, 2)
    with pytest.raises(ValueError, match=r"the cells' steps have B, H = \(32, 24\), the products \(32, 12\)"):
        products.check(cells(32, 24, 2), 0, 2)
    with pytest.raises(ValueError, match="threaded pass: steps 1..2 of 2 products and 2 cell steps"):
        products.check(cells(32, 12, 2), 1, 2)


# 7. one contract between Python and C

def test_the_contract_is_read_by_name_and_matches_the_compiled_structs(built_kernels):
    """plan.py builds its rows from contract.h's field names; the library's sizeof of each
    struct is the header's 8 bytes a field, so a one-sided edit fails loudly."""
    loaded, _ = library.load()
    assert plan.CONTRACT_STRUCTS == ("step_args", "matvec_args", "add_args", "pass_args", "gradient_args")
    for struct in plan.CONTRACT_STRUCTS:
        fields = plan.contract_fields(struct)
        assert len(set(fields)) == len(fields) >= 5
        assert getattr(loaded, f"sizeof_{struct}")() == 8 * len(fields)
    assert plan.contract_fields("matvec_args") == ("M", "N", "w.addr", "w.ld", "v.addr", "v.ld", "out.addr", "out.ld")
    assert len(plan.contract_fields("step_args")) == 4 + 2 * plan.MAX_ARRAYS
    assert plan.contract_fields("gradient_args")[:3] == ("steps", "B", "dpre_h")
    fields = plan.contract_fields("gradient_args")
    row = plan.contract_row("gradient_args", **{field: i for i, field in enumerate(fields)})
    assert row.tolist() == list(range(len(fields))) and row.dtype == np.int64


def test_a_row_missing_or_inventing_a_field_is_refused():
    fields = plan.contract_fields("pass_args")
    values = dict.fromkeys(fields, 0)
    with pytest.raises(ValueError, match=r"pass_args: missing \['discard'\], unknown \[\]"):
        plan.contract_row("pass_args", **{k: v for k, v in values.items() if k != "discard"})
    with pytest.raises(ValueError, match=r"unknown \['stride'\]"):
        plan.contract_row("pass_args", **values, stride=1)


def test_the_sums_over_time_take_the_gates_gradients_as_the_steps_wrote_them():
    """gradient_args takes dpre step-major, (steps, K*H, B), each step's block contiguous, and
    refuses the batch-major view of it or a strided one, naming the array and both shapes."""
    steps, KH, B, H, I = 3, 8, 4, 2, 5
    dpre = np.zeros((steps, KH, B))
    rest = (np.zeros((steps * B, H)), np.zeros((steps * B, I)), np.zeros((KH, H + 1)), np.zeros((KH, I)), None)
    row, _ = plan.gradient_args(dpre, dpre, *rest, accumulate=False)
    fields = plan.contract_fields("gradient_args")
    assert row[fields.index("steps")] == steps and row[fields.index("B")] == B
    batch_major = dpre.transpose(0, 2, 1)  # (steps, B, K*H), as the cells see it
    with pytest.raises(ValueError, match=r"gradients dpre_h: expected \(3, 4, 8\) float64 with contiguous rows, "
                                         r"got \(3, 4, 8\) float64 with strides \(256, 8, 32\)"):
        plan.gradient_args(batch_major, batch_major, *rest, accumulate=False)
    with pytest.raises(ValueError, match=r"gradients dpre_x: expected \(3, 8, 4\) float64 with contiguous rows, "
                                         r"got \(3, 8, 4\) float64 with strides \(512, 64, 16\)"):
        plan.gradient_args(dpre, np.zeros((steps, KH, 2 * B))[:, :, ::2], *rest, accumulate=False)


def test_a_field_that_is_not_an_int64_is_refused(tmp_path, monkeypatch):
    header = tmp_path / "contract.h"
    header.write_text("typedef struct {\n    int64_t a, b; /* two */\n    double c;\n} odd;\n")
    monkeypatch.setattr(plan, "CONTRACT", header)
    plan.contract_fields.cache_clear()
    plan._contract_text.cache_clear()
    try:
        with pytest.raises(ValueError, match="odd holds 'double c'; every field must be an int64_t or array_arg"):
            plan.contract_fields("odd")
        with pytest.raises(ValueError, match="contract.h defines no struct nothing"):
            plan.contract_fields("nothing")
    finally:
        plan.contract_fields.cache_clear()
        plan._contract_text.cache_clear()
