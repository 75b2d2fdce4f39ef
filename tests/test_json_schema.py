"""docs/json.md is what the verbs print. Every ``--json`` output, and the JSON files of a run
folder, is produced here and held to the page's tables both ways: every key it has is
documented with its type, every documented key is there (those marked "when" in the outputs
made to have them), and every ``--json`` output begins with ``"schema": 1``."""

import functools
import json
import pathlib
import sys

import numpy as np
import pytest

import bptt
from bptt import cli
from bptt.tools import bench

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "json.md"
TESTS = pathlib.Path(__file__).resolve().parent
TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "object": (dict,),
         "list": (list,), "null": (type(None),)}


def table(name):
    """``{path: (type text, when text)}`` of the table after ``<!-- schema: name -->``."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"<!-- schema: {name} -->") + 3  # the marker, the header, the rule
    rows = {}
    for line in lines[start:]:
        if not line.startswith("| `"):
            break
        key, kind, when = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows[key.strip("`")] = (kind, when)
    assert rows, name
    return rows


def type_fits(value, kind):
    """Whether ``value`` is of the documented type: "integer", "number or null", "list of strings"."""
    for alternative in kind.split(" or "):
        expected = TYPES[alternative.split()[0]]
        if isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected):
            return True
    return False


def found(document, rows, path=""):
    """``[(path, value)]`` of every key in ``document``, named as the table names it: a dict
    whose keys the table gives as ``<...>`` is a map of names, a list's items are ``path[]``."""
    pairs, prefix = [], f"{path}." if path else ""
    if isinstance(document, dict) and (not path or any(key.startswith(prefix) for key in rows)):
        names = [key for key in rows if key.startswith(prefix + "<") and "." not in key[len(prefix):]]
        for key, value in document.items():
            child = names[0] if names else prefix + key
            pairs.append((child, value))
            pairs += found(value, rows, child)
    elif isinstance(document, list) and any(key.startswith(path + "[]") for key in rows):
        for item in document:
            pairs.append((path + "[]", item))
            pairs += found(item, rows, path + "[]")
    return pairs


def fits(document, name, skip=()):
    """Hold ``document`` to the table ``name``: every key documented and of its type, every
    row without a "when" present wherever its parent is. Returns the paths found."""
    rows = {key: row for key, row in table(name).items() if key not in skip}
    pairs = found(document, rows)
    paths = {path for path, _ in pairs}
    undocumented = sorted(path for path in paths if path not in rows and not path.endswith("[]"))
    assert not undocumented, f"{name}: keys docs/json.md does not list: {undocumented}"
    for path, value in pairs:
        if path in rows:
            assert type_fits(value, rows[path][0]), f"{name}: {path} is {value!r}, not {rows[path][0]}"
    for key, (_, when) in rows.items():
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        if key.endswith("]") or when or (parent and parent not in paths):
            continue
        assert key in paths, f"{name}: {key}, documented as always there, is missing"
    return paths


def covered(name, paths, skip=()):
    """Every row of the table ``name`` appeared in at least one of the outputs made."""
    missing = sorted(set(table(name)) - set(paths) - set(skip))
    assert not missing, f"{name}: documented keys that no output had: {missing}"


def json_of(capsys, argv, status=0):
    assert cli.main(argv) == status
    out = capsys.readouterr().out
    document = json.loads(out)
    assert list(document)[:1] == ["schema"] and document["schema"] == cli.JSON_SCHEMA == 1, argv
    return document


def test_every_table_parses_and_names_known_types():
    for name in ("info", "task", "task seq2seq", "bench", "flow", "diagnosis", "config.json", "metrics step", "metrics valid"):
        for key, (kind, _) in table(name).items():
            assert all(alternative.split()[0] in TYPES for alternative in kind.split(" or ")), (name, key, kind)


def test_task(capsys):
    paths = set()
    for task in ("adding", "order"):
        document = json_of(capsys, ["task", task, "--length", "10", "--steps", "2", "--hidden", "4", "--batch", "2",
                                    "--no-progress", "--json"])
        assert (document["task"], document["steps"], document["hidden_size"]) == (task, 2, 4)
        paths |= fits(document, "task")
    covered("task", paths)


def test_info(capsys):
    paths = set()
    for argv in (["info", "--json"], ["info", "--json", "--kernels", "reference"]):
        document = json_of(capsys, argv)
        assert document["version"] == bptt.__version__ and document["kernels"] in ("reference", "c")
        paths |= fits(document, "info")
    covered("info", paths, skip=() if paths & {"built[]"} else ("built[]", "runnable[]"))


def test_task_seq2seq(capsys):
    paths = set()
    for task, size in (("reverse", "--length"), ("addition", "--digits")):
        document = json_of(capsys, ["task", task, size, "2", "--steps", "2", "--hidden", "4", "--batch", "2",
                                    "--embedding", "3", "--reverse-source", "--no-progress", "--json"])
        assert (document["task"], document["steps"], document["reverse_source"]) == (task, 2, True)
        paths |= fits(document, "task seq2seq")
    covered("task seq2seq", paths)


def test_bench(capsys, monkeypatch):
    pytest.importorskip("threadpoolctl")
    with_torch = bench.torch_importable()
    # the memory and sampling sections, small
    monkeypatch.setattr(bench, "cache_per_step", functools.partial(bench.cache_per_step, T=3, B=2, I=3, H=4))
    monkeypatch.setattr(bench, "peak_memory", functools.partial(bench.peak_memory, T=20, B=2, I=3, H=4))
    monkeypatch.setattr(bench, "sampling", functools.partial(bench.sampling, chars=3, hidden=4, vocab=5, repeat=1))
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # the unpinned peak, an ISA setting
    document = json_of(capsys, ["bench", "--cases", "lstm-f32-train-b1", "--repeat", "1", "--threads", "1",
                                "--pause", "0", "--max-load", "inf", "--peak-size", "64", "--quiet", "--json"])
    assert document["max_load"] is None  # inf is no number of strict JSON
    paths = fits(document, "bench")
    document = json_of(capsys, ["bench", "--cases", "rnn-f32-forward", "--repeat", "1", "--threads", "1", "--pause",
                                "0", "--vs", "none", "--peak-size", "64", "--quiet", "--no-memory", "--no-sampling",
                                "--json"])
    paths |= fits(document, "bench")
    torch_rows = [key for key, (_, when) in table("bench").items() if "with torch" in when]
    linux_rows = [key for key, (_, when) in table("bench").items() if when == "on Linux"]
    covered("bench", paths, skip=(() if with_torch else torch_rows)
            + (() if sys.platform.startswith("linux") else linux_rows))


def test_flow(capsys):
    document = json_of(capsys, ["flow", "--length", "4", "--hidden", "3", "--batch", "2", "--paths", "--json"])
    assert document["k"] == [0, 1, 2, 3] and "lstm (cell)" in document["curves"]
    covered("flow", fits(document, "flow"))


@pytest.fixture
def course_files(tmp_path):
    """P.npz, X.npz and G.npz of a course-style LSTM whose backward is truncated at depth 2."""
    from learners import lstm_backward_truncated, lstm_forward

    rng = np.random.default_rng(3)
    I, H, B, T = 3, 4, 2, 5
    params = {"Wy": rng.normal(size=(2, H)), "by": np.zeros((2, 1))}
    for gate in "fico":
        params["W" + gate] = rng.normal(0.0, 0.5, size=(H, H + I))
        params["b" + gate] = rng.normal(0.0, 0.5, size=(H, 1))
    inputs = {"x": rng.normal(size=(I, B, T)), "a0": rng.normal(0.0, 0.5, size=(H, B)),
              "c0": rng.normal(0.0, 0.5, size=(H, B)), "da": rng.normal(size=(H, B, T))}
    _, _, caches = lstm_forward(inputs["x"], inputs["a0"], params, inputs["c0"])
    np.savez(tmp_path / "P.npz", **params)
    np.savez(tmp_path / "X.npz", **inputs)
    np.savez(tmp_path / "G.npz", **lstm_backward_truncated(inputs["da"], caches, 2))
    return [f"--{role}={tmp_path / name}" for role, name in (("params", "P.npz"), ("inputs", "X.npz"),
                                                            ("grads", "G.npz"))]


def test_diagnose_and_check(capsys, tmp_path, course_files):
    document = json_of(capsys, ["diagnose", "--layout", "coursera-lstm", *course_files, "--json"], status=1)
    assert document["verdict"]["status"] == "truncated" and document["verdict"]["depth"] == 2
    paths = fits(document, "diagnosis")
    # a learner's file whose backward restarts its carried gradients every 3 steps, cell functions too
    solution = tmp_path / "solution.py"
    solution.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom learners_course import *\n"
                        "from learners_course import lstm_backward as course_backward\n\n\n"
                        "def lstm_backward(da, caches):\n    return course_backward(da, caches, window=3)\n")
    document = json_of(capsys, ["check", str(solution), "--layout", "coursera-lstm", "--json"], status=1)
    assert document["verdict"]["window"] == {"k1": 3, "k2": 3, "align": "end"}
    paths |= fits(document, "diagnosis")
    assert "cell" in document
    fits(document["cell"], "diagnosis", skip=("schema", "cell"))
    assert set(document["cell"]) == set(document) - {"schema", "cell"}
    covered("diagnosis", paths)


def test_the_run_folder(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"line {i}: the quick brown fox, {i * i % 97} times.\n" for i in range(40)),
                      encoding="utf-8")
    assert cli.main(["train", "--corpus", str(corpus), "--hidden", "4", "--layers", "1", "--embedding", "3", "--k1",
                     "4", "--batch", "2", "--valid-fraction", "0.2", "--steps", "3", "--log-every", "2",
                     "--eval-every", "2", "--no-progress", "--run-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    covered("config.json", fits(json.loads((tmp_path / "run" / "config.json").read_text()), "config.json"))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(line["kind"], line["step"]) for line in lines] == [("step", 2), ("valid", 2), ("valid", 3)]
    for kind in ("step", "valid"):
        paths = set()
        for line in lines:
            if line["kind"] == kind:
                paths |= fits(line, f"metrics {kind}")
        covered(f"metrics {kind}", paths)
