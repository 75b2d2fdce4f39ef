"""The verdict on a learner's backprop: which variant of BPTT their gradients are.

Legend: T time steps, B batch, I input features, H hidden units.

The learner gives, in one layout of :mod:`bptt.interop`, the parameters of one recurrent
layer, the inputs (``x``, the initial state, and the upstream gradient of every output, the
loss being ``sum(dy * y)``) and the gradients their code computed. The library computes the
reference gradients of

- full BPTT;
- every truncation a person writes (:mod:`bptt.proofs.variants`): per-loss depth k = 1 .. T-1
  (each loss's gradient flows back at most k steps; k = 1: no gradient through time at all),
  windows of k steps with the gradient restarted at each edge, counted from the first or the
  last step, and TBPTT(k1, k2), each named by ``bptt.Window``;
- BPTT with one path through time dropped: ``hidden``, the gradient into h_{t-1} through the
  gates (``W_hh``), the slip of not adding ``da_prev``; ``cell``, the paths that skip the
  gates, LSTM's ``dc_prev`` and GRU's ``z * dh``; alone or with a truncation.

Tolerance: everything is compared in float64, and a tensor matches a reference when

    rel_err = max |given - reference| / max |reference|  <=  TOLERANCE = 1e-5

A float32 learner's rounding stays near 1e-7 .. 1e-6 of the largest entry; a missing term
through time costs far more than 1e-5 unless it is lost in the vanishing of the gradient.

Each tensor gets ``correct`` if it matches full BPTT, which wins even where a variant matches
too (every tensor when T = 1). Otherwise it gets, among the variants it matches, the one that
explains the most of the given tensors, then the closest, then the first in the order
truncation (simplest first), truncation with a cut, cut alone: ``truncated`` with the
depth or window, or ``path-cut`` with the path. So an LSTM's dWo, which is the same with the
hidden path cut as truncated to 1 step, is read as the cut that explains the other tensors,
and a vanilla RNN with the hidden path cut, which *is* truncation at depth 1, is read as
truncation. A tensor that matches nothing is ``wrong``. The reported ``rel_err`` and
``worst`` entry are always against full BPTT.

The initial state under a cut: a learner with the slip still differentiates step 0 whole, so
their ``da0`` is step 0's ``da_prev``, computed from what the cut lets reach step 0; a learner
who never kept ``da_prev`` at all reports zero. Both count as the cut.
"""

import dataclasses
import html
import json
import math
import zipfile
from dataclasses import dataclass

import numpy as np

from ..interop import LayoutError, get_layout, to_model
from ..interop.arrays import check_arrays, require
from ..recurrence import Window
from .explain import explain, verdict_of
from .slips import tensor_slips
from .variants import Reference, gradients, slip_references, variants

TOLERANCE = 1e-5
TIE = 1e-9  # variants whose errors differ by less fit equally well
STATUSES = ("correct", "truncated", "path-cut", "wrong")


def window_dict(window):
    """A truncation in JSON: ``{"k1", "k2", "align"}``, or None."""
    return None if window is None else {"k1": window.k1, "k2": window.k2, "align": window.align}


def slip_dict(slip):
    """A slip in JSON: ``{"id": ..., **detail}`` (e.g. ``{"id": "missing-sigmoid-derivative",
    "gate": "f"}``), or None."""
    return None if slip is None else {"id": slip[0], **dict(slip[1])}


def truncation_fields(window):
    """``{"depth", "window"}`` of the JSON: per-loss depth k (``Window(1, k)``) as ``"depth": k``,
    any other truncation as ``"window"``."""
    if window is not None and window.k1 == 1:
        return {"depth": window.k2, "window": None}
    return {"depth": None, "window": window_dict(window)}


@dataclass(frozen=True)
class TensorVerdict:
    """The verdict on one gradient tensor."""

    name: str
    status: str  # one of STATUSES
    window: Window | None  # the truncation, for "truncated" (and a truncated "path-cut")
    path: str | None  # "hidden" or "cell", for "path-cut"
    rel_err: float  # against full BPTT; nan where the tensor has non-finite entries
    worst: tuple  # index of the entry farthest from full BPTT
    slip: tuple | None = None  # (id, ((key, value), ...)) of bptt.proofs.slips, where one matches

    @property
    def depth(self):
        """The per-loss depth k of a truncation Window(1, k), else None."""
        return truncation_fields(self.window)["depth"]

    def to_dict(self):
        return {
            "status": self.status,
            **truncation_fields(self.window),
            "path": self.path,
            "slip": slip_dict(self.slip),
            "rel_err": self.rel_err if math.isfinite(self.rel_err) else None,
            "worst": [int(i) for i in self.worst],
        }

    def truncation_text(self):
        """The table's truncation column: "3" (depth), "w3 end", "(2,5) start" or "-"."""
        w = self.window
        if w is None:
            return "-"
        if w.k1 == 1:
            return str(w.k2)
        return f"w{w.k1} {w.align}" if w.k1 == w.k2 else f"({w.k1},{w.k2}) {w.align}"


@dataclass(frozen=True)
class ForwardVerdict:
    """The verdict on one array a learner's forward returned (``bptt.check``)."""

    name: str
    status: str  # "correct" or "wrong"
    rel_err: float  # max |given - reference| / max |reference|; nan for non-finite or misshapen
    first_step: int | None  # the first time step where it is wrong
    worst: tuple  # index of the entry farthest from the reference, in the learner's layout
    problem: str | None = None  # what is wrong with its form (a shape), if anything

    def to_dict(self):
        return {"status": self.status, "rel_err": self.rel_err if math.isfinite(self.rel_err) else None,
                "first_step": self.first_step, "worst": list(self.worst), "problem": self.problem}


@dataclass(frozen=True, repr=False)
class Diagnosis:
    """The verdicts on every tensor given, in the order given, and their explanation.

    From ``bptt.check`` also: the verdict on each array the learner's forward returned, the
    cases run, the learner's error if their code raised, and the diagnosis of their cell.
    """

    layout: str
    cell: str
    steps: int
    tolerance: float
    tensors: dict  # name -> TensorVerdict
    summary: str  # the verdict on the whole implementation and what it is missing
    forward: dict = dataclasses.field(default_factory=dict)  # name -> ForwardVerdict
    cases: tuple = ()  # {"T", "B", "seed", "passed"} of each case bptt.check ran
    error: str | None = None  # what the learner's code raised, if it did
    cell_check: "Diagnosis | None" = None  # the learner's cell functions, checked beside their loop

    @property
    def passed(self):
        return (self.error is None and all(v.status == "correct" for v in self.tensors.values())
                and all(v.status == "correct" for v in self.forward.values()))

    @property
    def verdict(self):
        """The overall verdict: ``{"status", "depth", "window", "path", "forward"}``, the variant
        every tensor that is not correct shares (status "wrong" when they disagree, "error"
        when the learner's code raised), and the arrays of the forward that are wrong."""
        status, window, path, slip = ("error", None, None, None) if self.error else verdict_of(self.tensors)
        wrong_forward = [name for name, v in self.forward.items() if v.status != "correct"]
        return {"status": status, **truncation_fields(window), "path": path, "slip": slip_dict(slip),
                "forward": wrong_forward}

    def to_dict(self):
        """``{"verdict": {...}, "tensors": {name: {"status", "depth", "window", "path", "rel_err",
        "worst"}}, "forward": {name: {...}}, "cases": [...], "summary": str}``."""
        as_dict = {
            "verdict": self.verdict,
            "tensors": {name: v.to_dict() for name, v in self.tensors.items()},
            "forward": {name: v.to_dict() for name, v in self.forward.items()},
            "cases": list(self.cases),
            "summary": self.summary,
        }
        if self.cell_check is not None:
            as_dict["cell"] = self.cell_check.to_dict()
        return as_dict

    def _rows(self):
        """The table: a header and one row of strings per tensor."""
        header = ("tensor", "status", "truncation", "path", "slip", "rel err", "worst at")
        rows = [(v.name, v.status, v.truncation_text(), v.path or "-", v.slip[0] if v.slip else "-",
                 f"{v.rel_err:.2e}", str(v.worst)) for v in self.tensors.values()]
        rows += [(f"{v.name} (forward)", v.status, "-", "-", "-", f"{v.rel_err:.2e}", str(v.worst))
                 for v in self.forward.values()]
        return header, rows

    def _repr_html_(self):
        """The table and the verdict, for a notebook."""
        header, rows = self._rows()
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(
            f"<tr style='color:{'inherit' if row[1] == 'correct' else '#b00'}'>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in rows
        )
        return (f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"
                f"<p>{html.escape(self.summary)}</p>")

    def to_json(self, indent=None):
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    def __repr__(self):  # what a terminal (IPython, the REPL) shows: the table and the verdict
        return str(self)

    def __str__(self):
        header, rows = self._rows()
        if not rows:
            return self.summary
        lines = []
        width = max(len(row[0]) for row in [header, *rows])
        slip_width = max(len(row[4]) for row in [header, *rows])
        for row in [header, *rows]:
            lines.append(f"{row[0]:<{width}}  {row[1]:<9}  {row[2]:>11}  {row[3]:<6}  {row[4]:<{slip_width}}  "
                         f"{row[5]:>9}  {row[6]}")
        lines.append(
            f"(rel err: largest difference from full BPTT over the largest entry of full BPTT; "
            f"a match is <= {self.tolerance:g}, in float64; truncation: per-loss depth k, wk windows of k, "
            f"(k1,k2) TBPTT, with the end they are counted from)"
        )
        return "\n".join(lines) + "\n\n" + self.summary


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
        except ValueError as error:
            if "allow_pickle" in str(error) or "Object arrays" in str(error):
                raise LayoutError(
                    f"{role} file {path}: holds a pickled object, not arrays; np.savez(path, {role}) saves a "
                    f"dict as one object: save its arrays by name with np.savez(path, **{role})"
                ) from None
            raise LayoutError(f"{role} file {path}: unreadable array ({error})") from None
        except (OSError, EOFError, zipfile.BadZipFile) as error:
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
    x, state0, dy, dh_n = _read_inputs(layout, cell, input_size, hidden_size, inputs)
    given = _read_grads(grads, _gradient_shapes(layout, cell, input_size, hidden_size, x.shape[1], x.shape[0]))
    _, _, cache = model.forward(x, state0)
    full = _in_layout(layout, cell, gradients(model, cache, dy, dh_n))
    references = [Reference("correct", None, None, None, full)]
    if any(_relative_error(array, full[name]) > tolerance for name, array in given.items()):
        dx_name = "d" + layout.DATA_NAMES["x"]
        given_dx = None if dx_name not in given else layout.sequence_to_torch(given[dx_name])
        references += [
            Reference(status, window, path, None, _in_layout(layout, cell, grads))
            for status, window, path, grads in variants(model, cache, x, state0, dy, dh_n, given_dx, tolerance)
        ]
    verdicts = _verdicts(given, references, tolerance)
    if any(v.status == "wrong" for v in verdicts.values()):  # no variant of BPTT: the classic slips
        references += [
            Reference(status, window, path, slip, _in_layout(layout, cell, grads))
            for status, window, path, slip, grads in slip_references(model, cell, x, state0, dy, dh_n)
        ]
        verdicts = _per_tensor_slips(given, full, _verdicts(given, references, tolerance), tolerance)
    summary = explain(layout, cell, x.shape[0], verdicts, tolerance, hidden_size)
    return Diagnosis(layout.NAME, cell, x.shape[0], tolerance, verdicts, summary)


def _read_inputs(layout, cell, input_size, hidden_size, inputs):
    """The inputs in the library's layout, float64: x (T, B, I), the initial state (a (1, B, H)
    array, for LSTM a tuple of two), dy (T, B, H) and the final state's gradient (None, or for
    an LSTM cell's ``dc_next`` the tuple ``(None, dc_n)``)."""
    names = layout.DATA_NAMES
    if names["x"] not in inputs:  # without x no shape is known: name every missing key at once
        missing = [names[k] for k in ("x", "h0", "dy") if names[k] not in inputs]
        raise LayoutError(f"inputs: missing {', '.join(missing)}")
    x_ndim = len(layout.sequence_shape(1, 1, 1))
    x = layout.sequence_to_torch(require(inputs, names["x"], x_ndim, "inputs"))  # T,B,?
    steps, batch = x.shape[:2]
    shapes = {
        names["x"]: layout.sequence_shape(steps, batch, input_size),
        names["h0"]: layout.state_shape(batch, hidden_size),
        names["dy"]: layout.sequence_shape(steps, batch, hidden_size),
    }
    has = {part: cell == "lstm" and part in names and names[part] in inputs for part in ("c0", "dc_n")}
    for part in ("c0", "dc_n"):
        if has[part]:
            shapes[names[part]] = layout.state_shape(batch, hidden_size)
    check_arrays(inputs, shapes, "inputs")
    x = np.asarray(x, np.float64)
    h0 = np.asarray(layout.state_to_torch(inputs[names["h0"]]), np.float64)  # 1,B,H
    dy = np.asarray(layout.sequence_to_torch(inputs[names["dy"]]), np.float64)  # T,B,H
    if cell != "lstm":
        return x, h0, dy, None
    c0 = np.asarray(layout.state_to_torch(inputs[names["c0"]]), np.float64) if has["c0"] else np.zeros_like(h0)
    dc_n = np.asarray(layout.state_to_torch(inputs[names["dc_n"]]), np.float64) if has["dc_n"] else None
    return x, (h0, c0), dy, None if dc_n is None else (None, dc_n)


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


def _in_layout(layout, cell, torch_grads):
    """:func:`bptt.proofs.variants.gradients`'s output in ``layout``, keyed ``"d" + name``."""
    names = layout.DATA_NAMES
    params = {name: g for name, g in torch_grads.items() if name not in ("x", "h0", "c0")}
    grads = {"d" + name: g for name, g in layout.grads_from_torch(params, cell).items()}
    grads["d" + names["x"]] = layout.sequence_from_torch(torch_grads["x"])
    for state in ("h0", "c0"):
        if state in torch_grads:
            grads["d" + names[state]] = layout.state_from_torch(torch_grads[state])
    return grads


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
    kinds = list(dict.fromkeys(r.kind for r in references[1:]))  # (status, window, path, slip), listing order
    verdicts, matched = {}, {}  # matched: name -> {kind: rel err} of a tensor that is not correct
    for name, array in given.items():
        full = references[0].grads[name]
        rel_err = _relative_error(array, full)
        worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(array - full)), array.shape))
        verdicts[name] = TensorVerdict(name, "correct" if rel_err <= tolerance else "wrong", None, None, rel_err,
                                       worst)
        if rel_err > tolerance:
            matched[name] = {}
            for r in references[1:]:
                err = _relative_error(array, r.grads[name])
                if err <= tolerance:  # never for nan
                    matched[name][r.kind] = min(err, matched[name].get(r.kind, math.inf))

    def rank(kind):
        errors = [errors_of[kind] for errors_of in matched.values() if kind in errors_of]
        return -len(errors), math.floor(max(errors) / TIE), kinds.index(kind)

    for name, errors_of in matched.items():
        if errors_of:
            status, window, path, slip = min(errors_of, key=rank)
            verdicts[name] = dataclasses.replace(verdicts[name], status=status, window=window, path=path, slip=slip)
    return verdicts


def _per_tensor_slips(given, full, verdicts, tolerance):
    """``verdicts`` with the tensors that match nothing named ``sign`` or ``transposed`` where
    they are full BPTT's negative or transpose."""
    named = dict(verdicts)
    for name, v in verdicts.items():
        if v.status == "wrong" and v.slip is None and np.all(np.isfinite(given[name])):
            found = tensor_slips(given[name], full[name], tolerance)
            if found:
                named[name] = dataclasses.replace(v, slip=(found[0][0], ()))
    return named
