"""The trainer of character language models: stateful truncated BPTT over B parallel streams.

Legend: N steps of a stream, B streams (batch), V vocabulary, L layers, H hidden units.

A run lives in a folder::

    config.json      the configuration, as given
    metrics.jsonl    one JSON line per logged step and per validation
    checkpoint.npz   parameters, optimizer state, step, position in the stream, carried state,
                     vocabulary, configuration (written atomically)
    samples.txt      the samples generated along the way
    loss.png         training and validation bits per character (with matplotlib)

:class:`Trainer` holds the configuration, the data and the run's state; :meth:`Trainer.run`
yields :class:`Event` records and never prints: the command line draws them. The run's state is
replaced as a whole after each update, so :meth:`Trainer.save` at any moment (Ctrl-C included)
writes a consistent checkpoint, and a resumed run repeats the uninterrupted one bit for bit.

A file of the run folder is either written whole or left as it was: the checkpoint and rewritten
files go through a temporary file renamed over the old one, and a line that cannot be appended
whole is taken back. A write the system refuses (a full disk, a read-only folder) stops the run
with :class:`RunWriteError`; a loss, gradient or update that is not finite with :class:`Diverged`.
NumPy's floating-point warnings are counted (:class:`NumericWarnings`), not printed.
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import time
from typing import NamedTuple

import numpy as np

from ..layers import KINDS, make_rnn
from ..nets import Network, cross_entropy_forward, tbptt, windows
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import (LAST_WINDOWS, Vocabulary, load_corpus, make_streams, split_train_valid, trim_streams, window_at,
                   window_count)
from .optim import clip_by_global_norm, clip_by_value, global_norm, make_optimizer, make_schedule
from .sampling import default_prime, sample_chars
from .threads import step_blas

CELLS = KINDS
INPUTS = ("embedding", "one_hot")
REDUCTIONS = ("mean", "sum")
CHECKPOINT = "checkpoint.npz"
# the files of a run folder: a folder holding any of them holds a run that a new one must not overwrite
RUN_FILES = ("config.json", CHECKPOINT, "metrics.jsonl", "samples.txt", "loss.png")
# settings that change how a run is watched or how long it goes on, not what it computes:
# the only ones a resumed run may change
WATCHING = frozenset({"steps", "minutes", "log_every", "eval_every", "sample_every", "checkpoint_every",
                      "sample_length", "valid_windows"})


class TrainingError(ValueError):
    """A run that cannot start, go on or resume; the message says why and what is kept."""


class Diverged(TrainingError):
    """The loss, the gradient or the updated parameters stopped being finite."""


class RunWriteError(TrainingError):
    """The system refused a write to the run folder (no room, no permission, a read-only or
    missing folder); the message names the file and says which checkpoint is kept."""


class NumericWarnings:
    """NumPy's floating-point warnings (overflow, invalid value, division by zero) counted with
    the step at which each kind first came, instead of printed: a large learning rate saturates
    the gates (``exp`` overflows in the sigmoid) long before the loss stops being finite.

    Use ``with warnings.watch(step): ...`` around the work of a step.
    """

    KINDS = {"overflow": "overflow", "invalid value": "an invalid value", "divide by zero": "a division by zero"}

    def __init__(self):
        self.counts = {}  # kind -> [count, first step]
        self._step = 0

    def watch(self, step):
        """A context in which NumPy's warnings are counted as of ``step``."""
        self._step = step
        return np.errstate(over="call", invalid="call", divide="call", call=self._record)

    def _record(self, kind, flag):
        self.counts.setdefault(kind, [0, self._step])[0] += 1

    def sentence(self, steps=True):
        """"NumPy warned 12 times of overflow (first at step 40)", or "" when it did not warn;
        without the steps when ``steps`` is False."""
        parts = [f"{count} time{'s' if count != 1 else ''} of {self.KINDS.get(kind, kind)}"
                 + (f" (first at step {first})" if steps else "") for kind, (count, first) in self.counts.items()]
        return "NumPy warned " + _listed(parts) if parts else ""

    def since(self, step):
        """"NumPy had warned of overflow since step 40" for the kinds first seen before ``step``,
        or "": what came before a run diverged at ``step``."""
        earlier = {kind: first for kind, (_, first) in self.counts.items() if first < step}
        if not earlier:
            return ""
        kinds = _listed([self.KINDS.get(kind, kind) for kind in earlier])
        return f"NumPy had warned of {kinds} since step {min(earlier.values())}"


def _listed(parts):
    """"a", "a and b", "a, b and c"."""
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. ``k2=None`` means k2 = k1; ``steps`` counts updates in
    all, from the run's start (a resumed run goes on to it), ``minutes`` limits this
    invocation's wall time (a resumed run gets them anew).

    The settings that reproduce min-char-rnn.py (README, "Training"): ``input="one_hot"``,
    ``init_std=0.01``, ``freeze=("rnn.bias_hh_l0",)`` (one hidden bias), ``batch_size=1``,
    ``valid_fraction=0``, ``last_window="min-char-rnn"``, ``loss_reduction="sum"``,
    ``clip_value=5``, ``clip=None``, Adagrad with ``eps=1e-8`` and ``eps_inside_sqrt``."""

    corpus: str | None = None  # a file or folder of UTF-8 text; None for the built-in corpus
    cell: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    input: str = "embedding"  # how characters enter the stack: "embedding" or "one_hot" (I = V)
    embedding_size: int = 64  # with input "embedding"
    dropout: float = 0.0  # between stacked layers, on every layer's output but the last
    init_std: float | None = None  # every weight from N(0, init_std²), every bias 0; None: torch's init
    freeze: tuple = ()  # names of parameters the optimizer leaves as initialised
    k1: int = 64
    k2: int | None = None
    batch_size: int = 32
    last_window: str = "partial"  # the end of the streams in an epoch: data.LAST_WINDOWS
    loss_reduction: str = "mean"  # each window's loss (and so its gradient): mean or sum over characters
    optimizer: str = "adam"
    lr: float = 2e-3
    eps: float | None = None  # the optimizer's epsilon; None for its default
    eps_inside_sqrt: bool = False  # Adagrad's sqrt(sum + eps), not torch's sqrt(sum) + eps
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant, step, cosine
    warmup_steps: int = 0
    decay_every: int = 1000  # the step schedule's step_size
    decay_gamma: float = 0.5
    clip: float | None = 1.0  # max global gradient norm; None for no clipping
    clip_value: float | None = None  # every gradient entry clipped to [-clip_value, clip_value] first
    dtype: str = "float32"
    seed: int = 0
    valid_fraction: float = 0.05  # 0: no validation, the whole corpus trains
    steps: int | None = None
    minutes: float | None = None
    log_every: int = 10
    eval_every: int = 100
    sample_every: int = 250
    checkpoint_every: int = 100
    sample_length: int = 200
    valid_windows: int = 20  # validation windows evaluated each time (each B * k1 characters)

    def __post_init__(self):
        # freeze as a tuple, however given, so that equal settings compare equal
        if isinstance(self.freeze, str):  # "a,b"
            object.__setattr__(self, "freeze", tuple(name.strip() for name in self.freeze.split(",") if name.strip()))
        elif isinstance(self.freeze, list):  # config.json's, a checkpoint's
            object.__setattr__(self, "freeze", tuple(self.freeze))

    def check(self):
        """Raise TrainingError naming every setting that is out of range."""
        problems = []
        if self.cell not in CELLS:
            problems.append(f"cell {self.cell!r} (expected one of {', '.join(CELLS)})")
        for name, allowed in (("input", INPUTS), ("last_window", LAST_WINDOWS), ("loss_reduction", REDUCTIONS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} {getattr(self, name)!r} (expected one of {', '.join(allowed)})")
        if not isinstance(self.freeze, tuple) or not all(isinstance(name, str) for name in self.freeze):
            problems.append(f"freeze {self.freeze!r} (expected parameter names)")
        for name in ("init_std", "clip_value"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                problems.append(f"{name} {value!r} (expected > 0, or None)")
        if self.eps is not None and (isinstance(self.eps, bool) or not isinstance(self.eps, (int, float))
                                     or not self.eps >= 0):
            problems.append(f"eps {self.eps!r} (expected >= 0, or None for the optimizer's default)")
        if self.eps is not None and self.optimizer == "sgd":
            problems.append(f"eps {self.eps!r} (sgd has no epsilon)")
        if not isinstance(self.eps_inside_sqrt, bool):
            problems.append(f"eps_inside_sqrt {self.eps_inside_sqrt!r} (expected true or false)")
        elif self.eps_inside_sqrt and self.optimizer != "adagrad":
            problems.append(f"eps_inside_sqrt with optimizer {self.optimizer!r} (it is Adagrad's)")
        for name in ("hidden_size", "num_layers", "embedding_size", "k1", "batch_size", "log_every", "eval_every",
                     "sample_every", "checkpoint_every", "valid_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} {value!r} (expected a positive integer)")
        if self.k2 is not None and (not isinstance(self.k2, int) or self.k2 < self.k1):
            problems.append(f"k2 {self.k2!r} (expected an integer >= k1 = {self.k1})")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            problems.append(f"dropout {self.dropout!r} (expected a probability in [0, 1))")
        if self.dtype not in ("float32", "float64"):
            problems.append(f"dtype {self.dtype!r} (expected float32 or float64)")
        if not self.lr > 0:
            problems.append(f"lr {self.lr!r} (expected > 0)")
        if self.clip is not None and not self.clip > 0:
            problems.append(f"clip {self.clip!r} (expected > 0, or None for no clipping)")
        if not 0 <= self.valid_fraction < 1:
            problems.append(f"valid_fraction {self.valid_fraction!r} (expected in [0, 1); 0 for no validation)")
        if self.steps is not None and self.steps < 1:
            problems.append(f"steps {self.steps!r} (expected >= 1)")
        if self.minutes is not None and not self.minutes > 0:
            problems.append(f"minutes {self.minutes!r} (expected > 0)")
        if self.steps is None and self.minutes is None:
            problems.append("no limit: give steps or minutes")
        if self.schedule == "cosine" and self.steps is None:
            problems.append("schedule 'cosine' without steps (it needs to know where it ends)")
        if self.sample_length < 0:
            problems.append(f"sample_length {self.sample_length!r} (expected >= 0)")
        if problems:
            raise TrainingError("bad training settings: " + "; ".join(problems))


class Event(NamedTuple):
    """What :meth:`Trainer.run` reports: ``kind`` is ``"step"``, ``"valid"``, ``"sample"``,
    ``"checkpoint"`` or ``"done"``; ``data`` a dict of numbers and strings."""

    kind: str
    step: int
    data: dict


class RunState(NamedTuple):
    """Where a run is, replaced as a whole after every update."""

    params: dict  # name -> array
    optimizer: dict  # the optimizer's state
    step: int  # updates done
    epoch: int  # passes over the training streams finished
    window: int  # the next window of this epoch
    carry: tuple  # the state entering that window's first step: (L, B, H) arrays
    dropout_rng: dict  # the bit generator state that draws the next dropout masks


def read_run(path):
    """A run's checkpoint file as ``(saved tree, TrainConfig, Vocabulary)``; CheckpointError
    where the file cannot be read or does not hold a training run."""
    saved = load_checkpoint(path)
    try:
        config, vocab = TrainConfig(**saved["config"]), Vocabulary(saved["vocab"])
        saved["corpus_sha256"]  # noqa: B018  every run's checkpoint holds it
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path} does not hold a training run ({type(error).__name__}: {error})") from error
    return saved, config, vocab


def load_model(path):
    """The trained network and its vocabulary, from a run folder or its checkpoint file.

    Raises CheckpointError (unreadable, not a run) or ValueError (parameters that do not fit
    the run's configuration)."""
    path = os.path.join(path, CHECKPOINT) if os.path.isdir(path) else path
    saved, config, vocab = read_run(path)
    network = build_network(config, vocab.size)
    network.load_state_dict(saved["params"])
    return network, vocab


def build_network(config, vocab_size):
    """The character language model of ``config``: embedding (or one-hot codes), recurrent
    stack, linear head, each window's loss the mean or the sum over its characters."""
    input_size = vocab_size if config.input == "one_hot" else config.embedding_size
    rnn = make_rnn(config.cell, input_size, config.hidden_size, config.num_layers,
                   dropout=config.dropout, dtype=np.dtype(config.dtype), seed=config.seed)
    network = Network(rnn, vocab_size, input=config.input, vocab_size=vocab_size, reduction=config.loss_reduction,
                      seed=config.seed)
    if config.init_std is not None:
        network.params = _normal_init(network.params, config.init_std, config.seed)
    return network


def _normal_init(params, std, seed):
    """Every weight drawn from N(0, std²), every bias zero, as min-char-rnn.py initialises
    (``np.random.randn(...) * 0.01``, ``np.zeros(...)``); drawn in the order of ``params``."""
    rng = np.random.default_rng([seed, 2])  # apart from the torch-like init's and the dropout's
    return {name: np.zeros_like(value) if name.rsplit(".", 1)[-1].startswith("bias")
            else (rng.standard_normal(value.shape) * std).astype(value.dtype)
            for name, value in params.items()}


def trained_names(config, params):
    """The names of ``params`` the optimizer updates: all but ``config.freeze``, in order.
    A TrainingError names a frozen name the network does not have, or a run with nothing left
    to train."""
    unknown = [name for name in config.freeze if name not in params]
    if unknown:
        raise TrainingError(f"cannot freeze {', '.join(map(repr, unknown))}: the network's parameters are "
                            f"{', '.join(params)}")
    names = [name for name in params if name not in config.freeze]
    if not names:
        raise TrainingError("every parameter is frozen: nothing would train")
    return names


def _schedule(config):
    if config.schedule == "step":
        return make_schedule("step", lr=config.lr, step_size=config.decay_every, gamma=config.decay_gamma)
    if config.schedule == "cosine":
        return make_schedule("cosine", lr=config.lr, total_steps=config.steps, warmup_steps=config.warmup_steps)
    return make_schedule(config.schedule, lr=config.lr)


def _optimizer(config):
    settings = {"weight_decay": config.weight_decay} if config.weight_decay else {}
    if config.eps is not None:
        settings["eps"] = config.eps
    if config.eps_inside_sqrt:
        settings["eps_inside_sqrt"] = True
    return make_optimizer(config.optimizer, **settings)


class Data(NamedTuple):
    """The corpus as the trainer uses it."""

    vocab: Vocabulary
    train: np.ndarray  # N,B ids: the steps of one epoch, and the last one's target
    valid: np.ndarray  # N_valid,B ids; 0,B without validation
    characters: int  # in the corpus
    digest: str  # sha256 of the corpus text: a resumed run must read the same text
    sources: int  # files read
    skipped: tuple  # files of a folder left out (empty or not UTF-8)


def load_data(config, vocab=None, digest=None):
    """Read the corpus, build (or check against ``vocab``) the vocabulary, split and streams
    (the training streams cut to the epoch ``last_window`` asks for). With ``digest`` (a
    resumed run's), the corpus must be the text that digest was taken of."""
    try:
        corpus = load_corpus(config.corpus)
    except (OSError, ValueError) as error:
        raise TrainingError(str(error)) from error
    text_digest = hashlib.sha256(corpus.text.encode("utf-8", errors="surrogatepass")).hexdigest()
    if digest is not None and text_digest != digest:
        raise TrainingError(f"the corpus {config.corpus or '(built-in)'} is not the text the run was trained on")
    vocab = Vocabulary.from_text(corpus.text) if vocab is None else vocab
    try:
        ids = vocab.encode(corpus.text)
        train_ids, valid_ids = split_train_valid(ids, config.valid_fraction)
        train = make_streams(train_ids, config.batch_size, config.k1, name="training part of the corpus")
        train = trim_streams(train, config.k1, config.last_window)
        if config.valid_fraction:
            valid = make_streams(valid_ids, config.batch_size, config.k1, name="validation part of the corpus")
        else:
            valid = np.zeros((0, config.batch_size), np.int64)  # 0,B
    except ValueError as error:
        raise TrainingError(str(error)) from error
    return Data(vocab, train, valid, len(ids), text_digest, len(corpus.sources), corpus.skipped)


class Trainer:
    """A run: its configuration, data, network and state. Make one with :meth:`start` or
    :meth:`resume`, then iterate :meth:`run`."""

    def __init__(self, config, run_dir, data, state):
        self.config = config
        self.run_dir = run_dir
        self.data = data
        self.network = build_network(config, data.vocab.size)
        self.network.params = state.params
        self.trained = trained_names(config, state.params)
        self.plan = windows(data.train.shape[0] - 1, config.k1, config.k2)  # the windows of an epoch
        self.optimizer = _optimizer(config)
        self.schedule = _schedule(config)
        self.state = state
        self.numeric = NumericWarnings()
        # the step of the checkpoint on disk; None while this run has none
        self.saved_step = state.step if os.path.exists(self.checkpoint_path) else None

    @property
    def checkpoint_path(self):
        return os.path.join(self.run_dir, CHECKPOINT)

    @classmethod
    def start(cls, config, run_dir):
        """A new run in ``run_dir`` (created; it must not hold a run's files already, even a
        run that crashed before its first checkpoint, whose metrics a new run would mix in)."""
        config.check()
        held = [name for name in RUN_FILES if os.path.exists(os.path.join(run_dir, name))]
        if held:
            raise TrainingError(f"{run_dir} already holds a run ({', '.join(held)}); resume it with --resume "
                                f"{run_dir} or choose another folder")
        data = load_data(config)
        network = build_network(config, data.vocab.size)
        trained = {name: network.params[name] for name in trained_names(config, network.params)}
        dropout_rng = np.random.default_rng([config.seed, 1]).bit_generator.state  # apart from the init's
        state = RunState(network.params, _optimizer(config).init_state(trained), 0, 0, 0, None, dropout_rng)
        made = _missing_folders(run_dir)
        try:
            os.makedirs(run_dir, exist_ok=True)
            _replace_text(os.path.join(run_dir, "config.json"), json.dumps(dataclasses.asdict(config), indent=2))
        except OSError as error:
            for folder in made:  # the folders this call made go again, so that nothing is left behind
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
            raise RunWriteError(f"cannot make the run folder {run_dir}: {_reason(error)}") from error
        return cls(config, run_dir, data, state)

    @classmethod
    def resume(cls, run_dir, changes=None):
        """Go on with the run saved in ``run_dir``; ``changes`` may only touch ``WATCHING``
        settings (how long, how often to log), any other difference is an error."""
        path = os.path.join(run_dir, CHECKPOINT)
        saved, config, vocab = read_run(path)
        digest = saved["corpus_sha256"]
        _check_run_config(run_dir, config)
        changes = dict(changes or {})
        # the cosine schedule ends at ``steps``: there, steps changes what is computed
        watching = WATCHING - {"steps"} if config.schedule == "cosine" else WATCHING
        conflicts = [f"{name} {value!r} (the run has {getattr(config, name)!r}"
                     + ("; its cosine schedule ends there)" if name == "steps" else ")")
                     for name, value in changes.items()
                     if name not in watching and value != getattr(config, name)]
        if conflicts:
            raise TrainingError(f"cannot resume {run_dir} with a different configuration: " + "; ".join(conflicts)
                                + f"; only {', '.join(sorted(watching))} may change")
        config = dataclasses.replace(config, **{k: v for k, v in changes.items() if k in watching})
        config.check()
        try:
            data = load_data(config, vocab, digest)
        except TrainingError as error:
            raise TrainingError(f"cannot resume {run_dir}: {error}") from error
        network = build_network(config, data.vocab.size)
        try:
            network.load_state_dict(saved["params"])
            state = _saved_state(saved, network, _optimizer(config), data.train.shape, config)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise CheckpointError(f"{path} does not fit its configuration: {error}") from error
        if config.steps is not None and state.step >= config.steps:
            more = changes.get("steps") or 100  # the user's --steps, had they meant "so many more"
            more = "a cosine run cannot go past them" if config.schedule == "cosine" else (
                f"give --steps {state.step + more} for {more} more, or --minutes")
            raise TrainingError(f"{run_dir} has done {state.step} steps already, as many as --steps {config.steps} "
                                f"asks for: --steps counts the run's steps in all, from its start, not from the "
                                f"resume; {more}")
        metrics, samples = os.path.join(run_dir, "metrics.jsonl"), os.path.join(run_dir, "samples.txt")
        for path, write in ((run_dir, lambda: tempfile.TemporaryFile(dir=run_dir).close()),  # named before training
                            (metrics, lambda: _keep_metrics_until(metrics, state.step)),
                            (samples, lambda: _keep_samples_until(samples, state.step))):
            try:
                write()
            except OSError as error:
                raise RunWriteError(f"cannot resume {run_dir}: cannot write {path}: {_reason(error)}; its checkpoint "
                                    f"(step {state.step}) is kept") from error
        return cls(config, run_dir, data, state)

    def save(self):
        """Write the run's state to its checkpoint, atomically. Returns the path.

        Raises RunWriteError where the system refuses the write; the previous checkpoint is
        then on disk as it was."""
        state = self.state
        with self._writing(self.checkpoint_path):
            save_checkpoint(self.checkpoint_path, {
                "config": dataclasses.asdict(self.config),
                "vocab": self.data.vocab.chars,
                "corpus_sha256": self.data.digest,
                "params": state.params,
                "optimizer": state.optimizer,
                "step": state.step,
                "epoch": state.epoch,
                "window": state.window,
                "carry": None if state.carry is None else list(state.carry),
                "dropout_rng": state.dropout_rng,
            })
        self.saved_step = state.step
        return self.checkpoint_path

    def validation_bpc(self):
        """Bits per character on the first ``valid_windows`` windows of the validation streams,
        the state carried from window to window; None for a run without validation."""
        if not self.config.valid_fraction:
            return None
        k1 = self.config.k1
        count = min(self.config.valid_windows, window_count(self.data.valid, k1))
        state, total = None, 0.0
        with self.numeric.watch(self.state.step):
            for index in range(count):
                inputs, targets = window_at(self.data.valid, k1, index)  # T,B each
                logits, state = self.network.predict(inputs, state)  # no cache: nothing to differentiate
                total += cross_entropy_forward(logits, targets)[0]
        return total / count / math.log(2)

    def sample(self, length, prime=None, temperature=0.8, seed=0):
        """``length`` generated characters after ``prime`` (None: :func:`default_prime`), as one string."""
        rng = np.random.default_rng(seed)
        prime = default_prime(self.data.vocab) if prime is None else prime
        with self.numeric.watch(self.state.step):
            return "".join(sample_chars(self.network, self.data.vocab, prime, length, temperature=temperature,
                                        rng=rng))

    def _epoch_updates(self, state, dropout_rng):
        streams = self.data.train
        carry = None if state.carry is None else self.network.public_state(state.carry)
        return tbptt(self.network, streams[:-1], streams[1:], self.config.k1, self.config.k2,
                     state=carry, start_window=state.window, dropout_rng=dropout_rng)

    def run(self):
        """Train until ``steps`` or ``minutes`` is reached, yielding :class:`Event` records; the
        last, ``"done"``, says why it stopped (``reason``) after the final validation has been
        logged and the checkpoint written (a run without validation logs none: ``valid_bpc``
        is None).

        An update: the window's gradients of the trained (not frozen) parameters, clipped by
        value (``clip_value``), then by their global norm (``clip``), then the optimizer's step.

        Raises Diverged when the loss, the gradient or the update stops being finite, and
        RunWriteError when a file cannot be written; the checkpoint on disk is then the last
        one written before, untouched.
        """
        config = self.config
        began, first_step = time.perf_counter(), self.state.step
        validating = bool(config.valid_fraction)
        valid_step = None  # the step whose validation was logged last in this invocation
        windows_per_epoch = len(self.plan)
        chars_per_update = config.k1 * config.batch_size
        # the one generator of this invocation's dropout masks, started where the run left off
        dropout_rng = np.random.default_rng()
        dropout_rng.bit_generator.state = self.state.dropout_rng
        updates = self._epoch_updates(self.state, dropout_rng)
        training_seconds = 0.0  # time spent in updates since the last report, evaluation left out
        while True:
            state = self.state
            if config.steps is not None and state.step >= config.steps:
                reason = _steps_reason(config.steps, first_step)
                break
            if config.minutes is not None and time.perf_counter() - began >= 60 * config.minutes:
                reason = _minutes_reason(config.minutes, state.step, first_step)
                break
            update_began = time.perf_counter()
            # NumPy's warnings are counted, not printed; what is not finite is checked below
            with self.numeric.watch(state.step + 1), step_blas():  # BLAS on one thread beside threaded passes
                update = next(updates)
                grads = {name: update.grads[name] for name in self.trained}  # frozen ones have none
                norm = global_norm(grads)
                if not (math.isfinite(update.loss) and math.isfinite(norm)):
                    raise self._diverged(f"the loss became {update.loss} (gradient norm {norm})", state.step + 1)
                if config.clip_value is not None:
                    grads = clip_by_value(grads, config.clip_value)
                if config.clip is not None:
                    grads, _ = clip_by_global_norm(grads, config.clip)
                lr = self.schedule.lr_at(state.step)
                trained, optimizer_state = self.optimizer.update({name: state.params[name] for name in self.trained},
                                                                 grads, state.optimizer, lr)
                params = {name: trained.get(name, value) for name, value in state.params.items()}
            if not all(np.isfinite(param).all() for param in params.values()):
                # a finite gradient times a large learning rate can overflow: such parameters
                # must never reach a checkpoint
                raise self._diverged(f"the update made the parameters non-finite (loss {update.loss}, gradient "
                                     f"norm {norm})", state.step + 1)
            window = state.window + 1
            rng_state = dropout_rng.bit_generator.state
            if window == windows_per_epoch:
                next_state = RunState(params, optimizer_state, state.step + 1, state.epoch + 1, 0, None, rng_state)
            else:
                next_state = RunState(params, optimizer_state, state.step + 1, state.epoch, window,
                                      _as_tuple(update.next_state), rng_state)
            self.network.params = params
            self.state = next_state
            if window == windows_per_epoch:
                updates = self._epoch_updates(next_state, dropout_rng)
            training_seconds += time.perf_counter() - update_began
            step = next_state.step
            if step % config.log_every == 0:
                speed = config.log_every * chars_per_update / max(training_seconds, 1e-9)
                training_seconds = 0.0
                loss = update.loss  # per character, whichever the reduction
                if config.loss_reduction == "sum":
                    done = self.plan[state.window]
                    loss /= (done.stop - done.loss_start) * config.batch_size
                yield self._log(Event("step", step, {
                    "loss": loss, "bpc": loss / math.log(2), "lr": lr, "grad_norm": norm,
                    "chars_per_s": speed, "epoch": next_state.epoch,
                }))
            if validating and step % config.eval_every == 0:
                valid_bpc, valid_step = self.validation_bpc(), step
                yield self._log(Event("valid", step, {"valid_bpc": valid_bpc}))
            if step % config.sample_every == 0 and config.sample_length:
                text = self.sample(config.sample_length, seed=config.seed + step)
                self._append("samples.txt", f"--- step {step} ---\n{text}\n")
                yield Event("sample", step, {"text": text})
            if step % config.checkpoint_every == 0:
                yield Event("checkpoint", step, {"path": self.save()})
        step = self.state.step
        if not validating:
            valid_bpc = None
        elif valid_step != step:  # the final validation, unless it was logged at this step already
            valid_bpc = self.validation_bpc()
            self._log(Event("valid", step, {"valid_bpc": valid_bpc}))
        yield Event("done", step, {"reason": reason, "path": self.save(), "valid_bpc": valid_bpc})

    def kept(self):
        """What a run that stops here keeps: "the last checkpoint, <path>, is kept (step N)"."""
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return f"the last checkpoint, {self.checkpoint_path}, is kept (step {self.saved_step})"

    def _diverged(self, what, step):
        warned = self.numeric.since(step)
        warned = f"; {warned}" if warned else ""
        return Diverged(f"{what} at step {step}{warned}; training stopped and {self.kept()}; try a smaller --lr "
                        f"or --clip")

    @contextlib.contextmanager
    def _writing(self, path):
        """Turn the system's refusal to write ``path`` into a RunWriteError that says what is kept."""
        try:
            yield
        except OSError as error:
            resume = f"; go on with bptt train --resume {self.run_dir} once it can be written" if (
                self.saved_step is not None) else ""
            raise RunWriteError(f"cannot write {path}: {_reason(error)}; training stopped at step {self.state.step} "
                                f"and {self.kept()}{resume}") from error

    def _append(self, name, text):
        """Append ``text`` to the run's file ``name`` whole, or leave the file as it was."""
        path = os.path.join(self.run_dir, name)
        with self._writing(path):
            size = os.path.getsize(path) if os.path.exists(path) else None
            try:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError:
                with contextlib.suppress(OSError):  # take back what part of it was written
                    if size is None:
                        os.remove(path)
                    else:
                        os.truncate(path, size)
                raise

    def _log(self, event):
        self._append("metrics.jsonl", json.dumps({"kind": event.kind, "step": event.step, **event.data}) + "\n")
        return event


def _reason(error):
    """What the system said of a refused file operation: "No space left on device"."""
    return error.strerror or str(error) or type(error).__name__


def _missing_folders(path):
    """The folders ``os.makedirs(path)`` would make, deepest first."""
    missing, path = [], os.path.abspath(path)
    while not os.path.exists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def _plural(count, noun):
    return f"{count:g} {noun}" + ("" if count == 1 else "s")


def _steps_reason(steps, first_step):
    """Why a run stopped at ``steps``, having started this invocation at ``first_step``."""
    if first_step == 0:
        return f"reached {_plural(steps, 'step')}"
    done = _plural(steps - first_step, "step")
    return (f"reached step {steps}, the run's total that --steps {steps} asks for ({done} after resuming at step "
            f"{first_step})")


def _minutes_reason(minutes, step, first_step):
    """Why a run stopped after ``minutes`` of this invocation, at ``step``."""
    resumed = f", {_plural(step - first_step, 'step')} after resuming at step {first_step}" if first_step else ""
    return f"stopped after {_plural(minutes, 'minute')} (--minutes {minutes:g}) at step {step}{resumed}"


def _windows_per_epoch(train_shape, config):
    """The updates of one pass over the training streams ((N, B)): the windows of TBPTT over
    their N - 1 input steps."""
    return len(windows(train_shape[0] - 1, config.k1, config.k2))


def _check_run_config(run_dir, config):
    """A checkpoint must be of the run whose folder holds it: its configuration equals the
    folder's config.json but for the ``WATCHING`` settings (a checkpoint copied in from another
    run is refused before anything of the folder changes)."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            folder = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    saved = json.loads(json.dumps(dataclasses.asdict(config)))  # as config.json holds it: lists, not tuples
    if not isinstance(folder, dict):
        raise CheckpointError(f"{path} is not a run configuration")
    differ = [f"{name} {saved[name]!r} (config.json has {folder[name]!r})"
              for name in saved if name not in WATCHING and name in folder and folder[name] != saved[name]]
    if differ:
        raise CheckpointError(f"{run_dir}/{CHECKPOINT} is not from the run in {run_dir}: its " + "; ".join(differ))


def _saved_state(saved, network, optimizer, train_shape, config):
    """The RunState of a checkpoint, every part checked against the network and the data;
    a ValueError (or KeyError, TypeError) says what does not fit."""
    step, epoch, window = saved["step"], saved["epoch"], saved["window"]
    for name, value in (("step", step), ("epoch", epoch), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} {value!r} (expected an integer >= 0)")
    count = _windows_per_epoch(train_shape, config)
    if window >= count:
        raise ValueError(f"window {window} (an epoch has {count} windows)")
    optimizer._check_state(saved["optimizer"], {name: network.params[name]
                                                for name in trained_names(config, network.params)})
    carry = saved["carry"]
    if carry is not None:
        carry = network.check_state(network.public_state(tuple(carry)), train_shape[1], "carried state")
    rng_state = saved["dropout_rng"]
    np.random.default_rng().bit_generator.state = rng_state  # raises on a malformed state
    return RunState(network.params, saved["optimizer"], step, epoch, window, carry, rng_state)


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _keep_metrics_until(path, step):
    """Drop the metrics a crashed run logged after its last checkpoint, atomically."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:  # a line cut short may be cut in a character
        lines = handle.readlines()
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) < len(lines):
        _replace_text(path, "".join(kept))


SAMPLE_HEADER = re.compile(r"^--- step (\d+) ---$", re.M)


def _keep_samples_until(path, step):
    """Drop the samples a crashed run wrote after its last checkpoint, atomically: the file is
    a sequence of ``--- step N ---`` headers, each followed by its sample."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        text = handle.read()
    cut = next((m.start() for m in SAMPLE_HEADER.finditer(text) if int(m.group(1)) > step), len(text))
    if cut < len(text):
        _replace_text(path, text[:cut])


def _replace_text(path, text):
    """Write ``text`` to ``path`` through a temporary file renamed over it: the file is the old
    text or the new one, whole, and no temporary file stays behind."""
    temporary = path + ".partial"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(temporary)


def _logged_step(line):
    """The step of a metrics line; infinity for a line a crash cut short (or a blank one)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def read_metrics(run_dir):
    """The metrics of a run: a list of dicts, one per line of its metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
