"""The catalogue of slips: exact without a slip, and each slip proven on learner code that has it."""

import re
from pathlib import Path

import numpy as np
import pytest

import bptt
from assertions import assert_close, max_rel_err
from bptt import reference
from bptt.cells import CELLS
from bptt.interop import get_layout
from bptt.proofs.slips import SLIPS, catalogue, describe, slip_variants, slipped_backward, tensor_slips
from bptt.recurrence import Weights, Window, window_edges
from learners import lstm_forward, rnn_forward
from learners_slips import LSTM_GRADS, gru_backward, gru_forward, lstm_backward, rnn_backward

I, H, B, T = 3, 4, 2, 5
MATCH = 1e-8  # a learner's float64 gradients and their slip's variant differ by rounding only
DOCS = Path(__file__).resolve().parents[1] / "docs" / "slips.md"


def library_model(cell, rng, input_size=I):
    """A float64 model of ``cell`` with random weights and different, non-zero biases."""
    if cell == "lstm":
        model = bptt.LSTM(input_size, H, dtype=np.float64)
    elif cell == "gru":
        model = bptt.GRU(input_size, H, dtype=np.float64)
    else:
        model = bptt.RNN(input_size, H, nonlinearity=cell.removeprefix("rnn_"), dtype=np.float64)
    model.load_state_dict({name: rng.normal(0.0, 0.6, size=value.shape) for name, value in model.params.items()})
    return model


def weights_of(params):
    return Weights(*(np.asarray(params[name]) for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")))


def library_grads(model, x, state0, dy, dstate_n=None, **variant):
    """model.backward's gradients keyed like a Slip's, the states given as (B, H) tuples."""
    lstm = len(state0) > 1
    h0 = tuple(s[None] for s in state0) if lstm else state0[0][None]
    parts = tuple(None if d is None else d[None] for d in dstate_n or (None,) * len(state0))
    dh_n = parts if lstm else parts[0]
    _, _, cache = model.forward(x, h0)
    grads, dx, dstate0 = model.backward(cache, dy, dh_n, **variant)
    states = {"h0": dstate0[0], "c0": dstate0[1]} if lstm else {"h0": dstate0}
    return {**grads, "x": dx, **states}


def random_inputs(cell, rng, steps=T, batch=B, input_size=I):
    parts = len(CELLS[cell].STATE_NAMES)
    x = rng.normal(size=(steps, batch, input_size))
    state0 = tuple(rng.normal(0.0, 0.5, size=(batch, H)) for _ in range(parts))
    dy = rng.normal(size=(steps, batch, H))
    return x, state0, dy


def assert_same_grads(grads, expected, rtol=1e-10):
    assert set(grads) == set(expected)
    for name in expected:
        assert_close(name, grads[name], expected[name], rtol)


def matching(variants, given, tolerance=MATCH):
    """The (id, detail) of every variant that all of ``given`` match."""
    return [(v.id, v.detail) for v in variants
            if all(max_rel_err(array, v.grads[name]) <= tolerance for name, array in given.items())]


# -- without a slip: the library's BPTT, with its cuts and windows


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("cut", [None, "hidden", "cell"])
def test_no_slip_is_the_librarys_bptt(cell, cut, rng):
    model = library_model(cell, rng)
    x, state0, dy = random_inputs(cell, rng)
    dstate_n = tuple(rng.normal(size=(B, H)) for _ in state0)
    (grads,) = slipped_backward(cell, weights_of(model.params), x, state0, dy, dstate_n, cut=cut)
    assert_same_grads(grads, library_grads(model, x, state0, dy, dstate_n, cut=cut))


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_final_state_gradient_may_have_none_entries(cell, rng):
    model = library_model(cell, rng)
    x, state0, dy = random_inputs(cell, rng)
    dstate_n = (None, rng.normal(size=(B, H))) if cell == "lstm" else (None,)
    (grads,) = slipped_backward(cell, weights_of(model.params), x, state0, dy, dstate_n)
    assert_same_grads(grads, library_grads(model, x, state0, dy, dstate_n))


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("align", ["start", "end"])
def test_no_slip_with_edges_is_the_librarys_windows(cell, align, rng):
    model = library_model(cell, rng)
    x, state0, dy = random_inputs(cell, rng, steps=7)
    window = Window(3, 3, align)
    (grads,) = slipped_backward(cell, weights_of(model.params), x, state0, dy, edges=window_edges(window, 7),
                                cut="hidden" if cell == "lstm" else None)
    expected = library_grads(model, x, state0, dy, window=window, cut="hidden" if cell == "lstm" else None)
    assert_same_grads(grads, expected)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_edges_of_each_sequence_are_the_engines(cell, rng):
    model = library_model(cell, rng)
    x, state0, dy = random_inputs(cell, rng, steps=6, batch=3)
    edges = np.zeros((6, 3), bool)
    edges[[2, 4], 0] = True
    edges[[0, 3], 2] = True  # edges[0]: no gradient reaches the initial state of sequence 2
    weights = weights_of(model.params)
    _, _, cache = reference.forward(CELLS[cell], weights, x, state0)
    engine, dx, dstate0 = reference.backward(dy, (None,) * len(state0), cache, edges=edges)
    (grads,) = slipped_backward(cell, weights, x, state0, dy, edges=edges)
    expected = {"weight_ih_l0": engine.w_ih, "weight_hh_l0": engine.w_hh, "bias_ih_l0": engine.b_ih,
                "bias_hh_l0": engine.b_hh, "x": dx, "h0": dstate0[0][None]}
    if cell == "lstm":
        expected["c0"] = dstate0[1][None]
    assert_same_grads(grads, expected)


# -- each slip, as a learner writes it


def course_lstm(rng, input_size=I, steps=T):
    """The course's parameters and inputs, and the library's weights and data for them."""
    params = {}
    for gate in "fico":
        params["W" + gate] = rng.normal(0.0, 0.6, size=(H, H + input_size))
        params["b" + gate] = rng.normal(0.0, 0.5, size=(H, 1))
    x = rng.normal(size=(input_size, B, steps))
    a0, c0 = rng.normal(0.0, 0.5, size=(H, B)), rng.normal(0.0, 0.5, size=(H, B))
    da = rng.normal(size=(H, B, steps))
    _, _, caches = lstm_forward(x, a0, params, c0)
    layout = get_layout("coursera-lstm")
    library = (weights_of(layout.params_to_torch(params)), layout.sequence_to_torch(x), (a0.T, c0.T),
               layout.sequence_to_torch(da))
    return da, caches, library


def course_lstm_to_torch(grads):
    layout = get_layout("coursera-lstm")
    torch_grads = layout.grads_to_torch({name[1:]: grads[name] for name in LSTM_GRADS})
    return {**torch_grads, "x": layout.sequence_to_torch(grads["dx"]), "h0": layout.state_to_torch(grads["da0"]),
            "c0": layout.state_to_torch(grads["dc0"])}


def course_rnn(rng, steps=T):
    params = {"Wax": rng.normal(0.0, 0.6, size=(H, I)), "Waa": rng.normal(0.0, 0.6, size=(H, H)),
              "ba": rng.normal(0.0, 0.5, size=(H, 1))}
    x, a0, da = rng.normal(size=(I, B, steps)), rng.normal(0.0, 0.5, size=(H, B)), rng.normal(size=(H, B, steps))
    _, caches = rnn_forward(x, a0, params)
    layout = get_layout("coursera-rnn")
    library = (weights_of(layout.params_to_torch(params)), layout.sequence_to_torch(x), (a0.T,),
               layout.sequence_to_torch(da))
    return da, caches, library


def course_rnn_to_torch(grads):
    layout = get_layout("coursera-rnn")
    torch_grads = layout.grads_to_torch({name[1:]: grads[name] for name in ("dWax", "dWaa", "dba")})
    return {**torch_grads, "x": layout.sequence_to_torch(grads["dx"]), "h0": layout.state_to_torch(grads["da0"])}


def case_ids(cases):
    return ["+".join(sorted(slips)) for slips, _ in cases]


def assert_only(expected, given, variants, full):
    """``given`` matches exactly the ``expected`` slip, and not full BPTT."""
    assert matching(variants, given) == [expected]
    assert max(max_rel_err(given[name], full[name]) for name in given) > 1e-5


LSTM_SLIPS = [
    ({"sigmoid-f"}, ("missing-sigmoid-derivative", {"gate": "f"})),
    ({"sigmoid-i"}, ("missing-sigmoid-derivative", {"gate": "i"})),
    ({"sigmoid-o"}, ("missing-sigmoid-derivative", {"gate": "o"})),
    ({"sigmoid-all"}, ("missing-sigmoid-derivative", {"gate": "all"})),
    ({"no-sigmoid-f"}, ("missing-sigmoid-derivative", {"gate": "f", "factor": "none"})),
    ({"no-sigmoid-all"}, ("missing-sigmoid-derivative", {"gate": "all", "factor": "none"})),
    ({"no-tanh-candidate"}, ("missing-tanh-derivative", {"where": "candidate"})),
    ({"no-tanh-cell"}, ("missing-tanh-derivative", {"where": "cell"})),
    ({"tanh-twice-candidate"}, ("tanh-applied-twice", {"where": "candidate"})),
    ({"tanh-twice-cell"}, ("tanh-applied-twice", {"where": "cell"})),
    ({"time-forget"}, ("wrong-time-index", {"where": "forget-gate"})),
    ({"time-dc-prev"}, ("wrong-time-index", {"where": "dc-prev"})),
    ({"swapped"}, ("swapped-weight-slices", {})),
    ({"initial"}, ("initial-state-ignored", {})),
    ({"not-accumulated"}, ("not-accumulated", {})),
    ({"bias-mean"}, ("bias-not-summed", {"how": "mean"})),
    ({"bias-first"}, ("bias-not-summed", {"how": "first"})),
]


@pytest.mark.parametrize("slips, expected", LSTM_SLIPS, ids=case_ids(LSTM_SLIPS))
def test_a_course_lstm_slip_is_named(slips, expected, rng):
    da, caches, library = course_lstm(rng)
    given = course_lstm_to_torch(lstm_backward(da, caches, slips))
    assert_same_grads(course_lstm_to_torch(lstm_backward(da, caches)), slipped_backward("lstm", *library)[0])
    assert_only(expected, given, slip_variants("lstm", *library), slipped_backward("lstm", *library)[0])


@pytest.mark.parametrize("input_size", [2, 4, 7])  # n_x below, at and above n_a: the slices overlap differently
def test_swapped_slices_for_any_widths(input_size, rng):
    da, caches, library = course_lstm(rng, input_size)
    given = course_lstm_to_torch(lstm_backward(da, caches, {"swapped"}))
    assert_only(("swapped-weight-slices", {}), given, slip_variants("lstm", *library),
                slipped_backward("lstm", *library)[0])


RNN_SLIPS = [
    ({"no-tanh-hidden"}, ("missing-tanh-derivative", {"where": "hidden"})),
    ({"tanh-twice-hidden"}, ("tanh-applied-twice", {"where": "hidden"})),
    ({"swapped"}, ("swapped-weight-slices", {})),
    ({"initial"}, ("initial-state-ignored", {})),
    ({"not-accumulated"}, ("not-accumulated", {})),
    ({"bias-mean"}, ("bias-not-summed", {"how": "mean"})),
    ({"bias-first"}, ("bias-not-summed", {"how": "first"})),
]


@pytest.mark.parametrize("slips, expected", RNN_SLIPS, ids=case_ids(RNN_SLIPS))
def test_a_course_rnn_slip_is_named(slips, expected, rng):
    da, caches, library = course_rnn(rng)
    given = course_rnn_to_torch(rnn_backward(da, caches, slips))
    assert_only(expected, given, slip_variants("rnn_tanh", *library), slipped_backward("rnn_tanh", *library)[0])


GRU_SLIPS = [
    ({"sigmoid-r"}, ("missing-sigmoid-derivative", {"gate": "r"})),
    ({"sigmoid-z"}, ("missing-sigmoid-derivative", {"gate": "z"})),
    ({"no-sigmoid-all"}, ("missing-sigmoid-derivative", {"gate": "all", "factor": "none"})),
    ({"no-tanh-candidate"}, ("missing-tanh-derivative", {"where": "candidate"})),
    ({"tanh-twice-candidate"}, ("tanh-applied-twice", {"where": "candidate"})),
    ({"initial"}, ("initial-state-ignored", {})),
]


@pytest.mark.parametrize("slips, expected", GRU_SLIPS, ids=case_ids(GRU_SLIPS))
def test_a_gru_slip_is_named(slips, expected, rng):
    model = library_model("gru", rng)
    x, state0, dy = random_inputs("gru", rng)
    h, steps = gru_forward(model.params, x, state0[0])
    assert_same_grads(gru_backward(model.params, x, h, steps, dy), library_grads(model, x, state0, dy))
    given = gru_backward(model.params, x, h, steps, dy, slips)
    library = (weights_of(model.params), x, state0, dy)
    assert_only(expected, given, slip_variants("gru", *library), slipped_backward("gru", *library)[0])


def test_a_slip_with_the_hidden_path_cut(rng):
    """No σ' in the forget gate and no da_prevt carried: one variant. The learner's da0 is step
    0's da_prev, which their loop computed but never used; the cut's is zero (diagnose reads the
    initial state of a cut apart), so it is left out here."""
    da, caches, library = course_lstm(rng)
    given = course_lstm_to_torch(lstm_backward(da, caches, {"sigmoid-f"}, carry_da=False))
    del given["h0"]
    expected = ("missing-sigmoid-derivative", {"gate": "f"})
    assert matching(slip_variants("lstm", *library, cut="hidden"), given) == [expected]
    assert matching(slip_variants("lstm", *library), given) == []  # the slip alone is not it


@pytest.mark.parametrize("align", ["start", "end"])
def test_a_slip_on_windows(align, rng):
    da, caches, library = course_rnn(rng, steps=7)
    given = course_rnn_to_torch(rnn_backward(da, caches, {"no-tanh-hidden"}, window=3, align=align))
    edges = window_edges(Window(3, 3, align), 7)
    expected = ("missing-tanh-derivative", {"where": "hidden"})
    assert matching(slip_variants("rnn_tanh", *library, edges=edges), given) == [expected]
    assert matching(slip_variants("rnn_tanh", *library), given) == []


def test_every_slip_of_the_catalogue_is_proven_on_learner_code():
    proven = {slip_id for _, (slip_id, _) in LSTM_SLIPS + RNN_SLIPS + GRU_SLIPS} | {"sign", "transposed"}
    assert proven == set(SLIPS)


# -- per tensor: a sign, a transpose


@pytest.mark.parametrize("slip, name", [("sign", "weight_ih_l0"), ("transposed", "weight_hh_l0")])
def test_a_negated_or_transposed_tensor_is_named(slip, name, rng):
    da, caches, library = course_rnn(rng)
    given = course_rnn_to_torch(rnn_backward(da, caches, {slip}))
    full = slipped_backward("rnn_tanh", *library)[0]
    for other in given:
        expected = [(slip, {})] if other == name else []
        assert tensor_slips(given[other], full[other]) == expected, other
    assert matching(slip_variants("rnn_tanh", *library), given) == []


def test_a_transform_that_changes_nothing_names_no_slip(rng):
    symmetric = rng.normal(size=(4, 4))
    symmetric += symmetric.T
    assert tensor_slips(symmetric, symmetric) == []
    assert tensor_slips(np.zeros((3, 3)), np.zeros((3, 3))) == []
    assert tensor_slips(-symmetric, symmetric) == [("sign", {})]
    assert tensor_slips(-symmetric, symmetric + 1e-3, tolerance=1e-1) == [("sign", {})]
    with pytest.raises(ValueError, match=r"expected given of the reference's shape \(4, 4\) but got \(4, 3\)"):
        tensor_slips(np.zeros((4, 3)), symmetric)


# -- the words and the table


@pytest.mark.parametrize("cell", list(CELLS))
def test_every_slip_is_described_in_the_learners_cell(cell):
    for slip_id, detail in catalogue(cell) + [("sign", {}), ("transposed", {})]:
        sentence = describe(slip_id, detail, cell)
        assert sentence and "\n" not in sentence
        if cell.startswith("rnn"):
            assert "gate" not in sentence, sentence


def test_the_forget_gates_sigmoid_slip_in_the_courses_words():
    assert describe("missing-sigmoid-derivative", {"gate": "f"}, "lstm") == (
        "the gradient of your forget gate Γf has σ in place of σ' = σ(1-σ): "
        "dft = dc * c_prev * ft * (1 - ft), not dc * c_prev * ft"
    )


def test_a_slip_the_cell_cannot_have_is_an_error(rng):
    with pytest.raises(ValueError, match="'wrong-time-index' with {'where': 'forget-gate'} is not a slip of the gru"):
        describe("wrong-time-index", {"where": "forget-gate"}, "gru")
    model = library_model("rnn_tanh", rng)
    x, state0, dy = random_inputs("rnn_tanh", rng)
    not_a_slip = "'missing-sigmoid-derivative' with {'gate': 'f'} is not a slip of the rnn_tanh"
    with pytest.raises(ValueError, match=not_a_slip):
        slipped_backward("rnn_tanh", weights_of(model.params), x, state0, dy,
                         slips=[("missing-sigmoid-derivative", {"gate": "f"})])


def test_misshapen_arrays_are_named(rng):
    model = library_model("lstm", rng)
    x, state0, dy = random_inputs("lstm", rng)
    weights = weights_of(model.params)
    with pytest.raises(ValueError, match=r"expected dy of shape \(T, B, H\) = \(5, 2, 4\) but got \(5, 2, 3\)"):
        slip_variants("lstm", weights, x, state0, dy[:, :, :3])
    with pytest.raises(ValueError, match=r"expected state0 a tuple of 2 \(B, H\) arrays \(h, c\)"):
        slip_variants("lstm", weights, x, state0[:1], dy)
    with pytest.raises(ValueError, match=r"expected edges of shape \(T, B\) = \(5, 2\) or \(T, 1\) but got \(4, 2\)"):
        slip_variants("lstm", weights, x, state0, dy, edges=np.zeros((4, 2), bool))
    with pytest.raises(ValueError, match="expected cell_name one of"):
        slip_variants("lstm2", weights, x, state0, dy)


def test_the_docs_table_lists_the_slips():
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith("| `")]
    assert [re.match(r"\| `([^`]+)`", row).group(1) for row in rows] == list(SLIPS)
