"""Every fault a clear line (issue 15): a folder that cannot be written, a full disk, a file size
limit, a missing folder for -o, SIGTERM, NumPy's warnings at a large learning rate. Each ends in
one line on stderr (two where NumPy's warnings are reported beside it), no traceback, the exit
status the CLI's docstring and the README list, the previous checkpoint and metrics whole, and
no temporary file left behind. The bad inputs of ``train`` and ``sample`` (an empty or
non-UTF-8 corpus, a corrupt or mismatched checkpoint) are in test_train_cli.py, a NaN during
training in test_trainer.py; the messages of a run that ends, here."""

import errno
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

import bptt
from bptt import cli
from bptt.cli import main
from bptt.training import checkpoint as checkpoint_module
from bptt.training.checkpoint import load_checkpoint

from folders import files  # noqa: E402

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i * i % 97} times.\n" for i in range(40))
TINY = ["--hidden", "6", "--layers", "1", "--embedding", "4", "--k1", "4", "--batch", "2", "--valid-fraction", "0.2",
        "--log-every", "1", "--eval-every", "2", "--sample-every", "2", "--no-progress"]
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")


def temporary_files(folder):
    return [name for name in files(folder) if "partial" in name]


def one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "Warning" not in err
    return lines[0]


def train(run, *options, steps=4):
    return main(["train", "--corpus", "corpus.txt", *TINY, "--steps", str(steps), "--run-dir", str(run), *options])


@pytest.fixture
def run(tmp_path, capsys):
    """A finished run of 4 steps with a checkpoint every 2."""
    assert train(tmp_path / "run", "--checkpoint-every", "2") == 0
    capsys.readouterr()
    return tmp_path / "run"


# exit statuses


def test_the_exit_statuses_are_listed_in_the_docstring_and_the_readme():
    statuses = {cli.DONE, cli.FOUND, cli.REFUSED, cli.DIVERGED, cli.SYSTEM, cli.INTERRUPTED, cli.BROKEN_PIPE,
                cli.TERMINATED}
    assert statuses == {0, 1, 2, 3, 4, 130, 141, 143}
    listed = {int(code) for code in re.findall(r"^    (\d+) ", cli.__doc__, flags=re.M)}
    assert listed == statuses
    text = README.read_text(encoding="utf-8")
    training = text[text.index("## Training"):]
    training = training[:training.index("\n## ", 1)]
    assert {int(code) for code in re.findall(r"^\| (\d+) \|", training, flags=re.M)} == statuses


def test_version():
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"bptt {bptt.__version__}\n"


# a folder that cannot be written


def read_only(monkeypatch, folder):
    """Writes under ``folder`` refused as on a read-only file system (EROFS): ``open`` for
    writing, ``os.open`` with a writing flag, and making folders in it."""
    folder = os.path.abspath(folder)
    real_open, real_os_open, real_mkdir = open, os.open, os.mkdir

    def inside(path):
        return os.path.abspath(os.fspath(path)).startswith(folder)

    def refuse(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))

    def fake_open(path, mode="r", *args, **kwargs):
        if isinstance(path, (str, os.PathLike)) and inside(path) and set(mode) & set("wax+"):
            refuse(path)
        return real_open(path, mode, *args, **kwargs)

    def fake_os_open(path, flags, *args, **kwargs):
        if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path)
        return real_os_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_resuming_in_a_read_only_folder_is_one_line_before_training(run, tmp_path, monkeypatch, capsys):
    before = files(tmp_path)
    read_only(monkeypatch, run)
    assert main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 4
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert line == (f"bptt train: cannot resume {run}: cannot write {run}: Read-only file system; its checkpoint "
                    f"(step 4) is kept")
    assert captured.out == ""
    monkeypatch.undo()
    assert files(tmp_path) == before


def test_a_run_folder_in_a_read_only_folder_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "locked").mkdir()
    before = files(tmp_path)
    read_only(monkeypatch, tmp_path / "locked")
    assert train("locked/runs/new") == 4
    line = one_line(capsys.readouterr().err)
    assert line.startswith("bptt train: cannot make the run folder locked/runs/new: Read-only file system")
    monkeypatch.undo()
    assert files(tmp_path) == before and os.listdir(tmp_path / "locked") == []


# a full disk


class FillingFile:
    """A file on a disk that fills up: its first write puts half the bytes down, then fails."""

    def __init__(self, handle, number):
        self._handle, self._number = handle, number

    def write(self, data):
        self._handle.write(data[:len(data) // 2])
        self._handle.flush()
        raise OSError(self._number, os.strerror(self._number))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._handle.close()


def fill_disk(monkeypatch, pattern, after=0, number=errno.ENOSPC):
    """Files opened for writing whose path matches ``pattern`` (a regex), from the
    ``after + 1``-th on, fill the disk as they are written."""
    real_open, seen = open, [0]

    def fake_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if isinstance(path, (str, os.PathLike)) and set(mode) & set("wax") and re.search(pattern, os.fspath(path)):
            seen[0] += 1
            if seen[0] > after:
                return FillingFile(handle, number)
        return handle

    monkeypatch.setattr("builtins.open", fake_open)


def checkpoints_written(monkeypatch):
    """The bytes of the checkpoint file after every save that went through."""
    real, written = checkpoint_module.save_checkpoint, []

    def save(path, tree):
        real(path, tree)
        written.append(pathlib.Path(path).read_bytes())

    monkeypatch.setattr("bptt.training.trainer.save_checkpoint", save)
    return written


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    written = checkpoints_written(monkeypatch)
    fill_disk(monkeypatch, r"\.checkpoint\.npz\.partial$", after=1)  # the second checkpoint fails
    assert train(run, "--checkpoint-every", "3", steps=9) == 4
    line = one_line(capsys.readouterr().err)
    assert line == (f"bptt train: cannot write {run}/checkpoint.npz: No space left on device; training stopped at "
                    f"step 6 and the last checkpoint, {run}/checkpoint.npz, is kept (step 3); go on with bptt train "
                    f"--resume {run} once it can be written")
    assert len(written) == 1 and (run / "checkpoint.npz").read_bytes() == written[0]
    assert temporary_files(tmp_path) == []
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(m["step"] for m in metrics) == 6
    monkeypatch.undo()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0  # once there is room, it goes on from 3
    assert load_checkpoint(run / "checkpoint.npz")["step"] == 9


@pytest.mark.parametrize("name", ["metrics.jsonl", "samples.txt"])
def test_a_full_disk_while_appending_leaves_the_file_as_it_was(name, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert train(run, "--checkpoint-every", "2", steps=2) == 0
    capsys.readouterr()
    before = files(tmp_path)
    fill_disk(monkeypatch, re.escape(name) + "$")
    assert main(["train", "--resume", str(run), "--steps", "4", "--no-progress"]) == 4
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"bptt train: cannot write {run}/{name}: No space left on device; training stopped at "
                           f"step {3 if name == 'metrics.jsonl' else 4} and the last checkpoint")
    monkeypatch.undo()
    after = files(tmp_path)
    assert after[f"run/{name}"] == before[f"run/{name}"]  # what did not fit was taken back
    metrics = "run/metrics.jsonl"
    assert after[metrics].startswith(before[metrics])  # only whole lines past the checkpoint, which a resume drops
    assert all(json.loads(line)["step"] > 2 for line in after[metrics][len(before[metrics]):].splitlines())
    assert {k: v for k, v in after.items() if k != metrics} == {k: v for k, v in before.items() if k != metrics}


def test_a_full_disk_while_drawing_the_plot_leaves_no_partial_image(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    fill_disk(monkeypatch, r"loss\.partial\.png$")
    assert train(run, "--checkpoint-every", "2") == 4
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"bptt train: cannot write {run}/loss.png: No space left on device; training stopped at "
                           f"step 2 and the last checkpoint, {run}/checkpoint.npz, is kept (step 2)")
    assert temporary_files(tmp_path) == []


def test_a_full_disk_at_the_start_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    before = files(tmp_path)
    fill_disk(monkeypatch, r"config\.json\.partial$")
    assert train("runs/new") == 4
    line = one_line(capsys.readouterr().err)
    assert line == "bptt train: cannot make the run folder runs/new: No space left on device"
    monkeypatch.undo()
    assert files(tmp_path) == before and not (tmp_path / "runs").exists()


def test_a_full_disk_while_resuming_a_crashed_run_changes_nothing(run, tmp_path, monkeypatch, capsys):
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"kind": "step", "step": 5, "lo')  # a crash after the checkpoint, mid-line
    before = files(tmp_path)
    fill_disk(monkeypatch, r"metrics\.jsonl\.partial$")
    assert main(["train", "--resume", str(run), "--steps", "8", "--no-progress"]) == 4
    line = one_line(capsys.readouterr().err)
    assert line == (f"bptt train: cannot resume {run}: cannot write {run}/metrics.jsonl: No space left on device; "
                    f"its checkpoint (step 4) is kept")
    monkeypatch.undo()
    assert files(tmp_path) == before


def test_a_file_size_limit_stops_the_run_with_one_line(tmp_path):
    """``ulimit -f``: the checkpoint is larger than the limit, the metrics are not."""
    resource = pytest.importorskip("resource")
    limit = 16 * 1024

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "bptt.cli", "train", "--corpus", "corpus.txt", *TINY, "--hidden",
                           "48", "--steps", "6", "--checkpoint-every", "3", "--run-dir", "run"],
                          preexec_fn=limited, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stderr
    line = one_line(done.stderr)
    assert line == ("bptt train: cannot write run/checkpoint.npz: File too large; training stopped at step 3 and "
                    "no checkpoint had been written yet")
    assert sorted(os.listdir(tmp_path / "run")) == ["config.json", "metrics.jsonl", "samples.txt"]
    assert [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()] == [
        1, 2, 2, 3]


# -o of any verb


@pytest.mark.parametrize("output,words", [("nowhere/flow.png", "the folder nowhere does not exist"),
                                          ("corpus.txt/flow.png", "corpus.txt is not a folder")])
def test_an_output_folder_that_is_not_there_is_one_line_before_any_work(output, words, tmp_path, capsys):
    before = files(tmp_path)
    assert main(["flow", "--length", "3", "-o", output]) == 4
    captured = capsys.readouterr()
    assert one_line(captured.err) == f"bptt flow: cannot write -o {output}: {words}"
    assert captured.out == "" and files(tmp_path) == before


# SIGTERM


def test_sigterm_saves_the_last_step_and_exits_143(tmp_path):
    run = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "bptt.cli", "train", "--corpus", "corpus.txt", *TINY,
                                "--steps", "1000000", "--checkpoint-every", "3", "--run-dir", "run"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.npz").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    line = one_line(err)
    step = int(re.fullmatch(r"bptt train: terminated \(SIGTERM\) at step (\d+): saved run/checkpoint\.npz; go on "
                            r"with bptt train --resume run", line).group(1))
    assert step >= 3 and load_checkpoint(run / "checkpoint.npz")["step"] == step
    assert temporary_files(tmp_path) == []


# NumPy's warnings at a large learning rate


@pytest.mark.filterwarnings("error")  # a RuntimeWarning of NumPy's would fail the test
def test_numpy_warnings_are_counted_and_reported_once(tmp_path, capsys):
    assert train(tmp_path / "run", "--hidden", "16", "--optimizer", "sgd", "--lr", "50", "--clip", "0", steps=12) == 0
    line = one_line(capsys.readouterr().err)
    assert re.fullmatch(r"bptt train: NumPy warned \d+ times of overflow \(first at step \d+\): a sign of weights "
                        r"grown large; a smaller --lr may help", line), line


@pytest.mark.filterwarnings("error")
def test_numpy_warnings_of_a_task_are_counted_and_reported_once(capsys):
    # the NumPy kernels: the compiled ones overflow in C, where NumPy has nothing to warn of
    assert main(["task", "adding", "--length", "10", "--steps", "40", "--hidden", "8", "--lr", "30",
                 "--no-progress", "--eval-every", "0", "--kernels", "reference"]) == 0
    line = one_line(capsys.readouterr().err)
    assert line.startswith("bptt task: NumPy warned ") and "of overflow (first at step" in line


# what a run says and writes when it ends


def test_the_final_validation_is_in_the_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, "--eval-every", "3", steps=5) == 0
    out = capsys.readouterr().out
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if m["kind"] == "valid"] == [3, 5]
    assert f"reached 5 steps; validation {lines[-1]['valid_bpc']:.3f} bits per character" in out


def test_a_resume_says_steps_count_from_the_start(run, tmp_path, capsys):
    before = files(tmp_path)
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line == (f"bptt train: {run} has done 4 steps already, as many as --steps 3 asks for: --steps counts the "
                    f"run's steps in all, from its start, not from the resume; give --steps 7 for 3 more, or --minutes")
    assert files(tmp_path) == before
    assert main(["train", "--resume", str(run), "--steps", "7", "--no-progress"]) == 0
    assert ("reached step 7, the run's total that --steps 7 asks for (3 steps after resuming at step 4); validation"
            in capsys.readouterr().out)


def test_minutes_have_a_progress_bar_and_say_what_happened(tmp_path, capsys):
    pytest.importorskip("tqdm")
    options = [option for option in TINY if option != "--no-progress"]
    assert main(["train", "--corpus", "corpus.txt", *options, "--minutes", "0.005", "--run-dir", "run"]) == 0
    captured = capsys.readouterr()
    assert re.search(r"training for 0\.005 minutes: 100%\|", captured.err), captured.err  # a total: a percentage
    assert re.search(r"stopped after 0\.005 minutes \(--minutes 0\.005\) at step \d+; validation", captured.out)


def test_one_minute_is_singular():
    from bptt.training.trainer import _minutes_reason

    assert _minutes_reason(1, 40, 0) == "stopped after 1 minute (--minutes 1) at step 40"
    assert _minutes_reason(2.5, 70, 40) == ("stopped after 2.5 minutes (--minutes 2.5) at step 70, 30 steps after "
                                            "resuming at step 40")


# sampling


def test_sample_accepts_a_temperature_of_0_and_refuses_negatives(run, capsys):
    assert main(["sample", str(run), "--temperature", "0", "--length", "5", "--prime", "the"]) == 0
    assert capsys.readouterr().out.startswith("the")
    assert main(["sample", str(run), "--temperature", "-0.5"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and one_line(captured.err) == (
        "bptt sample: expected --temperature >= 0 (0 picks the most likely character) but got -0.5")


# bad inputs of a resume beyond those of test_train_cli.py


def test_a_config_json_that_is_not_json_is_refused(run, tmp_path, capsys):
    (run / "config.json").write_text("{not json")
    before = files(tmp_path)
    assert main(["train", "--resume", str(run), "--steps", "6"]) == 2
    assert one_line(capsys.readouterr().err).startswith(f"bptt train: cannot read {run}/config.json: ")
    assert files(tmp_path) == before


def test_metrics_that_are_not_utf8_do_not_stop_a_resume(run, capsys):
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"kind": "step", "step": 5, "loss": \xff\xfe')  # cut short by a crash, mid-character
    assert main(["train", "--resume", str(run), "--steps", "6", "--no-progress"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6


def test_info_says_what_runs(capsys):
    from bptt import cli, kernels

    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bptt ") and out[1].startswith("kernels: ")
    assert "compiled kernels built at install:" in out[2]
    assert out[3].startswith(f"threads of the compiled passes: {kernels.threads()}, of ")
