"""Training an encoder–decoder on the reverse and addition tasks, and scoring it on held-out
sequences by exact match.

Legend: S source steps, T target steps, B batch, E embedding size, H hidden units, V the
tasks' vocabulary, N test sequences.

:func:`train_seq2seq_task` draws a fresh batch from the task's generator at every step, takes
one Adam step on the clipped gradients (a linear warm-up, then a cosine decay to 0), and yields
:class:`~bptt.training.task_runner.TaskEvent` records as :func:`~bptt.training.task_runner.train_task`
does; it never prints. The last event is ``"done"`` and carries the :class:`Seq2SeqResult`: the
exact-match accuracy of greedy decoding on a fixed test set, beside the task's trivial baseline.
:func:`run_seq2seq_task` runs it to the end and returns the result.

==========  ===============================  ==========================  ============================
task        source -> target                 size                        baseline (exact match)
==========  ===============================  ==========================  ============================
reverse     ``"0381"`` -> ``"1830"``         ``length``: 1..length       copy the source (palindromes)
                                             digits per string
addition    ``"123+45"`` -> ``"168"``        ``digits``: operands of     always answer ``"9"``
                                             1..digits digits
==========  ===============================  ==========================  ============================

The model (:func:`build_model`): an embedding of E per token, a one-layer encoder and a
one-layer decoder of the same cell and H units, the encoder's final state handed to the decoder
unchanged (the direct bridge), a linear head over the V tokens. ``reverse_source=True`` feeds
every source reversed, in training and in the test (Sutskever, Vinyals & Le 2014).

Seeds: ``seed`` sets the initial parameters and, through ``default_rng([1, seed])``, the training
batches; the test set comes from ``default_rng([2, test_seed])``, so training never sees it (as
in ``task_runner``). NumPy's floating-point warnings are counted, not printed: the ``"done"``
event carries them.
"""

import math
import time
from typing import NamedTuple

import numpy as np

from ..checks import is_integer
from ..layers import make_rnn, remember_bias
from ..nets import Seq2Seq, greedy_decode
from . import seq2seq_tasks as tasks
from .optim import WarmupCosine
from .task_runner import TaskError, TaskEvent, adam_steps
from .trainer import NumericWarnings

TASKS = ("reverse", "addition")
CELLS = ("lstm", "gru", "rnn")
SIZE_NAMES = {"reverse": "length", "addition": "digits"}  # the argument that sizes each task
DEFAULTS = {
    "reverse": dict(length=8, steps=1500),
    "addition": dict(digits=3, steps=5000),
}
"""Per task, the size and the updates that train an LSTM or a GRU of the default sizes far above
the baseline within a minute on two cores (docs/seq2seq.md has the table)."""
EVAL_BATCH = 500  # test sequences per decoding pass, to bound the memory of a pass
EXCLUDE = (tasks.PAD_ID, tasks.START_ID)  # tokens that decoding never emits


class Seq2SeqResult(NamedTuple):
    """The record of a finished run: its settings and its scores on the test set. ``params`` are
    the final parameters (name -> array), the names of ``Seq2Seq.state_dict``."""

    task: str
    cell: str
    length: int | None  # reverse: strings of 1..length digits; None for addition
    digits: int | None  # addition: operands of 1..digits digits; None for reverse
    reverse_source: bool
    steps: int
    hidden_size: int
    embedding_size: int
    batch_size: int
    lr: float
    warmup_steps: int
    clip: float | None
    gate_bias: float
    seed: int
    test_seed: int
    test_size: int
    dtype: str
    accuracy: float  # exact match of greedy decoding on the test set, the end token included
    baseline_accuracy: float  # the trivial baseline's exact match on the same test set
    expected_baseline_accuracy: float  # the baseline's expectation over the task's distribution
    test_loss: float  # teacher-forced cross-entropy per target token on the test set
    train_loss: float  # the mean training loss of the last 10% of the steps
    wall_seconds: float  # training and scoring
    params: dict

    def as_dict(self):
        """Everything but the parameters, ready for JSON."""
        return {key: value for key, value in self._asdict().items() if key != "params"}


def task_size(task, length=None, digits=None):
    """The size of ``task``, ``length`` for reverse and ``digits`` for addition (the task's
    default where None), and a list of problems: the other task's size given."""
    name = SIZE_NAMES[task]
    other = "digits" if name == "length" else "length"
    given = {"length": length, "digits": digits}
    problems = [] if given[other] is None else [
        f"{other} {given[other]!r} (the {task} task is sized by {name}, not {other})"]
    return (DEFAULTS[task][name] if given[name] is None else given[name]), problems


def task_batch(task, rng, batch_size, size, reverse_source=False):
    """One :class:`~bptt.training.seq2seq_tasks.Seq2SeqBatch` of ``task``: strings of 1..size
    digits to reverse, or operands of 1..size digits to add."""
    if task == "reverse":
        return tasks.reverse_task(rng, batch_size, size, reverse_source=reverse_source)
    return tasks.addition_task(rng, batch_size, size, reverse_source=reverse_source)


def held_out_set(task, size, test_size=1000, seed=0, reverse_source=False):
    """The test batch of ``test_size`` sequences, from ``default_rng([2, seed])``: the same
    strings with and without ``reverse_source``, only the source's order differs."""
    return task_batch(task, np.random.default_rng([2, seed]), test_size, size, reverse_source)


def baseline_predictions(task, batch):
    """The trivial baseline's answers to ``batch``: the source copied (reverse), ``"9"`` (addition)."""
    if task == "reverse":
        return tasks.reverse_baseline_predictions(batch)
    return tasks.addition_baseline_predictions(batch)


def expected_baseline(task, size):
    """The trivial baseline's expected exact match: ``reverse_baseline(size)`` or ``addition_baseline(size)``."""
    return tasks.reverse_baseline(size) if task == "reverse" else tasks.addition_baseline(size)


def build_model(cell, hidden_size=128, embedding_size=16, *, gate_bias=0.0, seed=0, dtype=np.float32):
    """A fresh :class:`~bptt.nets.Seq2Seq` for the tasks: one-layer ``cell`` encoder and decoder
    of ``hidden_size`` units reading ``embedding_size`` embeddings of the V tokens, the direct
    bridge, ``gate_bias`` added to the bias of the gate that keeps the state (LSTM's forget gate,
    GRU's update gate) of both stacks. The encoder is seeded by ``seed``, the decoder by
    ``seed + 1``, the embeddings and head by ``seed + 2``."""
    encoder = make_rnn(cell, embedding_size, hidden_size, dtype=dtype, seed=seed)
    decoder = make_rnn(cell, embedding_size, hidden_size, dtype=dtype, seed=seed + 1)
    model = Seq2Seq(encoder, decoder, tasks.VOCAB_SIZE, source_vocab_size=tasks.VOCAB_SIZE, start_id=tasks.START_ID,
                    end_id=tasks.END_ID, seed=seed + 2)
    for stack in ("encoder.", "decoder."):
        model.params = remember_bias(model.params, model.cell, hidden_size, gate_bias, prefix=stack)
    return model


def evaluate(model, batch):
    """The test scores of ``model`` on ``batch`` (a Seq2SeqBatch of N sequences).

    Returns
    -------
    dict: ``"accuracy"``, the exact match of greedy decoding (at most T tokens, the longest
    target's length, end token included; padding and start tokens excluded), and ``"loss"``,
    the teacher-forced cross-entropy per target token (the training loss's measure)
    """
    N, T = batch.source.shape[1], batch.target.shape[0]
    correct, log_prob = 0, 0.0
    for start in range(0, N, EVAL_BATCH):
        part = slice(start, start + EVAL_BATCH)
        source, source_lengths = batch.source[:, part], batch.source_lengths[part]
        target, target_lengths = batch.target[:, part], batch.target_lengths[part]
        decoded = greedy_decode(model, source, source_lengths, max_length=T, exclude=EXCLUDE)
        correct += int(tasks.exact_match(decoded.sequences, target, target_lengths).sum())
        log_probs = model.sequence_log_probs(source, source_lengths, target, target_lengths)  # B
        log_prob += float(log_probs.sum(dtype=np.float64))
    return {"accuracy": correct / N, "loss": -log_prob / int(batch.target_lengths.sum())}


def _is_finite_number(value):
    """Whether ``value`` is a finite Python or NumPy number (a bool is not)."""
    numeric = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    return numeric and math.isfinite(value)


def _check_settings(task, cell, length, digits, steps, settings):
    """``(size, steps)`` of the run, the task's defaults for None; raises one TaskError that
    names every problem of the settings (``settings``: the other arguments, by name)."""
    problems = []
    size = None
    if task not in TASKS:
        problems.append(f"task {task!r} (expected one of {', '.join(TASKS)})")
    else:
        size, problems = task_size(task, length, digits)
        steps = DEFAULTS[task]["steps"] if steps is None else steps
    if cell not in CELLS:
        problems.append(f"cell {cell!r} (expected one of {', '.join(CELLS)})")
    eval_every = settings["eval_every"]
    integers = [("hidden_size", settings["hidden_size"], 1), ("embedding_size", settings["embedding_size"], 1),
                ("batch_size", settings["batch_size"], 1), ("warmup_steps", settings["warmup_steps"], 0),
                ("eval_every", 1 if eval_every is None else eval_every, 1), ("test_size", settings["test_size"], 1),
                ("seed", settings["seed"], 0), ("test_seed", settings["test_seed"], 0)]
    if steps is not None:  # None only for an unknown task, whose default is unknown
        integers.insert(0, ("steps", steps, 1))
    if size is not None:
        integers.insert(0, (SIZE_NAMES[task], size, 1))
    for name, value, minimum in integers:
        if not is_integer(value, minimum):
            problems.append(f"{name} {value!r} (expected an integer >= {minimum})")
    lr, clip, gate_bias, dtype = settings["lr"], settings["clip"], settings["gate_bias"], settings["dtype"]
    if not (_is_finite_number(lr) and lr > 0):
        problems.append(f"lr {lr!r} (expected a number > 0)")
    if clip is not None and not (_is_finite_number(clip) and clip > 0):
        problems.append(f"clip {clip!r} (expected a number > 0, or None for no clipping)")
    if not _is_finite_number(gate_bias):
        problems.append(f"gate_bias {gate_bias!r} (expected a finite number)")
    if dtype not in (np.float32, np.float64, "float32", "float64"):
        problems.append(f"dtype {dtype!r} (expected np.float32 or np.float64)")
    if problems:
        raise TaskError("bad task settings: " + "; ".join(problems))
    return size, steps


def train_seq2seq_task(task, cell="lstm", *, steps=None, hidden_size=128, embedding_size=16, batch_size=64,
                       length=None, digits=None, reverse_source=False, lr=1e-2, warmup_steps=100, clip=1.0,
                       gate_bias=0.0, seed=0, eval_every=None, test_size=1000, test_seed=0, dtype=np.float32):
    """Train a fresh encoder–decoder on ``task`` and score it on a held-out test set.

    Adam at ``lr`` with a linear warm-up over ``warmup_steps`` and a cosine decay to 0 at
    ``steps`` (:class:`~bptt.training.optim.WarmupCosine`); gradients clipped to global norm
    ``clip`` (None: no clipping); the loss is the mean cross-entropy over the target tokens.
    The settings are checked here, at the call; the work happens as the returned iterator is
    consumed.

    Parameters
    ----------
    task : "reverse" or "addition"
    cell : "lstm", "gru" or "rnn" (tanh), of both the encoder and the decoder
    steps : updates, each on a fresh batch of ``batch_size`` sequences; None for the task's
        default (:data:`DEFAULTS`)
    hidden_size, embedding_size : H and E of :func:`build_model`
    length : reverse only, the longest string (lengths uniform in 1..length); None: 8
    digits : addition only, the most digits of an operand; None: 3
    reverse_source : feed the sources reversed, in training and in the test
    gate_bias : added to the bias of LSTM's forget and GRU's update gate (:func:`build_model`)
    seed : the initial parameters and the training batches
    eval_every : score the test set every so many steps too (None: only at the end)
    test_size, test_seed : N, and the seed of the test set
    dtype : np.float32 (training's default) or np.float64

    Returns
    -------
    an iterator of TaskEvent: ``"step"`` after every update (data: ``loss``, ``lr``), ``"eval"``
    after each scoring (data: ``accuracy``, ``loss``), ``"done"`` last (data: ``result``, a
    :class:`Seq2SeqResult`, and ``numeric``, the NumPy warnings counted). It raises TaskDiverged
    (a TaskError) if the loss or the gradient becomes NaN or infinite.

    Raises
    ------
    TaskError (a ValueError) on bad settings, every problem named.
    """
    size, steps = _check_settings(task, cell, length, digits, steps, dict(
        hidden_size=hidden_size, embedding_size=embedding_size, batch_size=batch_size, lr=lr,
        warmup_steps=warmup_steps, clip=clip, gate_bias=gate_bias, eval_every=eval_every, test_size=test_size,
        seed=seed, test_seed=test_seed, dtype=dtype))
    model = build_model(cell, hidden_size, embedding_size, gate_bias=gate_bias, seed=seed, dtype=dtype)
    schedule = WarmupCosine(lr, total_steps=steps, warmup_steps=min(warmup_steps, steps - 1))
    test = held_out_set(task, size, test_size, test_seed, reverse_source)
    record = dict(task=task, cell=cell, length=size if task == "reverse" else None,
                  digits=size if task == "addition" else None, reverse_source=bool(reverse_source), steps=int(steps),
                  hidden_size=int(hidden_size), embedding_size=int(embedding_size), batch_size=int(batch_size),
                  lr=float(lr), warmup_steps=schedule.warmup_steps, clip=None if clip is None else float(clip),
                  gate_bias=float(gate_bias), seed=int(seed), test_seed=int(test_seed), test_size=int(test_size),
                  dtype=np.dtype(dtype).name)
    return _train(model, schedule, clip, np.random.default_rng([1, seed]), test, eval_every, size, record)


def _train(model, schedule, clip, rng, test, eval_every, size, record):
    """The events of :func:`train_seq2seq_task`; ``record`` holds the settings that its result repeats."""
    began = time.perf_counter()
    task, steps, batch_size = record["task"], record["steps"], record["batch_size"]
    reverse_source = record["reverse_source"]
    numeric = NumericWarnings()
    scores, losses = yield from adam_steps(
        model, lambda: task_batch(task, rng, batch_size, size, reverse_source),
        lambda batch: model.loss_and_grads(batch.source, batch.source_lengths, batch.target, batch.target_lengths),
        lambda: evaluate(model, test), schedule, clip, steps, eval_every, numeric)
    baseline = tasks.accuracy(baseline_predictions(task, test), test)
    result = Seq2SeqResult(**record, accuracy=scores["accuracy"], baseline_accuracy=baseline,
                           expected_baseline_accuracy=expected_baseline(task, size), test_loss=scores["loss"],
                           train_loss=float(np.mean(losses[-max(1, steps // 10):])),
                           wall_seconds=time.perf_counter() - began, params=model.state_dict())
    yield TaskEvent("done", steps, {"result": result, "numeric": numeric})


def run_seq2seq_task(task, cell="lstm", **settings):
    """:func:`train_seq2seq_task` to the end; returns its :class:`Seq2SeqResult`."""
    for event in train_seq2seq_task(task, cell, **settings):
        if event.kind == "done":
            return event.data["result"]
