"""bptt diagnose on truncation as people write it: a loop that restarts da_prev (and dc_prev)
every k steps, counted from the last step or the first, TBPTT(k1, k2), alone or with a cut
path, in every layout; and the reach profiles the search rests on."""

import json

import numpy as np
import pytest

from bptt import LSTM, GRU, Window, cli
from bptt.interop import keras
from bptt.proofs.diagnose import diagnose
from bptt.proofs.variants import dx_by_reach, reach_profiles
from learners import keras_forward, lstm_backward, rnn_backward, rnn_forward
from test_diagnose import course_lstm

I, H, B = 3, 4, 2


def kinds(diagnosis):
    return {(v.status, v.window, v.path) for v in diagnosis.tensors.values()}


@pytest.mark.parametrize("steps", [1, 2, 3, 6, 7])
def test_reach_profiles_are_the_engines(steps, rng):
    """Under every truncation, dx_t is dx_t of the losses t .. t + r(t) - 1: the profile the
    search matches is what the engine computes."""
    model = GRU(I, H, dtype=np.float64, seed=1)
    x, dy = rng.normal(size=(steps, B, I)), rng.normal(size=(steps, B, H))
    h0 = rng.normal(size=(1, B, H))
    _, _, cache = model.forward(x, h0)
    by_reach = dx_by_reach(model, x, h0, dy, None, None)
    _, full_dx, _ = model.backward(cache, dy)
    np.testing.assert_allclose(by_reach[np.arange(steps), steps - np.arange(steps)], full_dx, rtol=1e-10)
    profiles, windows = reach_profiles(steps)
    assert len(windows) == len(profiles) == len({tuple(p) for p in profiles})
    for profile, window in zip(profiles, windows):
        _, dx, _ = model.backward(cache, dy, window=window)
        np.testing.assert_allclose(by_reach[np.arange(steps), profile], dx, rtol=1e-10, atol=1e-14,
                                   err_msg=str(window))


def test_every_truncation_of_seven_steps_is_named_by_one_profile():
    profiles, windows = reach_profiles(7)
    assert windows[:6] == [Window(1, k) for k in range(1, 7)]
    assert Window(3, 3, "end") in windows and Window(3, 3, "start") in windows and Window(2, 5, "start") in windows
    assert [list(p) for p in profiles[windows.index(Window(3, 3, "end"))][None]] == [[1, 3, 2, 1, 3, 2, 1]]


@pytest.mark.parametrize("k, align, steps", [(2, "end", 9), (3, "end", 10), (3, "start", 10), (4, "start", 9),
                                              (3, "end", 9), (5, "start", 12)])
def test_course_lstm_restarting_every_k_steps(k, align, steps, rng):
    params, inputs, caches = course_lstm(rng, steps=steps)
    grads = lstm_backward(inputs["da"], caches, window=k, align=align)
    diagnosis = diagnose("coursera-lstm", params, inputs, grads)
    same = steps % k == 0  # the windows are the same counted from either end
    window = Window(k, k, "end" if same else align)
    assert kinds(diagnosis) == {("truncated", window, None)}  # da0, dc0, dx and the weights agree
    assert diagnosis.verdict == {"status": "truncated", "depth": None,
                                 "window": {"k1": k, "k2": k, "align": window.align}, "path": None, "slip": None,
                                 "forward": []}
    first_or_last = "first" if align == "start" else "last"
    counted = "chunks counted from either end" if same else f"counted from the {first_or_last}"
    assert f"your backward restarts da_prev and dc_prev every {k} steps, {counted}" in diagnosis.summary
    assert diagnosis.summary.startswith(f"Verdict: truncated BPTT on windows of {k} (")


@pytest.mark.parametrize("k, align", [(3, "end"), (2, "start")])
def test_course_rnn_restarting_every_k_steps(k, align, rng):
    params, inputs, _ = course_lstm(rng, steps=7)
    params = {"Wax": rng.normal(0, 0.5, (H, I)), "Waa": rng.normal(0, 0.5, (H, H)), "ba": rng.normal(0, 0.5, (H, 1))}
    _, caches = rnn_forward(inputs["x"], inputs["a0"], params)
    diagnosis = diagnose("coursera-rnn", params, inputs, rnn_backward(inputs["da"], caches, window=k, align=align))
    assert kinds(diagnosis) == {("truncated", Window(k, k, align), None)}
    assert f"restarts da_prev every {k} steps" in diagnosis.summary


def test_windows_with_the_hidden_path_cut(rng):
    """No da_prev and dc_prev restarted every 3 steps: both named, and da0 as the learner's step 0
    computes it."""
    params, inputs, caches = course_lstm(rng, steps=8)
    grads = lstm_backward(inputs["da"], caches, "no_da_prev", window=3, align="end")
    diagnosis = diagnose("coursera-lstm", params, inputs, grads)
    assert kinds(diagnosis) == {("truncated", Window(3, 3, "end"), "hidden")}
    assert diagnosis.verdict["path"] == "hidden" and diagnosis.verdict["window"]["k1"] == 3
    assert diagnosis.summary.startswith("Verdict: truncated BPTT on windows of 3 (counted from the last step), "
                                        "with the hidden path cut.")
    assert "does not add da_prev" in diagnosis.summary


def test_found_without_dx(rng):
    params, inputs, caches = course_lstm(rng, steps=8)
    grads = lstm_backward(inputs["da"], caches, window=3, align="start")
    del grads["dx"]
    assert kinds(diagnose("coursera-lstm", params, inputs, grads)) == {("truncated", Window(3, 3, "start"), None)}


def test_keras_windows_by_autograd(rng):
    torch = pytest.importorskip("torch")
    steps = 8
    params = {name: rng.normal(0, 0.5, size=shape) for name, shape in keras.param_shapes("lstm", I, H).items()}
    inputs = {"x": rng.normal(size=(B, steps, I)), "h0": rng.normal(size=(B, H)), "c0": rng.normal(size=(B, H)),
              "dy": rng.normal(size=(B, steps, H))}
    leaves = {name: torch.tensor(value, requires_grad=True) for name, value in {**params, **inputs}.items()}
    y = keras_forward("lstm", leaves, leaves["x"], leaves["h0"], leaves["c0"], restart={3, 6})  # windows of 3
    y.backward(torch.tensor(inputs["dy"]))
    grads = {"d" + name: leaf.grad.numpy() for name, leaf in leaves.items() if name != "dy"}
    diagnosis = diagnose("keras", params, inputs, grads)
    assert kinds(diagnosis) == {("truncated", Window(3, 3, "start"), None)}


@pytest.mark.parametrize("k1, k2, align", [(2, 4, "start"), (3, 5, "end")])
def test_torch_tbptt_by_autograd(k1, k2, align, rng):
    """TBPTT(k1, k2) written with a torch LSTMCell: every k1 steps, the last k2 steps from the
    detached state where they begin, with the losses of the last k1."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    steps = 11  # neither k1 divides it: the alignments differ
    cell = torch.nn.LSTMCell(I, H, dtype=torch.float64)
    params = {name + "_l0": p for name, p in cell.named_parameters()}
    inputs = {"x": rng.normal(size=(steps, B, I)), "h0": rng.normal(size=(1, B, H)),
              "c0": rng.normal(size=(1, B, H)), "dy": rng.normal(size=(steps, B, H))}
    x, h0, c0 = (torch.tensor(inputs[name], requires_grad=True) for name in ("x", "h0", "c0"))
    dy = torch.tensor(inputs["dy"])
    for start, stop in Window(k1, k2, align).chunks(steps):
        reach = max(0, start - (k2 - k1))
        state = (h0[0], c0[0])
        loss = 0.0
        for t in range(stop):
            if t == reach and t > 0:
                state = tuple(s.detach() for s in state)
            state = cell(x[t], state)
            if t >= start:
                loss = loss + (state[0] * dy[t]).sum()
        loss.backward()
    grads = {"d" + name: p.grad.numpy() for name, p in params.items()}
    grads.update(dx=x.grad.numpy(), dh0=h0.grad.numpy(), dc0=c0.grad.numpy())
    diagnosis = diagnose("torch", {name: p.detach().numpy() for name, p in params.items()}, inputs, grads)
    assert diagnosis.verdict["window"] == {"k1": k1, "k2": k2, "align": align}
    assert f"TBPTT({k1}, {k2})" in diagnosis.summary


def test_full_bptt_is_not_mistaken_for_a_truncation(rng):
    model = LSTM(I, H, dtype=np.float64, seed=0)
    params = {name: value for name, value in model.params.items()}
    inputs = {"x": rng.normal(size=(6, B, I)), "h0": rng.normal(size=(1, B, H)), "dy": rng.normal(size=(6, B, H))}
    _, _, cache = model.forward(inputs["x"], (inputs["h0"], np.zeros((1, B, H))))
    grads, dx, (dh0, _) = model.backward(cache, inputs["dy"])
    diagnosis = diagnose("torch", params, inputs, {**{"d" + k: v for k, v in grads.items()}, "dx": dx, "dh0": dh0})
    assert diagnosis.passed and diagnosis.verdict["status"] == "correct"


def test_cli_json_has_the_verdict(tmp_path, rng, capsys):
    params, inputs, caches = course_lstm(rng, steps=7)
    grads = lstm_backward(inputs["da"], caches, window=2, align="end")
    for name, arrays in (("P", params), ("X", inputs), ("G", grads)):
        np.savez(tmp_path / f"{name}.npz", **arrays)
    status = cli.main(["diagnose", "--layout", "coursera-lstm", "--params", str(tmp_path / "P.npz"),
                       "--inputs", str(tmp_path / "X.npz"), "--grads", str(tmp_path / "G.npz"), "--json"])
    assert status == 1
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == {"status": "truncated", "depth": None, "window": {"k1": 2, "k2": 2, "align": "end"},
                              "path": None, "slip": None,
                                 "forward": []}
    assert out["tensors"]["da0"]["window"] == {"k1": 2, "k2": 2, "align": "end"}
    assert out["tensors"]["da0"]["depth"] is None
