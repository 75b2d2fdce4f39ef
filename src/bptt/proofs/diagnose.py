"""The verdict on a learner's backprop: which variant of BPTT their gradients are.

Legend: T time steps, B batch, I input features, H hidden units.

The learner gives, in one layout of :mod:`bptt.interop`, the parameters of one recurrent
layer, the inputs (``x``, the initial state, and the upstream gradient of every output, the
loss being ``sum(dy * y)``) and the gradients their code computed. The library computes the
reference gradients of

- full BPTT;
- BPTT truncated at every depth k = 1 .. T-1: each loss term's gradient flows back at most
  k steps (k = 1: no gradient through time at all);
- BPTT with one path through time dropped: ``hidden``, the gradient into h_{t-1} through the
  gates (``W_hh``), the slip of not adding ``da_prev``; ``cell``, the paths that skip the
  gates, LSTM's ``dc_prev`` and GRU's ``z * dh``.

A cut combined with truncation is not searched.

Tolerance: everything is compared in float64, and a tensor matches a reference when

    rel_err = max |given - reference| / max |reference|  <=  TOLERANCE = 1e-5

A float32 learner's rounding stays near 1e-7 .. 1e-6 of the largest entry; a missing term
through time costs far more than 1e-5 unless it is lost in the vanishing of the gradient.

Each tensor gets ``correct`` if it matches full BPTT, which wins even where a variant matches
too (every tensor when T = 1). Otherwise it gets, among the variants it matches, the one that
explains the most of the given tensors, then the closest, then the first in the order
truncation (shallower first), hidden cut, cell cut: ``truncated`` with the depth, or
``path-cut`` with the path. So an LSTM's dWo, which is the same with the hidden path cut as
truncated to 1 step, is read as the cut that explains the other tensors, and a vanilla RNN
with the hidden path cut, which *is* truncation at depth 1, is read as truncation. A tensor
that matches nothing is ``wrong``. The reported ``rel_err`` and ``worst`` entry are always
against full BPTT.

The initial state under a cut: a learner with the slip still differentiates step 0 whole, so
their ``da0`` is step 0's ``da_prev``, computed from what the cut lets reach step 0; a learner
who never kept ``da_prev`` at all reports zero. Both count as the cut.
"""

import dataclasses
import json
import math
import zipfile
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..interop import LayoutError, get_layout, to_model
from ..interop.arrays import check_arrays, require
from ..layers import stack_backward_by_depth
from ..recurrence import PATHS

TOLERANCE = 1e-5
TIE = 1e-9  # variants whose errors differ by less fit equally well
STATUSES = ("correct", "truncated", "path-cut", "wrong")


@dataclass(frozen=True)
class TensorVerdict:
    """The verdict on one gradient tensor."""

    name: str
    status: str  # one of STATUSES
    depth: int | None  # the truncation depth, for "truncated"
    path: str | None  # "hidden" or "cell", for "path-cut"
    rel_err: float  # against full BPTT; nan where the tensor has non-finite entries
    worst: tuple  # index of the entry farthest from full BPTT

    def to_dict(self):
        return {
            "status": self.status,
            "depth": self.depth,
            "path": self.path,
            "rel_err": self.rel_err if math.isfinite(self.rel_err) else None,
            "worst": [int(i) for i in self.worst],
        }


@dataclass(frozen=True)
class Diagnosis:
    """The verdicts on every tensor given, in the order given, and their explanation."""

    layout: str
    cell: str
    steps: int
    tolerance: float
    tensors: dict  # name -> TensorVerdict
    summary: str  # the verdict on the whole implementation and what it is missing

    @property
    def passed(self):
        return all(v.status == "correct" for v in self.tensors.values())

    def to_dict(self):
        """``{"tensors": {name: {"status", "depth", "path", "rel_err", "worst"}}, "summary": str}``."""
        return {"tensors": {name: v.to_dict() for name, v in self.tensors.items()}, "summary": self.summary}

    def to_json(self, indent=None):
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def __str__(self):
        width = max(len("tensor"), *(len(name) for name in self.tensors))
        lines = [f"{'tensor':<{width}}  {'status':<9}  {'depth':>5}  {'path':<6}  {'rel err':>9}  worst at"]
        for v in self.tensors.values():
            lines.append(
                f"{v.name:<{width}}  {v.status:<9}  {v.depth or '-':>5}  {v.path or '-':<6}  "
                f"{v.rel_err:>9.2e}  {v.worst}"
            )
        lines.append(
            f"(rel err: largest difference from full BPTT over the largest entry of full BPTT; "
            f"a match is <= {self.tolerance:g}, in float64)"
        )
        return "\n".join(lines) + "\n\n" + self.summary


class Reference(NamedTuple):
    """The gradients of one variant of BPTT, in the learner's layout and names."""

    status: str
    depth: int | None
    path: str | None
    grads: dict  # "d" + name -> float64 array


def load_npz(path, role):
    """The arrays of the ``.npz`` file at ``path``: dict name -> ndarray.

    ``role`` (``"params"``, ``"inputs"`` or ``"grads"``) names the file in the LayoutError
    raised when it is missing or not an ``.npz`` archive of plain arrays.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LayoutError(f"{role} file {path}: no such file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise LayoutError(f"{role} file {path}: not an .npz archive (write it with np.savez)") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise LayoutError(f"{role} file {path}: a single array, not an .npz archive of named arrays (np.savez)")
    with data:
        try:
            return {name: data[name] for name in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise LayoutError(f"{role} file {path}: unreadable array ({error})") from None


def diagnose(layout, params, inputs, grads, *, tolerance=TOLERANCE):
    """Tell which variant of BPTT the learner's gradients ``grads`` are.

    Parameters
    ----------
    layout : a name of ``bptt.interop.LAYOUTS``
    params : dict name -> array, the layer's parameters in that layout (extra keys, such as
        an output layer's, are not looked at)
    inputs : dict with the layout's names (``layout.DATA_NAMES``) of ``x`` (a sequence of I
        features), the initial hidden state, for LSTM optionally the initial cell state
        (zero if absent), and ``dy``, the upstream gradient of every output (a sequence of H
        features); e.g. coursera: ``x`` (n_x, m, T_x), ``a0`` (n_a, m), ``c0``, ``da`` (n_a, m, T_x)
    grads : dict ``"d" + name`` -> array, any of the gradients of the parameters, of ``x`` and of
        the initial state, shaped like them
    tolerance : the largest rel_err that counts as a match

    Returns
    -------
    Diagnosis

    Raises LayoutError, naming the key and the expected and given shapes, for arrays that are
    missing, misshapen or unknown.
    """
    layout = get_layout(layout)
    cell, input_size, hidden_size = layout.describe(params)
    model = to_model(layout.NAME, params)
    x, state0, dy = _read_inputs(layout, cell, input_size, hidden_size, inputs)
    given = _read_grads(grads, _gradient_shapes(layout, cell, input_size, hidden_size, x.shape[1], x.shape[0]))
    _, _, cache = model.forward(x, state0)
    full = _in_layout(layout, cell, _gradients(model, cache, dy))
    references = [Reference("correct", None, None, full)]
    if any(_relative_error(array, full[name]) > tolerance for name, array in given.items()):
        references += _variants(layout, cell, model, cache, x, state0, dy)
    verdicts = _verdicts(given, references, tolerance)
    summary = explain(layout.NAME, cell, x.shape[0], verdicts, tolerance)
    return Diagnosis(layout.NAME, cell, x.shape[0], tolerance, verdicts, summary)


def _read_inputs(layout, cell, input_size, hidden_size, inputs):
    """The inputs in the library's layout, float64: x (T, B, I), the initial state (a (1, B, H)
    array, for LSTM a tuple of two) and dy (T, B, H)."""
    names = layout.DATA_NAMES
    x = layout.sequence_to_torch(require(inputs, names["x"], 3, "inputs"))  # T,B,?
    steps, batch = x.shape[:2]
    shapes = {
        names["x"]: layout.sequence_shape(steps, batch, input_size),
        names["h0"]: layout.state_shape(batch, hidden_size),
        names["dy"]: layout.sequence_shape(steps, batch, hidden_size),
    }
    has_c0 = cell == "lstm" and names["c0"] in inputs
    if has_c0:
        shapes[names["c0"]] = layout.state_shape(batch, hidden_size)
    check_arrays(inputs, shapes, "inputs")
    x = np.asarray(x, np.float64)
    h0 = np.asarray(layout.state_to_torch(inputs[names["h0"]]), np.float64)  # 1,B,H
    dy = np.asarray(layout.sequence_to_torch(inputs[names["dy"]]), np.float64)  # T,B,H
    if cell != "lstm":
        return x, h0, dy
    c0 = np.asarray(layout.state_to_torch(inputs[names["c0"]]), np.float64) if has_c0 else np.zeros_like(h0)
    return x, (h0, c0), dy


def _gradient_shapes(layout, cell, input_size, hidden_size, batch, steps):
    """``"d" + name`` -> shape, for every gradient the learner may give."""
    names = layout.DATA_NAMES
    shapes = {"d" + name: shape for name, shape in layout.param_shapes(cell, input_size, hidden_size).items()}
    shapes["d" + names["x"]] = layout.sequence_shape(steps, batch, input_size)
    for state in ("h0", "c0") if cell == "lstm" else ("h0",):
        shapes["d" + names[state]] = layout.state_shape(batch, hidden_size)
    return shapes


def _read_grads(grads, shapes):
    """The learner's gradients as float64 arrays, after checking their names and shapes."""
    known = ", ".join(shapes)
    unknown = [name for name in grads if name not in shapes]
    if unknown:
        raise LayoutError(f"grads: unknown {', '.join(unknown)}; expected some of {known}")
    if not grads:
        raise LayoutError(f"grads: no arrays; expected some of {known}")
    check_arrays(grads, {name: shapes[name] for name in grads}, "grads")
    return {name: np.asarray(array, np.float64) for name, array in grads.items()}


def _gradients(model, cache, dy, **variant):
    """The library's gradients, keyed by what they are the gradient of: parameter names, ``x``,
    ``h0`` and, for LSTM, ``c0``. ``variant``: the ``cut`` of ``model.backward``, if any."""
    grads, dx, dstate0 = model.backward(cache, dy, **variant)
    return {**grads, "x": dx, **_state_grads(dstate0)}


def _state_grads(dstate0):
    """``{"h0": ...}``, and ``"c0"`` for an LSTM's tuple; each (1, B, H)."""
    if isinstance(dstate0, tuple):
        return {"h0": dstate0[0], "c0": dstate0[1]}
    return {"h0": dstate0}


def _in_layout(layout, cell, torch_grads):
    """:func:`_gradients`'s output in ``layout``, keyed ``"d" + name``."""
    names = layout.DATA_NAMES
    params = {name: g for name, g in torch_grads.items() if name not in ("x", "h0", "c0")}
    grads = {"d" + name: g for name, g in layout.grads_from_torch(params, cell).items()}
    grads["d" + names["x"]] = layout.sequence_from_torch(torch_grads["x"])
    for state in ("h0", "c0"):
        if state in torch_grads:
            grads["d" + names[state]] = layout.state_from_torch(torch_grads[state])
    return grads


def _variants(layout, cell, model, cache, x, state0, dy):
    """Every variant but full BPTT, in the order that breaks ties: depths 1 .. T-1, then each
    cut with the initial state as the library cuts it and as a learner's step 0 computes it."""
    steps = x.shape[0]
    # every depth at once (full BPTT, the last, is already the reference "correct")
    by_depth = stack_backward_by_depth(dy, (None,) * len(model.cell.STATE_NAMES), cache.stack)[:-1]
    variants = [
        Reference("truncated", depth, None, _in_layout(layout, cell, {
            **grads, "x": dx, **_state_grads(dstate0 if len(dstate0) > 1 else dstate0[0])}))
        for depth, (grads, dx, dstate0) in enumerate(by_depth, start=1)
    ]
    for path in PATHS:
        cut = _gradients(model, cache, dy, cut=path)
        variants.append(Reference("path-cut", None, path, _in_layout(layout, cell, cut)))
        if steps > 1:
            slipped = {**cut, **_initial_state_of_slip(model, x, state0, dy, path)}
            variants.append(Reference("path-cut", None, path, _in_layout(layout, cell, slipped)))
    return variants


def _initial_state_of_slip(model, x, state0, dy, path):
    """The initial-state gradients of a learner whose loop drops ``path`` between steps but
    differentiates step 0 whole: steps 1 .. T-1 run with the cut and hand step 0 what the cut
    lets through; step 0 is then differentiated exactly. Needs T >= 2."""
    _, state1, head = model.forward(x[:1], state0)
    _, _, tail = model.forward(x[1:], state1)
    _, _, dstate1 = model.backward(tail, dy[1:], cut=path)  # the state after step 0
    _, _, dstate0 = model.backward(head, dy[:1], dstate1)
    return _state_grads(dstate0)


def _relative_error(given, reference):
    """max |given - reference| / max |reference| (over max |given| where the reference is 0)."""
    scale = np.max(np.abs(reference)) or np.max(np.abs(given)) or 1.0
    return float(np.max(np.abs(given - reference)) / scale)


def _verdicts(given, references, tolerance):
    """name -> :class:`TensorVerdict` of the learner's ``given`` arrays against ``references``
    (full BPTT first).

    A tensor that matches full BPTT is correct. Another takes, among the variants it matches,
    the one that explains the most tensors (with the hidden path cut, an LSTM's dWo is the
    same as truncated to 1 step: it is read as the cut with the other tensors), then the
    closest one (errors within TIE of each other being equal), then the first listed.
    """
    kinds = list(dict.fromkeys(r[:3] for r in references[1:]))  # (status, depth, path), listing order
    verdicts, matched = {}, {}  # matched: name -> {kind: rel err} of a tensor that is not correct
    for name, array in given.items():
        full = references[0].grads[name]
        rel_err = _relative_error(array, full)
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(array - full)), array.shape))
        verdicts[name] = TensorVerdict(name, "correct" if rel_err <= tolerance else "wrong", None, None, rel_err, worst)
        if rel_err > tolerance:
            matched[name] = {}
            for r in references[1:]:
                err = _relative_error(array, r.grads[name])
                if err <= tolerance:  # never for nan
                    matched[name][r[:3]] = min(err, matched[name].get(r[:3], math.inf))

    def rank(kind):
        errors = [errors_of[kind] for errors_of in matched.values() if kind in errors_of]
        return -len(errors), math.floor(max(errors) / TIE), kinds.index(kind)

    for name, errors_of in matched.items():
        if errors_of:
            status, depth, path = min(errors_of, key=rank)
            verdicts[name] = dataclasses.replace(verdicts[name], status=status, depth=depth, path=path)
    return verdicts


# the explanation

WORDS = {  # per layout: the hidden state, the upstream gradient at step t, a weight summed over t,
    # and for LSTM the forget and output gates
    "coursera-rnn": {"h": "a", "dy_t": "da[:, :, t]", "summed": "dWaa"},
    "coursera-lstm": {"h": "a", "dy_t": "da[:, :, t]", "summed": "dWo", "f": "Γf", "o": "Γo"},
    "torch": {"h": "h", "dy_t": "dy[t]", "summed": "dweight_hh_l0", "f": "f", "o": "o"},
    "keras": {"h": "h", "dy_t": "dy[:, t]", "summed": "drecurrent_kernel", "f": "f", "o": "o"},
}


def explain(layout, cell, steps, verdicts, tolerance=TOLERANCE):
    """The verdict on the whole implementation and one paragraph on what it is missing.

    ``verdicts``: dict name -> TensorVerdict, as in :class:`Diagnosis`.
    """
    words = {**WORDS[layout], "cell": cell, "steps": steps}
    groups = {}  # (status, depth, path) -> names
    for v in verdicts.values():
        groups.setdefault((v.status, v.depth, v.path), []).append(v.name)
    correct = groups.pop(("correct", None, None), [])
    if not groups:
        return (
            f"Verdict: correct. All {len(correct)} gradients match full BPTT (rel err <= {tolerance:g}): "
            f"your code carries the gradient from each step back to the one before, down to step 0, "
            f"and sums each parameter's per-step terms over all {steps} steps."
        )
    if len(groups) == 1:
        status, depth, path = next(iter(groups))
        verdict = {
            "truncated": f"BPTT truncated to {depth} step{'s' if depth != 1 else ''}",
            "path-cut": f"BPTT with the {path} path cut",
            "wrong": "wrong",
        }[status]
    else:
        verdict = "wrong: the gradients do not agree on one variant of BPTT"
    parts = [f"Verdict: {verdict}."]
    for (status, depth, path), names in groups.items():
        parts.append(_missing(status, depth, path, names, verdicts, words))
    if correct:
        parts.append(f"These match full BPTT: {', '.join(correct)}.")
    return " ".join(parts)


def _missing(status, depth, path, names, verdicts, words):
    """One explanation: what the code behind ``names`` (all with this verdict) leaves out."""
    h, dy_t, cell = words["h"], words["dy_t"], words["cell"]
    listed = ", ".join(names)
    carried = f"d{h}_prev and dc_prev" if cell == "lstm" else f"d{h}_prev"
    if status == "truncated" and depth == 1:
        dc = ", with its dc_prev as dc_next" if cell == "lstm" else ""
        return (
            f"{listed} match backprop truncated to 1 step: your code does not carry {carried} from "
            f"step t+1 into step t, so the backward of step t sees only {dy_t}. Backprop through time "
            f"sums one term per step ({words['summed']} = Σ_t of the per-step formula, which is one "
            f"term of it), and each term must include the gradient arriving from the future: start "
            f"step t from {dy_t} + d{h}_prev of step t+1{dc}."
        )
    if status == "truncated":
        return (
            f"{listed} match backprop truncated to {depth} steps: the gradient of the loss at step t "
            f"reaches steps t-{depth - 1} .. t and no further. That is truncated BPTT, not full BPTT: "
            f"carry {carried} from each step to the one before, all the way to step 0, and never "
            f"restart them."
        )
    if status == "path-cut" and path == "hidden":
        through = (
            f"the gradient that step t+1 sends back to {h}_t through its gates (the gate gradients "
            f"times the {h}_prev columns of the weights)"
        )
        if cell == "gru":
            return (
                f"{listed} match BPTT without the path into h_(t-1) through the gates: dh_prev has two "
                f"terms, the direct z * dh and {through}; your code keeps only the first."
            )
        return (
            f"{listed} match BPTT without the path into {h}_(t-1) through the gates: your code "
            f"{'carries dc_prev from step t+1 but ' if cell == 'lstm' else ''}does not add d{h}_prev. "
            f"The backward of step t must start from {dy_t} + d{h}_prev, where d{h}_prev is {through}."
        )
    if status == "path-cut":
        if cell == "gru":
            return (
                f"{listed} match BPTT without the direct path h_t = (1 - z) * n + z * h_(t-1): dh_prev "
                f"must add dh * z to the part through the gates, and your code keeps only the gates' part."
            )
        f, o = words["f"], words["o"]
        return (
            f"{listed} match BPTT without the cell-state path: your code adds d{h}_prev from step t+1 "
            f"but passes no dc_prev. c_t feeds c_(t+1) = {f} * c_t + ..., so the backward of step t "
            f"needs, as its dc_next, step t+1's dc_prev = (dc_next + d{h}_next * {o} * (1 - tanh²(c_next))) * {f}."
        )
    worst = max(names, key=lambda name: verdicts[name].rel_err if math.isfinite(verdicts[name].rel_err) else math.inf)
    slip = ", or a term taken at the wrong time step (c_prev for c_next)" if cell == "lstm" else ""
    depths = f"truncation at any depth 1 .. {words['steps'] - 1}, " if words["steps"] > 1 else ""
    return (
        f"{listed} match no variant of backprop that the diagnosis knows (full BPTT, {depths}"
        f"one path through time dropped): the mistake is "
        f"inside a step, such as a wrong derivative (σ' = σ(1 - σ), tanh' = 1 - tanh²), a transposed "
        f"product, one gate's term in another's place{slip}. The largest difference from full "
        f"BPTT is in {worst} at {list(verdicts[worst].worst)}."
    )
