"""The classic slips of a hand-written backward, each computed as its own variant of BPTT.

Legend: T time steps, B batch, I input features, H hidden units, K gates per cell,
S slips computed together.

When a learner's gradients match no truncation and no cut path (:mod:`bptt.proofs.variants`),
the likely cause is a slip inside the cell or the loop. Each slip below is one switched term of
one plain backward (:func:`slipped_backward`): the forward is the library's cell, step by step;
the backward walks time in reverse and differentiates each forward line, and the slip replaces
one derivative term, exactly as the learner's code does. With no slip it is full BPTT; with
``cut`` and ``edges`` it drops a path or restarts at window edges like the library's engine, so
a slip combines with a truncation ("no σ' and no carry of da_prev" is one variant). All slips
of a pass run at once, stacked on a leading axis S: every switch is a per-slip choice.

Each slip, in the library's (PyTorch's) names; ``docs/slips.md`` writes them in the course's:

- ``missing-sigmoid-derivative``, ``{"gate": g}``, g a sigmoid gate (LSTM ``i``, ``f``, ``o``;
  GRU ``r``, ``z``) or ``"all"`` of them: σ' = σ(1-σ) written as σ, the learner's most common
  form (``dft = dc * c_prev * ft``); ``{"gate": g, "factor": "none"}``: no factor at all
  (``dft = dc * c_prev``).
- ``missing-tanh-derivative``, ``{"where": w}``: tanh' = 1 - tanh² left out (a factor 1):
  ``"candidate"``, LSTM's g (``dpre_g = dg``) or GRU's n (``dpre_n = dn``); ``"cell"``, LSTM's
  path from h into c (``dc += dh * o``); ``"hidden"``, the tanh RNN (``dpre = dh``).
- ``tanh-applied-twice``, ``{"where": w}``: 1 - tanh(a)² with a already a tanh, so tanh is
  applied once more: ``"candidate"``, 1 - tanh(g)² (GRU: 1 - tanh(n)²) for 1 - g²; ``"cell"``,
  1 - tanh(tanh(c_t))² for 1 - tanh²(c_t); ``"hidden"``, 1 - tanh(h_t)² for 1 - h_t².
- ``wrong-time-index`` (LSTM), ``{"where": "forget-gate"}``: ``df = dc * c_t`` for
  ``dc * c_{t-1}``; ``{"where": "dc-prev"}``: ``dc_{t-1} = dc * f_{t+1}``, the forget gate of
  the step after (the step the loop did just before), for ``dc * f_t``; the last step, which
  has no step after, uses its own.
- ``swapped-weight-slices`` (LSTM and the RNNs, whose gates see ``x`` and ``h`` only through
  their sum): with ``W = [W_hh | W_ih]`` (K*H, H+I), the weight applied to ``[h_{t-1}; x_t]``,
  ``dh_{t-1} = dpre W[:, -H:]`` and ``dx_t = dpre W[:, :I]``, the columns of a concatenation
  ``[x_t; h_{t-1}]``, for ``dpre W[:, :H]`` and ``dpre W[:, H:]``. Defined for any H and I; at
  H == I it is W_ih and W_hh exchanged.
- ``initial-state-ignored``: every term of the backward that reads the state entering step 0
  reads zero (``dW_hh``'s step-0 term ``dpre_0ᵀ h0``; LSTM's ``df_0 = dc * c0``; GRU's
  ``dz_0 = dh * (h0 - n)`` and ``dr_0``'s ``W_hn h0 + b_hn``); the forward is right.
- ``not-accumulated``: each parameter gradient overwritten at each step, not summed: what is
  left is step 0's term, the last one the loop computes.
- ``bias-not-summed``, ``{"how": "mean"}`` or ``{"how": "first"}``: each step's bias term is
  the mean of dpre over the batch, or the first example's, not their sum (both biases).
- ``sign`` and ``transposed``: a tensor negated, or a square one transposed; per tensor, by
  :func:`tensor_slips`.

Cost: at T = 100, B = 10, I = H = 5 the whole catalogue runs in one pass of the loop: LSTM
(19 slips) about 27 ms, GRU (12) 15 ms, tanh RNN (7) 4 ms, measured on a shared 2-core CPU.
"""

from typing import NamedTuple

import numpy as np

from .. import recurrence, reference
from ..cells import CELLS
from ..recurrence import PATHS, Weights

SLIPS = {
    "missing-sigmoid-derivative": "a sigmoid gate's derivative σ(1-σ) written as σ (or left out)",
    "missing-tanh-derivative": "a tanh's derivative 1 - tanh² left out",
    "tanh-applied-twice": "1 - tanh(a)² where a is already a tanh",
    "wrong-time-index": "the LSTM's forget gate paired with the wrong step",
    "swapped-weight-slices": "dh_prev and dx taken from each other's columns of W = [W_hh | W_ih]",
    "initial-state-ignored": "the state entering step 0 read as zero in the backward",
    "not-accumulated": "parameter gradients overwritten at each step, not summed over time",
    "bias-not-summed": "bias gradients averaged over the batch, or the first example's",
    "sign": "a gradient negated",
    "transposed": "a square gradient transposed",
}

SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z")}
NO_SLIP = ((None, {}),)
TOLERANCE = 1e-5


class Slip(NamedTuple):
    """One slip's gradients, keyed like :func:`bptt.proofs.variants.gradients`."""

    id: str  # a key of SLIPS
    detail: dict  # where or how, e.g. {"gate": "f"}
    grads: dict  # weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, x (T, B, I), h0 and c0 (1, B, H)


def catalogue(cell_name):
    """The slips a ``cell_name`` cell can have, as ``(id, detail)``, in the order of SLIPS."""
    _check_cell_name(cell_name)
    gates = SIGMOID_GATES.get(cell_name, ())
    tanh_places = {"lstm": ("candidate", "cell"), "gru": ("candidate",), "rnn_tanh": ("hidden",)}.get(cell_name, ())
    slips = []
    if gates:
        slips += [("missing-sigmoid-derivative", {"gate": gate}) for gate in gates + ("all",)]
        slips += [("missing-sigmoid-derivative", {"gate": gate, "factor": "none"}) for gate in gates + ("all",)]
    slips += [("missing-tanh-derivative", {"where": where}) for where in tanh_places]
    slips += [("tanh-applied-twice", {"where": where}) for where in tanh_places]
    if cell_name == "lstm":
        slips += [("wrong-time-index", {"where": where}) for where in ("forget-gate", "dc-prev")]
    if cell_name != "gru":
        slips.append(("swapped-weight-slices", {}))
    slips += [("initial-state-ignored", {}), ("not-accumulated", {})]
    slips += [("bias-not-summed", {"how": how}) for how in ("mean", "first")]
    return slips


def slip_variants(cell_name, weights, x, state0, dy, dstate_n=None, *, cut=None, edges=None):
    """Every slip of :func:`catalogue` computed as its own variant of BPTT, in one pass.

    Parameters
    ----------
    cell_name : "lstm", "gru", "rnn_tanh" or "rnn_relu"
    weights : ``bptt.recurrence.Weights``: w_ih (K*H, I), w_hh (K*H, H), b_ih, b_hh (K*H,)
    x : (T, B, I)
    state0 : tuple of (B, H): ``(h0,)``, for LSTM ``(h0, c0)``
    dy : (T, B, H), the upstream gradient of every output (the loss is ``sum(dy * y)``)
    dstate_n : None, or a tuple like ``state0`` of (B, H) arrays or None entries: the
        gradient of the final state
    cut : None, "hidden" or "cell": a path through time dropped as well (``recurrence.backward``)
    edges : None, or (T, B) bool (or (T, 1) for all sequences): where ``edges[t, b]``, what
        step t sends to the state entering it is dropped for sequence b (windows)

    Returns
    -------
    list of Slip, in the order of :func:`catalogue`
    """
    slips = catalogue(cell_name)
    grads = slipped_backward(cell_name, weights, x, state0, dy, dstate_n, slips=slips, cut=cut, edges=edges)
    return [Slip(slip_id, detail, g) for (slip_id, detail), g in zip(slips, grads)]


def slipped_backward(cell_name, weights, x, state0, dy, dstate_n=None, *, slips=NO_SLIP, cut=None, edges=None):
    """The gradients of ``sum(dy * y)`` with each of ``slips`` in the backward, float64.

    ``slips``: a list of ``(id, detail)`` of :func:`catalogue`, or ``(None, {})`` for none
    (exact BPTT, with ``cut`` and ``edges``). The other arguments as :func:`slip_variants`.
    Returns one dict of gradients per slip, keyed like :attr:`Slip.grads`.
    """
    cell = CELLS[_check_cell_name(cell_name)]
    weights, x, state0, dy, dstate_n, edges = _check_arrays(cell, weights, x, state0, dy, dstate_n, cut, edges)
    switch = _switches(cell_name, slips, x.shape[1])
    T, B, I = x.shape
    KH, H = weights.w_hh.shape
    S = len(slips)
    states, steps = _forward(cell, weights, x, state0)
    # the columns of W = [W_hh | W_ih] (K*H, H+I) that carry dpre back to h_{t-1} and to x_t
    w = np.concatenate([weights.w_hh, weights.w_ih], axis=1)  # KH,H+I
    w_to_h = np.stack([weights.w_hh, w[:, -H:]])[switch.swapped]  # S,KH,H
    w_to_x = np.stack([weights.w_ih, w[:, :I]])[switch.swapped]  # S,KH,I
    carried = [np.zeros((S, B, H)) if d is None else np.broadcast_to(d, (S, B, H)) for d in dstate_n]  # S,B,H each
    keep = None if edges is None else (~edges)[:, None, :, None].astype(np.float64)  # T,1,B,1
    dw_ih, dw_hh = np.zeros((S, KH, I)), np.zeros((S, KH, H))
    db_ih, db_hh = np.zeros((S, 1, KH)), np.zeros((S, 1, KH))
    dx = np.zeros((S, T, B, I))
    for t in reversed(range(T)):
        # the state entering step t as the backward reads it: zero at step 0 for the slip
        entering = 1.0 - switch.initial_zero * (t == 0)  # S,1,1
        h_prev = states[0][t] * entering  # S,B,H
        # h_t feeds the output at t and step t+1: the two gradients add
        dh = dy[t] + carried[0]  # S,B,H
        dpre_x, dpre_h, direct = STEP_BACKS[cell_name](dh, carried[1:], t, states, steps, weights, switch, entering)
        # pre_h = W_hh h_{t-1} + b_hh: to h_{t-1}, and the paths that skip W_hh
        dh_prev = np.zeros((S, B, H)) if cut == "hidden" else dpre_h @ w_to_h  # S,B,H
        if cut == "cell":
            direct = (None,) * len(direct)
        if direct[0] is not None:
            dh_prev = dh_prev + direct[0]
        carried = [dh_prev] + [np.zeros((S, B, H)) if d is None else d for d in direct[1:]]
        if keep is not None:  # a window's first step: what reaches the state entering it stops
            carried = [d * keep[t] for d in carried]
        # pre_x = W_ih x_t + b_ih
        dx[:, t] = dpre_x @ w_to_x
        # the sums over time: dW_ih = Σ_t dpre_xᵀ x_t, dW_hh = Σ_t dpre_hᵀ h_{t-1}, db = Σ_t Σ_b dpre
        # (overwritten instead, for the slip of not accumulating)
        dw_ih = dw_ih * switch.accumulate + dpre_x.transpose(0, 2, 1) @ x[t]
        dw_hh = dw_hh * switch.accumulate + dpre_h.transpose(0, 2, 1) @ h_prev
        db_ih = db_ih * switch.accumulate + switch.batch_weight @ dpre_x  # S,1,KH
        db_hh = db_hh * switch.accumulate + switch.batch_weight @ dpre_h
    grads = []
    for s in range(S):
        g = {"weight_ih_l0": dw_ih[s], "weight_hh_l0": dw_hh[s], "bias_ih_l0": db_ih[s, 0], "bias_hh_l0": db_hh[s, 0],
             "x": dx[s], "h0": carried[0][s][None]}
        if len(carried) > 1:
            g["c0"] = carried[1][s][None]
        grads.append(g)
    return grads


def tensor_slips(given, reference, tolerance=TOLERANCE):
    """The per-tensor slips that ``given`` is, as ``(id, detail)``: ``("sign", {})`` where it
    equals ``-reference``, ``("transposed", {})`` where ``reference`` is square (2-D) and it
    equals ``reference.T``, each within ``tolerance`` of rel err = max |given - x| / max
    |reference|. A transform that leaves ``reference`` as it is (zero, symmetric) names no slip.
    """
    given = np.asarray(given, np.float64)
    reference = np.asarray(reference, np.float64)
    if given.shape != reference.shape:
        raise ValueError(f"expected given of the reference's shape {reference.shape} but got {given.shape}")
    transforms = [("sign", -reference)]
    if reference.ndim == 2 and reference.shape[0] == reference.shape[1]:
        transforms.append(("transposed", reference.T))
    return [(slip_id, {}) for slip_id, slipped in transforms
            if _relative_error(slipped, reference) > tolerance  # the transform changes the reference
            and _relative_error(given, reference, slipped) <= tolerance]


def describe(slip_id, detail, cell_name):
    """One sentence on the slip in the learner's ``cell_name`` cell: what their code writes
    and what it should (the course's names for LSTM and the tanh RNN, PyTorch's for GRU and
    the ReLU RNN). ``sign`` and ``transposed`` are described for any cell."""
    _check_cell_name(cell_name)
    if slip_id == "sign":
        return ("your gradient is the negative of the true one: a sign flipped somewhere (the gradient of -loss, "
                "or a difference taken the other way round)")
    if slip_id == "transposed":
        product = "dWaa = dtanh @ a_prev.T, not a_prev @ dtanh.T" if cell_name == "rnn_tanh" else \
            "dW_hh = dpre.T @ h_prev, not h_prev.T @ dpre"
        return f"your gradient is the transpose of the true one, an outer product taken the wrong way round: {product}"
    _check_slip(slip_id, detail, cell_name)
    words = WORDS[cell_name]
    if slip_id == "missing-sigmoid-derivative":
        everyone = detail["gate"] == "all"
        gates = SIGMOID_GATES[cell_name] if everyone else (detail["gate"],)
        no_factor = detail.get("factor") == "none"
        formulas = "; ".join(
            f"{head} = {rest} * {s} * (1 - {s}), not {rest if no_factor else f'{rest} * {s}'}"
            for head, rest, s in (words["sigmoid"][gate] for gate in gates)
        )
        whose = "the gradients of all your sigmoid gates" if everyone else \
            f"the gradient of your {words['gate'][gates[0]]}"
        what = "no σ' factor" if no_factor else "σ in place of σ' = σ(1-σ)"
        return f"{whose} {'have' if everyone else 'has'} {what}: {formulas}"
    if slip_id in ("missing-tanh-derivative", "tanh-applied-twice"):
        head, rest, a = words["tanh"][detail["where"]]
        place = words["tanh_place"][detail["where"]]
        if slip_id == "missing-tanh-derivative":
            return f"{place} has no tanh' factor: {head} = {rest} * (1 - {a}**2), not {rest}"
        return (f"{place} applies tanh to {a}, already a tanh: "
                f"{head} = {rest} * (1 - {a}**2), not {rest} * (1 - np.tanh({a})**2)")
    sentence = words[slip_id]
    return sentence[next(iter(detail.values()))] if detail else sentence


# -- the words of describe. A term of a derivative: (its name, the factors before the
# activation's derivative, the activation's value)

_COURSE_LSTM = {
    "gate": {"i": "update gate Γu", "f": "forget gate Γf", "o": "output gate Γo"},
    "sigmoid": {"i": ("dit", "dc * cct", "it"), "f": ("dft", "dc * c_prev", "ft"),
                "o": ("dot", "da_next * np.tanh(c_next)", "ot")},
    "tanh": {"candidate": ("dcct", "dc * it", "cct"), "cell": ("dc", "dc_next + da_next * ot", "np.tanh(c_next)")},
    "tanh_place": {"candidate": "your candidate c̃'s gradient", "cell": "the path from a_next into c_next"},
    "wrong-time-index": {
        "forget-gate": "your forget gate's gradient pairs it with the wrong step's cell state: "
                       "dft = dc * c_prev * ft * (1 - ft), not dc * c_next * ft * (1 - ft) "
                       "(c_next = Γf * c_prev + ...)",
        "dc-prev": "your dc_prev takes the next step's forget gate: dc_prev = dc * ft with this step's ft, "
                   "not the ft of step t+1",
    },
    "swapped-weight-slices": "your da_prev and dxt take each other's columns of W, which is applied to "
                             "[a_prev; xt]: da_prev = Wf[:, :n_a].T @ dft + ... and dxt = Wf[:, n_a:].T @ dft + ..., "
                             "not Wf[:, -n_a:].T @ dft and Wf[:, :n_x].T @ dft",
    "initial-state-ignored": "your backward reads zero for the state entering step 0: step 0's dWf term is "
                             "dft @ concat(a0, x0).T and its dft = dc * c0 * ft * (1 - ft), with the given a0 and c0",
    "not-accumulated": "your parameter gradients are overwritten at every step (dWf = ...), so only step 0's "
                       "term is left: dWf += dft @ concat.T sums them over time",
    "bias-not-summed": {
        "mean": "your bias gradients average over the batch: dbf = np.sum(dft, axis=1, keepdims=True), "
                "not np.mean(dft, axis=1, keepdims=True)",
        "first": "your bias gradients take the first example only: dbf = np.sum(dft, axis=1, keepdims=True), "
                 "not dft[:, :1]",
    },
}

_COURSE_RNN_TANH = {
    "tanh": {"hidden": ("dtanh", "da_next", "a_next")},
    "tanh_place": {"hidden": "your dtanh"},
    "swapped-weight-slices": "your da_prev and dxt take each other's columns of W = [Waa | Wax], applied to "
                             "[a_prev; xt]: da_prev = Waa.T @ dtanh = W[:, :n_a].T @ dtanh and dxt = W[:, n_a:].T "
                             "@ dtanh, not W[:, -n_a:].T @ dtanh and W[:, :n_x].T @ dtanh",
    "initial-state-ignored": "your backward reads zero for the state entering step 0: step 0's dWaa term is "
                             "dtanh @ a0.T with the given a0",
    "not-accumulated": "your parameter gradients are overwritten at every step (dWaa = ...), so only step 0's "
                       "term is left: dWaa += dtanh @ a_prev.T sums them over time",
    "bias-not-summed": {
        "mean": "your dba averages over the batch: dba = np.sum(dtanh, axis=1, keepdims=True), "
                "not np.mean(dtanh, axis=1, keepdims=True)",
        "first": "your dba takes the first example only: dba = np.sum(dtanh, axis=1, keepdims=True), not dtanh[:, :1]",
    },
}

_TORCH_GRU = {
    "gate": {"r": "reset gate r", "z": "update gate z"},
    "sigmoid": {"r": ("dpre_r", "dpre_n * (W_hn @ h_prev + b_hn)", "r"), "z": ("dpre_z", "dh * (h_prev - n)", "z")},
    "tanh": {"candidate": ("dpre_n", "dh * (1 - z)", "n")},
    "tanh_place": {"candidate": "your candidate n's gradient"},
    "initial-state-ignored": "your backward reads zero for the state entering step 0: step 0's dW_hh term is "
                             "dpre_h.T @ h0, its dpre_z has dh * (h0 - n) and its dpre_r has W_hn @ h0 + b_hn, "
                             "with the given h0",
    "not-accumulated": "your parameter gradients are overwritten at every step (dW_hh = ...), so only step 0's "
                       "term is left: dW_hh += dpre_h.T @ h_prev sums them over time",
    "bias-not-summed": {
        "mean": "your bias gradients average over the batch: db = dpre.sum(axis=0), not dpre.mean(axis=0)",
        "first": "your bias gradients take the first example only: db = dpre.sum(axis=0), not dpre[0]",
    },
}

_TORCH_RNN_RELU = {
    "swapped-weight-slices": "your dh_prev and dx take each other's columns of W = [W_hh | W_ih], applied to "
                             "[h_prev; x]: dh_prev = dpre @ W[:, :H] and dx = dpre @ W[:, H:], "
                             "not dpre @ W[:, -H:] and dpre @ W[:, :I]",
    "initial-state-ignored": "your backward reads zero for the state entering step 0: step 0's dW_hh term is "
                             "dpre.T @ h0 with the given h0",
    "not-accumulated": "your parameter gradients are overwritten at every step (dW_hh = ...), so only step 0's "
                       "term is left: dW_hh += dpre.T @ h_prev sums them over time",
    "bias-not-summed": _TORCH_GRU["bias-not-summed"],
}

WORDS = {"lstm": _COURSE_LSTM, "rnn_tanh": _COURSE_RNN_TANH, "gru": _TORCH_GRU, "rnn_relu": _TORCH_RNN_RELU}


# -- the switches: per slip, which form each derivative term takes

class _Switches(NamedTuple):
    """The form of every switched term, one choice per slip of a pass."""

    sigmoid: dict  # gate -> (S, 1, 1) ints: 0 σ(1-σ), 1 σ, 2 no factor
    tanh: dict  # "candidate", "cell", "hidden" -> (S, 1, 1) ints: 0 1 - a², 1 no factor, 2 1 - tanh(a)²
    forget_c: np.ndarray  # (S, 1, 1) ints: df's cell state, 0 c_{t-1}, 1 c_t
    dc_prev_gate: np.ndarray  # (S, 1, 1) ints: dc_prev's forget gate, 0 f_t, 1 f_{t+1}
    swapped: np.ndarray  # (S,) ints: 1 where dh_prev and dx take each other's columns
    initial_zero: np.ndarray  # (S, 1, 1) floats: 1 where the state entering step 0 is read as zero
    accumulate: np.ndarray  # (S, 1, 1) floats: 1 sums the parameter gradients over time, 0 overwrites
    batch_weight: np.ndarray  # (S, 1, B): each example's weight in a bias gradient


def _switches(cell_name, slips, batch):
    """The :class:`_Switches` of ``slips`` (``(id, detail)``, or ``(None, {})`` for none)."""
    S = len(slips)
    switch = _Switches(
        sigmoid={gate: np.zeros((S, 1, 1), int) for gate in SIGMOID_GATES.get(cell_name, ())},
        tanh={where: np.zeros((S, 1, 1), int) for where in ("candidate", "cell", "hidden")},
        forget_c=np.zeros((S, 1, 1), int), dc_prev_gate=np.zeros((S, 1, 1), int), swapped=np.zeros(S, int),
        initial_zero=np.zeros((S, 1, 1)), accumulate=np.ones((S, 1, 1)), batch_weight=np.ones((S, 1, batch)),
    )
    for s, (slip_id, detail) in enumerate(slips):
        if slip_id is not None:
            _check_slip(slip_id, detail, cell_name)
        if slip_id == "missing-sigmoid-derivative":
            gates = SIGMOID_GATES[cell_name] if detail["gate"] == "all" else (detail["gate"],)
            for gate in gates:
                switch.sigmoid[gate][s] = 2 if detail.get("factor") == "none" else 1
        elif slip_id in ("missing-tanh-derivative", "tanh-applied-twice"):
            switch.tanh[detail["where"]][s] = 1 if slip_id == "missing-tanh-derivative" else 2
        elif slip_id == "wrong-time-index":
            (switch.forget_c if detail["where"] == "forget-gate" else switch.dc_prev_gate)[s] = 1
        elif slip_id == "swapped-weight-slices":
            switch.swapped[s] = 1
        elif slip_id == "initial-state-ignored":
            switch.initial_zero[s] = 1.0
        elif slip_id == "not-accumulated":
            switch.accumulate[s] = 0.0
        elif slip_id == "bias-not-summed":
            if detail["how"] == "mean":
                switch.batch_weight[s] = 1.0 / batch
            else:
                switch.batch_weight[s, :, 1:] = 0.0
    return switch


def _sigmoid_derivative(s, choice):
    """σ' = σ(1-σ) of the gate values ``s`` (B, H), or the slip's σ or 1: (S, B, H)."""
    return np.choose(choice, (s * (1.0 - s), s, 1.0))


def _tanh_derivative(a, choice):
    """tanh' = 1 - a² of a tanh's values ``a`` (B, H), or the slip's 1 or 1 - tanh(a)²: (S, B, H)."""
    return np.choose(choice, (1.0 - a * a, 1.0, 1.0 - np.tanh(a) ** 2))


# -- the forward, and each cell's step back with its derivative terms switched

def _forward(cell, weights, x, state0):
    """The reference's pass (``bptt.reference.forward``): the states (T+1, B, H) per part, slot
    t entering step t, and each step's cache as the cell returns it."""
    _, _, cache = reference.forward(cell, weights, x, state0)
    return recurrence.states(cache), cache.steps


def _lstm_back(dh, dstate, t, states, steps, weights, switch, entering):
    """Step t of the LSTM: dh, dc (S, B, H) -> dpre (S, B, 4H) twice, and (None, dc_prev)."""
    (dc,) = dstate
    i, f, g, o, _, tanh_c = steps[t]  # B,H each
    f_after = steps[min(t + 1, len(steps) - 1)][1]  # B,H  the next step's forget gate
    # c_prev from the states, not the cache: the slip of ignoring c0 reads it as zero at step 0
    c_prev = states[1][t] * entering  # S,B,H
    c = states[1][t + 1]
    # h = o * tanh(c): do = dh * tanh(c), and into c on top of what c gets from step t+1
    do = dh * tanh_c
    dc = dc + dh * o * _tanh_derivative(tanh_c, switch.tanh["cell"])
    # c = f * c_prev + i * g
    di = dc * g
    df = dc * np.choose(switch.forget_c, (c_prev, c))
    dg = dc * i
    # i, f, o = σ(pre), g = tanh(pre)
    dpre = np.concatenate([
        di * _sigmoid_derivative(i, switch.sigmoid["i"]),
        df * _sigmoid_derivative(f, switch.sigmoid["f"]),
        dg * _tanh_derivative(g, switch.tanh["candidate"]),
        do * _sigmoid_derivative(o, switch.sigmoid["o"]),
    ], axis=2)  # S,B,4H
    # c = f * c_prev + ...: the direct path to c_prev
    dc_prev = dc * np.choose(switch.dc_prev_gate, (f, f_after))
    return dpre, dpre, (None, dc_prev)


def _gru_back(dh, dstate, t, states, steps, weights, switch, entering):
    """Step t of the GRU: dh (S, B, H) -> dpre_x, dpre_h (S, B, 3H), and (dh_prev_direct,)."""
    r, z, n, _, _ = steps[t]  # B,H each
    H = dh.shape[2]
    # h_prev and pre_h_n from the states, not the cache: the slip of ignoring h0 reads it as zero at step 0
    h_prev = states[0][t] * entering  # S,B,H
    pre_h_n = h_prev @ weights.w_hh[2 * H:].T + weights.b_hh[2 * H:]  # S,B,H  W_hn h_{t-1} + b_hn
    # h = (1 - z) * n + z * h_prev
    dn = dh * (1.0 - z)
    dz = dh * (h_prev - n)
    # n = tanh(pre_x_n + r * pre_h_n)
    dpre_n = dn * _tanh_derivative(n, switch.tanh["candidate"])
    dr = dpre_n * pre_h_n
    # r, z = σ(pre)
    dpre_r = dr * _sigmoid_derivative(r, switch.sigmoid["r"])
    dpre_z = dz * _sigmoid_derivative(z, switch.sigmoid["z"])
    dpre_x = np.concatenate([dpre_r, dpre_z, dpre_n], axis=2)  # S,B,3H
    dpre_h = np.concatenate([dpre_r, dpre_z, dpre_n * r], axis=2)  # the reset gate scales pre_h_n
    # h = ... + z * h_prev: the direct path to h_prev
    return dpre_x, dpre_h, (dh * z,)


def _rnn_tanh_back(dh, dstate, t, states, steps, weights, switch, entering):
    """Step t of the tanh RNN: h = tanh(pre), dpre = dh * (1 - h²); (S, B, H)."""
    (h,) = steps[t]
    dpre = dh * _tanh_derivative(h, switch.tanh["hidden"])
    return dpre, dpre, (None,)


def _rnn_relu_back(dh, dstate, t, states, steps, weights, switch, entering):
    """Step t of the ReLU RNN: h = relu(pre), dpre = dh * [h > 0]; (S, B, H)."""
    (h,) = steps[t]
    dpre = dh * (h > 0)
    return dpre, dpre, (None,)


STEP_BACKS = {"lstm": _lstm_back, "gru": _gru_back, "rnn_tanh": _rnn_tanh_back, "rnn_relu": _rnn_relu_back}


# -- checks

def _check_cell_name(cell_name):
    if cell_name not in CELLS:
        raise ValueError(f"expected cell_name one of {', '.join(CELLS)} but got {cell_name!r}")
    return cell_name


def _check_slip(slip_id, detail, cell_name):
    if (slip_id, detail) not in catalogue(cell_name):
        raise ValueError(f"{slip_id!r} with {detail} is not a slip of the {cell_name} cell; "
                         f"its slips are: {', '.join(f'{i} {d}' for i, d in catalogue(cell_name))}")


def _check_arrays(cell, weights, x, state0, dy, dstate_n, cut, edges):
    """The arrays as float64 after checking their shapes against each other; ``dstate_n`` as a
    tuple, ``edges`` as (T, B) or (T, 1) bool."""
    w_ih, w_hh, b_ih, b_hh = (np.asarray(w, np.float64) for w in weights)
    KH, H = w_hh.shape
    if KH != cell.NUM_GATES * H:
        raise ValueError(f"expected w_hh of shape ({cell.NUM_GATES}*H, H) but got {w_hh.shape}")
    x = np.asarray(x, np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected x of shape (T, B, I) but got {x.shape}")
    T, B, I = x.shape
    for name, array, shape in (("w_ih", w_ih, (KH, I)), ("b_ih", b_ih, (KH,)), ("b_hh", b_hh, (KH,))):
        if array.shape != shape:
            raise ValueError(f"expected {name} of shape {shape} (K*H = {KH}, I = {I}) but got {array.shape}")
    parts = len(cell.STATE_NAMES)
    state0 = tuple(state0) if isinstance(state0, (tuple, list)) else ()
    if len(state0) != parts:
        raise ValueError(f"expected state0 a tuple of {parts} (B, H) arrays ({', '.join(cell.STATE_NAMES)})")
    dstate_n = (None,) * parts if dstate_n is None else tuple(dstate_n)
    if len(dstate_n) != parts:
        raise ValueError(f"expected dstate_n None or a tuple of {parts} (B, H) arrays or None entries")
    state0 = tuple(np.asarray(s, np.float64) for s in state0)
    dstate_n = tuple(None if d is None else np.asarray(d, np.float64) for d in dstate_n)
    dy = np.asarray(dy, np.float64)
    named = [("dy", dy, "(T, B, H)", (T, B, H))] + [(f"state0[{k}]", s, "(B, H)", (B, H)) for k, s in enumerate(state0)]
    named += [(f"dstate_n[{k}]", d, "(B, H)", (B, H)) for k, d in enumerate(dstate_n) if d is not None]
    for name, array, letters, shape in named:
        if array.shape != shape:
            raise ValueError(f"expected {name} of shape {letters} = {shape} but got {array.shape}")
    if cut not in (None,) + PATHS:
        raise ValueError(f"expected cut None, 'hidden' or 'cell' but got {cut!r}")
    if edges is not None:
        edges = np.asarray(edges, bool)
        if edges.shape not in ((T, B), (T, 1)):
            raise ValueError(f"expected edges of shape (T, B) = {(T, B)} or (T, 1) but got {edges.shape}")
    return Weights(w_ih, w_hh, b_ih, b_hh), x, state0, dy, dstate_n, edges


def _relative_error(given, reference, slipped=None):
    """max |given - slipped| / max |reference| (``slipped`` defaults to ``reference``), as
    ``diagnose._relative_error``: over max |given| where the reference is 0."""
    target = reference if slipped is None else slipped
    scale = np.max(np.abs(reference)) or np.max(np.abs(given)) or 1.0
    return float(np.max(np.abs(given - target)) / scale)
