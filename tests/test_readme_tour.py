"""A tour of every `bptt` command the README shows, run as written but made small: the sizes,
steps and minutes that would take minutes are scaled down, the files a command reads are made
first, and the paths it names point into a temporary folder. Each must exit as documented
(0 for a run, or 0 for a check that passes), so that the README cannot show a command that
fails. (`make demo` and `make test` are CI's own commands.)"""

import json
import pathlib
import re
import shlex

import numpy as np
import pytest

from bptt import cli

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# per verb, the flags whose values are scaled down, and the flags (with their values) added to
# keep it short where the command does not give them
SMALL = {
    "gradcheck": ({}, [("--entries", "1")]),
    "flow": ({"--length": "12"}, [("--hidden", "8"), ("--batch", "2")]),
    "train": ({"--hidden": "8", "--k1": "4", "--k2": "6", "--batch": "2", "--steps": "2"},
              [("--no-progress",), ("--valid-fraction", "0.2"), ("--log-every", "1"), ("--hidden", "8"),
               ("--batch", "2"), ("--k1", "4")]),
    "sample": ({"--length": "20"}, []),
    "bench": ({}, [("--cases", "lstm-f32-train-b1"), ("--repeat", "1"), ("--pause", "0"), ("--max-load", "inf"),
                   ("--no-memory",), ("--no-sampling",), ("--peak-size", "64"), ("--quiet",)]),
    "check": ({}, []),
    "diagnose": ({}, []),
    "info": ({}, []),
}


def readme_commands():
    """Every `bptt ...` line of the README's shell blocks, without its comment, `[--json]`
    expanded to a run with it."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line.startswith("bptt "):
                continue
            if "[--json]" in line:
                commands.append(line.replace(" [--json]", ""))
                commands.append(line.replace("[--json]", "--json"))
            else:
                commands.append(line)
    return commands


def test_the_tour_sees_every_verb_the_readme_shows():
    verbs = {shlex.split(command)[1] for command in readme_commands()}
    assert verbs == {"check", "diagnose", "gradcheck", "flow", "train", "sample", "bench", "info"}
    assert set(verbs) <= set(SMALL)


def _small(argv, steps="2"):
    """``argv`` (without "bptt") with its large values scaled down (``--minutes`` becomes
    ``--steps steps``) and the short flags added."""
    scaled, added = SMALL[argv[0]]
    scaled = {**scaled, "--steps": steps} if "--steps" in scaled else scaled
    out, words = [], iter(argv)
    for word in words:
        if word == "--minutes":  # a time limit becomes a count of steps
            next(words)
            out += ["--steps", steps]
            continue
        out.append(word)
        if word in scaled:
            next(words, None)
            out.append(scaled[word])
    for flag, *value in added:
        if flag not in out:
            out += [flag, *value]
    return out


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """A folder with what the README's commands read: a corpus, a learner's solution file, and
    the three .npz files of a diagnosis."""
    import sys

    folder = tmp_path_factory.mktemp("tour")
    (folder / "my_text.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40)
    tests = pathlib.Path(__file__).parent
    (folder / "my_solution.py").write_text((tests / "learners_course.py").read_text())
    sys.path.insert(0, str(tests))
    from learners_course import lstm_backward, lstm_forward

    rng = np.random.default_rng(0)
    params = {}
    for gate in "fico":
        params["W" + gate] = rng.normal(0, 0.5, (4, 7))
        params["b" + gate] = rng.normal(0, 0.5, (4, 1))
    params.update(Wy=rng.normal(size=(2, 4)), by=np.zeros((2, 1)))
    inputs = {"x": rng.normal(size=(3, 2, 5)), "a0": rng.normal(size=(4, 2)), "da": rng.normal(size=(4, 2, 5))}
    _, _, _, caches = lstm_forward(inputs["x"], inputs["a0"], params)
    grads = lstm_backward(inputs["da"], caches)
    for name, arrays in (("P", params), ("X", inputs), ("G", grads)):
        np.savez(folder / f"{name}.npz", **arrays)
    return folder


@pytest.mark.parametrize("command", readme_commands())
def test_the_readme_command_runs(command, place, monkeypatch, capsys):
    argv = shlex.split(command)[1:]
    if argv[0] == "bench":
        pytest.importorskip("torch")
    monkeypatch.chdir(place)
    steps = "2"
    if argv[0] == "sample" or "--resume" in argv:  # the README's run folder: one the tour trains first
        run = place / "runs" / "tour"
        if not (run / "checkpoint.npz").exists():
            assert cli.main(_small(["train", "--run-dir", str(run), "--steps", "2"])) == 0
        argv = [str(run) if word.startswith("runs/") else word for word in argv]
        steps = "4"  # a resume goes on past the run's 2 steps
    elif argv[0] == "train":
        argv += ["--run-dir", str(place / "runs" / f"train-{readme_commands().index(command)}")]
    argv = [str(place / word) if word.endswith(".png") else word for word in argv]
    status = cli.main(_small(argv, steps))
    out = capsys.readouterr().out
    assert status == 0, f"{command}: exit {status}\n{out}"
    if "--json" in argv:
        assert json.loads(out)["schema"] == 1
