"""``bptt.check("coursera-char-rnn", ...)``: the whole many-to-many model of the course's
character language model, output layer and loss included.

Legend: T time steps, V vocabulary, H hidden units.

The course's functions: ``rnn_forward(X, Y, a0, parameters, vocab_size) -> loss, cache`` and
``rnn_backward(X, Y, parameters, cache) -> gradients, a``, where ``X`` and ``Y`` are lists of T
character indices (``X[0]`` may be None, a zero input), one sequence at a time, and::

    a_t = tanh(Wax x_t + Waa a_(t-1) + b)        ŷ_t = softmax(Wya a_t + by)
    loss = -Σ_t log ŷ_t[Y_t]

so that ``dz_t = ŷ_t - onehot(Y_t)``, ``dWya = Σ_t dz_t a_tᵀ``, ``dby = Σ_t dz_t`` and the
recurrent part receives ``da_t = Wyaᵀ dz_t`` at every step. The check compares the loss, the
output layer's gradients directly, and hands the recurrent part's to :func:`bptt.diagnose`
(layout ``coursera-rnn``) with that ``da``.
"""

import dataclasses
import math

import numpy as np

from .diagnose import Diagnosis, ForwardVerdict, TensorVerdict, diagnose

TOLERANCE = 1e-5
CASES = ((1, 0), (4, 1), (9, 2))  # (T, seed)
VOCABULARY, HIDDEN = 5, 4
RECURRENT = {"dWax": "dWax", "dWaa": "dWaa", "db": "dba"}  # the course's names -> coursera-rnn's
HEAD = ("dWya", "dby")


def check_char_rnn(forward, backward, seed, call, error):
    """The check of the course's character-level RNN functions (module docstring).

    ``call(how, function, first, second, role)``: how :mod:`bptt.proofs.check` calls a
    learner's function (copies, the learner's errors raised as ``error``, the exception class
    for a learner's function that raises or returns another form). Returns a Diagnosis.
    """
    runs = []
    for steps, case_seed in CASES:
        problem = _problem(steps, case_seed + 1000 * seed)
        params, X, Y, a0 = problem
        loss, cache = _pair(call(lambda f, p, _: f(X, Y, a0, p, VOCABULARY), forward, params, None, "forward"),
                            "forward", "(loss, cache)", error)
        gradients, _ = _pair(call(lambda f, p, _: f(X, Y, p, cache), backward, params, None, "backward"),
                             "backward", "(gradients, a)", error)
        if not isinstance(gradients, dict):
            raise error(f"expected the backward to return a dict of gradients but got {type(gradients).__name__}")
        runs.append((steps, case_seed, _judge(problem, loss, gradients)))
    failing = [run for run in runs if not run[2].passed]
    steps, _, diagnosis = max(failing or runs, key=lambda run: run[0])
    cases = tuple({"T": t, "B": 1, "seed": s, "passed": d.passed} for t, s, d in runs)
    return dataclasses.replace(diagnosis, cases=cases)


def _problem(steps, seed):
    """The course's parameters, an input and target index sequence (``X[0]`` None, ``Y`` the
    next characters) and a random initial state."""
    rng = np.random.default_rng(seed)
    params = {"Wax": rng.normal(0, 0.5, (HIDDEN, VOCABULARY)), "Waa": rng.normal(0, 0.5, (HIDDEN, HIDDEN)),
              "Wya": rng.normal(0, 0.5, (VOCABULARY, HIDDEN)), "b": rng.normal(0, 0.5, (HIDDEN, 1)),
              "by": rng.normal(0, 0.5, (VOCABULARY, 1))}
    characters = [int(c) for c in rng.integers(0, VOCABULARY, steps)]
    X = [None] + characters[:-1]
    return params, X, characters, rng.normal(0, 0.5, (HIDDEN, 1))


def reference(params, X, Y, a0):
    """The loss and every gradient, in the course's names: a plain loop over t."""
    x = np.zeros((VOCABULARY, 1, len(X)))  # V,1,T: one-hot inputs, X[t] None a zero vector
    for t, index in enumerate(X):
        if index is not None:
            x[index, 0, t] = 1.0
    a = np.zeros((HIDDEN, 1, len(X)))
    previous = a0
    for t in range(len(X)):
        previous = a[:, :, t] = np.tanh(params["Wax"] @ x[:, :, t] + params["Waa"] @ previous + params["b"])
    logits = np.einsum("vh,hbt->vbt", params["Wya"], a) + params["by"][:, :, None]  # V,1,T
    y_hat = np.exp(logits - logits.max(axis=0))
    y_hat /= y_hat.sum(axis=0)
    targets = np.zeros_like(y_hat)
    targets[Y, 0, np.arange(len(Y))] = 1.0
    loss = float(-np.sum(np.log(np.sum(y_hat * targets, axis=0))))
    dz = y_hat - targets  # V,1,T: the softmax cross-entropy's gradient of the logits
    head = {"dWya": np.einsum("vbt,hbt->vh", dz, a), "dby": dz.sum(axis=2)}
    da = np.einsum("vh,vbt->hbt", params["Wya"], dz)  # H,1,T: what the head sends each a_t
    return loss, head, x, da


def _judge(problem, loss, gradients):
    params, X, Y, a0 = problem
    expected_loss, head, x, da = reference(params, X, Y, a0)
    given_loss = float(np.asarray(loss, np.float64)) if np.size(loss) == 1 else math.nan
    loss_error = abs(given_loss - expected_loss) / max(abs(expected_loss), 1e-300)
    forward = {"loss": ForwardVerdict("loss", "correct" if loss_error <= TOLERANCE else "wrong", loss_error,
                                      None if loss_error <= TOLERANCE else 0, ())}
    recurrent = {ours: gradients[theirs] for theirs, ours in RECURRENT.items() if theirs in gradients}
    inputs = {"x": x, "a0": a0, "da": da}
    rnn_params = {"Wax": params["Wax"], "Waa": params["Waa"], "ba": params["b"]}
    diagnosis = diagnose("coursera-rnn", rnn_params, inputs, recurrent)
    tensors = {theirs: dataclasses.replace(diagnosis.tensors[ours], name=theirs)
               for theirs, ours in RECURRENT.items() if ours in diagnosis.tensors}
    head_verdicts = {name: _head_verdict(name, gradients[name], head[name]) for name in HEAD if name in gradients}
    tensors.update(head_verdicts)
    summary = diagnosis.summary.replace("dba", "db") + " " + _head_summary(head_verdicts)
    if forward["loss"].status != "correct":
        summary = (f"Verdict: your forward's loss is wrong ({given_loss:.6g} where -Σ_t log ŷ_t[Y_t] is "
                   f"{expected_loss:.6g}).\n\nBackward: {summary}")
    return Diagnosis("coursera-char-rnn", "rnn_tanh", len(X), TOLERANCE, tensors, summary, forward=forward)


def _head_verdict(name, given, expected):
    given = np.asarray(given, np.float64)
    if given.shape != expected.shape:
        return TensorVerdict(name, "wrong", None, None, math.nan, ())
    scale = np.max(np.abs(expected)) or 1.0
    rel_err = float(np.max(np.abs(given - expected)) / scale)
    worst = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(given - expected)), given.shape))
    return TensorVerdict(name, "correct" if rel_err <= TOLERANCE else "wrong", None, None, rel_err, worst)


def _head_summary(verdicts):
    wrong = [name for name, v in verdicts.items() if v.status != "correct"]
    if not verdicts:
        return ""
    if not wrong:
        return f"The output layer's {' and '.join(verdicts)} match: dz_t = ŷ_t - y_t, summed over t."
    return (f"The output layer's {' and '.join(wrong)} {'is' if len(wrong) == 1 else 'are'} wrong: with "
            f"dz_t = ŷ_t - y_t (y_t one-hot of Y[t]), dWya = Σ_t dz_t a_tᵀ (a_t, not a_(t-1)) and dby = Σ_t dz_t.")


def _pair(returned, role, expected, error):
    if not isinstance(returned, tuple) or len(returned) != 2:
        got = f"a tuple of {len(returned)}" if isinstance(returned, tuple) else type(returned).__name__
        raise error(f"expected the {role} to return {expected} but got {got}")
    return returned
