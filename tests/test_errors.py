"""Every bad input is refused with a message that names what was expected and what came.

The model in most tests is ``LSTM(3, 4, num_layers=2, bidirectional=True)`` in float64: its
inputs are x (T=5, B=2, I=3), states (L*D=4, B=2, H=4) and outputs y (5, 2, D*H=8).
"""

import re

import numpy as np
import pytest

import bptt

T, B = 5, 2
STATE_SHAPE = (4, B, 4)  # L*D, B, H


@pytest.fixture
def lstm():
    return bptt.LSTM(3, 4, 2, bidirectional=True, dtype=np.float64, seed=0)


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(T, B, 3))


def zeros_state():
    return np.zeros(STATE_SHAPE), np.zeros(STATE_SHAPE)


def raises(error, message):
    """pytest.raises matching ``message`` literally (it holds parentheses)."""
    return pytest.raises(error, match=re.escape(message))


# forward: x


@pytest.mark.parametrize("bad_x, error, message", [
    (np.zeros((T, 7)), ValueError, "expected unbatched x of shape (T, 3) but got (5, 7)"),
    (np.zeros((T, B, 3, 1)), ValueError, "expected x of shape (T, B, 3) but got (5, 2, 3, 1)"),
    (np.zeros((T, B, 7)), ValueError, "expected x of shape (T, B, 3) but got (5, 2, 7)"),
    (np.zeros((0, B, 3)), ValueError, "expected x with at least one step and one sequence but got shape (0, 2, 3)"),
    (np.zeros((T, 0, 3)), ValueError, "expected x with at least one step and one sequence but got shape (5, 0, 3)"),
    (np.zeros((T, B, 3), dtype=np.int64), TypeError, "expected x of dtype float64 but got int64, which is not float32 or float64"),
], ids=["rank-2", "rank-4", "features", "no-steps", "no-sequences", "integer"])
def test_bad_x(lstm, bad_x, error, message):
    with raises(error, message):
        lstm.forward(bad_x)


def test_batch_first_x_of_the_wrong_feature_size_names_the_batch_first_layout():
    model = bptt.GRU(3, 4, batch_first=True, dtype=np.float64)
    with raises(ValueError, "expected x of shape (B, T, 3) but got (2, 5, 4)"):
        model.forward(np.zeros((2, 5, 4)))


def test_float64_x_into_a_float32_model():
    model = bptt.RNN(3, 4)
    with raises(TypeError, "expected x of dtype float32 (the model's dtype) but got float64"):
        model.forward(np.zeros((T, B, 3)))


# forward: h0


def test_h0_of_the_wrong_shape():
    model = bptt.RNN(3, 4, 2, dtype=np.float64)
    with raises(ValueError, "expected h0 of shape (2, 2, 4) but got (2, 3, 4)"):
        model.forward(np.zeros((T, B, 3)), np.zeros((2, 3, 4)))


def test_lstm_h0_as_a_single_array(lstm, x):
    with raises(ValueError, "expected h0 as a tuple (h0, c0) of arrays of shape (4, 2, 4) but got ndarray"):
        lstm.forward(x, np.zeros(STATE_SHAPE))


def test_lstm_h0_as_a_tuple_of_three(lstm, x):
    with raises(ValueError, "expected h0 as a tuple (h0, c0) of arrays of shape (4, 2, 4) but got tuple of 3"):
        lstm.forward(x, zeros_state() + (np.zeros(STATE_SHAPE),))


def test_lstm_c0_none(lstm, x):
    with raises(ValueError, "expected c0 of shape (4, 2, 4) but got None"):
        lstm.forward(x, (np.zeros(STATE_SHAPE), None))


def test_lstm_c0_of_the_wrong_shape(lstm, x):
    with raises(ValueError, "expected c0 of shape (4, 2, 4) but got (2, 2, 4)"):
        lstm.forward(x, (np.zeros(STATE_SHAPE), np.zeros((2, B, 4))))


def test_h0_of_the_wrong_dtype(lstm, x):
    with raises(TypeError, "expected h0 of dtype float64 (the model's dtype) but got float32"):
        lstm.forward(x, (np.zeros(STATE_SHAPE, np.float32), np.zeros(STATE_SHAPE)))


# forward: lengths


@pytest.mark.parametrize("lengths, error, message", [
    ([3, 2, 1], ValueError, "expected lengths of shape (2,), one per sequence, but got (3,)"),
    ([5], ValueError, "expected lengths of shape (2,), one per sequence, but got (1,)"),
    ([0, 2], ValueError, "expected every length in [1, 5] (T=5) but got lengths[0]=0"),
    ([5, 6], ValueError, "expected every length in [1, 5] (T=5) but got lengths[1]=6"),
    ([1.5, 2], TypeError, "expected lengths of integers but got lengths[0]=1.5"),
    (["3", "2"], TypeError, "expected lengths of integers but got dtype <U1"),
], ids=["too-many", "too-few", "zero", "beyond-T", "fractional", "strings"])
def test_bad_lengths(lstm, x, lengths, error, message):
    with raises(error, message):
        lstm.forward(x, lengths=lengths)


# backward


@pytest.fixture
def lstm_pass(lstm, x):
    """The model, its outputs y (5, 2, 8) and the cache of one forward pass."""
    y, _, cache = lstm.forward(x, zeros_state())
    return lstm, y, cache


def test_dy_of_the_wrong_shape(lstm_pass):
    model, y, cache = lstm_pass
    with raises(ValueError, "expected dy of shape (5, 2, 8) but got (5, 2, 4)"):
        model.backward(cache, np.zeros((T, B, 4)))


def test_dy_of_the_wrong_dtype(lstm_pass):
    model, y, cache = lstm_pass
    with raises(TypeError, "expected dy of dtype float64 (the model's dtype) but got float32"):
        model.backward(cache, y.astype(np.float32))


def test_dh_n_of_the_wrong_shape():
    model = bptt.RNN(3, 4, dtype=np.float64)
    y, _, cache = model.forward(np.zeros((T, B, 3)))
    with raises(ValueError, "expected dh_n of shape (1, 2, 4) but got (1, 3, 4)"):
        model.backward(cache, y, np.zeros((1, 3, 4)))


def test_lstm_dc_n_of_the_wrong_shape(lstm_pass):
    model, y, cache = lstm_pass
    with raises(ValueError, "expected dc_n of shape (4, 2, 4) but got (4, 2, 5)"):
        model.backward(cache, y, (None, np.zeros((4, B, 5))))


def test_lstm_dh_n_as_a_single_array(lstm_pass):
    model, y, cache = lstm_pass
    with raises(ValueError, "expected dh_n as a tuple (dh_n, dc_n) of arrays of shape (4, 2, 4) but got ndarray"):
        model.backward(cache, y, np.zeros(STATE_SHAPE))


@pytest.mark.parametrize("not_a_cache, kind", [((1, 2), "tuple"), (None, "NoneType"), (np.zeros(3), "ndarray")])
def test_backward_of_something_that_is_not_the_forward_cache(lstm_pass, not_a_cache, kind):
    model, y, _ = lstm_pass
    with raises(TypeError, f"expected the cache returned by forward but got {kind}"):
        model.backward(not_a_cache, y)


@pytest.mark.parametrize("depth", [0, -1, 1.5, True])
def test_depth_that_is_not_a_positive_integer(lstm_pass, depth):
    model, y, cache = lstm_pass
    with raises(ValueError, f"expected depth to be a positive integer but got {depth!r}"):
        model.backward(cache, y, depth=depth)


def test_depth_on_a_bidirectional_model(lstm_pass):
    model, y, cache = lstm_pass
    with raises(ValueError, "expected a unidirectional model for truncation by depth 2 but got bidirectional=True "
                            "(windows, k1 == k2, restart both directions)"):
        model.backward(cache, y, depth=2)


def test_depth_with_lengths_is_each_sequence_truncated_alone():
    """A padded batch truncated by depth is each sequence truncated on its own (batched equals
    per-example)."""
    rng = np.random.default_rng(0)
    model = bptt.GRU(3, 4, dtype=np.float64, seed=0)
    x, lengths = rng.normal(size=(T, B, 3)), [T, 3]
    y, _, cache = model.forward(x, lengths=lengths)
    dy = rng.normal(size=y.shape) * (np.arange(T)[:, None, None] < np.array(lengths)[None, :, None])
    grads, dx, _ = model.backward(cache, dy, depth=2)
    total = {name: 0.0 for name in grads}
    for b, n in enumerate(lengths):
        _, _, alone = model.forward(x[:n, b:b + 1])
        grads_b, dx_b, _ = model.backward(alone, dy[:n, b:b + 1], depth=2)
        np.testing.assert_allclose(dx[:n, b:b + 1], dx_b, rtol=1e-12, atol=1e-15)
        total = {name: total[name] + grads_b[name] for name in grads}
    for name in grads:
        np.testing.assert_allclose(grads[name], total[name], rtol=1e-12)


def test_unknown_cut(lstm_pass):
    model, y, cache = lstm_pass
    with raises(ValueError, "expected cut None, 'hidden' or 'cell' but got 'foo'"):
        model.backward(cache, y, cut="foo")


# load_state_dict


def test_load_state_dict_lists_every_bad_key_in_one_message_and_changes_nothing(lstm):
    before = lstm.state_dict()
    bad = lstm.state_dict()
    del bad["weight_ih_l0"], bad["bias_hh_l1_reverse"]
    bad["weight_ih_l2"] = np.zeros((16, 8))
    bad["bias"] = np.zeros(16)
    bad["weight_hh_l1"] = np.zeros((16, 5))
    bad["bias_ih_l0"] = np.zeros(4)
    bad["bias_ih_l1"] = np.zeros(16, dtype=np.int64)
    bad["weight_ih_l1"] = np.ones((16, 8))  # a good value among the bad: must not be loaded
    with raises(ValueError, "cannot load state_dict into LSTM(3, 4, num_layers=2, bidirectional=True, "
                            "dtype=float64)") as info:
        lstm.load_state_dict(bad)
    message = str(info.value)
    for fragment in [
        "missing keys: weight_ih_l0, bias_hh_l1_reverse",
        "unexpected keys: weight_ih_l2, bias",
        "weight_hh_l1: expected (16, 4) but got (16, 5)",
        "bias_ih_l0: expected (16,) but got (4,)",
        "bias_ih_l1: expected a float dtype but got int64",
    ]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert list(lstm.params) == list(before)
    for name, value in before.items():
        assert np.array_equal(lstm.params[name], value), f"{name} changed by a failed load"


@pytest.mark.parametrize("make", [
    lambda: bptt.Network(bptt.GRU(3, 4, dtype=np.float64), 5, input="embedding", vocab_size=6),
    lambda: bptt.nets.Seq2Seq(bptt.LSTM(3, 4, dtype=np.float64), bptt.LSTM(3, 4, dtype=np.float64), 6,
                         source_vocab_size=7, start_id=1),
], ids=["network", "seq2seq"])
def test_a_network_loads_a_state_dict_as_a_layer_does(make):
    model = make()
    before = model.state_dict()
    bad = model.state_dict()
    name = next(k for k in bad if "weight_hh" in k)
    bad[name] = bad[name][:, :-1]
    bad["head.bias"] = bad["head.bias"].astype(np.int32)
    del bad[next(iter(bad))]
    bad["extra"] = np.zeros(1)
    with raises(ValueError, f"cannot load state_dict into {model!r}") as info:
        model.load_state_dict(bad)
    message = str(info.value)
    for fragment in [f"missing keys: {next(iter(before))}", "unexpected keys: extra",
                     f"{name}: expected {before[name].shape} but got {bad[name].shape}",
                     "head.bias: expected a float dtype but got int32"]:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert all(np.array_equal(model.params[k], v) for k, v in before.items())
    single = {k: v.astype(np.float32) for k, v in before.items()}
    model.load_state_dict(single)
    assert all(model.params[k].dtype == np.float64 and np.array_equal(model.params[k], v) for k, v in single.items())


# constructor


@pytest.mark.parametrize("make, error, message", [
    (lambda: bptt.LSTM(3, 0), ValueError, "expected hidden_size to be a positive integer but got 0"),
    (lambda: bptt.GRU(-1, 4), ValueError, "expected input_size to be a positive integer but got -1"),
    (lambda: bptt.RNN(3, 4, 0), ValueError, "expected num_layers to be a positive integer but got 0"),
    (lambda: bptt.RNN(3, 4.0), ValueError, "expected hidden_size to be a positive integer but got 4.0"),
    (lambda: bptt.RNN(3, True), ValueError, "expected hidden_size to be a positive integer but got True"),
    (lambda: bptt.LSTM(3, 4, dtype=np.int32), TypeError, "expected dtype float32 or float64 but got int32"),
    (lambda: bptt.GRU(3, 4, dtype=np.float16), TypeError, "expected dtype float32 or float64 but got float16"),
    (lambda: bptt.RNN(3, 4, nonlinearity="sigmoid"), ValueError,
     "expected nonlinearity \"tanh\" or \"relu\" but got 'sigmoid'"),
], ids=["hidden_size-0", "input_size-negative", "num_layers-0", "hidden_size-float", "hidden_size-bool",
        "dtype-int32", "dtype-float16", "nonlinearity-sigmoid"])
def test_bad_constructor_arguments(make, error, message):
    with raises(error, message):
        make()


@pytest.mark.parametrize("cls", [bptt.LSTM, bptt.GRU, bptt.RNN, bptt.Network, bptt.nets.Seq2Seq])
def test_a_model_whose_init_failed_part_way_has_a_repr(cls):
    """A debugger or a traceback's locals show the object a failed ``__init__`` left: its repr
    names the class instead of raising a second error, and a whole model's is torch's."""
    assert repr(cls.__new__(cls)) == f"<{cls.__name__}, not fully constructed>"
    assert repr(bptt.LSTM(3, 4, dtype=np.float64)) == "LSTM(3, 4, dtype=float64)"
