"""What PyTorch users expect: a model call that returns torch's ``(y, h_n)``, ``parameters()``
and ``named_parameters()``, unbatched input, dropout that cannot be silently off, greedy
sampling; and the README's API section, which runs here as written."""

import pathlib
import re

import numpy as np
import pytest

import bptt
from bptt.cells import CELLS
from bptt.layers import ForwardCache, Output
from bptt.nets import Network, tbptt
from bptt.proofs import gradcheck
from bptt.proofs.objectives import stack_objective
from bptt.proofs.report import CHECKED_CELLS, KINK_MARGIN, config_problems, kink_margin, pre_activations
from bptt.training.data import Vocabulary
from bptt.training.sampling import next_char_distribution, sample_chars

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
# our class, torch's class name, options
MODELS = {
    "rnn_tanh": (bptt.RNN, "RNN", {}),
    "rnn_relu": (bptt.RNN, "RNN", {"nonlinearity": "relu"}),
    "lstm": (bptt.LSTM, "LSTM", {}),
    "gru": (bptt.GRU, "GRU", {}),
}


def raises(error, message):
    """pytest.raises matching ``message`` literally (it holds parentheses)."""
    return pytest.raises(error, match=re.escape(message))


def _rel(a, b):
    b = b.detach().numpy() if hasattr(b, "detach") else np.asarray(b)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


def _parts(state):
    """A state as a tuple of arrays: LSTM's pair as it is, another cell's array as a 1-tuple."""
    return state if isinstance(state, tuple) else (state,)


def _state(parts):
    return parts if len(parts) > 1 else parts[0]


def _model(kind, num_layers=2, bidirectional=True, batch_first=False, seed=0, **options):
    cls, _, extra = MODELS[kind]
    return cls(3, 5, num_layers, bidirectional=bidirectional, batch_first=batch_first, dtype=np.float64, seed=seed,
               **extra, **options)


# 1. the call


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_a_call_returns_what_torch_returns_and_carries_the_cache_of_forward(kind, rng):
    torch = pytest.importorskip("torch")
    model = _model(kind, batch_first=True)
    _, torch_name, extra = MODELS[kind]
    reference = getattr(torch.nn, torch_name)(3, 5, 2, bidirectional=True, batch_first=True, **extra)
    model.load_state_dict(reference.state_dict())
    x = rng.normal(size=(4, 6, 3))  # B,T,I
    h0 = tuple(rng.normal(size=(4, 4, 5)) for _ in model.cell.STATE_NAMES)  # L*D,B,H each
    before = dict(vars(model))

    out = model(x, _state(h0))
    y, h_n = out
    assert isinstance(out, tuple) and len(out) == 2 and out.y is y and out.h_n is h_n
    assert isinstance(out.cache, ForwardCache)
    assert vars(model).keys() == before.keys() and all(vars(model)[k] is v for k, v in before.items())

    torch_y, torch_h_n = reference(torch.from_numpy(x), _state(tuple(torch.from_numpy(s) for s in h0)))
    assert _rel(y, torch_y) < 1e-10
    for ours, theirs in zip(_parts(h_n), _parts(torch_h_n)):
        assert _rel(ours, theirs) < 1e-10

    # the call is forward: the same outputs, and its cache gives backward the same gradients
    y_f, h_n_f, cache = model.forward(x, _state(h0))
    np.testing.assert_array_equal(y, y_f)
    dy, dh_n = rng.normal(size=y.shape), _state(tuple(rng.normal(size=s.shape) for s in h0))
    by_call, by_forward = model.backward(out.cache, dy, dh_n), model.backward(cache, dy, dh_n)
    for name in model.params:
        np.testing.assert_array_equal(by_call[0][name], by_forward[0][name])
    np.testing.assert_array_equal(by_call[1], by_forward[1])
    for a, b in zip(_parts(by_call[2]), _parts(by_forward[2])):
        np.testing.assert_array_equal(a, b)


def test_two_calls_can_be_open_at_once(rng):
    model = _model("lstm")
    x1, x2 = rng.normal(size=(5, 2, 3)), rng.normal(size=(3, 4, 3))
    first, second = model(x1), model(x2)  # both open; the second's backward runs first
    dy2, dy1 = rng.normal(size=(3, 4, 10)), rng.normal(size=(5, 2, 10))
    grads2, _, _ = model.backward(second.cache, dy2)
    grads1, dx1, _ = model.backward(first.cache, dy1)
    alone1, alone_dx1, _ = model.backward(model.forward(x1)[2], dy1)
    np.testing.assert_array_equal(dx1, alone_dx1)
    for name in model.params:
        np.testing.assert_array_equal(grads1[name], alone1[name])
    assert grads2["weight_hh_l0"].shape == grads1["weight_hh_l0"].shape


def test_a_call_for_inference_has_no_cache_and_backward_asks_for_the_cache(rng):
    model = _model("gru")
    x = rng.normal(size=(5, 2, 3))
    y, h_n = model(x, keep_cache=False)
    assert model(x, keep_cache=False).cache is None
    np.testing.assert_allclose(y, model(x).y, rtol=1e-14, atol=1e-15)
    with raises(TypeError, "got the whole result of a model call: pass its .cache, as in "
                "model.backward(out.cache, dy)"):
        model.backward(model(x), np.zeros((5, 2, 10)))


def test_the_class_docstrings_say_how_to_call():
    calls = {bptt.LSTM: "y, (h_n, c_n) = lstm(x)", bptt.GRU: "y, h_n = gru(x)", bptt.RNN: "y, h_n = rnn(x)"}
    for cls, call in calls.items():
        assert call in cls.__doc__ and ".cache" in cls.__doc__
    assert "dropout_rng=False" in bptt.LSTM.__mro__[1].__doc__


# 2. parameters() and named_parameters()


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_parameters_and_named_parameters_are_torchs(kind):
    torch = pytest.importorskip("torch")
    model = _model(kind)
    _, torch_name, extra = MODELS[kind]
    reference = getattr(torch.nn, torch_name)(3, 5, 2, bidirectional=True, **extra)
    named = list(model.named_parameters())
    assert [name for name, _ in named] == [name for name, _ in reference.named_parameters()] == list(model.state_dict())
    assert all(array is model.params[name] for name, array in named)  # the model's own arrays
    assert [a.shape for a in model.parameters()] == [tuple(p.shape) for p in reference.parameters()]
    assert all(a is b for a, (_, b) in zip(model.parameters(), named))
    next(model.parameters())[...] = 0.0  # an update in place is an update of the model
    assert not model.params["weight_ih_l0"].any()


def test_a_networks_parameters_are_its_params_in_order():
    net = Network(bptt.LSTM(4, 5, seed=0), 7, input="embedding", vocab_size=9, seed=0)
    assert [name for name, _ in net.named_parameters()] == list(net.state_dict())
    assert [name for name, _ in net.named_parameters()][0] == "embedding.weight"
    assert all(a is net.params[name] for a, name in zip(net.parameters(), net.params))


# 3. unbatched input


@pytest.mark.usefixtures("each_kernels")
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
def test_unbatched_input_matches_torch_forward_and_backward(kind, batch_first, rng):
    torch = pytest.importorskip("torch")
    model = _model(kind, batch_first=batch_first)
    _, torch_name, extra = MODELS[kind]
    reference = getattr(torch.nn, torch_name)(3, 5, 2, bidirectional=True, batch_first=batch_first, **extra)
    model.load_state_dict(reference.state_dict())  # torch's init: bias_ih and bias_hh differ
    T, D, H = 6, 2, 5
    x = rng.normal(size=(T, 3))  # (T, I) whatever batch_first says
    h0 = tuple(rng.normal(0, 0.5, size=(2 * D, H)) for _ in model.cell.STATE_NAMES)  # L*D,H
    dy = rng.normal(size=(T, D * H))
    dh_n = tuple(rng.normal(size=(2 * D, H)) for _ in h0)

    y, h_n = model(x, _state(h0))
    assert y.shape == (T, D * H) and all(s.shape == (2 * D, H) for s in _parts(h_n))
    grads, dx, dh0 = model.backward(model(x, _state(h0)).cache, dy, _state(dh_n))
    assert dx.shape == x.shape and all(d.shape == (2 * D, H) for d in _parts(dh0))

    x_t = torch.tensor(x, requires_grad=True)
    h0_t = tuple(torch.tensor(s, requires_grad=True) for s in h0)
    y_t, h_n_t = reference(x_t, _state(h0_t))
    assert y_t.shape == y.shape
    assert _rel(y, y_t) < 1e-10
    for ours, theirs in zip(_parts(h_n), _parts(h_n_t)):
        assert _rel(ours, theirs) < 1e-10
    loss = (y_t * torch.from_numpy(dy)).sum() + sum(
        (s * torch.from_numpy(d)).sum() for s, d in zip(_parts(h_n_t), dh_n))
    loss.backward()
    for name, param in reference.named_parameters():
        assert _rel(grads[name], param.grad) < 1e-10, name
    assert _rel(dx, x_t.grad) < 1e-10
    for ours, theirs in zip(_parts(dh0), h0_t):
        assert _rel(ours, theirs.grad) < 1e-10


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unbatched_equals_a_batch_of_one(kind, rng):
    model = _model(kind, batch_first=True)
    x = rng.normal(size=(4, 3))
    h0 = tuple(rng.normal(size=(4, 5)) for _ in model.cell.STATE_NAMES)
    y, h_n, cache = model.forward(x, _state(h0))
    y1, h_n1, cache1 = model.forward(x[None], _state(tuple(s[:, None] for s in h0)))  # batch first: (1, T, I)
    np.testing.assert_array_equal(y, y1[0])
    for a, b in zip(_parts(h_n), _parts(h_n1)):
        np.testing.assert_array_equal(a, b[:, 0])
    dy = rng.normal(size=y.shape)
    grads, dx, dh0 = model.backward(cache, dy)
    grads1, dx1, dh01 = model.backward(cache1, dy[None])
    np.testing.assert_array_equal(dx, dx1[0])
    for name in model.params:
        np.testing.assert_array_equal(grads[name], grads1[name])
    for a, b in zip(_parts(dh0), _parts(dh01)):
        np.testing.assert_array_equal(a, b[:, 0])


def test_unbatched_float32_stays_float32(rng):
    model = bptt.LSTM(3, 5, 2)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    out = model(x)
    grads, dx, (dh0, dc0) = model.backward(out.cache, np.ones((4, 5), np.float32))
    assert out.y.dtype == dx.dtype == dh0.dtype == grads["weight_hh_l1"].dtype == np.float32


def test_unbatched_mistakes_are_named(rng):
    model = _model("lstm")  # I=3, H=5, L*D=4
    x = rng.normal(size=(6, 3))
    with raises(ValueError, "expected unbatched x of shape (T, 3) but got (6, 7)"):
        model(np.zeros((6, 7)))
    with raises(ValueError, "expected x of shape (T, B, 3) but got (6, 2, 3, 1); one unbatched sequence is (T, 3)"):
        model(np.zeros((6, 2, 3, 1)))
    with raises(ValueError, "expected x with at least one step but got shape (0, 3)"):
        model(np.zeros((0, 3)))
    with raises(ValueError, "expected no lengths for one unbatched sequence x of shape (6, 3) (T, I)"):
        model(x, lengths=[6])
    with raises(ValueError, "expected h0 of shape (4, 5) but got (4, 1, 5) (x is one unbatched sequence, (T, I): "
                "its states have no batch axis, as in torch)"):
        model(x, (np.zeros((4, 1, 5)), np.zeros((4, 1, 5))))
    out = model(x)
    with raises(ValueError, "expected dy of shape (6, 10) but got (6, 1, 10)"):
        model.backward(out.cache, np.zeros((6, 1, 10)))
    with raises(ValueError, "expected dc_n of shape (4, 5) but got (4, 2, 5)"):
        model.backward(out.cache, np.zeros((6, 10)), (None, np.zeros((4, 2, 5))))


# 4. dropout that cannot be silently off

NO_RNG = ("has dropout=0.5 but the pass got no dropout_rng: pass dropout_rng=np.random.default_rng(seed) to train "
          "with dropout, or dropout_rng=False to run without it (evaluation, what model.eval() does in torch)")


def test_a_training_pass_with_dropout_and_no_generator_is_refused(rng):
    model = bptt.GRU(3, 4, 2, dropout=0.5, dtype=np.float64, seed=1)
    x = rng.normal(size=(6, 2, 3))
    with raises(ValueError, "GRU(3, 4, num_layers=2, dropout=0.5, dtype=float64) " + NO_RNG):
        model.forward(x)
    with raises(ValueError, NO_RNG):
        model(x)
    with raises(ValueError, NO_RNG):
        model(x[:, 0])  # unbatched alike


def test_dropout_off_on_request_and_in_inference_on_with_a_generator(rng):
    with_dropout = bptt.LSTM(3, 4, 2, dropout=0.5, dtype=np.float64, seed=1)
    without = bptt.LSTM(3, 4, 2, dtype=np.float64, seed=1)
    x = rng.normal(size=(6, 2, 3))
    plain = without.forward(x)[0]
    np.testing.assert_array_equal(with_dropout.forward(x, dropout_rng=False)[0], plain)
    np.testing.assert_array_equal(with_dropout(x, keep_cache=False).y, plain)  # inference never drops
    np.testing.assert_array_equal(without.forward(x, dropout_rng=np.random.default_rng(2))[0], plain)
    dropped = with_dropout(x, dropout_rng=np.random.default_rng(2)).y
    assert np.abs(dropped - plain).max() > 1e-3
    np.testing.assert_array_equal(dropped, with_dropout.forward(x, dropout_rng=np.random.default_rng(2))[0])
    with raises(TypeError, "expected dropout_rng to be a np.random.Generator, False (no dropout) or None but got int"):
        with_dropout.forward(x, dropout_rng=2)


def test_a_network_with_dropout_asks_for_a_generator_and_its_callers_still_work(rng):
    net = Network(bptt.LSTM(3, 4, 2, dropout=0.5, dtype=np.float64, seed=0), 5, input="embedding", vocab_size=6,
                  seed=1)
    ids, targets = rng.integers(0, 6, size=(8, 2)), rng.integers(0, 5, size=(8, 2))
    with raises(ValueError, "this LSTM network " + NO_RNG):
        net.loss_and_grads(ids, targets)
    with raises(ValueError, NO_RNG):
        next(tbptt(net, ids, targets, 4))
    off = net.loss_and_grads(ids, targets, dropout_rng=False)[0]
    on = net.loss_and_grads(ids, targets, dropout_rng=np.random.default_rng(3))[0]
    assert off != on
    logits, _ = net.predict(ids)  # no cache: no dropout, no generator needed
    plain = Network(bptt.LSTM(3, 4, 2, dtype=np.float64, seed=0), 5, input="embedding", vocab_size=6, seed=1)
    np.testing.assert_array_equal(logits, plain.predict(ids)[0])
    assert off == plain.loss_and_grads(ids, targets)[0]
    updates = list(tbptt(net, ids, targets, 4, dropout_rng=np.random.default_rng(4)))
    assert len(updates) == 2


def test_the_trainer_trains_with_dropout(tmp_path):
    from bptt.training.trainer import TrainConfig, Trainer

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog.\n" * 4, encoding="utf-8")
    config = TrainConfig(corpus=str(corpus), hidden_size=6, num_layers=2, embedding_size=4, batch_size=2, k1=4,
                         dropout=0.4, steps=3, valid_fraction=0.2, seed=5, log_every=1, eval_every=2,
                         sample_every=2, checkpoint_every=10, sample_length=5, valid_windows=1)
    events = list(Trainer.start(config, str(tmp_path / "run")).run())
    assert [e.kind for e in events].count("step") == 3 and events[-1].kind == "done"


# 5. Network's inputs


def test_integer_ids_into_a_features_network_name_the_input_codes():
    net = Network(bptt.LSTM(3, 4, dtype=np.float64), 10)
    ids = np.zeros((5, 2), dtype=np.int64)
    with raises(TypeError, 'expected x of floats (T, B, 3) for input="features" but got int64 token ids: integer '
                'ids need Network(rnn, V, input="embedding", vocab_size=V_in) or input="one_hot"'):
        net.loss_and_grads(ids, np.zeros((5, 2), dtype=np.int64), None)
    first = Network(bptt.GRU(3, 4, batch_first=True), 10)
    with raises(TypeError, 'expected x of floats (B, T, 3) for input="features"'):
        first.predict(ids)


def test_the_readme_network_signature_is_the_code():
    import inspect
    import json

    shown = re.search(r"`bptt\.Network\((.*?)\)`", _api_section(), flags=re.S).group(1)
    parts = [part.strip() for part in shown.replace("\n", " ").split(",") if part.strip() != "*"]
    parameters = inspect.signature(Network).parameters
    assert [part.partition("=")[0] for part in parts] == list(parameters)
    for part in parts:
        name, _, values = part.partition("=")
        if values:  # the default is the first value shown
            assert values.split("|")[0] == ("None" if parameters[name].default is None
                                            else json.dumps(parameters[name].default)), name


# 6. the ReLU RNN in bptt gradcheck


def _problems(cells):
    return [p for p in config_problems(0, cells) if p.cell_name == "rnn_relu"]


def test_gradcheck_checks_every_cell():
    assert set(CHECKED_CELLS) == set(CELLS)


@pytest.mark.parametrize("cells", [("rnn_relu",), CHECKED_CELLS], ids=["relu-alone", "bptt-gradcheck"])
def test_no_perturbation_of_the_relu_gradcheck_crosses_the_kink(cells):
    """Every entry moved as the check moves it (±h, ±2h, h = 1e-3) leaves every
    pre-activation on its side of 0: the differences measure one linear piece's slope."""
    cell = CELLS["rnn_relu"]
    problems = _problems(cells)
    assert len(problems) == 8
    for problem in problems:
        num_directions = 2 if problem.bidirectional else 1
        args = (problem.lengths, problem.num_layers, num_directions)
        assert kink_margin(cell, problem.arrays, *args) >= KINK_MARGIN
        sides = [pre > 0 for pre in pre_activations(cell, problem.arrays, *args)]
        for name, array in problem.arrays.items():
            flat = array.reshape(-1)
            for j in range(flat.size):
                original = flat[j]
                for offset in (1e-3, -1e-3, 2e-3, -2e-3):
                    flat[j] = original + offset
                    moved = pre_activations(cell, problem.arrays, *args)
                    assert all(np.array_equal(pre > 0, side) for pre, side in zip(moved, sides)), (name, j)
                flat[j] = original


def test_the_pre_activations_are_the_cells():
    """pre_activations agrees with the forward: relu of it is each layer's output."""
    problem = _problems(("rnn_relu",))[7]  # two layers, both directions, lengths
    cell = CELLS["rnn_relu"]
    pres = pre_activations(cell, problem.arrays, problem.lengths, 2, 2)
    params = {k: v for k, v in problem.arrays.items() if k not in ("x", "h0")}
    top = bptt.RNN(3, 4, 2, nonlinearity="relu", bidirectional=True, dtype=np.float64)
    top.load_state_dict(params)
    y, _, _ = top.forward(problem.arrays["x"], problem.arrays["h0"], problem.lengths)
    within = np.arange(4)[:, None] < problem.lengths[None, :]  # T,B
    np.testing.assert_allclose(np.maximum(pres[2], 0), y[within][:, :4], rtol=1e-13, atol=1e-15)


def test_the_relu_rows_of_bptt_gradcheck_pass():
    cell = CELLS["rnn_relu"]
    for problem in _problems(CHECKED_CELLS):
        num_directions = 2 if problem.bidirectional else 1
        args = (problem.dy, problem.dstate_n, problem.lengths, problem.num_layers, num_directions)
        _, grads = stack_objective(cell, problem.arrays, *args)
        result = gradcheck(_objective(cell, args), problem.arrays, grads, max_entries=8)
        assert result.passed, str(result)


def _objective(cell, args):
    def value(point):
        return stack_objective(cell, point, *args)[0]
    return value


# 7. greedy sampling


def test_temperature_zero_puts_everything_on_the_most_likely_character():
    logits = np.array([0.5, 2.0, -1.0, 2.0, 1.9])
    np.testing.assert_array_equal(next_char_distribution(logits, 0), [0, 1, 0, 0, 0])  # the first of equals
    np.testing.assert_array_equal(next_char_distribution(logits, 0.0, top_k=2), [0, 1, 0, 0, 0])
    cold = next_char_distribution(logits[[0, 1, 2, 4]], 1e-3)
    np.testing.assert_allclose(cold, [0, 1, 0, 0], atol=1e-30)  # the limit it is
    for bad in (-0.5, float("nan")):
        with raises(ValueError, f"expected a temperature >= 0 (0: always the most likely character) but got {bad!r}"):
            next_char_distribution(logits, bad)
    with raises(ValueError, "expected top_k to be a positive integer but got 0"):
        next_char_distribution(logits, 0, top_k=0)


def test_greedy_sampling_is_argmax_decoding_whatever_the_generator():
    vocab = Vocabulary("abcdef")
    net = Network(bptt.GRU(6, 8, seed=0), 6, input="one_hot", seed=0)
    texts = {"".join(sample_chars(net, vocab, "ab", 12, temperature=0, rng=np.random.default_rng(seed)))
             for seed in range(3)}
    assert len(texts) == 1
    ids = list(vocab.encode("ab"))
    expected = ""
    for _ in range(12):
        logits, _ = net.predict(np.array(ids)[:, None])  # T,1,V: the whole text again, no state carried
        ids.append(int(np.argmax(logits[-1, 0])))
        expected += vocab.chars[ids[-1]]
    assert texts.pop() == expected


# the README's API section, as written


def _api_section():
    text = README.read_text()
    section = text[text.index("## The API\n"):]
    return section[:section.index("\n## ", 1)]


def test_the_readme_api_section_runs():
    blocks = re.findall(r"```python\n(.*?)```", _api_section(), flags=re.S)
    assert len(blocks) == 3
    scope = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), scope)
    assert isinstance(scope["out"], Output) and len(scope["out"]) == 2
    assert scope["names"][:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert scope["y1"].shape == (20, 16) and scope["h1"].shape == scope["c1"].shape == (2, 16)
    assert isinstance(scope["loss"], float) and list(scope["grads"]) == list(scope["net"].params)
    assert scope["logits"].shape == (32, 4, 40)
