"""The README's speed table quotes the run that docs/performance.md shows
(docs/performance.json, written by scripts/write_performance.py): each ratio is that run's
median ratio bptt/torch of its case, to two decimals."""

import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the README's columns, in order, and the benchmark case each quotes
COLUMNS = ["rnn-f32-train", "gru-f32-train", "lstm-f32-train", "rnn-f64-train", "gru-f64-train", "lstm-f64-train",
           "lstm-f32-train-b1", "lstm-f32-inference", "lstm-f32-train-big"]


def _readme_ratios():
    lines = (ROOT / "README.md").read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| RNN f32 | GRU f32 | LSTM f32 |"))
    return [float(cell) for cell in lines[header + 2].strip("|").split("|")]


def test_the_readme_speed_table_is_the_documented_run():
    reports = json.loads((ROOT / "docs" / "performance.json").read_text())
    cases = {case["name"]: case for case in reports["c"]["cases"]}
    assert _readme_ratios() == [round(cases[name]["ratio"], 2) for name in COLUMNS]
