"""The trainer and the train/sample verbs, proven on tiny runs: a resumed run equals the
uninterrupted one bit for bit (epoch wrap-around, k1 < k2, every cell, after a crash);
Ctrl-C saves the last completed step and resumes exactly; a NaN, an Inf or a non-finite
update stops the run with one clear line and leaves the last good checkpoint byte for byte;
the run folder holds metrics.jsonl and loss.png; ``bptt sample`` streams, repeats with
``--seed``, is greedy with ``--top-k 1`` and checks its arguments before writing anything."""

import dataclasses
import json
import os

import numpy as np
import pytest

import bptt.training.trainer as trainer_module
from bptt.cli import main
from bptt.nets import windows
from bptt.training.checkpoint import load_checkpoint
from bptt.training.data import Vocabulary
from bptt.training.sampling import sample_chars
from bptt.training.trainer import TrainConfig, Trainer, build_network, read_metrics

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i * i % 97} times.\n" for i in range(60))
SHORT = TEXT[:80]  # 64 training characters: 2 streams of 31 steps, an epoch of 8 (k1=4) or 11 (k1=3) updates
TINY = dict(hidden_size=6, num_layers=2, embedding_size=4, batch_size=2, valid_fraction=0.2, seed=5,
            log_every=1, eval_every=4, sample_every=5, checkpoint_every=3, sample_length=8, valid_windows=2)
CLI_TINY = ["--hidden", "6", "--layers", "2", "--embedding", "4", "--k1", "4", "--batch", "2", "--seed", "5",
            "--valid-fraction", "0.2", "--eval-every", "5", "--sample-every", "100", "--checkpoint-every", "100",
            "--no-progress"]


def write_corpus(tmp_path, text=SHORT, name="corpus.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def finish(trainer):
    return list(trainer.run())


def assert_same_tree(a, b, where="checkpoint"):
    """Equal bit for bit: arrays by dtype, shape and np.array_equal, the rest by ==."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}/{k}")
    else:
        assert a == b and type(a) is type(b), where


def computed_metrics(run_dir, stopped_at=None):
    """The metrics lines without the timing, which is the one thing a rerun may change; without
    the final validation of an invocation that stopped at ``stopped_at`` and was resumed (a
    run validates where it stops, an uninterrupted one need not have at that step)."""
    return [{k: v for k, v in line.items() if k != "chars_per_s"} for line in read_metrics(run_dir)
            if not (line["kind"] == "valid" and line["step"] == stopped_at and stopped_at % TINY["eval_every"])]


def checkpoint(run_dir):
    return load_checkpoint(os.path.join(run_dir, "checkpoint.npz"))


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# (a) a resumed run equals the uninterrupted run, bit for bit

RESUME_CASES = [("lstm", 4, None, "float32", 0.0), ("lstm", 3, 5, "float64", 0.3), ("gru", 3, 5, "float32", 0.25),
                ("rnn", 4, None, "float64", 0.0)]


@pytest.mark.parametrize("where", ["mid-epoch", "epoch boundary"])
@pytest.mark.parametrize("cell,k1,k2,dtype,dropout", RESUME_CASES)
def test_a_resumed_run_equals_the_uninterrupted_run(tmp_path, cell, k1, k2, dtype, dropout, where):
    corpus = write_corpus(tmp_path)
    steps = 25  # more than two epochs
    config = TrainConfig(corpus=corpus, cell=cell, k1=k1, k2=k2, dtype=dtype, dropout=dropout, steps=steps, **TINY)
    straight = Trainer.start(config, str(tmp_path / "straight"))
    per_epoch = len(windows(straight.data.train.shape[0] - 1, k1, k2))  # updates in one pass over the streams
    assert 2 * per_epoch < steps
    finish(straight)

    stop = per_epoch + 3 if where == "mid-epoch" else per_epoch
    first = Trainer.start(dataclasses.replace(config, steps=stop), str(tmp_path / "resumed"))
    finish(first)
    saved = checkpoint(first.run_dir)
    assert saved["step"] == stop and saved["epoch"] == 1 and (saved["window"] == 3) == (where == "mid-epoch")
    assert (saved["carry"] is None) == (where == "epoch boundary")
    resumed = Trainer.resume(first.run_dir, {"steps": steps})
    assert resumed.state.step == stop
    finish(resumed)

    assert_same_tree(checkpoint(straight.run_dir), checkpoint(resumed.run_dir))
    assert computed_metrics(resumed.run_dir, stopped_at=stop) == computed_metrics(straight.run_dir)


def test_dropout_changes_training_and_a_seed_repeats_it(tmp_path):
    corpus = write_corpus(tmp_path)
    runs = {}
    for name, dropout in (("plain", 0.0), ("dropout", 0.4), ("again", 0.4)):
        trainer = Trainer.start(TrainConfig(corpus=corpus, k1=4, dropout=dropout, steps=6, **TINY), str(tmp_path / name))
        finish(trainer)
        runs[name] = checkpoint(trainer.run_dir)["params"]
    assert not np.array_equal(runs["plain"]["rnn.weight_hh_l0"], runs["dropout"]["rnn.weight_hh_l0"])
    assert_same_tree(runs["dropout"], runs["again"])


@pytest.mark.parametrize("k1,k2", [(4, None), (3, 5)])
def test_resume_after_a_crash_drops_the_metrics_and_samples_past_the_checkpoint(tmp_path, k1, k2):
    corpus = write_corpus(tmp_path)
    config = TrainConfig(corpus=corpus, k1=k1, k2=k2, dtype="float64", steps=16, **TINY)
    straight = Trainer.start(config, str(tmp_path / "straight"))
    finish(straight)

    crashed = Trainer.start(config, str(tmp_path / "crashed"))
    for event in crashed.run():  # the process dies after step 10: its last checkpoint is step 9
        if event.kind == "step" and event.step == 10:
            break
    metrics = os.path.join(crashed.run_dir, "metrics.jsonl")
    with open(metrics, "a", encoding="utf-8") as handle:
        handle.write('{"kind": "step", "st')  # and it died while writing a line
    with open(os.path.join(crashed.run_dir, "samples.txt"), "a", encoding="utf-8") as handle:
        handle.write("--- step 10 ---\nhalf a sam")  # after a sample past the checkpoint
    with open(metrics, encoding="utf-8") as handle:
        assert max(json.loads(line)["step"] for line in handle.readlines()[:-1]) == 10
    assert checkpoint(crashed.run_dir)["step"] == 9

    resumed = Trainer.resume(crashed.run_dir)
    assert resumed.state.step == 9
    assert computed_metrics(crashed.run_dir) == [m for m in computed_metrics(straight.run_dir) if m["step"] <= 9]
    finish(resumed)
    assert_same_tree(checkpoint(straight.run_dir), checkpoint(resumed.run_dir))
    assert computed_metrics(resumed.run_dir) == computed_metrics(straight.run_dir)
    samples = [open(os.path.join(run.run_dir, "samples.txt"), encoding="utf-8").read() for run in (straight, resumed)]
    assert samples[0] == samples[1] and "--- step 15 ---" in samples[0]


def test_a_corpus_without_newlines_samples_from_its_first_character(tmp_path):
    corpus = write_corpus(tmp_path, SHORT.replace("\n", " "))
    trainer = Trainer.start(TrainConfig(corpus=corpus, k1=4, dtype="float64", steps=5, **TINY), str(tmp_path / "run"))
    samples = [e.data["text"] for e in finish(trainer) if e.kind == "sample"]
    assert len(samples) == 1 and len(samples[0]) == TINY["sample_length"]
    assert "\n" not in trainer.data.vocab.chars


# (b) Ctrl-C saves the last completed step, exits 130, and the run resumes exactly


def interrupt_after_update(monkeypatch, completed):
    """Ctrl-C inside the training loop while update ``completed + 1`` is being computed."""
    real = trainer_module.tbptt
    count = [0]

    def tbptt(*args, **kwargs):
        for update in real(*args, **kwargs):
            count[0] += 1
            if count[0] > completed:
                raise KeyboardInterrupt
            yield update

    monkeypatch.setattr(trainer_module, "tbptt", tbptt)


def interrupt_after_event(monkeypatch, step):
    """Ctrl-C while the command line draws the "step" event of ``step``."""
    real = Trainer.run

    def run(self):
        for event in real(self):
            yield event
            if event.kind == "step" and event.step == step:
                raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run", run)


@pytest.mark.parametrize("interrupt,step", [(interrupt_after_update, 7), (interrupt_after_event, 10)])
def test_ctrl_c_saves_the_last_step_and_resumes_exactly(tmp_path, monkeypatch, capsys, interrupt, step):
    corpus = write_corpus(tmp_path)
    args = ["train", "--corpus", corpus, *CLI_TINY, "--steps", "14"]
    assert main([*args, "--run-dir", str(tmp_path / "straight")]) == 0
    with monkeypatch.context() as patch:
        interrupt(patch, step)
        assert main([*args, "--run-dir", str(tmp_path / "stopped")]) == 130
    err = capsys.readouterr().err
    assert f"interrupted at step {step}: saved" in err and f"--resume {tmp_path / 'stopped'}" in err
    assert "Traceback" not in err
    assert checkpoint(tmp_path / "stopped")["step"] == step

    assert main(["train", "--resume", str(tmp_path / "stopped"), "--no-progress"]) == 0
    assert "resuming at step" in capsys.readouterr().out
    assert_same_tree(checkpoint(tmp_path / "straight"), checkpoint(tmp_path / "stopped"))


# (c) a NaN, an Inf or a non-finite update keeps the last good checkpoint, byte for byte


def record_checkpoints(monkeypatch):
    """The bytes of the checkpoint file after every save."""
    real, written = trainer_module.save_checkpoint, []

    def save_checkpoint(path, tree):
        real(path, tree)
        with open(path, "rb") as handle:
            written.append(handle.read())

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_checkpoint)
    return written


def corrupt_update(monkeypatch, number, change):
    """Update ``number`` (counted from 1 over the run) gets ``change(update)`` instead."""
    real = trainer_module.tbptt
    count = [0]

    def tbptt(*args, **kwargs):
        for update in real(*args, **kwargs):
            count[0] += 1
            yield change(update) if count[0] == number else update

    monkeypatch.setattr(trainer_module, "tbptt", tbptt)


def nan_gradient(update):
    return update._replace(grads={k: np.full_like(g, np.nan) for k, g in update.grads.items()})


def inf_loss(update):
    return update._replace(loss=float("inf"))


def huge_gradient(update):  # finite, but an SGD step of lr 10 with it overflows float32
    return update._replace(grads={k: np.full_like(g, 1e38) for k, g in update.grads.items()})


@pytest.mark.filterwarnings("error")  # NumPy's overflow warnings would be more lines on stderr
@pytest.mark.parametrize("change,words,options", [
    (nan_gradient, "the loss became", []),
    (inf_loss, "the loss became inf", []),
    (huge_gradient, "the update made the parameters non-finite", ["--optimizer", "sgd", "--lr", "10", "--clip", "0"]),
])
def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, change,
                                                                          words, options):
    corpus = write_corpus(tmp_path)
    run_dir = tmp_path / "run"
    written = record_checkpoints(monkeypatch)
    corrupt_update(monkeypatch, 8, change)
    rc = main(["train", "--corpus", corpus, *CLI_TINY, "--steps", "14", "--checkpoint-every", "3", *options,
               "--run-dir", str(run_dir)])
    assert rc == 3
    line = one_line(capsys.readouterr().err)
    assert line.startswith("bptt train: " + words)
    kept = f"the last checkpoint, {run_dir / 'checkpoint.npz'}, is kept (step 6)"
    assert f"at step 8; training stopped and {kept}" in line
    assert len(written) == 2  # steps 3 and 6
    assert (run_dir / "checkpoint.npz").read_bytes() == written[-1]
    saved = checkpoint(run_dir)
    assert saved["step"] == 6
    assert all(np.isfinite(p).all() for p in saved["params"].values())


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("lr", ["1e38", "1e300"])
def test_a_real_divergence_keeps_a_finite_checkpoint(tmp_path, monkeypatch, capsys, lr):
    corpus = write_corpus(tmp_path)
    run_dir = tmp_path / "run"
    written = record_checkpoints(monkeypatch)
    rc = main(["train", "--corpus", corpus, *CLI_TINY, "--steps", "30", "--checkpoint-every", "1", "--optimizer",
               "sgd", "--lr", lr, "--clip", "0", "--dtype", "float32", "--run-dir", str(run_dir)])
    assert rc == 3
    line = one_line(capsys.readouterr().err)
    assert "training stopped and" in line and "try a smaller --lr or --clip" in line
    failed = int(line.split(" at step ")[1].split(";")[0])
    assert len(written) == failed - 1
    if written:
        assert (run_dir / "checkpoint.npz").read_bytes() == written[-1]
        saved = checkpoint(run_dir)
        assert saved["step"] == failed - 1
        assert all(np.isfinite(p).all() for p in saved["params"].values())
    else:
        assert "no checkpoint had been written yet" in line
        assert not (run_dir / "checkpoint.npz").exists()


def test_a_nan_before_any_checkpoint_says_so(tmp_path, monkeypatch, capsys):
    corpus = write_corpus(tmp_path)
    corrupt_update(monkeypatch, 1, nan_gradient)
    assert main(["train", "--corpus", corpus, *CLI_TINY, "--steps", "5", "--run-dir", str(tmp_path / "run")]) == 3
    line = one_line(capsys.readouterr().err)
    assert "at step 1; training stopped and no checkpoint had been written yet" in line
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


# (d) the run folder


def test_the_run_folder_holds_metrics_and_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    corpus = write_corpus(tmp_path)
    run_dir = tmp_path / "run"
    assert main(["train", "--corpus", corpus, *CLI_TINY, "--steps", "20", "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {run_dir}" in out and "reached 20 steps" in out
    with open(run_dir / "metrics.jsonl", encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert [(m["kind"], m["step"]) for m in lines] == [("valid", 5), ("step", 10), ("valid", 10), ("valid", 15),
                                                        ("step", 20), ("valid", 20)]
    assert set(lines[1]) == {"kind", "step", "loss", "bpc", "lr", "grad_norm", "chars_per_s", "epoch"}
    assert lines[1]["bpc"] == lines[1]["loss"] / np.log(2)
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "config.json").read_text())["hidden_size"] == 6


# (e) bptt sample


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sample")
    corpus = write_corpus(folder, TEXT)
    trainer = Trainer.start(TrainConfig(corpus=corpus, k1=8, dtype="float64", steps=30, lr=0.02,
                                        **{**TINY, "sample_every": 100, "checkpoint_every": 100}),
                            str(folder / "run"))
    finish(trainer)
    return trainer.run_dir


def load_model(run_dir):
    saved = checkpoint(run_dir)
    vocab = Vocabulary(saved["vocab"])
    network = build_network(TrainConfig(**saved["config"]), vocab.size)
    network.load_state_dict(saved["params"])
    return network, vocab


class RecordingStdout:
    """What was written, and whether a flush came after it."""

    def __init__(self):
        self.calls = []

    def write(self, text):
        self.calls.append(("write", text))

    def flush(self):
        self.calls.append(("flush", None))

    def text(self):
        return "".join(text for call, text in self.calls if call == "write")


def test_sample_streams_each_character_as_it_comes(trained, monkeypatch):
    stdout = RecordingStdout()
    monkeypatch.setattr("sys.stdout", stdout)
    assert main(["sample", trained, "--prime", "line", "--length", "12", "--seed", "4"]) == 0
    writes = [k for k, (call, _) in enumerate(stdout.calls) if call == "write"]
    assert stdout.calls[writes[0]] == ("write", "line") and stdout.calls[writes[-1]] == ("write", "\n")
    for k in writes[1:-1]:  # every generated character is flushed before the next is computed
        assert len(stdout.calls[k][1]) == 1 and stdout.calls[k + 1] == ("flush", None)
    assert len(writes) == 14


def test_sample_with_a_seed_repeats_and_equals_the_library(trained, capsys):
    args = ["sample", os.path.join(trained, "checkpoint.npz"), "--prime", "the", "--length", "40", "--seed", "7",
            "--temperature", "1.3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    network, vocab = load_model(trained)
    expected = "".join(sample_chars(network, vocab, "the", 40, temperature=1.3, rng=np.random.default_rng(7)))
    assert first == "the" + expected + "\n"
    assert main([*args[:-2], "--temperature", "1.3", "--seed", "8"]) == 0
    assert capsys.readouterr().out != first


def test_sample_top_k_1_is_greedy(trained, capsys):
    network, vocab = load_model(trained)
    ids = list(vocab.encode("fox"))
    logits, state = network.predict(np.array(ids)[:, None])
    greedy = ""
    for _ in range(25):
        index = int(np.argmax(logits[-1, 0]))
        greedy += vocab.chars[index]
        logits, state = network.predict(np.array([[index]]), state)
    outputs = set()
    for seed in ("1", "2"):
        assert main(["sample", trained, "--prime", "fox", "--length", "25", "--top-k", "1", "--seed", seed,
                     "--temperature", "2"]) == 0
        outputs.add(capsys.readouterr().out)
    assert main(["sample", trained, "--prime", "fox", "--length", "25", "--top-k", "1"]) == 0
    outputs.add(capsys.readouterr().out)
    assert outputs == {"fox" + greedy + "\n"}


def test_sample_without_a_prime_starts_from_a_newline(trained, capsys):
    assert main(["sample", trained, "--length", "5", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("\n") and len(out) == 7


@pytest.mark.parametrize("option,words", [
    (["--temperature", "-1", "--length", "0"], "expected --temperature >= 0 (0 picks the most likely character) "
                                               "but got -1.0"),
    (["--temperature", "nan"], "expected --temperature >= 0 (0 picks the most likely character) but got nan"),
    (["--top-k", "0"], "expected top_k to be a positive integer but got 0"),
    (["--top-k", "-3", "--length", "0"], "expected top_k to be a positive integer but got -3"),
    (["--length", "-1"], "expected length to be a non-negative integer but got -1"),
    (["--prime", ""], "expected a non-empty prime text"),
])
def test_sample_checks_its_arguments_before_writing(trained, capsys, option, words):
    assert main(["sample", trained, *option]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = one_line(captured.err)
    assert line.startswith("bptt sample: ") and words in line, line
