"""Train an LSTM, a GRU and a vanilla RNN on the adding problem at T = 100 with the same budget,
and write their test MSE beside the baseline into README.md, between the adding-table markers.

    python scripts/adding_table.py           # a few minutes on two cores
    python scripts/adding_table.py --print   # print the table only, README.md untouched
"""

import argparse
import datetime
import os
import pathlib
import sys
import textwrap

import numpy as np

from bptt.training.task_runner import held_out_set, run_task

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- adding-table -->", "<!-- /adding-table -->"
CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN (tanh)"}
SETTINGS = dict(length=100, steps=3000, hidden_size=64, batch_size=32, lr=1e-2, warmup_steps=100, clip=1.0,
                gate_bias=3.0, seed=0, test_size=10_000, test_seed=0)


def machine():
    """The CPU's model name (from /proc/cpuinfo, where there is one) and the number of cores."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"


def table(results):
    """The Markdown of the table and the note under it."""
    test = held_out_set("adding", SETTINGS["length"], SETTINGS["test_size"], SETTINGS["test_seed"])
    memoryless = float(np.mean((test.targets - 1) ** 2))  # the baseline's prediction, on this very test set
    lines = ["| cell | steps | wall time | test MSE | baseline MSE | solved (< baseline / 10) |",
             "|------|------:|----------:|---------:|-------------:|:-------------------------|"]
    for result in results:
        lines.append(f"| {CELLS[result.cell]} | {result.steps:,} | {result.wall_seconds:.0f} s "
                     f"| {result.value:.5f} | {result.baseline:.3f} | {'yes' if result.solved else 'no'} |")
    note = ("T = {length}, hidden {hidden_size}, batch {batch_size} fresh sequences per step, Adam at {lr:g} "
            "with {warmup_steps} warm-up steps and a cosine decay, gradients clipped to global norm {clip:g}, "
            "{gate_bias:+g} on the bias of LSTM's forget and GRU's update gate, float32, seed {seed}. Test MSE on "
            "{test_size:,} held-out sequences, on which always predicting 1 scores {memoryless:.4f}. Wall time "
            "includes that evaluation; measured {date} on {machine}, shared with other jobs, so times are "
            "indicative.").format(**SETTINGS, memoryless=memoryless, date=datetime.date.today().isoformat(),
                                  machine=machine())
    return "\n".join(lines + ["", textwrap.fill(note, width=96)])


def write_readme(text):
    """Replace what lies between the markers in README.md with ``text``."""
    readme = README.read_text()
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        sys.exit(f"expected one {BEGIN} and, after it, one {END} in {README}")
    head, rest = readme.split(BEGIN)
    tail = rest.split(END)[1]
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the table, do not write README.md")
    args = parser.parse_args()
    results = []
    for cell in CELLS:
        result = run_task("adding", cell, **SETTINGS)
        print(f"{cell}: test MSE {result.value:.5f} after {result.steps} steps, {result.wall_seconds:.0f} s",
              file=sys.stderr)
        results.append(result)
    text = table(results)
    if args.print:
        print(text)
    else:
        write_readme(text)
        print(f"wrote the table into {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
