"""Bad input to ``bptt train`` and ``bptt sample`` (issue 4): each gets exit status 2 and one
line on stderr that names the problem, no traceback, and leaves every file as it was: no run
folder is made, no checkpoint, config or metrics byte changes."""

import json
import os
import shutil

import numpy as np
import pytest

from bptt import kernels
from bptt.cli import main
from bptt.kernels.library import choose
from bptt.training.checkpoint import load_checkpoint, save_checkpoint
from bptt.training.trainer import TrainConfig, Trainer

from folders import files  # noqa: E402

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i * i % 97} times.\n" for i in range(12))
TINY = ["--hidden", "6", "--layers", "2", "--embedding", "4", "--k1", "4", "--batch", "2", "--valid-fraction", "0.2",
        "--steps", "4", "--no-progress"]


def make_run(folder, name, **changes):
    corpus = folder / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    settings = dict(corpus=str(corpus), hidden_size=6, num_layers=2, embedding_size=4, k1=4, batch_size=2,
                    valid_fraction=0.2, steps=5, log_every=1, eval_every=2, sample_every=100, checkpoint_every=100,
                    sample_length=5, valid_windows=1)
    trainer = Trainer.start(TrainConfig(**{**settings, **changes}), str(folder / name))
    list(trainer.run())
    return folder / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two finished runs of one corpus: "run" and "wider" (another hidden size)."""
    folder = tmp_path_factory.mktemp("runs")
    return make_run(folder, "run"), make_run(folder, "wider", hidden_size=7)


@pytest.fixture
def run(runs, tmp_path):
    """A copy of the finished run (and of its corpus) to spoil."""
    shutil.copy(runs[0].parent / "corpus.txt", tmp_path / "corpus.txt")
    copy = tmp_path / "run"
    shutil.copytree(runs[0], copy)
    corpus = str(tmp_path / "corpus.txt")  # the copy reads the copied corpus
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "corpus": corpus}))
    saved = load_checkpoint(copy / "checkpoint.npz")
    save_checkpoint(copy / "checkpoint.npz", {**saved, "config": {**saved["config"], "corpus": corpus}})
    return copy


def refused(capsys, tmp_path, argv, *words, status=2):
    """Run ``bptt argv`` in ``tmp_path``: exit ``status`` (2: refused), one line naming the
    problem, nothing changed."""
    before = files(tmp_path)
    assert main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert lines[0].startswith(f"bptt {argv[0]}: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert captured.out == ""
    assert files(tmp_path) == before
    return lines[0]


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a default run folder (runs/...) would appear


# the corpus


@pytest.mark.parametrize("content,words", [
    (b"", ["corpus", "is empty"]),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", ["is not UTF-8 text", "byte 0x89 at byte offset 0"]),
    (b"plain text\x00with a NUL", ["looks binary, not text", "NUL byte at byte offset 10"]),
    (b"abc def", ["the training part of the corpus has 6 tokens, fewer than one window needs",
                  "B=2 streams of k1 + 1 = 5 tokens = 10 tokens"]),
])
def test_a_bad_corpus_is_named(tmp_path, capsys, content, words):
    (tmp_path / "corpus.txt").write_bytes(content)
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY], *words)


def test_a_missing_corpus_is_named(tmp_path, capsys):
    refused(capsys, tmp_path, ["train", "--corpus", "nowhere.txt", *TINY, "--run-dir", "run"],
            "corpus not found: ", f"{tmp_path / 'nowhere.txt'} does not exist")


def test_a_corpus_too_short_for_validation_is_named(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY, "--valid-fraction", "0.01"],
            "the validation part of the corpus has", "fewer than one window needs")


def test_bad_settings_are_named(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY, "--k2", "2", "--hidden", "0"],
            "bad training settings", "hidden_size 0", "k2 2 (expected an integer >= k1 = 4)")


# the threads of the compiled passes


@pytest.fixture
def kernels_restored(monkeypatch):
    """The kernels and threads a verb selects are put back after the test."""
    for key in ("name", "library", "threads"):
        monkeypatch.setitem(kernels._selected, key, kernels._selected[key])
    monkeypatch.delenv("BPTT_THREADS", raising=False)


@pytest.mark.parametrize("verb", [["train", "--corpus", "corpus.txt", *TINY], ["task", "adding", "--steps", "2"]])
def test_threads_without_the_compiled_kernels_are_refused(verb, tmp_path, capsys, kernels_restored):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    kernels.use("reference")
    refused(capsys, tmp_path, [*verb, "--threads", "2"], "--threads sets the threads of the compiled passes",
            "give --kernels c")


@pytest.mark.skipif(choose() is None, reason="the compiled kernels were not built at install")
@pytest.mark.parametrize("option,variable,words", [
    (["--threads", "0"], None, "expected --threads to be a positive integer but got 0"),
    ([], "zero", "expected BPTT_THREADS to be a positive integer but got 'zero'"),
])
def test_a_bad_thread_count_is_refused(option, variable, words, tmp_path, capsys, kernels_restored, monkeypatch):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    if variable is not None:
        monkeypatch.setenv("BPTT_THREADS", variable)
        monkeypatch.setitem(kernels._selected, "threads", None)  # read from the environment again
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY, "--kernels", "c", *option], words)


@pytest.mark.skipif(choose() is None, reason="the compiled kernels were not built at install")
def test_training_runs_the_passes_on_threads_and_blas_on_one(tmp_path, capsys, kernels_restored, monkeypatch):
    """While the passes are threaded, BLAS runs on one thread (its spinning workers would take
    the cores from them), and gets its threads back after training."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")

    def blas_threads():
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    before, during, run = blas_threads(), [], Trainer.run
    if not before:
        pytest.skip("threadpoolctl finds no BLAS here")

    def watched(trainer):
        during.append(blas_threads())
        yield from run(trainer)

    monkeypatch.setattr(Trainer, "run", watched)
    assert main(["train", "--corpus", "corpus.txt", *TINY, "--kernels", "c", "--threads", "2"]) == 0
    assert "compiled passes on 2 threads, BLAS on 1" in capsys.readouterr().out
    assert kernels.threads() == 2
    assert during and all(threads == 1 for threads in during[0]), during
    assert blas_threads() == before


# the run folder


def test_an_existing_run_is_not_overwritten(run, tmp_path, capsys):
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY, "--run-dir", str(run)],
            f"{run} already holds a run", f"--resume {run}")


def test_a_run_that_crashed_before_its_first_checkpoint_is_not_overwritten(run, tmp_path, capsys):
    os.remove(run / "checkpoint.npz")
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY, "--run-dir", str(run)],
            "already holds a run (config.json, metrics.jsonl")


def test_a_run_folder_that_cannot_be_made_is_named(tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    (tmp_path / "taken").write_text("a file")
    refused(capsys, tmp_path, ["train", "--corpus", "corpus.txt", *TINY, "--run-dir", "taken/run"],
            "cannot make the run folder taken/run", status=4)  # the system refused: exit 4


# checkpoints


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def newer_format(path):
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["__meta__"]))
    arrays["__meta__"] = np.array(json.dumps({**meta, "format": meta["format"] + 1}))
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def params_of_another_shape(path):
    saved = load_checkpoint(path)
    params = {**saved["params"], "rnn.weight_hh_l1": np.zeros((24, 7), np.float32)}
    save_checkpoint(path, {**saved, "params": params})


def optimizer_state_of_another_shape(path):
    saved = load_checkpoint(path)
    exp_avg = {**saved["optimizer"]["exp_avg"], "head.bias": np.zeros(3, np.float32)}
    save_checkpoint(path, {**saved, "optimizer": {**saved["optimizer"], "exp_avg": exp_avg}})


def carry_of_another_shape(path):
    saved = load_checkpoint(path)
    save_checkpoint(path, {**saved, "carry": [np.zeros((2, 3, 6), np.float32)] * 2})


def not_a_training_run(path):
    save_checkpoint(path, {"params": load_checkpoint(path)["params"]})


SPOILED = [
    (truncate, ["checkpoint.npz is truncated or corrupt"]),
    (newer_format, ["checkpoint.npz has checkpoint format 2, newer than this bptt reads (1); upgrade bptt"]),
    (params_of_another_shape, ["checkpoint.npz does not fit its configuration",
                               "rnn.weight_hh_l1: expected (24, 6) but got"]),
    (optimizer_state_of_another_shape, ["checkpoint.npz does not fit its configuration", "exp_avg", "head.bias"]),
    (carry_of_another_shape, ["checkpoint.npz does not fit its configuration", "carried state"]),
    (not_a_training_run, ["checkpoint.npz does not hold a training run"]),
]


@pytest.mark.parametrize("spoil,words", SPOILED)
def test_resuming_a_spoiled_checkpoint_is_refused(run, tmp_path, capsys, spoil, words):
    spoil(run / "checkpoint.npz")
    refused(capsys, tmp_path, ["train", "--resume", str(run), "--steps", "8"], *words)


@pytest.mark.parametrize("spoil,words", [s for s in SPOILED if s[0] in (truncate, newer_format)] + [
    (params_of_another_shape, ["cannot load state_dict", "rnn.weight_hh_l1: expected (24, 6) but got"]),
    (not_a_training_run, ["'config'"]),
])
def test_sampling_a_spoiled_checkpoint_is_refused(run, tmp_path, capsys, spoil, words):
    spoil(run / "checkpoint.npz")
    refused(capsys, tmp_path, ["sample", str(run), "--length", "5"], f"cannot sample from {run}", *words)


def test_a_checkpoint_copied_from_another_run_is_refused(runs, run, tmp_path, capsys):
    shutil.copy(runs[1] / "checkpoint.npz", run / "checkpoint.npz")
    refused(capsys, tmp_path, ["train", "--resume", str(run)],
            f"{run}/checkpoint.npz is not from the run in {run}", "hidden_size 7 (config.json has 6)")


def test_resuming_a_folder_without_a_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    refused(capsys, tmp_path, ["train", "--resume", "empty"], "no checkpoint at empty/checkpoint.npz")
    refused(capsys, tmp_path, ["train", "--resume", "nowhere"], "no checkpoint at nowhere/checkpoint.npz")


# resuming with another configuration


@pytest.mark.parametrize("options,words", [
    (["--hidden", "16"], ["cannot resume", "different configuration: hidden_size 16 (the run has 6)",
                          "only checkpoint_every, eval_every, log_every, minutes"]),
    (["--cell", "gru", "--k1", "3"], ["cell 'gru' (the run has 'lstm')", "k1 3 (the run has 4)"]),
    (["--clip", "0"], ["clip None (the run has 1.0)"]),
    (["--run-dir", "elsewhere"], ["give either --resume RUN_DIR or --run-dir, not both"]),
])
def test_resuming_with_another_configuration_is_refused(run, tmp_path, capsys, options, words):
    refused(capsys, tmp_path, ["train", "--resume", str(run), *options], *words)


def test_resuming_a_cosine_run_with_other_steps_is_refused(runs, tmp_path, capsys):
    cosine = make_run(tmp_path, "cosine", schedule="cosine")
    refused(capsys, tmp_path, ["train", "--resume", str(cosine), "--steps", "9"],
            "steps 9 (the run has 5; its cosine schedule ends there)")


def test_resuming_on_another_text_is_refused(run, tmp_path, capsys):
    (tmp_path / "corpus.txt").write_text(TEXT.replace("fox", "cat"), encoding="utf-8")
    refused(capsys, tmp_path, ["train", "--resume", str(run)],
            f"cannot resume {run}: the corpus {tmp_path / 'corpus.txt'} is not the text the run was trained on")


def test_the_spoiled_run_still_resumes_when_set_right(run, tmp_path, capsys):
    """The refusals above change nothing: the same folder then resumes."""
    refused(capsys, tmp_path, ["train", "--resume", str(run), "--hidden", "16"], "hidden_size 16")
    assert main(["train", "--resume", str(run), "--steps", "7", "--no-progress"]) == 0
    assert load_checkpoint(run / "checkpoint.npz")["step"] == 7


# sampling


def test_a_prime_outside_the_vocabulary_is_named(run, tmp_path, capsys):
    refused(capsys, tmp_path, ["sample", str(run), "--prime", "fox Ω€", "--length", "5"],
            "the prime text has 2 character(s) that are not in the model's vocabulary", "'Ω', '€'")


def test_sampling_a_missing_run_is_refused(tmp_path, capsys):
    refused(capsys, tmp_path, ["sample", "nowhere"], "cannot sample from nowhere: no checkpoint at nowhere")


@pytest.mark.skipif(choose() is None, reason="the compiled kernels were not built at install")
def test_a_trainer_driven_from_python_holds_blas_to_one_thread_in_its_steps(tmp_path, kernels_restored, monkeypatch):
    """The policy lives in the library: a Trainer iterated from Python, with the passes on two
    threads, runs each step with BLAS on one, and leaves the user's BLAS (two threads here)
    alone between steps."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from bptt.training import trainer as trainer_module
    from bptt.training.trainer import TrainConfig

    def blas_threads():
        return [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("threadpoolctl finds no BLAS here")
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    global_norm, during = trainer_module.global_norm, []

    def watched(grads):  # called inside a step
        during.append(blas_threads())
        return global_norm(grads)

    monkeypatch.setattr(trainer_module, "global_norm", watched)
    kernels.use("c", threads=2)
    config = TrainConfig(corpus=str(tmp_path / "corpus.txt"), hidden_size=8, num_layers=1, embedding_size=4, k1=4,
                         batch_size=2, steps=2, eval_every=1000, sample_every=1000, checkpoint_every=1000)
    with threadpoolctl.threadpool_limits(2):  # the user's setting
        before = blas_threads()
        for _ in Trainer.start(config, str(tmp_path / "run")).run():
            assert blas_threads() == before  # between steps, the user's BLAS as it was
    assert max(before) == 2 and during and all(max(threads) == 1 for threads in during), during
