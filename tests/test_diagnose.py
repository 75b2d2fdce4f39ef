"""bptt diagnose: every verdict proven on learner-style code with that slip."""

import json
import re

import numpy as np
import pytest

from bptt import cli
from bptt.interop import LayoutError, keras
from bptt.proofs.diagnose import Diagnosis, diagnose
from learners import keras_forward, lstm_backward, lstm_backward_truncated, lstm_forward, rnn_backward, rnn_forward

I, H, B, T = 3, 4, 2, 5


def course_lstm(rng, steps=T, dtype=np.float64):
    """The course's parameters (with the output layer's Wy, by), inputs and forward caches."""
    params = {"Wy": rng.normal(size=(2, H)), "by": np.zeros((2, 1))}
    for gate in "fico":
        params["W" + gate] = rng.normal(0.0, 0.5, size=(H, H + I))
        params["b" + gate] = rng.normal(0.0, 0.5, size=(H, 1))
    inputs = {"x": rng.normal(size=(I, B, steps)), "a0": rng.normal(0.0, 0.5, size=(H, B)),
              "c0": rng.normal(0.0, 0.5, size=(H, B)), "da": rng.normal(size=(H, B, steps))}
    params = {name: value.astype(dtype) for name, value in params.items()}
    inputs = {name: value.astype(dtype) for name, value in inputs.items()}
    _, _, caches = lstm_forward(inputs["x"], inputs["a0"], params, inputs["c0"])
    return params, inputs, caches


def verdicts(diagnosis):
    return {name: (v.status, v.depth, v.path) for name, v in diagnosis.tensors.items()}


COURSE_GRADS = ["dWf", "dbf", "dWi", "dbi", "dWc", "dbc", "dWo", "dbo", "dx", "da0", "dc0"]


@pytest.mark.parametrize("slip, expected", [
    (None, ("correct", None, None)),
    ("no_da_prev", ("path-cut", None, "hidden")),
    ("no_dc_prev", ("path-cut", None, "cell")),
    ("current_only", ("truncated", 1, None)),
    ("sigmoid", ("wrong", None, None)),
    ("time_index", ("wrong", None, None)),
])
def test_coursera_lstm_slips(slip, expected, rng):
    params, inputs, caches = course_lstm(rng)
    grads = lstm_backward(inputs["da"], caches, slip)
    diagnosis = diagnose("coursera-lstm", params, inputs, grads)
    assert list(diagnosis.tensors) == COURSE_GRADS
    # every tensor, dWo included: with the hidden path cut it equals truncation at depth 1 too,
    # and is read as the cut that the other tensors show
    assert verdicts(diagnosis) == {name: expected for name in COURSE_GRADS}
    assert diagnosis.passed == (slip is None)
    for v in diagnosis.tensors.values():
        assert (v.rel_err < 1e-12) == (slip is None)


def test_coursera_lstm_truncated_at_depth_two(rng):
    params, inputs, caches = course_lstm(rng)
    grads = lstm_backward_truncated(inputs["da"], caches, depth=2)
    diagnosis = diagnose("coursera-lstm", params, inputs, grads)
    assert set(verdicts(diagnosis).values()) == {("truncated", 2, None)}
    assert diagnosis.summary.startswith("Verdict: BPTT truncated to 2 steps.")


@pytest.mark.parametrize("slip", ["no_da_prev", "no_dc_prev", "current_only"])
def test_one_step_has_nothing_to_miss(slip, rng):
    params, inputs, caches = course_lstm(rng, steps=1)
    diagnosis = diagnose("coursera-lstm", params, inputs, lstm_backward(inputs["da"], caches, slip))
    assert diagnosis.passed


@pytest.mark.parametrize("slip, expected", [(None, ("correct", None, None)), ("no_dc_prev", ("path-cut", None, "cell"))])
def test_a_float32_learner_is_judged_in_float32s_rounding(slip, expected, rng):
    params, inputs, caches = course_lstm(rng, dtype=np.float32)
    grads = lstm_backward(inputs["da"], caches, slip)
    assert grads["dWf"].dtype == np.float32
    diagnosis = diagnose("coursera-lstm", params, inputs, grads)
    assert set(verdicts(diagnosis).values()) == {expected}


def test_a_subset_of_gradients_without_c0(rng):
    params, inputs, _ = course_lstm(rng)
    del inputs["c0"]  # zero, as in the course
    _, _, caches = lstm_forward(inputs["x"], inputs["a0"], params)
    grads = lstm_backward(inputs["da"], caches, "no_da_prev")
    diagnosis = diagnose("coursera-lstm", params, inputs, {"dWf": grads["dWf"], "dbo": grads["dbo"]})
    # dbo alone cannot tell the hidden cut from truncation at depth 1; with dWf it can
    assert verdicts(diagnosis) == {"dWf": ("path-cut", None, "hidden"), "dbo": ("path-cut", None, "hidden")}
    diagnosis = diagnose("coursera-lstm", params, inputs, {"dbo": grads["dbo"]})
    assert verdicts(diagnosis) == {"dbo": ("truncated", 1, None)}


@pytest.mark.parametrize("carry, expected", [(True, ("correct", None, None)), (False, ("truncated", 1, None))])
def test_coursera_rnn(carry, expected, rng):
    params = {"Wax": rng.normal(0, 0.5, size=(H, I)), "Waa": rng.normal(0, 0.5, size=(H, H)),
              "ba": rng.normal(0, 0.5, size=(H, 1)), "Wya": rng.normal(size=(2, H))}
    inputs = {"x": rng.normal(size=(I, B, T)), "a0": rng.normal(size=(H, B)), "da": rng.normal(size=(H, B, T))}
    _, caches = rnn_forward(inputs["x"], inputs["a0"], params)
    diagnosis = diagnose("coursera-rnn", params, inputs, rnn_backward(inputs["da"], caches, carry))
    # without da_prev a vanilla RNN keeps no path through time: that is truncation at depth 1
    assert verdicts(diagnosis) == {name: expected for name in ("dWax", "dWaa", "dba", "dx", "da0")}


@pytest.mark.parametrize("cell, detach_h, expected", [
    ("rnn_tanh", False, ("correct", None, None)),
    ("lstm", False, ("correct", None, None)),
    ("gru", False, ("correct", None, None)),
    ("lstm", True, ("path-cut", None, "hidden")),  # the cell state still carries a gradient
    ("gru", True, ("truncated", 1, None)),
])
def test_keras_layout_differentiated_by_autograd(cell, detach_h, expected, rng):
    torch = pytest.importorskip("torch")
    params = {name: rng.normal(0, 0.5, size=shape) for name, shape in keras.param_shapes(cell, I, H).items()}
    inputs = {"x": rng.normal(size=(B, T, I)), "h0": rng.normal(size=(B, H)), "dy": rng.normal(size=(B, T, H))}
    if cell == "lstm":
        inputs["c0"] = rng.normal(size=(B, H))
    leaves = {name: torch.tensor(value, requires_grad=True) for name, value in {**params, **inputs}.items()}
    y = keras_forward(cell, leaves, leaves["x"], leaves["h0"], leaves.get("c0"), detach_h)
    y.backward(torch.tensor(inputs["dy"]))
    grads = {"d" + name: leaf.grad.numpy() for name, leaf in leaves.items() if name != "dy"}
    diagnosis = diagnose("keras", params, inputs, grads)
    assert diagnosis.cell == cell
    assert set(verdicts(diagnosis).values()) == {expected}


@pytest.mark.parametrize("cut_cell", [False, True])
def test_torch_layout_lstm(cut_cell, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm_cell = torch.nn.LSTMCell(I, H, dtype=torch.float64)  # random, different biases
    params = {name + "_l0": p for name, p in lstm_cell.named_parameters()}
    inputs = {"x": rng.normal(size=(T, B, I)), "h0": rng.normal(size=(1, B, H)), "c0": rng.normal(size=(1, B, H)),
              "dy": rng.normal(size=(T, B, H))}
    x, h0, c0 = (torch.tensor(inputs[name], requires_grad=True) for name in ("x", "h0", "c0"))
    h, c, ys = h0[0], c0[0], []
    for t in range(T):
        h, c = lstm_cell(x[t], (h, c))
        ys.append(h)
        if cut_cell:  # the slip: no gradient from c_(t+1) back to c_t
            c = c.detach()
    torch.stack(ys).backward(torch.tensor(inputs["dy"]))
    grads = {"d" + name: p.grad.numpy() for name, p in params.items()}
    grads.update(dx=x.grad.numpy(), dh0=h0.grad.numpy(), dc0=c0.grad.numpy())
    params = {name: p.detach().numpy() for name, p in params.items()}
    diagnosis = diagnose("torch", params, inputs, grads)
    expected = ("path-cut", None, "cell") if cut_cell else ("correct", None, None)
    assert set(verdicts(diagnosis).values()) == {expected}
    assert len(diagnosis.tensors) == 7


def test_json_and_text(rng):
    params, inputs, caches = course_lstm(rng)
    grads = lstm_backward(inputs["da"], caches, "current_only")
    grads["dWc"] = grads["dWc"].T.reshape(grads["dWc"].shape)  # a term misplaced
    diagnosis = diagnose("coursera-lstm", params, inputs, grads)
    assert isinstance(diagnosis, Diagnosis)
    as_json = json.loads(diagnosis.to_json())
    assert set(as_json) == {"verdict", "tensors", "forward", "cases", "summary"}
    assert as_json["verdict"] == {"status": "wrong", "depth": None, "window": None, "path": None, "slip": None, "forward": []}
    assert list(as_json["tensors"]) == COURSE_GRADS
    for entry in as_json["tensors"].values():
        assert set(entry) == {"status", "depth", "window", "path", "slip", "rel_err", "worst"}
    assert as_json["tensors"]["dWf"] == {**as_json["tensors"]["dWf"], "status": "truncated", "depth": 1, "path": None}
    wrong = as_json["tensors"]["dWc"]
    assert wrong["status"] == "wrong" and wrong["depth"] is None and len(wrong["worst"]) == 2
    assert as_json["summary"].startswith("Verdict: wrong: the gradients do not agree on one variant of BPTT.")
    assert "dWc match no variant" in as_json["summary"]
    assert "does not carry da_prev and dc_prev" in as_json["summary"]  # what the others show
    text = str(diagnosis)
    assert text.splitlines()[0].split() == ["tensor", "status", "truncation", "path", "slip", "rel", "err", "worst", "at"]
    assert text.splitlines()[1].split()[:3] == ["dWf", "truncated", "1"]
    assert text.endswith(diagnosis.summary)


def test_non_finite_gradients_are_wrong(rng):
    params, inputs, caches = course_lstm(rng)
    grads = lstm_backward(inputs["da"], caches)
    grads["dbf"][1, 0] = np.nan
    entry = json.loads(diagnose("coursera-lstm", params, inputs, grads).to_json())["tensors"]["dbf"]
    assert entry == {"status": "wrong", "depth": None, "window": None, "path": None, "slip": None, "rel_err": None,
                     "worst": [1, 0]}


def test_arrays_that_do_not_fit_are_named(rng):
    params, inputs, caches = course_lstm(rng)
    grads = lstm_backward(inputs["da"], caches)
    with pytest.raises(LayoutError, match="unknown layout 'course'"):
        diagnose("course", params, inputs, grads)
    with pytest.raises(LayoutError, match=r"inputs: missing a0 \(4, 2\)"):
        diagnose("coursera-lstm", params, {k: v for k, v in inputs.items() if k != "a0"}, grads)
    with pytest.raises(LayoutError, match=r"inputs: da: expected shape \(4, 2, 5\) but got \(4, 2, 4\)"):
        diagnose("coursera-lstm", params, {**inputs, "da": inputs["da"][:, :, 1:]}, grads)
    with pytest.raises(LayoutError, match=r"grads: dWo: expected shape \(4, 7\) but got \(7, 4\)"):
        diagnose("coursera-lstm", params, inputs, {**grads, "dWo": grads["dWo"].T})
    with pytest.raises(LayoutError, match="grads: unknown dWy, dWhat; expected some of dWf, dbf"):
        diagnose("coursera-lstm", params, inputs, {**grads, "dWy": 0, "dWhat": 0})
    with pytest.raises(LayoutError, match="grads: no arrays"):
        diagnose("coursera-lstm", params, inputs, {})


# the command


@pytest.fixture
def course_files(rng, tmp_path):
    """P.npz, X.npz, and G.npz with the gradients of each slip; returns a function of the slip."""
    params, inputs, caches = course_lstm(rng)
    np.savez(tmp_path / "P.npz", **params)
    np.savez(tmp_path / "X.npz", **inputs)

    def argv(slip):
        np.savez(tmp_path / "G.npz", **lstm_backward(inputs["da"], caches, slip))
        return ["diagnose", "--layout", "coursera-lstm", "--params", str(tmp_path / "P.npz"),
                "--inputs", str(tmp_path / "X.npz"), "--grads", str(tmp_path / "G.npz")]
    return argv


def test_cli_json_and_exit_status(course_files, capsys):
    assert cli.main(course_files(None) + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {entry["status"] for entry in out["tensors"].values()} == {"correct"}
    assert cli.main(course_files("no_da_prev") + ["--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert {(e["status"], e["path"]) for e in out["tensors"].values()} == {("path-cut", "hidden")}
    assert cli.main(course_files("current_only")) == 1
    out = capsys.readouterr().out
    assert "Verdict: BPTT truncated to 1 step." in out and "dWo = Σ_t" in out


def test_cli_bad_files_are_one_line_and_exit_2(course_files, tmp_path, capsys):
    argv = course_files(None)
    (tmp_path / "text.npz").write_text("not an archive")
    np.save(tmp_path / "single.npy", np.zeros(3))
    np.savez(tmp_path / "short.npz", x=np.zeros((I, B, T)))
    cases = [
        (argv[:6] + [str(tmp_path / "missing.npz")] + argv[7:], "inputs file .*missing.npz: no such file"),
        (argv[:6] + [str(tmp_path / "text.npz")] + argv[7:], "inputs file .*text.npz: not an .npz archive"),
        (argv[:4] + [str(tmp_path / "single.npy")] + argv[5:], "params file .*single.npy: a single array"),
        (argv[:6] + [str(tmp_path / "short.npz")] + argv[7:], r"inputs: missing a0 \(4, 2\), da \(4, 2, 5\)"),
    ]
    for case, message in cases:
        assert cli.main(case) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("bptt diagnose: ")
        assert re.search(message, err), err
