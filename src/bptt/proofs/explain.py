"""The diagnosis in words: what a learner's backward does, in the names of their own code.

Each layout has its words: the hidden state, the upstream gradient at step t, a weight summed
over t, the gradients a loop carries from step t+1 to step t, and for LSTM the forget and
output gates.
"""

import math

import numpy as np

from .slips import describe

WORDS = {
    "coursera-rnn": {"h": "a", "dy_t": "da[:, :, t]", "summed": "dWaa", "dh_prev": "da_prev"},
    "coursera-lstm": {"h": "a", "dy_t": "da[:, :, t]", "summed": "dWo", "dh_prev": "da_prev", "dc_prev": "dc_prev",
                      "f": "Γf", "o": "Γo"},
    "torch": {"h": "h", "dy_t": "dy[t]", "summed": "dweight_hh_l0", "dh_prev": "dh_prev", "dc_prev": "dc_prev",
              "f": "f", "o": "o"},
    "keras": {"h": "h", "dy_t": "dy[:, t]", "summed": "drecurrent_kernel", "dh_prev": "dh_prev",
              "dc_prev": "dc_prev", "f": "f", "o": "o"},
    "cs231n-rnn": {"h": "h", "dy_t": "dh[:, t]", "summed": "dWh", "dh_prev": "dprev_h"},
    "cs231n-lstm": {"h": "h", "dy_t": "dh[:, t]", "summed": "dWh", "dh_prev": "dprev_h", "dc_prev": "dprev_c",
                    "f": "f", "o": "o"},
}
for _step, _sequence, _dy in (("coursera-rnn-cell", "coursera-rnn", "da_next"),
                              ("coursera-lstm-cell", "coursera-lstm", "da_next"),
                              ("cs231n-rnn-step", "cs231n-rnn", "dnext_h"),
                              ("cs231n-lstm-step", "cs231n-lstm", "dnext_h")):
    WORDS[_step] = {**WORDS[_sequence], "dy_t": _dy, "step": True}


def verdict_of(verdicts):
    """The overall verdict: ``(status, window, path, slip)`` that every tensor not correct
    shares, ``("correct", None, None, None)`` when all are correct, ``("wrong", None, None,
    None)`` when they disagree. ``verdicts``: dict name -> TensorVerdict."""
    kinds = {(v.status, v.window, v.path, v.slip) for v in verdicts.values() if v.status != "correct"}
    if not kinds:
        return "correct", None, None, None
    if len(kinds) == 1:
        return kinds.pop()
    return "wrong", None, None, None


def name_variant(window, path, steps):
    """A variant's name: "BPTT truncated to 3 steps", "truncated BPTT on windows of 4 (counted
    from the last step)", "TBPTT(2, 5)", each "with the hidden path cut" where there is one."""
    parts = []
    if window is not None:
        if window.k1 == 1:
            parts.append(f"BPTT truncated to {window.k2} step{'s' if window.k2 != 1 else ''}")
        elif window.k1 == window.k2:
            parts.append(f"truncated BPTT on windows of {window.k1} ({_counted(window, steps)})")
        else:
            parts.append(f"TBPTT({window.k1}, {window.k2}) ({_counted(window, steps)})")
    if path is not None:
        parts.append(f"{'BPTT ' if window is None else ''}with the {path} path cut")
    return ", ".join(parts)


def _counted(window, steps):
    if steps % window.k1 == 0:
        return "chunks counted from either end: the same here"
    return f"counted from the {'first' if window.align == 'start' else 'last'} step"


def explain(layout, cell, steps, verdicts, tolerance, hidden_size=None):
    """The verdict on the whole implementation and one paragraph on what it is missing.

    ``layout``: the layout module; ``verdicts``: dict name -> TensorVerdict, as in
    :class:`bptt.proofs.diagnose.Diagnosis`; ``hidden_size``: H, to name a gate block.
    """
    words = {**WORDS[layout.NAME], "cell": cell, "steps": steps, "layout": layout, "hidden_size": hidden_size}
    groups = {}  # (status, window, path, slip) -> names
    for v in verdicts.values():
        groups.setdefault((v.status, v.window, v.path, v.slip), []).append(v.name)
    correct = groups.pop(("correct", None, None, None), [])
    if not groups and words.get("step"):
        return (
            f"Verdict: correct. All {len(correct)} gradients match the exact backward of one step "
            f"(rel err <= {tolerance:g})."
        )
    if not groups:
        return (
            f"Verdict: correct. All {len(correct)} gradients match full BPTT (rel err <= {tolerance:g}): "
            f"your code carries the gradient from each step back to the one before, down to step 0, "
            f"and sums each parameter's per-step terms over all {steps} steps."
        )
    status, window, path, slip = verdict_of(verdicts)
    if len(groups) > 1:
        verdict = "wrong: the gradients do not agree on one variant of BPTT"
    elif slip is not None:
        verdict = f"wrong, {slip[0]}" + (f" and {name_variant(window, path, steps)}" if path or window else "")
    else:
        verdict = "wrong" if status == "wrong" else name_variant(window, path, steps)
    parts = [f"Verdict: {verdict}."]
    for (status, window, path, slip), names in groups.items():
        if slip is not None:
            parts.append(_slipped(slip, window, path, names, verdicts, words))
        else:
            parts.append(_missing(status, window, path, names, verdicts, words))
    if correct:
        parts.append(f"These match full BPTT: {', '.join(correct)}.")
    return " ".join(parts)


def _carried(words):
    return f"{words['dh_prev']} and {words['dc_prev']}" if words["cell"] == "lstm" else words["dh_prev"]


def _missing(status, window, path, names, verdicts, words):
    """One explanation: what the code behind ``names`` (all with this verdict) does."""
    listed = ", ".join(names)
    if status == "wrong":
        return _no_variant(listed, names, verdicts, words)
    sentences = []
    if window is not None:
        sentences.append(_truncation(listed, window, words))
    if path is not None:
        sentences.append(_cut(listed if window is None else "They", path, words, window is not None))
    return " ".join(sentences)


def _truncation(listed, window, words):
    dy_t, carried = words["dy_t"], _carried(words)
    if window.k1 > 1 and window.k1 == window.k2:
        k = window.k1
        return (
            f"{listed} match truncated BPTT on windows of {k}: your backward restarts {carried} every {k} "
            f"steps, {_counted(window, words['steps'])}, so the loss at a step reaches back only to the first "
            f"step of its window (1 to {k} steps). That is the gradient of each window's losses with the state "
            f"entering the window held constant, not of the whole loss: for full BPTT carry {carried} across "
            f"the windows' edges, all the way to step 0."
        )
    if window.k1 > 1:
        return (
            f"{listed} match TBPTT({window.k1}, {window.k2}): your backward takes the losses of chunks of "
            f"{window.k1} steps ({_counted(window, words['steps'])}) and runs each chunk back {window.k2} steps "
            f"from its end, so the loss at the j-th step of a chunk reaches back {window.k2 - window.k1} + j "
            f"steps. For full BPTT carry {carried} from each step to the one before, all the way to step 0."
        )
    depth = window.k2
    if depth == 1:
        dc = f", with its {words['dc_prev']} as dc_next" if words["cell"] == "lstm" else ""
        return (
            f"{listed} match backprop truncated to 1 step: your code does not carry {carried} from "
            f"step t+1 into step t, so the backward of step t sees only {dy_t}. Backprop through time "
            f"sums one term per step ({words['summed']} = Σ_t of the per-step formula, which is one "
            f"term of it), and each term must include the gradient arriving from the future: start "
            f"step t from {dy_t} + {words['dh_prev']} of step t+1{dc}."
        )
    return (
        f"{listed} match backprop truncated to {depth} steps: the gradient of the loss at step t "
        f"reaches steps t-{depth - 1} .. t and no further. That is truncated BPTT, not full BPTT: "
        f"carry {carried} from each step to the one before, all the way to step 0, and never "
        f"restart them."
    )


def _cut(listed, path, words, also):
    h, dy_t, cell = words["h"], words["dy_t"], words["cell"]
    dh_prev = words["dh_prev"]
    match = "match BPTT" if not also else "are also"
    if path == "hidden":
        through = (
            f"the gradient that step t+1 sends back to {h}_t through its gates (the gate gradients "
            f"times the {h}_prev columns of the weights)"
        )
        if cell == "gru":
            return (
                f"{listed} {match} without the path into h_(t-1) through the gates: dh_prev has two "
                f"terms, the direct z * dh and {through}; your code keeps only the first."
            )
        return (
            f"{listed} {match} without the path into {h}_(t-1) through the gates: your code "
            f"{'carries ' + words['dc_prev'] + ' from step t+1 but ' if cell == 'lstm' else ''}does not add "
            f"{dh_prev}. The backward of step t must start from {dy_t} + {dh_prev}, where {dh_prev} is {through}."
        )
    if cell == "gru":
        return (
            f"{listed} {match} without the direct path h_t = (1 - z) * n + z * h_(t-1): dh_prev "
            f"must add dh * z to the part through the gates, and your code keeps only the gates' part."
        )
    f, o = words["f"], words["o"]
    return (
        f"{listed} {match} without the cell-state path: your code adds {dh_prev} from step t+1 "
        f"but passes no {words['dc_prev']}. c_t feeds c_(t+1) = {f} * c_t + ..., so the backward of step t "
        f"needs, as its dc_next, step t+1's {words['dc_prev']} = (dc_next + d{h}_next * {o} * (1 - tanh²(c_next))) "
        f"* {f}."
    )


def _no_variant(listed, names, verdicts, words):
    worst = max(names, key=lambda name: verdicts[name].rel_err if math.isfinite(verdicts[name].rel_err) else math.inf)
    slip = ", or a term taken at the wrong time step (c_prev for c_next)" if words["cell"] == "lstm" else ""
    truncations = "truncated BPTT at any depth, on windows or in chunks, " if words["steps"] > 1 else ""
    return (
        f"{listed} match no variant of backprop that the diagnosis knows (full BPTT, {truncations}"
        f"one path through time dropped): the mistake is "
        f"inside a step, such as a wrong derivative (σ' = σ(1 - σ), tanh' = 1 - tanh²), a transposed "
        f"product, one gate's term in another's place{slip}. The largest difference from full "
        f"BPTT is in {worst} at {list(verdicts[worst].worst)}."
    )


def _slipped(slip, window, path, names, verdicts, words):
    """The explanation of tensors that match a slip of :mod:`bptt.proofs.slips`, with the
    path cut or truncation it comes with, and where the worst of them is."""
    listed = ", ".join(names)
    slip_id, detail = slip[0], dict(slip[1])
    sentences = [f"{listed} match the slip {slip_id}: {describe(slip_id, detail, words['cell'])}."]
    if window is not None:
        sentences.append(_truncation("They also", window, words))
    if path is not None:
        sentences.append(_cut("They", path, words, also=True))
    worst = max(names, key=lambda name: verdicts[name].rel_err if math.isfinite(verdicts[name].rel_err) else math.inf)
    sentences.append(f"The largest difference from full BPTT is in {worst} at {list(verdicts[worst].worst)}"
                     f"{_where(worst, verdicts[worst].worst, words)}.")
    return " ".join(sentences)


GATES = {  # per layout: the axis of a weight or bias gradient that holds the gate blocks, and
    # their names per cell, in the layout's order
    "torch": (0, {"lstm": "i f g o", "gru": "r z n"}),
    "keras": (-1, {"lstm": "i f c o", "gru": "z r h"}),
    "cs231n-lstm": (-1, {"lstm": "i f o g"}),
    "cs231n-lstm-step": (-1, {"lstm": "i f o g"}),
}


def _where(name, index, words):
    """", step t" for a sequence's gradient, ", in the rows of gate f" for a weight's of a
    layout that stacks the gates, else ""."""
    layout, cell = words["layout"], words["cell"]
    if name == "d" + layout.DATA_NAMES["x"] and words["steps"] > 1:
        marker = np.zeros(tuple(i + 1 for i in index))
        marker[tuple(index)] = 1.0
        return f", step {int(np.argmax(np.any(layout.sequence_to_torch(marker) != 0, axis=(1, 2))))}"
    if layout.NAME in GATES and cell in GATES[layout.NAME][1] and len(index) >= 1:
        axis, names = GATES[layout.NAME]
        gates = names[cell].split()
        position = index[axis] if -len(index) <= axis < len(index) else None
        hidden = words["hidden_size"]
        if position is not None and hidden and position // hidden < len(gates):
            return f", in the block of gate {gates[position // hidden]}"
    return ""
