"""``bptt.check``: a learner's own forward and backward functions, checked where they are written.

Legend: T time steps, B batch (the course's m, CS231n's N), I input features, H hidden units.

The learner hands over the functions of their course, with its signatures (the course's
``lstm_forward(x, a0, parameters)`` and ``lstm_backward(da, caches)``, CS231n's
``lstm_forward(x, h0, Wx, Wh, b)`` and ``lstm_backward(dh, cache)``, or the cell's). The check
builds its own test cases (several seeds and shapes, T = 1 and B = 1 among them, a random
initial state, for a cell a random ``dc_next``), calls the forward and compares every array it
returns with the library's, then calls the backward on what the forward kept and hands its
gradients to :func:`bptt.diagnose`. The learner's code runs in this process, only as called
here; nothing is written anywhere.
"""

import dataclasses
import importlib.util
import math
import os
import sys
import traceback
from typing import Callable, NamedTuple

import numpy as np

from .. import recurrence
from ..interop import get_layout, to_model
from .check_model import check_char_rnn
from .diagnose import Diagnosis, ForwardVerdict, diagnose

TOLERANCE = 1e-5  # forward outputs: max |given - reference| / max |reference|
NUM_OUTPUTS = 2  # the course's output layer: ŷ_t = softmax(W_y a_t + b_y) over this many classes


class Case(NamedTuple):
    """One test case: ``steps`` (1 for a cell), ``batch`` and the seed of its arrays."""

    steps: int
    batch: int
    seed: int


SEQUENCE_CASES = (Case(1, 1, 0), Case(1, 3, 1), Case(4, 1, 2), Case(7, 3, 3))
STEP_CASES = (Case(1, 1, 0), Case(1, 3, 1), Case(1, 4, 2))


class Signature(NamedTuple):
    """How one layout's functions are called and what they return."""

    layout: str  # the diagnose layout
    call_forward: Callable  # (forward, params, inputs) -> what the forward returns
    outputs: tuple  # (name, role) of the arrays the forward returns before its cache; role "h"
    # the hidden states, "c" the cell states, "y" the output layer's softmax
    call_backward: Callable  # (backward, inputs, cache) -> what the backward returns
    gradients: tuple | None  # names of the arrays a backward returns as a tuple; None: a dict
    output_layer: tuple  # the names of the course's W_y and b_y in its parameters, or ()


def _course(layout, outputs, call_forward, call_backward):
    output_layer = ("Wy", "by") if "lstm" in layout else ("Wya", "by")
    return Signature(layout, call_forward, outputs, call_backward, None, output_layer)


def _cs231n(layout, outputs, call_forward, call_backward, gradients):
    return Signature(layout, call_forward, outputs, call_backward, gradients, ())


def _weights(params):
    return params["Wx"], params["Wh"], params["b"]


SIGNATURES = {
    "coursera-rnn": _course("coursera-rnn", (("a", "h"), ("y_pred", "y")), lambda f, p, i: f(i["x"], i["a0"], p),
                            lambda f, i, cache: f(i["da"], cache)),
    "coursera-lstm": _course("coursera-lstm", (("a", "h"), ("y", "y"), ("c", "c")),
                             lambda f, p, i: f(i["x"], i["a0"], p), lambda f, i, cache: f(i["da"], cache)),
    "coursera-rnn-cell": _course("coursera-rnn-cell", (("a_next", "h"), ("yt_pred", "y")),
                                 lambda f, p, i: f(i["xt"], i["a_prev"], p),
                                 lambda f, i, cache: f(i["da_next"], cache)),
    "coursera-lstm-cell": _course("coursera-lstm-cell", (("a_next", "h"), ("c_next", "c"), ("yt_pred", "y")),
                                  lambda f, p, i: f(i["xt"], i["a_prev"], i["c_prev"], p),
                                  lambda f, i, cache: f(i["da_next"], i["dc_next"], cache)),
    "cs231n-rnn": _cs231n("cs231n-rnn", (("h", "h"),), lambda f, p, i: f(i["x"], i["h0"], *_weights(p)),
                          lambda f, i, cache: f(i["dh"], cache), ("dx", "dh0", "dWx", "dWh", "db")),
    "cs231n-lstm": _cs231n("cs231n-lstm", (("h", "h"),), lambda f, p, i: f(i["x"], i["h0"], *_weights(p)),
                           lambda f, i, cache: f(i["dh"], cache), ("dx", "dh0", "dWx", "dWh", "db")),
    "cs231n-rnn-step": _cs231n("cs231n-rnn-step", (("next_h", "h"),),
                               lambda f, p, i: f(i["x"], i["prev_h"], *_weights(p)),
                               lambda f, i, cache: f(i["dnext_h"], cache), ("dx", "dprev_h", "dWx", "dWh", "db")),
    "cs231n-lstm-step": _cs231n("cs231n-lstm-step", (("next_h", "h"), ("next_c", "c")),
                                lambda f, p, i: f(i["x"], i["prev_h"], i["prev_c"], *_weights(p)),
                                lambda f, i, cache: f(i["dnext_h"], i["dnext_c"], cache),
                                ("dx", "dprev_h", "dprev_c", "dWx", "dWh", "db")),
}
CELL_LAYOUT = {"coursera-rnn": "coursera-rnn-cell", "coursera-lstm": "coursera-lstm-cell",
               "cs231n-rnn": "cs231n-rnn-step", "cs231n-lstm": "cs231n-lstm-step"}
FUNCTION_NAMES = {  # the course's names of each layout's forward and backward
    "coursera-rnn": ("rnn_forward", "rnn_backward"), "coursera-lstm": ("lstm_forward", "lstm_backward"),
    "coursera-rnn-cell": ("rnn_cell_forward", "rnn_cell_backward"),
    "coursera-lstm-cell": ("lstm_cell_forward", "lstm_cell_backward"),
    "cs231n-rnn": ("rnn_forward", "rnn_backward"), "cs231n-lstm": ("lstm_forward", "lstm_backward"),
    "cs231n-rnn-step": ("rnn_step_forward", "rnn_step_backward"),
    "cs231n-lstm-step": ("lstm_step_forward", "lstm_step_backward"),
    "coursera-char-rnn": ("rnn_forward", "rnn_backward"),
}


class LearnerError(Exception):
    """The learner's function raised, or returned something of another form than its course's."""


def check(layout, forward, backward, *, seed=0, cell=None):
    """Check a learner's ``forward`` and ``backward`` functions written for ``layout``.

    Parameters
    ----------
    layout : one of ``FUNCTION_NAMES``: ``coursera-rnn``, ``coursera-lstm``, ``coursera-rnn-cell``,
        ``coursera-lstm-cell``, ``cs231n-rnn``, ``cs231n-lstm``, ``cs231n-rnn-step``,
        ``cs231n-lstm-step``, or ``coursera-char-rnn``: the course's character language model,
        ``rnn_forward(X, Y, a0, parameters, vocab_size) -> loss, cache`` and
        ``rnn_backward(X, Y, parameters, cache) -> gradients, a``, output layer and loss
        included (:mod:`bptt.proofs.check_model`)
    forward, backward : the learner's functions, with the signatures of that course
    seed : shifts the seeds of the test cases
    cell : for a sequence layout, optionally the learner's cell functions ``(cell_forward,
        cell_backward)``: checked too, so that the verdict says whether a slip lives in the
        cell or in the loop around it

    Returns
    -------
    Diagnosis, of the most telling case (the longest that fails; else the longest), with
    ``forward`` (the verdict on each array the forward returns) and ``cases`` (every case run)
    """
    if layout not in FUNCTION_NAMES:
        raise ValueError(f"unknown layout {layout!r} for bptt.check; expected one of: {', '.join(FUNCTION_NAMES)}")
    if layout == "coursera-char-rnn" and cell is None:
        try:
            return check_char_rnn(forward, backward, seed, _call, LearnerError)
        except LearnerError as error:
            return _failed(SIGNATURES["coursera-rnn"], Case(0, 1, seed), str(error), None)
    if cell is not None and layout not in CELL_LAYOUT:
        raise ValueError(f"cell=(forward, backward) goes with a sequence layout ({', '.join(CELL_LAYOUT)}), "
                         f"not {layout!r}")
    result = _check_functions(SIGNATURES[layout], forward, backward, seed)
    if cell is None:
        return result
    cell_result = _check_functions(SIGNATURES[CELL_LAYOUT[layout]], *cell, seed)
    return dataclasses.replace(result, summary=_where(result, cell_result), cell_check=cell_result)


def check_file(path, layout, *, seed=0):
    """:func:`check` of the functions that the Python file at ``path`` defines under the
    course's names (``FUNCTION_NAMES``; for a sequence layout, its cell functions too when the
    file has them). The file runs in this process, as an import would run it, without writing
    anything (no ``__pycache__``).

    Raises FileNotFoundError, or LearnerError when the file raises or lacks the functions.
    """
    if layout not in FUNCTION_NAMES:
        raise ValueError(f"unknown layout {layout!r} for bptt.check; expected one of: {', '.join(FUNCTION_NAMES)}")
    module = _load(path)
    names = FUNCTION_NAMES[layout]
    missing = [name for name in names if not callable(getattr(module, name, None))]
    if missing:
        raise LearnerError(f"{path} defines no {' or '.join(missing)}, the {layout} functions "
                           f"{names[0]} and {names[1]} that the check calls")
    cell = None
    if layout in CELL_LAYOUT:
        cell_names = FUNCTION_NAMES[CELL_LAYOUT[layout]]
        if all(callable(getattr(module, name, None)) for name in cell_names):
            cell = tuple(getattr(module, name) for name in cell_names)
    return check(layout, *(getattr(module, name) for name in names), seed=seed, cell=cell)


def _load(path):
    """The module that the Python file at ``path`` makes, run without writing bytecode."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location("bptt_learner_solution", path)
    module = importlib.util.module_from_spec(spec)
    writes_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the learner's file: whatever it raises is reported
        raise LearnerError(f"{path} raised {type(error).__name__} when run: {error}") from None
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def _check_functions(signature, forward, backward, seed):
    cases = STEP_CASES if get_layout(signature.layout).NAME.endswith(("-cell", "-step")) else SEQUENCE_CASES
    runs, forward_verdicts = [], None
    for case in cases:
        case = case._replace(seed=case.seed + 1000 * seed)
        params, inputs = random_case(signature, case)
        try:
            returned = _call(signature.call_forward, forward, params, inputs, "forward")
            arrays, cache = _split_forward(signature, returned)
            verdicts = _forward_verdicts(signature, params, inputs, arrays)
            # the longest case that shows a forward bug tells the most about it (T = 1 hides a shift)
            if forward_verdicts is None or any(v.status != "correct" for v in verdicts.values()) or all(
                    v.status == "correct" for v in forward_verdicts.values()):
                forward_verdicts = verdicts
            grads = _gradients(signature, _call(signature.call_backward, backward, inputs, cache, "backward"))
        except LearnerError as error:
            return _failed(signature, case, str(error), forward_verdicts)
        runs.append((case, diagnose(signature.layout, params, inputs, grads)))
    failing = [run for run in runs if not run[1].passed]
    case, diagnosis = max(failing or runs, key=lambda run: (run[0].steps, run[0].batch))
    cases = tuple({"T": c.steps, "B": c.batch, "seed": c.seed, "passed": d.passed} for c, d in runs)
    forward_wrong = any(v.status != "correct" for v in forward_verdicts.values())
    summary = (f"{_forward_summary(forward_verdicts)}\n\nBackward: {diagnosis.summary}" if forward_wrong
               else f"{diagnosis.summary}\n\n{_forward_summary(forward_verdicts)}")
    return dataclasses.replace(diagnosis, forward=forward_verdicts, cases=cases, summary=summary)


def random_case(signature, case):
    """The parameters (non-zero biases, the course's output layer) and inputs of one case, in
    the layout: a random initial state (the course's and CS231n's sequence forwards start the
    cell state at zero), a random upstream gradient and, for an LSTM cell, a random dc_next."""
    layout = get_layout(signature.layout)
    rng = np.random.default_rng(case.seed)
    input_size, hidden_size = 3, 5
    cell = "lstm" if "lstm" in signature.layout else "rnn_tanh"
    params = dict(layout.params_from_torch(_random_torch(cell, input_size, hidden_size, rng), cell))
    if signature.output_layer:
        w_y, b_y = signature.output_layer
        params[w_y] = rng.normal(0.0, 0.5, (NUM_OUTPUTS, hidden_size))
        params[b_y] = rng.normal(0.0, 0.5, (NUM_OUTPUTS, 1))
    names = layout.DATA_NAMES
    T, B = case.steps, case.batch
    inputs = {
        names["x"]: layout.sequence_from_torch(rng.normal(size=(T, B, input_size))),
        names["h0"]: layout.state_from_torch(rng.normal(0.0, 0.5, (1, B, hidden_size))),
        names["dy"]: layout.sequence_from_torch(rng.normal(size=(T, B, hidden_size))),
    }
    if cell == "lstm" and "dc_n" in names:  # a cell: its own c_prev and dc_next
        inputs[names["c0"]] = layout.state_from_torch(rng.normal(0.0, 0.5, (1, B, hidden_size)))
        inputs[names["dc_n"]] = layout.state_from_torch(rng.normal(size=(1, B, hidden_size)))
    return params, inputs


def _random_torch(cell, input_size, hidden_size, rng):
    K = 4 if cell == "lstm" else 1
    return {
        "weight_ih_l0": rng.normal(0.0, 0.5, (K * hidden_size, input_size)),
        "weight_hh_l0": rng.normal(0.0, 0.5, (K * hidden_size, hidden_size)),
        "bias_ih_l0": rng.normal(0.0, 0.5, K * hidden_size),
        "bias_hh_l0": np.zeros(K * hidden_size),  # the courses have one bias
    }


def _call(call, function, first, second, role):
    """``call(function, first, second)`` on copies of the arrays, the learner's exception turned
    into a LearnerError naming the function and the line of the learner's code."""
    first = {k: np.array(v) for k, v in first.items()} if isinstance(first, dict) else first
    second = {k: np.array(v) for k, v in second.items()} if isinstance(second, dict) else second
    try:
        return call(function, first, second)
    except Exception as error:  # the learner's code: anything it raises is reported, not re-raised
        frames = traceback.extract_tb(error.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno} ({frames[-1].line})" if len(frames) > 1 else ""
        name = getattr(function, "__name__", role)
        raise LearnerError(f"your {role} {name} raised {type(error).__name__}: {error}{where}") from None


def _split_forward(signature, returned):
    """The arrays a forward returned, by name, and its cache (the last item)."""
    expected = f"({', '.join(name for name, _ in signature.outputs)}, cache)"
    if not isinstance(returned, tuple) or len(returned) != len(signature.outputs) + 1:
        got = f"a tuple of {len(returned)}" if isinstance(returned, tuple) else type(returned).__name__
        raise LearnerError(f"expected the forward to return {expected} but got {got}")
    return dict(zip((name for name, _ in signature.outputs), returned[:-1])), returned[-1]


def _gradients(signature, returned):
    """The gradients a backward returned, as a dict in the layout's names."""
    if signature.gradients is None:
        if not isinstance(returned, dict):
            raise LearnerError(f"expected the backward to return a dict of gradients but got "
                               f"{type(returned).__name__}")
        return returned
    if not isinstance(returned, tuple) or len(returned) != len(signature.gradients):
        got = f"a tuple of {len(returned)}" if isinstance(returned, tuple) else type(returned).__name__
        raise LearnerError(f"expected the backward to return ({', '.join(signature.gradients)}) but got {got}")
    return dict(zip(signature.gradients, returned))


def reference_outputs(signature, params, inputs):
    """What the forward must return, by the names of ``signature.outputs``, in the layout."""
    layout = get_layout(signature.layout)
    names = layout.DATA_NAMES
    model = to_model(signature.layout, params)
    x = layout.sequence_to_torch(inputs[names["x"]])  # T,B,I
    h0 = layout.state_to_torch(inputs[names["h0"]])  # 1,B,H
    lstm = model.cell.NUM_GATES == 4
    c0 = layout.state_to_torch(inputs[names["c0"]]) if lstm and names["c0"] in inputs else np.zeros_like(h0)
    y, _, cache = model.forward(x, (h0, c0) if lstm else h0)  # T,B,H
    by_role = {"h": y}
    if lstm:  # every step's cell state, which the engine keeps for backward
        by_role["c"] = recurrence.states(cache.stack.caches[0][0])[1][1:]  # T,B,H
    if signature.output_layer:  # ŷ_t = softmax(W_y a_t + b_y)
        w_y, b_y = (params[name] for name in signature.output_layer)
        logits = y @ w_y.T + b_y[:, 0]  # T,B,V
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        by_role["y"] = e / e.sum(axis=-1, keepdims=True)
    return {name: layout.sequence_from_torch(by_role[role]) for name, role in signature.outputs}


def _forward_verdicts(signature, params, inputs, arrays):
    """name -> :class:`ForwardVerdict` of each array the learner's forward returned."""
    expected = reference_outputs(signature, params, inputs)
    layout = get_layout(signature.layout)
    verdicts = {}
    for name, _ in signature.outputs:
        given = np.asarray(arrays[name], dtype=np.float64) if np.ndim(arrays[name]) else None
        if given is None or given.shape != expected[name].shape:
            shape = "a scalar" if given is None else f"shape {given.shape}"
            verdicts[name] = ForwardVerdict(name, "wrong", math.nan, None, (),
                                            f"expected shape {expected[name].shape} but got {shape}")
            continue
        difference = np.abs(given - expected[name])
        scale = np.max(np.abs(expected[name])) or 1.0
        rel_err = float(np.max(difference) / scale) if np.all(np.isfinite(given)) else math.nan
        per_step = np.max(layout.sequence_to_torch(difference), axis=(1, 2))  # T: nan where anything is
        wrong_steps = np.flatnonzero(~(per_step <= TOLERANCE * scale))
        if len(wrong_steps) == 0:
            verdicts[name] = ForwardVerdict(name, "correct", rel_err, None, ())
            continue
        worst = np.unravel_index(np.argmax(np.where(np.isnan(difference), np.inf, difference)), difference.shape)
        problem = _forward_slip(name, given, expected, signature, params, inputs)
        verdicts[name] = ForwardVerdict(name, "wrong", rel_err, int(wrong_steps[0]), tuple(int(i) for i in worst),
                                        problem)
    return verdicts


def _forward_slip(name, given, expected, signature, params, inputs):
    """What a wrong forward array is, when it is a slip the check knows: another output in its
    place, the previous step's value, or every step run from the initial state; else None."""
    layout = get_layout(signature.layout)

    def same(a, b):
        return a.shape == b.shape and np.max(np.abs(a - b)) <= TOLERANCE * (np.max(np.abs(b)) or 1.0)

    for other, _ in signature.outputs:
        if other != name and same(given, expected[other]):
            return f"it holds {other}: the forward stores {other} where {name} belongs"
    given_steps, expected_steps = layout.sequence_to_torch(given), layout.sequence_to_torch(expected[name])
    if len(given_steps) > 1 and same(given_steps[1:], expected_steps[:-1]):
        return f"step t holds step t-1's {name}: a time index off by one"
    if len(given_steps) > 1:  # every step as a sequence of its own, from the initial state
        names = layout.DATA_NAMES
        steps, batch = given_steps.shape[:2]
        x = layout.sequence_to_torch(inputs[names["x"]])  # T,B,I
        alone = {names["x"]: layout.sequence_from_torch(x.reshape(1, steps * batch, -1))}
        for part in ("h0", "c0"):
            if names.get(part) in inputs:
                alone[names[part]] = layout.state_from_torch(np.tile(layout.state_to_torch(inputs[names[part]]),
                                                                     (1, steps, 1)))  # 1,T*B,H
        each_step = layout.sequence_to_torch(reference_outputs(signature, params, alone)[name])  # 1,T*B,n
        if same(given_steps, each_step.reshape(given_steps.shape)):
            return "every step starts from the initial state: the forward does not carry the state between steps"
    return None


def _forward_summary(verdicts):
    """The verdict on the forward: which arrays are wrong and where each first goes wrong."""
    wrong = [v for v in verdicts.values() if v.status != "correct"]
    if not wrong:
        return f"Forward: {', '.join(verdicts)} match the library's in every case."
    parts = [f"Verdict: your forward is wrong ({', '.join(v.name for v in wrong)})."]
    for v in wrong:
        if v.problem is not None:
            parts.append(f"Your {v.name} is wrong from step {v.first_step}: {v.problem}.")
        elif v.first_step == 0:
            parts.append(f"Your {v.name} is wrong from the first step (rel err {v.rel_err:.2e}, worst at "
                         f"{list(v.worst)}): the mistake is inside a step's equations.")
        else:
            parts.append(f"Your {v.name} is right at steps 0 .. {v.first_step - 1} and wrong from step "
                         f"{v.first_step} (rel err {v.rel_err:.2e}): the state carried from one step to the next "
                         f"is not the one the step computed.")
    parts.append("Your backward is judged below against the right forward.")
    return " ".join(parts)


def _failed(signature, case, message, forward_verdicts):
    """The Diagnosis of a check whose learner code raised or returned the wrong form."""
    layout = get_layout(signature.layout)
    cell = "lstm" if "lstm" in signature.layout else "rnn_tanh"
    cases = ({"T": case.steps, "B": case.batch, "seed": case.seed, "passed": False},)
    return Diagnosis(layout.NAME, cell, case.steps, TOLERANCE, {}, f"Verdict: error: {message}.",
                     forward=forward_verdicts or {}, cases=cases, error=message)


def _where(sequence, cell):
    """The sequence's summary, told where its slip lives given the cell's verdict."""
    if sequence.passed:
        return sequence.summary
    if cell.passed:
        return (f"Your cell functions are right (every gradient of one step matches); the slip is in your loop "
                f"over time. {sequence.summary}")
    return f"Your cell backward is already wrong: {cell.summary} Over the sequence: {sequence.summary}"
