"""Parity with ``torch.nn.RNN``, ``torch.nn.LSTM`` and ``torch.nn.GRU`` in float64.

Every output, final state, parameter gradient, input gradient and initial-state gradient must
agree with torch autograd to a relative error of 1e-10 (relative to each tensor's own scale),
over randomized configurations with random non-zero parameters (``bias_ih`` != ``bias_hh``),
random non-zero initial states and random upstream gradients.

Legend: T time steps, B batch, I input features, H hidden units, L layers, D directions.
"""

from typing import NamedTuple

import numpy as np
import pytest

import bptt

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from assertions import RTOL, as_tuple, assert_close, max_rel_err  # noqa: E402

# every test here runs with the NumPy cells and with the compiled ones
pytestmark = pytest.mark.usefixtures("each_kernels")

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
CONFIG_SEEDS = range(32)

# Seeds whose configurations are forced to the edge cases instead of left to the draw.
EDGE_CASES = {
    0: dict(T=1, B=1),
    1: dict(B=1, num_layers=3, bidirectional=True, padded=True, reaches_T=False),
    2: dict(T=1, num_layers=3, bidirectional=True, batch_first=True, padded=True),
    3: dict(num_layers=3, bidirectional=True, batch_first=True, padded=True, reaches_T=True, has_one=True),
    4: dict(num_layers=3, bidirectional=True, padded=True, reaches_T=False, has_one=True),
}


class Config(NamedTuple):
    T: int
    B: int
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    batch_first: bool
    lengths: tuple | None  # B ints in [1, T], or None for an unpadded batch


def config_from_seed(seed):
    """A configuration drawn from ``seed``, with the overrides of ``EDGE_CASES``."""
    rng = np.random.default_rng(seed)
    draw = dict(
        T=int(rng.integers(1, 8)),
        B=int(rng.integers(1, 5)),
        input_size=int(rng.integers(1, 7)),
        hidden_size=int(rng.integers(1, 7)),
        num_layers=int(rng.integers(1, 4)),
        bidirectional=bool(rng.random() < 0.5),
        batch_first=bool(rng.random() < 0.5),
        padded=bool(rng.random() < 0.5),
        reaches_T=bool(rng.random() < 0.5),  # some sequence is T long, or all are shorter
        has_one=bool(rng.random() < 0.5),  # some sequence is a single step
    )
    draw.update(EDGE_CASES.get(seed, {}))
    T, B = draw["T"], draw["B"]
    lengths = None
    if draw["padded"]:
        values = rng.integers(1, T + 1, size=B)
        if draw["has_one"]:
            values[rng.integers(B)] = 1
        if draw["reaches_T"]:
            values[rng.integers(B)] = T
        else:
            values = np.minimum(values, max(T - 1, 1))
        lengths = tuple(int(v) for v in values)
    return Config(T, B, draw["input_size"], draw["hidden_size"], draw["num_layers"],
                  draw["bidirectional"], draw["batch_first"], lengths)


def bptt_model(cell, config, dtype=np.float64):
    options = dict(bidirectional=config.bidirectional, batch_first=config.batch_first, dtype=dtype)
    sizes = (config.input_size, config.hidden_size, config.num_layers)
    if cell.startswith("rnn_"):
        return bptt.RNN(*sizes, nonlinearity=cell.removeprefix("rnn_"), **options)
    return {"lstm": bptt.LSTM, "gru": bptt.GRU}[cell](*sizes, **options)


def torch_module(cell, config, dtype=torch.float64):
    options = dict(bidirectional=config.bidirectional, batch_first=config.batch_first, dtype=dtype)
    sizes = (config.input_size, config.hidden_size, config.num_layers)
    if cell.startswith("rnn_"):
        return torch.nn.RNN(*sizes, nonlinearity=cell.removeprefix("rnn_"), **options)
    return {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](*sizes, **options)


class Case(NamedTuple):
    """The inputs of one parity check, all float64 numpy arrays."""

    params: dict  # name -> array, torch's names and shapes
    x: np.ndarray  # (T, B, I), or (B, T, I) with batch_first
    h0: tuple  # one (L*D, B, H) per state
    dy: np.ndarray  # the shape of y
    dh_n: tuple  # one (L*D, B, H) per state


def draw_case(cell, config, seed):
    """Random non-zero parameters (from N(0, 0.5²), so ``bias_ih`` != ``bias_hh``), input,
    initial state and upstream gradients."""
    rng = np.random.default_rng([CELLS.index(cell), seed])
    model = bptt_model(cell, config)
    params = {name: rng.normal(0.0, 0.5, shape) for name, shape in model.shapes().items()}
    T, B, H = config.T, config.B, config.hidden_size
    D = 2 if config.bidirectional else 1
    num_states = 2 if cell == "lstm" else 1
    state_shape = (config.num_layers * D, B, H)
    x = rng.normal(size=(B, T, config.input_size) if config.batch_first else (T, B, config.input_size))
    dy = rng.normal(size=x.shape[:2] + (D * H,))
    h0 = tuple(rng.normal(0.0, 0.5, state_shape) for _ in range(num_states))
    dh_n = tuple(rng.normal(size=state_shape) for _ in range(num_states))
    return Case(params, x, h0, dy, dh_n)


class Result(NamedTuple):
    """Outputs and gradients of one pass, as numpy arrays; states as tuples."""

    y: np.ndarray
    h_n: tuple
    grads: dict
    dx: np.ndarray
    dh0: tuple


def run_bptt(cell, config, case, h0=True, dh_n=True):
    """bptt's forward and backward. ``h0``/``dh_n`` False pass None instead, meaning zeros."""
    model = bptt_model(cell, config)
    model.load_state_dict(case.params)
    lstm = cell == "lstm"
    y, h_n, cache = model.forward(case.x, (case.h0 if lstm else case.h0[0]) if h0 else None, config.lengths)
    upstream = (case.dh_n if lstm else case.dh_n[0]) if dh_n else None
    grads, dx, dh0 = model.backward(cache, case.dy, upstream)
    return Result(y, as_tuple(h_n), grads, dx, as_tuple(dh0))


def run_torch(cell, config, case, h0=True, dh_n=True):
    """torch's forward and the gradients of ``sum(y * dy) + sum(h_n * dh_n)`` by autograd;
    padded batches go through ``pack_padded_sequence`` and ``pad_packed_sequence``.
    ``h0``/``dh_n`` False use zeros instead, the meaning of bptt's None."""
    module = torch_module(cell, config)
    module.load_state_dict({name: torch.from_numpy(value) for name, value in case.params.items()})
    x = torch.from_numpy(case.x).requires_grad_()
    state0 = tuple((torch.from_numpy(h) if h0 else torch.zeros(h.shape)).requires_grad_() for h in case.h0)
    state0_arg = state0 if cell == "lstm" else state0[0]
    if config.lengths is None:
        y, h_n = module(x, state0_arg)
    else:
        packed = pack_padded_sequence(x, torch.tensor(config.lengths), batch_first=config.batch_first,
                                      enforce_sorted=False)
        packed_y, h_n = module(packed, state0_arg)
        y, _ = pad_packed_sequence(packed_y, batch_first=config.batch_first, total_length=config.T)
    h_n = as_tuple(h_n)
    upstream = [torch.from_numpy(d) if dh_n else torch.zeros_like(h) for d, h in zip(case.dh_n, h_n)]
    torch.autograd.backward((y, *h_n), (torch.from_numpy(case.dy), *upstream))
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    dh0 = tuple(s.grad.numpy() for s in state0)
    return Result(y.detach().numpy(), tuple(h.detach().numpy() for h in h_n), grads, x.grad.numpy(), dh0)


def errors(actual, expected):
    """Relative error of every compared tensor, by name; asserts shapes and dtypes alike."""
    pairs = {"y": (actual.y, expected.y), "dx": (actual.dx, expected.dx)}
    for k, name in enumerate(("h", "c")[:len(expected.h_n)]):
        pairs[f"{name}_n"] = (actual.h_n[k], expected.h_n[k])
        pairs[f"d{name}0"] = (actual.dh0[k], expected.dh0[k])
    assert list(actual.grads) == list(expected.grads), "gradients must have torch's keys, in order"
    for name in expected.grads:
        pairs[f"d{name}"] = (actual.grads[name], expected.grads[name])
    for name, (a, e) in pairs.items():
        assert a.shape == e.shape, f"{name}: shape {a.shape} != torch's {e.shape}"
        assert a.dtype == e.dtype, f"{name}: dtype {a.dtype} != torch's {e.dtype}"
    return {name: max_rel_err(a, e) for name, (a, e) in pairs.items()}


def check_parity(cell, config, seed):
    """Assert that bptt and torch agree on everything of one configuration; return the errors."""
    case = draw_case(cell, config, seed)
    errs = errors(run_bptt(cell, config, case), run_torch(cell, config, case))
    too_far = {name: f"{err:.3e}" for name, err in errs.items() if err > RTOL}
    assert not too_far, f"{cell} {config}: relative errors above {RTOL:.0e}: {too_far}"
    return errs


def test_configurations_cover_the_edge_cases():
    configs = [config_from_seed(seed) for seed in CONFIG_SEEDS]
    padded = [c for c in configs if c.lengths is not None]
    assert any(c.B == 1 for c in configs)
    assert any(c.T == 1 for c in configs)
    assert any(c.T == 1 and c.B == 1 for c in configs)
    assert {c.num_layers for c in configs} == {1, 2, 3}
    assert {c.bidirectional for c in configs} == {False, True}
    assert {c.batch_first for c in configs} == {False, True}
    assert any(c.lengths is None for c in configs)
    assert any(max(c.lengths) == c.T and c.T > 1 and min(c.lengths) < c.T for c in padded)
    assert any(max(c.lengths) < c.T for c in padded)
    assert any(min(c.lengths) == 1 and c.T > 1 for c in padded)
    assert any(c.B == 1 and max(c.lengths) < c.T for c in padded)
    assert any(c.num_layers == 3 and c.bidirectional and c.batch_first for c in padded)
    assert any(c.num_layers == 3 and c.bidirectional and not c.batch_first for c in padded)
    assert all(c.T <= 7 and c.B <= 4 and c.input_size <= 6 and c.hidden_size <= 6 for c in configs)


@pytest.mark.parametrize("seed", CONFIG_SEEDS)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(cell, seed):
    check_parity(cell, config_from_seed(seed), seed)


@pytest.mark.parametrize("cell", CELLS)
def test_zero_initial_state_and_no_final_state_gradient_match_torch(cell):
    config = Config(T=4, B=3, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                    batch_first=False, lengths=(4, 1, 3))
    case = draw_case(cell, config, seed=100)
    errs = errors(run_bptt(cell, config, case, h0=False, dh_n=False),
                  run_torch(cell, config, case, h0=False, dh_n=False))
    assert max(errs.values()) <= RTOL, errs


@pytest.mark.parametrize("cell", CELLS)
def test_state_dicts_move_both_ways_between_bptt_and_torch(cell):
    config = Config(T=5, B=2, input_size=3, hidden_size=4, num_layers=2, bidirectional=True,
                    batch_first=True, lengths=None)
    x = np.random.default_rng(7).normal(size=(config.B, config.T, config.input_size))

    def assert_same_outputs(model, module):
        y, h_n, _ = model.forward(x)
        with torch.no_grad():
            torch_y, torch_h_n = module(torch.from_numpy(x))
        assert_close("y", y, torch_y.numpy())
        for name, a, e in zip(("h_n", "c_n"), as_tuple(h_n), as_tuple(torch_h_n)):
            assert_close(name, a, e.numpy())

    # bptt -> torch: numpy arrays through torch.from_numpy
    model, module = bptt_model(cell, config), torch_module(cell, config)
    module.load_state_dict({name: torch.from_numpy(value) for name, value in model.state_dict().items()})
    for name, value in module.state_dict().items():
        assert np.array_equal(value.numpy(), model.params[name]), name
    assert_same_outputs(model, module)

    # torch -> bptt: the tensors as they are
    model, module = bptt_model(cell, config), torch_module(cell, config)
    model.load_state_dict(module.state_dict())
    assert list(model.params) == list(module.state_dict())
    for name, value in module.state_dict().items():
        assert model.params[name].dtype == np.float64
        assert np.array_equal(model.params[name], value.numpy()), name
    assert_same_outputs(model, module)
