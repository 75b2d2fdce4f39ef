"""Interop: every layout converts both ways, and computes what the library computes."""

import numpy as np
import pytest

from bptt.interop import LAYOUTS, LayoutError, coursera, get_layout, keras, new_model, to_model
from learners import keras_forward, lstm_backward, lstm_forward, rnn_backward, rnn_forward

I, H, B, T = 3, 4, 2, 5
LAYOUT_CELLS = [
    ("torch", "rnn_tanh"), ("torch", "lstm"), ("torch", "gru"),
    ("coursera-rnn", "rnn_tanh"), ("coursera-lstm", "lstm"),
    ("keras", "rnn_tanh"), ("keras", "lstm"), ("keras", "gru"),
]


def random_arrays(shapes, rng):
    return {name: rng.normal(0.0, 0.5, size=shape) for name, shape in shapes.items()}


def random_model(cell, rng):
    """A float64 library model with non-zero, different biases."""
    model = new_model(cell, I, H)
    model.load_state_dict(random_arrays(model.shapes(), rng))
    return model


@pytest.mark.parametrize("layout, cell", LAYOUT_CELLS)
def test_layout_to_torch_and_back_is_the_identity(layout, cell, rng):
    layout = get_layout(layout)
    params = random_arrays(layout.param_shapes(cell, I, H), rng)
    assert layout.describe(params) == (cell, I, H)
    for there, back in ((layout.params_to_torch, layout.params_from_torch),
                        (layout.grads_to_torch, layout.grads_from_torch)):  # a gradient converts like its parameter
        returned = back(there(params), cell)
        assert list(returned) == list(params)
        for name, value in params.items():
            np.testing.assert_array_equal(returned[name], value, err_msg=name)


@pytest.mark.parametrize("layout, cell", LAYOUT_CELLS)
def test_torch_to_layout_and_back_computes_the_same(layout, cell, rng):
    layout = get_layout(layout)
    model = random_model(cell, rng)
    x = rng.normal(size=(T, B, I))
    y, _, cache = model.forward(x)
    grads, _, _ = model.backward(cache, rng.normal(size=y.shape))
    state_dict = model.state_dict()
    returned = layout.params_to_torch(layout.params_from_torch(state_dict, cell))
    for name in ("weight_ih_l0", "weight_hh_l0"):
        np.testing.assert_array_equal(returned[name], state_dict[name])
    if layout.NAME == "torch" or cell == "gru":  # both biases kept
        np.testing.assert_array_equal(returned["bias_hh_l0"], state_dict["bias_hh_l0"])
    else:  # one bias, their sum, which is all that enters an RNN or LSTM
        np.testing.assert_allclose(returned["bias_ih_l0"], state_dict["bias_ih_l0"] + state_dict["bias_hh_l0"], rtol=1e-15)
        np.testing.assert_array_equal(returned["bias_hh_l0"], 0.0)
    converted = new_model(cell, I, H)
    converted.load_state_dict(returned)
    np.testing.assert_allclose(converted.forward(x)[0], y, rtol=1e-13, atol=1e-15)
    # RNN and LSTM: dbias_ih == dbias_hh, so a single bias's gradient comes back as both
    returned = layout.grads_to_torch(layout.grads_from_torch(grads, cell))
    for name, value in grads.items():
        np.testing.assert_array_equal(returned[name], value, err_msg=name)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_data_round_trip(layout, rng):
    layout = get_layout(layout)
    steps = 1 if hasattr(layout, "SEQUENCE") else T  # a step layout holds one step
    x = rng.normal(size=(steps, B, I))
    in_layout = layout.sequence_from_torch(x)
    assert in_layout.shape == layout.sequence_shape(steps, B, I)
    np.testing.assert_array_equal(layout.sequence_to_torch(in_layout), x)
    h0 = rng.normal(size=(1, B, H))
    in_layout = layout.state_from_torch(h0)
    assert in_layout.shape == layout.state_shape(B, H)
    np.testing.assert_array_equal(layout.state_to_torch(in_layout), h0)


def test_coursera_data_is_features_batch_time(rng):
    x = rng.normal(size=(I, B, T))  # n_x, m, T_x
    a0 = rng.normal(size=(H, B))  # n_a, m
    assert coursera.sequence_to_torch(x)[4, 1, 2] == x[2, 1, 4]
    assert coursera.state_to_torch(a0)[0, 1, 3] == a0[3, 1]
    x = rng.normal(size=(B, T, I))
    assert keras.sequence_to_torch(x)[4, 1, 2] == x[1, 4, 2]


def course_problem(layout, rng):
    """Parameters, x (n_x, m, T_x), a0, c0 (n_a, m) and da (n_a, m, T_x) of the course."""
    params = random_arrays(get_layout(layout).param_shapes("lstm" if "lstm" in layout else "rnn_tanh", I, H), rng)
    return params, rng.normal(size=(I, B, T)), rng.normal(0, 0.5, size=(H, B)), rng.normal(0, 0.5, size=(H, B)), \
        rng.normal(size=(H, B, T))


def test_coursera_lstm_forward_and_backward_match_the_library(rng):
    params, x, a0, c0, da = course_problem("coursera-lstm", rng)
    a, c, caches = lstm_forward(x, a0, params, c0)
    model = to_model("coursera-lstm", params)
    state0 = (coursera.state_to_torch(a0), coursera.state_to_torch(c0))
    y, _, cache = model.forward(coursera.sequence_to_torch(x), state0)
    np.testing.assert_allclose(coursera.sequence_from_torch(y), a, rtol=1e-12, atol=1e-14)
    for t in range(T):  # the cell state of every step: the final state of the first t+1 steps
        _, (_, c_t), _ = model.forward(coursera.sequence_to_torch(x[:, :, :t + 1]), state0)
        np.testing.assert_allclose(coursera.state_from_torch(c_t), c[:, :, t], rtol=1e-12, atol=1e-14)
    course = lstm_backward(da, caches)
    grads, dx, (dh0, dc0) = model.backward(cache, coursera.sequence_to_torch(da))
    ours = {"d" + name: g for name, g in get_layout("coursera-lstm").grads_from_torch(grads, "lstm").items()}
    ours.update(dx=coursera.sequence_from_torch(dx), da0=coursera.state_from_torch(dh0),
                dc0=coursera.state_from_torch(dc0))
    assert ours.keys() == course.keys()
    for name, value in course.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-10, atol=1e-13, err_msg=name)


def test_coursera_rnn_forward_and_backward_match_the_library(rng):
    params, x, a0, _, da = course_problem("coursera-rnn", rng)
    a, caches = rnn_forward(x, a0, params)
    model = to_model("coursera-rnn", params)
    y, _, cache = model.forward(coursera.sequence_to_torch(x), coursera.state_to_torch(a0))
    np.testing.assert_allclose(coursera.sequence_from_torch(y), a, rtol=1e-12, atol=1e-14)
    course = rnn_backward(da, caches)
    grads, dx, dh0 = model.backward(cache, coursera.sequence_to_torch(da))
    ours = {"d" + name: g for name, g in get_layout("coursera-rnn").grads_from_torch(grads, "rnn_tanh").items()}
    ours.update(dx=coursera.sequence_from_torch(dx), da0=coursera.state_from_torch(dh0))
    for name, value in course.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru"])
def test_keras_equations_match_the_library(cell, rng):
    torch = pytest.importorskip("torch")
    params = random_arrays(keras.param_shapes(cell, I, H), rng)
    x, h0, c0 = rng.normal(size=(B, T, I)), rng.normal(0, 0.5, size=(B, H)), rng.normal(0, 0.5, size=(B, H))
    dy = rng.normal(size=(B, T, H))
    leaves = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    y_keras = keras_forward(cell, leaves, torch.tensor(x), torch.tensor(h0), torch.tensor(c0))
    y_keras.backward(torch.tensor(dy))
    model = to_model("keras", params)
    state0 = keras.state_to_torch(h0)
    if cell == "lstm":
        state0 = (state0, keras.state_to_torch(c0))
    y, _, cache = model.forward(keras.sequence_to_torch(x), state0)
    np.testing.assert_allclose(keras.sequence_from_torch(y), y_keras.detach().numpy(), rtol=1e-12, atol=1e-14)
    grads, _, _ = model.backward(cache, keras.sequence_to_torch(dy))
    for name, value in keras.grads_from_torch(grads, cell).items():
        np.testing.assert_allclose(value, leaves[name].grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)


def test_unknown_layout_names_the_known_ones():
    with pytest.raises(LayoutError, match="unknown layout 'pytorch'; expected one of: torch, coursera-rnn"):
        get_layout("pytorch")


def test_missing_and_misshapen_params_are_named(rng):
    layout = get_layout("coursera-lstm")
    params = random_arrays(layout.param_shapes("lstm", I, H), rng)
    del params["bo"]
    params["Wi"] = params["Wi"][:, 1:]
    with pytest.raises(LayoutError, match=r"params: missing bo \(4, 1\); Wi: expected shape \(4, 7\) but got \(4, 6\)"):
        layout.params_to_torch(params)
    with pytest.raises(LayoutError, match="params: missing Wf"):
        to_model("coursera-lstm", {"Wy": np.zeros((2, 4))})


def test_layout_errors_for_cells_and_gate_counts(rng):
    gru = random_arrays(keras.param_shapes("gru", I, H), rng)
    gru["bias"] = gru["bias"][0]
    with pytest.raises(LayoutError, match="reset_after=False"):
        keras.describe(gru)
    with pytest.raises(LayoutError, match=r"expected weight_hh_l0 of shape \(K\*H, H\) .* but got \(8, 4\)"):
        get_layout("torch").describe({"weight_ih_l0": np.zeros((8, 3)), "weight_hh_l0": np.zeros((8, 4))})
    with pytest.raises(LayoutError, match="holds an LSTM, not gru"):
        get_layout("coursera-lstm").params_from_torch(new_model("gru", I, H).state_dict(), "gru")
