"""A gradient check of truncated BPTT passes against the objective it differentiates, and
fails against the full loss by the truncation bias."""

import numpy as np
import pytest

from bptt import cli
from bptt.cells import CELLS
from bptt.layers import param_shapes, stack_backward_by_depth, stack_backward_truncated, stack_forward
from bptt.proofs.truncation import jacobian_asymmetry, truncation_report
from bptt.recurrence import Window


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("num_layers, depth", [(1, 1), (2, 3)])
def test_truncated_gradients_pass_against_the_truncated_objective_only(cell_name, num_layers, depth):
    rows = truncation_report(cell_name, depth, num_layers=num_layers, steps=6, max_entries=8)
    for row in rows:
        assert row.rel_err_truncated < 1e-7, row
        assert row.rel_err_full > 1e-3, row
        assert row.bias > 1e-3, row


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_depth_of_the_whole_sequence_is_full_bptt(cell_name):
    rows = truncation_report(cell_name, 6, steps=6, max_entries=8)
    for row in rows:
        assert row.rel_err_truncated < 1e-7
        assert row.rel_err_full < 1e-7
        assert row.bias < 1e-13


def test_cli_truncate(capsys):
    assert cli.main(["gradcheck", "--truncate", "2", "--entries", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("truncated at depth 2") == 4
    assert "every tensor passes" in out
    assert cli.main(["gradcheck", "--truncate", "0"]) == 2
    assert "K >= 1 but got 0" in capsys.readouterr().err


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_every_depth_at_once_equals_each_depth_alone(cell_name):
    cell, rng = CELLS[cell_name], np.random.default_rng(3)
    T, B, I, H = 7, 3, 4, 5
    params = {name: rng.normal(0, 0.5, size=shape) for name, shape in param_shapes(cell, I, H, 1, 1).items()}
    x = rng.normal(size=(T, B, I))
    state0 = tuple(rng.normal(size=(1, B, H)) for _ in cell.STATE_NAMES)
    dy = rng.normal(size=(T, B, H))
    dy[2] = 0.0  # a step without a loss term
    dstate_n = tuple(rng.normal(size=(1, B, H)) for _ in cell.STATE_NAMES)
    _, _, cache = stack_forward(cell, params, x, state0, None, 1, 1)
    every = stack_backward_by_depth(dy, dstate_n, cache)
    assert len(every) == T
    for depth, (grads, dx, dstate0) in enumerate(every, start=1):
        expected_grads, expected_dx, expected_dstate0 = stack_backward_truncated(dy, dstate_n, cache, depth)
        assert list(grads) == list(expected_grads)
        for name in grads:
            np.testing.assert_allclose(grads[name], expected_grads[name], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-13)
        for a, b in zip(dstate0, expected_dstate0):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("window", [Window(3, 3, "end"), Window(3, 3, "start"), Window(2, 4, "end"),
                                    Window(3, 5, "start")])
def test_windows_and_tbptt_pass_against_their_objective_only(cell_name, window):
    rows = truncation_report(cell_name, window, steps=7, max_entries=8)
    for row in rows:
        assert row.rel_err_truncated < 1e-7, (window, row)
        assert row.rel_err_full > 1e-3, (window, row)


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "lstm", "gru"])
def test_a_truncated_gradient_is_the_gradient_of_no_function(cell_name):
    """The Jacobian of truncated BPTT's gradient field is not symmetric; full BPTT's is (a
    Hessian), to the error of the differences."""
    for window in (Window(1, 2), Window(3, 3, "end"), Window(2, 4)):
        asymmetry, u_jv, v_ju = jacobian_asymmetry(cell_name, window)
        assert asymmetry > 1e-2, (window, u_jv, v_ju)
    control, u_jv, v_ju = jacobian_asymmetry(cell_name, None)
    assert control < 1e-8, (u_jv, v_ju)


def test_cli_window(capsys):
    assert cli.main(["gradcheck", "--window", "2,3,end", "--entries", "4"]) == 0
    out = capsys.readouterr().out
    assert out.count("TBPTT(2, 3) counted from the last step: against the losses of each chunk of 2 steps") == 4
    assert out.count("Jacobian of the gradient field, u·Jv against v·Ju") == 4
    assert "every tensor passes" in out and "the gradient of no single function" in out
    assert cli.main(["gradcheck", "--window", "3,2"]) == 2
    assert "1 <= K1 <= K2 but got '3,2'" in capsys.readouterr().err
    assert cli.main(["gradcheck", "--window", "2,2,middle"]) == 2
    assert "align 'start' or 'end'" in capsys.readouterr().err
