"""Properties of the core that hold for every cell: stepping by hand equals the sequence run,
a batch equals its examples run one by one, float32 stays float32, inputs are never mutated,
passes in flight are independent, and (by hypothesis) small random configurations match torch.

Legend: T time steps, B batch, I input features, H hidden units, L layers, D directions.
"""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt
from bptt import recurrence
from bptt.cells import CELLS

from assertions import as_tuple, assert_close, max_rel_err  # noqa: E402

CELL_NAMES = tuple(CELLS)
def as_public(cell_name, parts):
    """A tuple of state arrays as the public API takes it: one array, or LSTM's tuple."""
    return tuple(parts) if len(CELLS[cell_name].STATE_NAMES) > 1 else parts[0]


def random_model(cell_name, input_size, hidden_size, num_layers=1, *, rng, dtype=np.float64, **options):
    """A model with parameters from N(0, 0.5²): non-zero, and ``bias_ih`` != ``bias_hh``."""
    if cell_name.startswith("rnn_"):
        model = bptt.RNN(input_size, hidden_size, num_layers, nonlinearity=cell_name.removeprefix("rnn_"),
                         dtype=dtype, **options)
    else:
        model = {"lstm": bptt.LSTM, "gru": bptt.GRU}[cell_name](
            input_size, hidden_size, num_layers, dtype=dtype, **options)
    model.load_state_dict({name: rng.normal(0.0, 0.5, shape) for name, shape in model.shapes().items()})
    return model


def random_state(cell_name, model, batch, rng, dtype=np.float64, scale=0.5):
    """One random (L*D, B, H) array per state of the cell, as the public API takes it."""
    shape = (model.num_layers * model.num_directions, batch, model.hidden_size)
    parts = tuple(rng.normal(0.0, scale, shape).astype(dtype) for _ in CELLS[cell_name].STATE_NAMES)
    return as_public(cell_name, parts)


def hand_stepped_forward(cell, params, x, state0, num_layers, num_directions):
    """The stacked, bidirectional forward written out one step at a time with the reference
    cell's ``forward``.

    x : (T, B, I); state0 : tuple of (L*D, B, H). Returns y (T, B, D*H) and the final state
    as a tuple of (L*D, B, H).
    """
    T = x.shape[0]
    finals = []
    layer_input = x
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            suffix = f"l{layer}" + ("_reverse" if direction == 1 else "")
            w_ih, w_hh = params[f"weight_ih_{suffix}"], params[f"weight_hh_{suffix}"]
            b_ih, b_hh = params[f"bias_ih_{suffix}"], params[f"bias_hh_{suffix}"]
            state = tuple(s[layer * num_directions + direction] for s in state0)
            y = np.empty(x.shape[:2] + (w_hh.shape[1],), x.dtype)  # T,B,H
            for t in range(T) if direction == 0 else reversed(range(T)):
                pre_x = layer_input[t] @ w_ih.T + b_ih  # B,KH
                pre_h = state[0] @ w_hh.T + b_hh  # B,KH
                state, _ = cell.forward(pre_x, pre_h, state)
                y[t] = state[0]
            outputs.append(y)
            finals.append(state)
        layer_input = np.concatenate(outputs, axis=-1)
    return layer_input, tuple(np.stack([f[j] for f in finals]) for j in range(len(state0)))


# (a) stepping by hand equals the sequence run


@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_hand_stepped_cell_equals_engine_run(cell_name):
    rng = np.random.default_rng(1)
    model = random_model(cell_name, 3, 4, rng=rng)
    x = rng.normal(size=(6, 2, 3))  # T,B,I
    state0 = as_tuple(random_state(cell_name, model, 2, rng))
    expected_y, expected_state = hand_stepped_forward(CELLS[cell_name], model.params, x, state0, 1, 1)
    weights = recurrence.Weights(*(model.params[f"{kind}_l0"] for kind in
                                   ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    y, state, _ = recurrence.forward(CELLS[cell_name], weights, x, tuple(s[0] for s in state0))
    assert_close("y", y, expected_y)
    for name, a, e in zip(CELLS[cell_name].STATE_NAMES, state, expected_state):
        assert_close(f"{name}_n", a, e[0])


@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (3, False), (2, True)])
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_hand_stepped_stack_equals_model_forward(cell_name, num_layers, bidirectional):
    rng = np.random.default_rng(2)
    model = random_model(cell_name, 3, 4, num_layers, bidirectional=bidirectional, rng=rng)
    x = rng.normal(size=(5, 3, 3))  # T,B,I
    h0 = random_state(cell_name, model, 3, rng)
    expected_y, expected_state = hand_stepped_forward(
        CELLS[cell_name], model.params, x, as_tuple(h0), num_layers, model.num_directions)
    y, h_n, _ = model.forward(x, h0)
    assert_close("y", y, expected_y)
    for name, a, e in zip(CELLS[cell_name].STATE_NAMES, as_tuple(h_n), expected_state):
        assert_close(f"{name}_n", a, e)


@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_one_step_at_a_time_carrying_the_state_equals_one_run(cell_name):
    """Forward step by step with h_n fed back as h0, then backward step by step with dh0 fed
    back as dh_n: the outputs, final state and summed gradients of one run over T steps."""
    rng = np.random.default_rng(3)
    model = random_model(cell_name, 3, 4, 2, rng=rng)
    T = 5
    x = rng.normal(size=(T, 2, 3))
    h0 = random_state(cell_name, model, 2, rng)
    dy = rng.normal(size=(T, 2, 4))
    dh_n = random_state(cell_name, model, 2, rng, scale=1.0)
    y, h_n, cache = model.forward(x, h0)
    grads, dx, dh0 = model.backward(cache, dy, dh_n)

    state, caches, step_ys = h0, [], []
    for t in range(T):
        y_t, state, cache_t = model.forward(x[t:t + 1], state)
        step_ys.append(y_t)
        caches.append(cache_t)
    assert_close("y", np.concatenate(step_ys), y)
    for name, a, e in zip(("h_n", "c_n"), as_tuple(state), as_tuple(h_n)):
        assert_close(name, a, e)

    dstate, step_grads, step_dxs = dh_n, [], []
    for t in reversed(range(T)):
        grads_t, dx_t, dstate = model.backward(caches[t], dy[t:t + 1], dstate)
        step_grads.append(grads_t)
        step_dxs.insert(0, dx_t)
    assert_close("dx", np.concatenate(step_dxs), dx)
    for name, a, e in zip(("dh0", "dc0"), as_tuple(dstate), as_tuple(dh0)):
        assert_close(name, a, e)
    for name in grads:
        assert_close(f"d{name}", sum(g[name] for g in step_grads), grads[name])


# (b) a batch equals its examples run one by one


@pytest.mark.parametrize("lengths", [None, (5, 2, 1, 4)], ids=["unpadded", "padded"])
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_batch_equals_examples_run_one_by_one(cell_name, lengths):
    rng = np.random.default_rng(4)
    model = random_model(cell_name, 3, 4, 2, bidirectional=True, rng=rng)
    T, B = 5, 4
    x = rng.normal(size=(T, B, 3))
    h0 = as_tuple(random_state(cell_name, model, B, rng))
    dy = rng.normal(size=(T, B, 8))
    dh_n = as_tuple(random_state(cell_name, model, B, rng, scale=1.0))
    y, h_n, cache = model.forward(x, as_public(cell_name, h0), lengths)
    grads, dx, dh0 = model.backward(cache, dy, as_public(cell_name, dh_n))
    h_n, dh0 = as_tuple(h_n), as_tuple(dh0)

    summed = {name: np.zeros_like(g) for name, g in grads.items()}
    for b in range(B):
        steps = T if lengths is None else lengths[b]
        one = slice(b, b + 1)
        y_b, h_n_b, cache_b = model.forward(x[:steps, one], as_public(cell_name, tuple(h[:, one] for h in h0)))
        grads_b, dx_b, dh0_b = model.backward(cache_b, dy[:steps, one],
                                              as_public(cell_name, tuple(d[:, one] for d in dh_n)))
        assert_close(f"y[:, {b}]", y[:steps, one], y_b)
        assert_close(f"dx[:, {b}]", dx[:steps, one], dx_b)
        assert not y[steps:, b].any() and not dx[steps:, b].any(), "past its end a sequence is zero"
        for name, a, e in zip(("h_n", "c_n"), h_n, as_tuple(h_n_b)):
            assert_close(f"{name}[:, {b}]", a[:, one], e)
        for name, a, e in zip(("dh0", "dc0"), dh0, as_tuple(dh0_b)):
            assert_close(f"{name}[:, {b}]", a[:, one], e)
        for name, g in grads_b.items():
            summed[name] += g
    for name in grads:
        assert_close(f"d{name}", grads[name], summed[name])


# (c) float32 stays float32, (d) nothing is mutated: over the ways a pass can be run

SCENARIOS = {
    "bidirectional-padded-batch_first": dict(
        num_layers=2, bidirectional=True, batch_first=True, lengths=(3, 1), states=True, backward={}),
    "truncated-cut-default_states": dict(
        num_layers=2, bidirectional=False, batch_first=False, lengths=None, states=False,
        backward=dict(depth=2, cut="hidden")),
}


def scenario_inputs(cell_name, scenario, dtype, seed=5):
    """A model and the inputs of a forward and backward pass of ``scenario``."""
    rng = np.random.default_rng(seed)
    options = SCENARIOS[scenario]
    model = random_model(cell_name, 3, 4, options["num_layers"], bidirectional=options["bidirectional"],
                         batch_first=options["batch_first"], rng=rng, dtype=dtype)
    T, B = 3, 2
    x = rng.normal(size=(B, T, 3) if options["batch_first"] else (T, B, 3)).astype(dtype)
    dy = rng.normal(size=x.shape[:2] + (model.num_directions * 4,)).astype(dtype)
    h0 = random_state(cell_name, model, B, rng, dtype) if options["states"] else None
    dh_n = random_state(cell_name, model, B, rng, dtype, scale=1.0) if options["states"] else None
    lengths = None if options["lengths"] is None else np.array(options["lengths"])
    return model, dict(x=x, h0=h0, lengths=lengths, dy=dy, dh_n=dh_n)


def scenario_pass(model, inputs, scenario):
    """Forward and backward of ``scenario``: a dict of y, h_n, cache, grads, dx and dh0."""
    y, h_n, cache = model.forward(inputs["x"], inputs["h0"], inputs["lengths"])
    grads, dx, dh0 = model.backward(cache, inputs["dy"], inputs["dh_n"], **SCENARIOS[scenario]["backward"])
    return dict(y=y, h_n=h_n, cache=cache, grads=grads, dx=dx, dh0=dh0)


def arrays_in(obj):
    """Every ndarray inside nested tuples (named tuples included), lists and dicts."""
    if isinstance(obj, np.ndarray):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from arrays_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from arrays_in(item)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_the_model_dtype_is_kept_everywhere(cell_name, dtype, scenario):
    model, inputs = scenario_inputs(cell_name, scenario, dtype)
    out = scenario_pass(model, inputs, scenario)
    results = {"y": out["y"], "dx": out["dx"]}
    results.update(zip(("h_n", "c_n"), as_tuple(out["h_n"])))
    results.update(zip(("dh0", "dc0"), as_tuple(out["dh0"])))
    results.update((f"d{name}", g) for name, g in out["grads"].items())
    results.update(model.params)
    wrong = {name: a.dtype.name for name, a in results.items() if a.dtype != dtype}
    assert not wrong, f"expected every result in {np.dtype(dtype).name} but got {wrong}"
    cached = [a for a in arrays_in(out["cache"]) if a.dtype.kind == "f"]
    assert cached, "the cache holds float arrays"
    assert all(a.dtype == dtype for a in cached), \
        f"cache arrays of dtypes {sorted({a.dtype.name for a in cached})} in a {np.dtype(dtype).name} pass"


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_float32_computes_what_float64_computes(cell_name, scenario):
    out32 = scenario_pass(*scenario_inputs(cell_name, scenario, np.float32), scenario)
    out64 = scenario_pass(*scenario_inputs(cell_name, scenario, np.float64), scenario)
    for name in ("y", "dx"):
        assert max_rel_err(out32[name], out64[name]) <= 1e-5, name
    for name in out64["grads"]:
        assert max_rel_err(out32["grads"][name], out64["grads"][name]) <= 1e-5, name


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_passes_do_not_mutate_their_inputs(cell_name, scenario):
    model, inputs = scenario_inputs(cell_name, scenario, np.float64)
    inputs_before, params_before = copy.deepcopy(inputs), copy.deepcopy(model.params)
    scenario_pass(model, inputs, scenario)
    for name, value in inputs_before.items():
        for a, e in zip(arrays_in(inputs[name]), arrays_in(value)):
            assert np.array_equal(a, e), f"{name} changed"
    assert list(model.params) == list(params_before)
    for name, value in params_before.items():
        assert np.array_equal(model.params[name], value), f"{name} changed"


# (e) passes in flight are independent


@pytest.mark.parametrize("order", ["first-first", "last-first"])
@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_two_passes_in_flight_give_the_grads_of_each_alone(cell_name, order):
    rng = np.random.default_rng(7)
    model = random_model(cell_name, 3, 4, 2, bidirectional=True, rng=rng)

    def draw(T, B, lengths):
        return dict(x=rng.normal(size=(T, B, 3)), h0=random_state(cell_name, model, B, rng),
                    lengths=lengths, dy=rng.normal(size=(T, B, 8)),
                    dh_n=random_state(cell_name, model, B, rng, scale=1.0))

    passes = [draw(5, 3, (5, 2, 4)), draw(3, 2, None)]

    def backward(p, cache):
        return model.backward(cache, p["dy"], p["dh_n"])

    alone = []
    for p in passes:
        _, _, cache = model.forward(p["x"], p["h0"], p["lengths"])
        alone.append(backward(p, cache))

    caches = [model.forward(p["x"], p["h0"], p["lengths"])[2] for p in passes]
    indices = [0, 1] if order == "first-first" else [1, 0]
    together = {k: backward(passes[k], caches[k]) for k in indices}
    again = backward(passes[0], caches[0])  # a cache is not used up by its backward

    for k, result in [(0, together[0]), (1, together[1]), (0, again)]:
        grads, dx, dh0 = result
        expected_grads, expected_dx, expected_dh0 = alone[k]
        assert np.array_equal(dx, expected_dx)
        for a, e in zip(as_tuple(dh0), as_tuple(expected_dh0)):
            assert np.array_equal(a, e)
        for name in expected_grads:
            assert np.array_equal(grads[name], expected_grads[name]), name


@pytest.mark.parametrize("cell_name", CELL_NAMES)
def test_refilling_the_input_buffers_before_backward_changes_nothing(cell_name):
    """A training loop may reuse the arrays of x and h0 for the next batch while a pass is in
    flight; the pass's cache must not see that."""
    rng = np.random.default_rng(8)
    model = random_model(cell_name, 3, 4, 2, rng=rng)
    x = rng.normal(size=(4, 2, 3))
    h0 = random_state(cell_name, model, 2, rng)
    dy = rng.normal(size=(4, 2, 4))
    _, _, cache = model.forward(x, h0)
    expected_grads, expected_dx, expected_dh0 = model.backward(cache, dy)
    _, _, cache = model.forward(x, h0)
    x[...] = rng.normal(size=x.shape)
    for h in as_tuple(h0):
        h[...] = rng.normal(size=h.shape)
    grads, dx, dh0 = model.backward(cache, dy)
    assert np.array_equal(dx, expected_dx)
    for a, e in zip(as_tuple(dh0), as_tuple(expected_dh0)):
        assert np.array_equal(a, e)
    for name in expected_grads:
        assert np.array_equal(grads[name], expected_grads[name]), name


# (f) small random configurations against torch, drawn by hypothesis


@st.composite
def small_configs(draw):
    T = draw(st.integers(1, 5))
    B = draw(st.integers(1, 3))
    lengths = draw(st.none() | st.lists(st.integers(1, T), min_size=B, max_size=B).map(tuple))
    return dict(
        cell=draw(st.sampled_from(CELL_NAMES)), T=T, B=B, input_size=draw(st.integers(1, 4)),
        hidden_size=draw(st.integers(1, 4)), num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()), lengths=lengths,
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(small_configs())
def test_small_random_configs_match_torch(drawn):
    pytest.importorskip("torch")
    from test_parity_torch import Config, check_parity

    drawn = dict(drawn)
    cell, seed = drawn.pop("cell"), drawn.pop("seed")
    check_parity(cell, Config(**drawn), seed)
