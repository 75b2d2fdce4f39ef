"""The gradient checker itself: it passes correct gradients and catches wrong ones."""

import numpy as np
import pytest

from bptt import cli
from bptt.cells import CELLS
from bptt.layers import stack_backward, stack_forward
from bptt.proofs import gradcheck, numerical_derivatives
from bptt.proofs.objectives import stack_objective
from bptt.proofs.report import cell_report, random_problem

# every test here runs with the NumPy cells and with the compiled ones
pytestmark = pytest.mark.usefixtures("each_kernels")


def test_numerical_derivatives_of_a_known_function():
    rng = np.random.default_rng(0)
    arrays = {"w": rng.normal(size=(3, 4))}

    def fun(a):
        return np.sum(np.sin(a["w"]) * a["w"] ** 2)

    w = arrays["w"]
    exact = np.cos(w) * w**2 + 2 * w * np.sin(w)
    numeric = numerical_derivatives(fun, arrays, "w", np.arange(12))
    np.testing.assert_allclose(numeric, exact.reshape(-1), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(arrays["w"], w)  # restored after perturbing


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_every_tensor_of_every_cell_passes(cell_name):
    rows = cell_report(max_entries=6, cells=(cell_name,))
    assert len(rows) == 8
    for row in rows:
        assert row.passed, row
        assert row.max_rel_err < 1e-7


def _lstm_problem(seed=3):
    cell = CELLS["lstm"]
    rng = np.random.default_rng(seed)
    arrays, dy, dstate_n = random_problem(cell, 1, 1, None, rng, steps=5)

    def objective(point):
        return stack_objective(cell, point, dy, dstate_n, None, 1, 1)[0]

    _, grads = stack_objective(cell, arrays, dy, dstate_n, None, 1, 1)
    return cell, arrays, dy, dstate_n, objective, grads


def test_a_wrong_entry_is_found_and_located():
    _, arrays, _, _, objective, grads = _lstm_problem()
    grads["weight_hh_l0"][5, 2] *= 1.0 + 1e-5
    result = gradcheck(objective, arrays, grads)
    assert not result.passed
    bad = {t.name: t for t in result.tensors if not t.passed(result.threshold)}
    assert list(bad) == ["weight_hh_l0"]
    assert bad["weight_hh_l0"].worst_index == (5, 2)
    assert bad["weight_hh_l0"].max_rel_err == pytest.approx(1e-5, rel=1e-2)


def test_a_missing_path_through_time_fails():
    cell, arrays, dy, dstate_n, objective, _ = _lstm_problem()
    params = {k: v for k, v in arrays.items() if k not in ("x", "h0", "c0")}
    _, _, cache = stack_forward(cell, params, arrays["x"], (arrays["h0"], arrays["c0"]), None, 1, 1)
    grads, dx, _ = stack_backward(dy, dstate_n, cache, cut="hidden")
    result = gradcheck(objective, arrays, {"weight_hh_l0": grads["weight_hh_l0"], "x": dx})
    assert all(t.max_rel_err > 1e-3 for t in result.tensors)


def test_sampling_checks_the_asked_number_of_entries_reproducibly():
    _, arrays, _, _, objective, grads = _lstm_problem()
    first = gradcheck(objective, arrays, grads, max_entries=5, seed=1)
    second = gradcheck(objective, arrays, grads, max_entries=5, seed=1)
    assert [t.checked for t in first.tensors] == [min(5, grads[t.name].size) for t in first.tensors]
    assert first == second
    assert first.passed


def test_arrays_are_left_unchanged():
    _, arrays, _, _, objective, grads = _lstm_problem()
    before = {k: v.copy() for k, v in arrays.items()}
    gradcheck(objective, arrays, grads, max_entries=3)
    for name in before:
        np.testing.assert_array_equal(arrays[name], before[name])


def test_bad_arguments_are_named():
    _, arrays, _, _, objective, grads = _lstm_problem()
    with pytest.raises(TypeError, match="float64 arrays but x is float32"):
        gradcheck(objective, {**arrays, "x": arrays["x"].astype(np.float32)}, grads)
    with pytest.raises(ValueError, match="not among the arrays: nope"):
        gradcheck(objective, arrays, {"nope": np.zeros(1)})
    with pytest.raises(ValueError, match=r"gradient of x of shape \(5, 3, 3\) but got \(2,\)"):
        gradcheck(objective, arrays, {"x": np.zeros(2)})


def test_cli_prints_the_table_and_exits_by_the_threshold(capsys):
    assert cli.main(["gradcheck", "--entries", "3"]) == 0
    out = capsys.readouterr().out
    assert "all 32 configurations pass" in out
    assert out.count("\n") == 34
    assert cli.main(["gradcheck", "--entries", "3", "--threshold", "1e-30"]) == 1
    assert "FAIL" in capsys.readouterr().out
