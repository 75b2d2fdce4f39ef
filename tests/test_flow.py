"""Gradients through time: per-step terms sum to the BPTT total; the reach equals autograd's."""

import json

import numpy as np
import pytest

from bptt import cli, recurrence, reference
from bptt.cells import CELLS
from bptt.layers import layer_weights, param_shapes
from bptt.proofs.flow import gradient_reach, per_step_grads, reach_by_cell


def _problem(cell_name, rng, T=6, B=2, I=3, H=4):
    cell = CELLS[cell_name]
    params = {k: rng.normal(0, 0.5, size=s) for k, s in param_shapes(cell, I, H, 1, 1).items()}
    x = rng.normal(size=(T, B, I))
    state0 = tuple(rng.normal(0, 0.5, size=(B, H)) for _ in cell.STATE_NAMES)
    return cell, params, layer_weights(params, 0, 0), x, state0


@pytest.mark.parametrize("cell_name", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_per_step_terms_sum_to_the_full_gradient(cell_name, rng):
    cell, _, weights, x, state0 = _problem(cell_name, rng)
    dy = rng.normal(size=x.shape[:2] + (weights.w_hh.shape[1],))
    dstate_n = tuple(rng.normal(size=s.shape) for s in state0)
    steps = per_step_grads(cell, weights, x, state0, dy, dstate_n)
    _, _, cache = recurrence.forward(cell, weights, x, state0)
    total, _, _ = recurrence.backward(dy, dstate_n, cache)
    for name in recurrence.Weights._fields:
        assert steps[name].shape == (x.shape[0],) + getattr(total, name).shape
        np.testing.assert_allclose(steps[name].sum(axis=0), getattr(total, name), rtol=1e-12, atol=1e-12)
    # the first step's W_hh term is dpre_h_0ᵀ h0: not zero, since h0 is not
    assert np.abs(steps["w_hh"][0]).max() > 1e-6


@pytest.mark.parametrize("cell_name, part", [("rnn_tanh", "h"), ("lstm", "h"), ("lstm", "c"), ("gru", "h")])
def test_reach_equals_autograd(cell_name, part, rng):
    torch = pytest.importorskip("torch")
    cell, params, weights, x, state0 = _problem(cell_name, rng)
    T, B, I = x.shape
    H = weights.w_hh.shape[1]
    direction = rng.normal(size=(B, H))
    reach = gradient_reach(cell, weights, x, state0, direction, part)

    module = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell_name](I, H)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})
    state = tuple(torch.from_numpy(s)[None] for s in state0)
    state = state if cell_name == "lstm" else state[0]
    index = cell.STATE_NAMES.index(part)
    kept = []  # the part of the state each step hands to the next, h or the LSTM's c
    for t in range(T):
        _, state = module(torch.from_numpy(x[t:t + 1]), state)
        s = state[index] if cell_name == "lstm" else state
        s.retain_grad()
        kept.append(s)
    h_last = state[0] if cell_name == "lstm" else state
    (h_last[0] * torch.from_numpy(direction)).sum().backward()
    # torch's c_n.grad is what reaches c from the later steps, h_n's path inside the step aside:
    # ∂L/∂c with h held fixed; the last c is read by nothing
    expected = [0.0 if kept[T - 1 - k].grad is None else kept[T - 1 - k].grad[0].norm(dim=-1).mean().item()
                for k in range(T)]
    np.testing.assert_allclose(reach, expected, rtol=1e-10)


def test_lstm_cell_path_alone_is_the_product_of_forget_gates(rng):
    """With the path through W_hh cut, what reaches c_{T-1-k} is the loss's gradient entering
    c_{T-1} through h_{T-1} = o ⊙ tanh(c_{T-1}), times the forget gates of the k later steps."""
    cell, _, weights, x, state0 = _problem("lstm", rng)
    T, B, _ = x.shape
    H = weights.w_hh.shape[1]
    direction = rng.normal(size=(B, H))
    reach = gradient_reach(cell, weights, x, state0, direction, "c", cut="hidden")
    _, _, cache = reference.forward(cell, weights, x, state0)
    _, _, _, o, _, tanh_c = cache.steps[T - 1]
    dc = direction * o * (1 - tanh_c ** 2)  # into c_{T-1}
    expected = [0.0]
    for t in reversed(range(1, T)):
        dc = dc * cache.steps[t][1]  # c_t = f_t ⊙ c_{t-1} + ...
        expected.append(np.linalg.norm(dc, axis=-1).mean())
    np.testing.assert_allclose(reach, expected, rtol=1e-12)


def test_reach_of_a_part_the_cell_has_not(rng):
    cell, _, weights, x, state0 = _problem("gru", rng)
    with pytest.raises(ValueError, match="expected part among h but got 'c'"):
        gradient_reach(cell, weights, x, state0, np.ones((2, 4)), "c")


def test_cli_flow_prints_json_and_draws(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    assert cli.main(["flow", "--length", "30", "--hidden", "16", "--batch", "4", "-o", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["T"], printed["H"], printed["k"]) == (30, 16, list(range(30)))
    curves = printed["curves"]
    assert set(curves) == {"rnn", "lstm", "gru"}
    assert all(len(v) == 30 for v in curves.values())
    # the picture's claim: the vanilla RNN loses its gradient far faster than the gated cells
    assert curves["rnn"][25] < 1e-3 * min(curves["lstm"][25], curves["gru"][25])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*partial*"))


def test_cli_flow_bad_cell(capsys):
    assert cli.main(["flow", "--cells", "rnn,transformer"]) == 2
    assert "expected cells among rnn, rnn_relu, lstm, gru but got transformer" in capsys.readouterr().err


def test_cli_flow_paths_adds_the_lstm_cell_state(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "flow.png"
    args = ["flow", "--cells", "rnn,lstm", "--length", "12", "--hidden", "8", "--batch", "2", "--paths"]
    assert cli.main(args + ["--json", "-o", str(out)]) == 0
    curves = json.loads(capsys.readouterr().out)["curves"]
    assert list(curves) == ["rnn", "lstm", "lstm (cell)"]  # a vanilla RNN's state is h alone
    without = reach_by_cell(("lstm",), length=12, hidden_size=8, batch=2)
    assert curves["lstm"] == without["lstm"].tolist()  # the same run, its h curve unchanged
    assert curves["lstm (cell)"][0] == 0.0 and min(curves["lstm (cell)"][1:]) > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(args) == 0
    table = capsys.readouterr().out.splitlines()
    assert "dL_T/dc_(T-k)" in table[0]
    assert [line[:12].strip() for line in table[2:]] == ["rnn", "lstm", "lstm (cell)"]
