"""Interop: CS231n's layouts convert both ways, compute what the assignment's code computes, and
the diagnosis reads that code's slips."""

import numpy as np
import pytest

from bptt import Window, diagnose
from bptt.interop import LayoutError, get_layout, new_model, to_model
from bptt.interop import batch_first as cs231n  # the assignment's data layout
from learners_cs231n import (
    lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward, rnn_backward, rnn_forward, rnn_step_backward,
    rnn_step_forward,
)

D, H, N, T = 3, 4, 2, 5  # the assignment's letters: D = I, N = B; D != H so a transpose shows
CELLS = {"cs231n-rnn": "rnn_tanh", "cs231n-lstm": "lstm"}
GRADS = ("dx", "dh0", "dWx", "dWh", "db")  # what the assignment's backwards return, in order


def random_arrays(shapes, rng):
    return {name: rng.normal(0.0, 0.5, size=shape) for name, shape in shapes.items()}


def problem(layout, rng, steps=T):
    """The assignment's params (non-zero b) and inputs: x (N, T, D), h0, c0 (N, H), dh (N, T, H)."""
    params = random_arrays(get_layout(layout).param_shapes(CELLS[layout], D, H), rng)
    inputs = {"x": rng.normal(size=(N, steps, D)), "h0": rng.normal(0, 0.5, size=(N, H)),
              "c0": rng.normal(0, 0.5, size=(N, H)), "dh": rng.normal(size=(N, steps, H))}
    if layout == "cs231n-rnn":
        del inputs["c0"]
    return params, inputs


def learner(layout, params, inputs, **switches):
    """The learner's h and the gradients of their backward, keyed as ``diagnose`` takes them."""
    if layout == "cs231n-lstm":
        h, cache = lstm_forward(inputs["x"], inputs["h0"], params["Wx"], params["Wh"], params["b"], inputs.get("c0"))
        return h, dict(zip(GRADS, lstm_backward(inputs["dh"], cache, **switches)))
    h, cache = rnn_forward(inputs["x"], inputs["h0"], params["Wx"], params["Wh"], params["b"])
    return h, dict(zip(GRADS, rnn_backward(inputs["dh"], cache, **switches)))


def library(layout, params, inputs, **backward_options):
    """The library's h and gradients (dx, dh0, and dc0 for LSTM, in the layout; the parameters'
    in torch's names), the model built from the layout's params."""
    model = to_model(layout, params)
    state0 = cs231n.state_to_torch(inputs["h0"])
    if layout == "cs231n-lstm":
        state0 = (state0, cs231n.state_to_torch(inputs.get("c0", np.zeros((N, H)))))
    y, _, cache = model.forward(cs231n.sequence_to_torch(inputs["x"]), state0)
    grads, dx, dstate0 = model.backward(cache, cs231n.sequence_to_torch(inputs["dh"]), **backward_options)
    dh0, dc0 = dstate0 if layout == "cs231n-lstm" else (dstate0, None)
    data_grads = {"dx": cs231n.sequence_from_torch(dx), "dh0": cs231n.state_from_torch(dh0)}
    if dc0 is not None:
        data_grads["dc0"] = cs231n.state_from_torch(dc0)
    return cs231n.sequence_from_torch(y), grads, data_grads


def assert_matches(learner_grads, layout, torch_grads, data_grads):
    """The learner's dWx, dWh, db converted to torch, and dx, dh0, equal the library's."""
    converted = get_layout(layout).grads_to_torch({name[1:]: learner_grads[name] for name in ("dWx", "dWh", "db")})
    assert converted.keys() == torch_grads.keys()
    for name, value in torch_grads.items():
        np.testing.assert_allclose(converted[name], value, rtol=1e-10, atol=1e-13, err_msg=name)
    for name in ("dx", "dh0"):
        np.testing.assert_allclose(learner_grads[name], data_grads[name], rtol=1e-10, atol=1e-13, err_msg=name)


# conversions


@pytest.mark.parametrize("layout", list(CELLS))
def test_params_and_grads_to_torch_and_back(layout, rng):
    layout, cell = get_layout(layout), CELLS[layout]
    params = random_arrays(layout.param_shapes(cell, D, H), rng)
    assert layout.describe(params) == (cell, D, H)
    for there, back in ((layout.params_to_torch, layout.params_from_torch),
                        (layout.grads_to_torch, layout.grads_from_torch)):
        returned = back(there(params), cell)
        assert list(returned) == ["Wx", "Wh", "b"]
        for name, value in params.items():
            np.testing.assert_array_equal(returned[name], value, err_msg=name)
    # the other way: a library model's parameters and gradients (dbias_ih == dbias_hh)
    model = new_model(cell, D, H)
    model.load_state_dict(random_arrays(model.shapes(), rng))  # different, non-zero biases
    y, _, cache = model.forward(rng.normal(size=(T, N, D)))
    grads, _, _ = model.backward(cache, rng.normal(size=y.shape))
    state_dict = model.state_dict()
    returned = layout.params_to_torch(layout.params_from_torch(state_dict, cell))
    for name in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_array_equal(returned[name], state_dict[name])
    np.testing.assert_allclose(returned["bias_ih_l0"], state_dict["bias_ih_l0"] + state_dict["bias_hh_l0"], rtol=1e-15)
    np.testing.assert_array_equal(returned["bias_hh_l0"], 0.0)
    returned = layout.grads_to_torch(layout.grads_from_torch(grads, cell))
    for name, value in grads.items():
        np.testing.assert_array_equal(returned[name], value, err_msg=name)


def test_lstm_gate_blocks_are_i_f_o_g(rng):
    layout = get_layout("cs231n-lstm")
    params = random_arrays(layout.param_shapes("lstm", D, H), rng)
    torch_params = layout.params_to_torch(params)
    for torch_block, block in enumerate((0, 1, 3, 2)):  # torch's i, f, g, o
        rows, columns = slice(torch_block * H, (torch_block + 1) * H), slice(block * H, (block + 1) * H)
        np.testing.assert_array_equal(torch_params["weight_ih_l0"][rows], params["Wx"][:, columns].T)
        np.testing.assert_array_equal(torch_params["weight_hh_l0"][rows], params["Wh"][:, columns].T)
        np.testing.assert_array_equal(torch_params["bias_ih_l0"][rows], params["b"][columns])


def test_data_is_batch_time_features_both_ways(rng):
    x = rng.normal(size=(N, T, D))
    assert cs231n.sequence_to_torch(x)[4, 1, 2] == x[1, 4, 2]
    np.testing.assert_array_equal(cs231n.sequence_from_torch(cs231n.sequence_to_torch(x)), x)
    assert cs231n.sequence_shape(T, N, D) == x.shape
    h0 = rng.normal(size=(N, H))
    assert cs231n.state_to_torch(h0).shape == (1, N, H)
    np.testing.assert_array_equal(cs231n.state_from_torch(cs231n.state_to_torch(h0)), h0)
    assert cs231n.state_shape(N, H) == h0.shape
    for layout in CELLS:
        assert get_layout(layout).sequence_to_torch is cs231n.sequence_to_torch


# the assignment's code against the library


@pytest.mark.parametrize("layout, with_c0", [("cs231n-rnn", False), ("cs231n-lstm", True), ("cs231n-lstm", False)])
def test_forward_and_backward_match_the_library(layout, with_c0, rng):
    params, inputs = problem(layout, rng)
    if not with_c0:
        inputs.pop("c0", None)  # zero, as in the assignment
    h, grads = learner(layout, params, inputs)
    y, torch_grads, data_grads = library(layout, params, inputs)
    np.testing.assert_allclose(h, y, rtol=1e-12, atol=1e-14)
    assert_matches(grads, layout, torch_grads, data_grads)


def test_rnn_step_matches_one_library_step(rng):
    params, inputs = problem("cs231n-rnn", rng, steps=1)
    x, prev_h, dnext_h = inputs["x"][:, 0], inputs["h0"], inputs["dh"][:, 0]
    next_h, cache = rnn_step_forward(x, prev_h, params["Wx"], params["Wh"], params["b"])
    y, torch_grads, data_grads = library("cs231n-rnn", params, inputs)
    np.testing.assert_allclose(next_h, y[:, 0], rtol=1e-12, atol=1e-14)
    assert_matches(dict(zip(GRADS, rnn_step_backward(dnext_h, cache))), "cs231n-rnn", torch_grads,
                   {"dx": data_grads["dx"][:, 0], "dh0": data_grads["dh0"]})


def test_lstm_step_matches_one_library_step_with_dnext_c(rng):
    params, inputs = problem("cs231n-lstm", rng, steps=1)
    x, prev_h, prev_c, dnext_h = inputs["x"][:, 0], inputs["h0"], inputs["c0"], inputs["dh"][:, 0]
    dnext_c = rng.normal(size=(N, H))
    next_h, next_c, cache = lstm_step_forward(x, prev_h, prev_c, params["Wx"], params["Wh"], params["b"])
    dx, dprev_h, dprev_c, dWx, dWh, db = lstm_step_backward(dnext_h, dnext_c, cache)
    model = to_model("cs231n-lstm", params)
    state0 = (cs231n.state_to_torch(prev_h), cs231n.state_to_torch(prev_c))
    y, (_, c_n), model_cache = model.forward(cs231n.sequence_to_torch(inputs["x"]), state0)
    np.testing.assert_allclose(next_h, y[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(next_c, cs231n.state_from_torch(c_n), rtol=1e-12, atol=1e-14)
    torch_grads, dx_lib, (dh0, dc0) = model.backward(
        model_cache, cs231n.sequence_to_torch(inputs["dh"]), (None, cs231n.state_to_torch(dnext_c)))
    assert_matches({"dx": dx, "dh0": dprev_h, "dWx": dWx, "dWh": dWh, "db": db}, "cs231n-lstm", torch_grads,
                   {"dx": dx_lib[0], "dh0": cs231n.state_from_torch(dh0)})
    np.testing.assert_allclose(dprev_c, cs231n.state_from_torch(dc0), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("layout", list(CELLS))
@pytest.mark.parametrize("align", ["end", "start"])
def test_learners_windows_are_the_librarys(layout, align, rng):
    params, inputs = problem(layout, rng)
    _, grads = learner(layout, params, inputs, window=2, window_align=align)  # T = 5: the two aligns differ
    _, torch_grads, data_grads = library(layout, params, inputs, window=Window(2, 2, align))
    assert_matches(grads, layout, torch_grads, data_grads)
    _, full_grads, _ = library(layout, params, inputs)
    assert not np.allclose(torch_grads["weight_hh_l0"], full_grads["weight_hh_l0"], rtol=1e-3)


# the diagnosis of the assignment's code


def verdicts(diagnosis):
    return {name: (v.status, v.depth, v.path) for name, v in diagnosis.tensors.items()}


@pytest.mark.parametrize("layout, switches, expected", [
    ("cs231n-rnn", {}, ("correct", None, None)),
    # without dprev_h a vanilla RNN keeps no path through time: that is truncation at depth 1
    ("cs231n-rnn", {"carry": False}, ("truncated", 1, None)),
    ("cs231n-lstm", {}, ("correct", None, None)),
    ("cs231n-lstm", {"carry": False}, ("path-cut", None, "hidden")),
    ("cs231n-lstm", {"carry_c": False}, ("path-cut", None, "cell")),
    ("cs231n-lstm", {"carry": False, "carry_c": False}, ("truncated", 1, None)),
])
def test_diagnose_reads_the_carry_slips(layout, switches, expected, rng):
    params, inputs = problem(layout, rng)
    _, grads = learner(layout, params, inputs, **switches)
    names = ["dWx", "dWh", "db", "dx", "dh0"]
    diagnosis = diagnose(layout, params, inputs, {name: grads[name] for name in names})
    assert list(diagnosis.tensors) == names
    assert verdicts(diagnosis) == {name: expected for name in names}
    assert diagnosis.passed == (not switches)
    if layout == "cs231n-rnn" and switches:  # told in the assignment's names
        assert "dh[:, t] + dprev_h" in diagnosis.summary


@pytest.mark.parametrize("layout", list(CELLS))
@pytest.mark.parametrize("align", ["end", "start"])
def test_diagnose_reads_the_learners_windows(layout, align, rng):
    params, inputs = problem(layout, rng)
    _, grads = learner(layout, params, inputs, window=2, window_align=align)
    diagnosis = diagnose(layout, params, inputs, grads)
    assert {(v.status, v.window, v.path) for v in diagnosis.tensors.values()} == {
        ("truncated", Window(2, 2, align), None)}


@pytest.mark.parametrize("layout, slip", [
    ("cs231n-rnn", "tanh-twice"),
    ("cs231n-lstm", "no-sigmoid-derivative"),
    ("cs231n-lstm", "no-tanh-derivative-candidate"),
    ("cs231n-lstm", "tanh-twice"),
    ("cs231n-lstm", "time-index"),
])
def test_a_slip_inside_a_step_is_wrong(layout, slip, rng):
    params, inputs = problem(layout, rng)
    _, grads = learner(layout, params, inputs, slip=slip)
    diagnosis = diagnose(layout, params, inputs, {name: grads[name] for name in ("dWx", "dWh", "db")})
    assert {v.status for v in diagnosis.tensors.values()} == {"wrong"}


def test_an_unknown_slip_is_refused(rng):
    params, inputs = problem("cs231n-rnn", rng)
    with pytest.raises(ValueError, match="'time-index'"):
        learner("cs231n-rnn", params, inputs, slip="time-index")


# errors


def test_a_misshapen_wx_is_named_with_both_shapes(rng):
    params = random_arrays(get_layout("cs231n-lstm").param_shapes("lstm", D, H), rng)
    with pytest.raises(LayoutError, match=r"params: expected Wx of shape \(D, 4H\) = \(D, 16\) but got \(16, 3\) "
                                          r"\(H = 4 from Wh of shape \(4, 16\)\)"):
        to_model("cs231n-lstm", {**params, "Wx": params["Wx"].T})
    params = random_arrays(get_layout("cs231n-rnn").param_shapes("rnn_tanh", D, H), rng)
    with pytest.raises(LayoutError, match=r"params: expected Wx of shape \(D, H\) = \(D, 4\) but got \(3, 5\)"):
        get_layout("cs231n-rnn").describe({**params, "Wx": np.zeros((D, H + 1))})


def test_missing_keys_and_the_other_cell_are_named(rng):
    lstm = random_arrays(get_layout("cs231n-lstm").param_shapes("lstm", D, H), rng)
    rnn = random_arrays(get_layout("cs231n-rnn").param_shapes("rnn_tanh", D, H), rng)
    with pytest.raises(LayoutError, match=r"params: missing b \(16,\)$"):
        get_layout("cs231n-lstm").params_to_torch({"Wx": lstm["Wx"], "Wh": lstm["Wh"]})
    with pytest.raises(LayoutError, match="params: missing Wh$"):
        to_model("cs231n-rnn", {"Wx": rnn["Wx"], "b": rnn["b"]})
    with pytest.raises(LayoutError, match=r"params: b: expected shape \(4,\) but got \(4, 1\)"):
        get_layout("cs231n-rnn").describe({**rnn, "b": rnn["b"][:, None]})
    with pytest.raises(LayoutError, match=r"expected Wh of shape \(H, 4H\) but got \(4, 4\) \(a vanilla RNN's Wh"):
        to_model("cs231n-lstm", rnn)
    with pytest.raises(LayoutError, match=r"expected Wh of shape \(H, H\) but got \(4, 16\) \(an LSTM's Wh"):
        to_model("cs231n-rnn", lstm)
    with pytest.raises(LayoutError, match="the cs231n-lstm layout holds an LSTM, not gru"):
        get_layout("cs231n-lstm").params_from_torch(new_model("gru", D, H).state_dict(), "gru")
    _, inputs = problem("cs231n-lstm", rng)
    with pytest.raises(LayoutError, match=r"inputs: missing dh \(2, 5, 4\)"):
        diagnose("cs231n-lstm", lstm, {k: v for k, v in inputs.items() if k != "dh"}, {"db": np.zeros(4 * H)})
