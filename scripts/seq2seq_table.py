"""Train the encoder–decoder on the reverse and addition tasks with the runner's defaults (LSTM
and GRU, each with the source as written and reversed), score each on held-out data, measure
how far each target step's gradient reaches into the source, and write both into
docs/seq2seq.md between the seq2seq-table and seq2seq-flow markers (the table into README.md
too).

    OMP_NUM_THREADS=1 python scripts/seq2seq_table.py           # about five minutes
    OMP_NUM_THREADS=1 python scripts/seq2seq_table.py --print   # print only, docs/seq2seq.md untouched

(BLAS on one thread, as ``bptt task`` trains and as the table in the docs was measured.)
"""

import argparse
import datetime
import inspect
import pathlib
import sys
import textwrap

import numpy as np
from adding_table import machine  # the scripts' folder is the first on the path of a script run

from bptt.proofs.flow import source_reach
from bptt.training import seq2seq_tasks as tasks
from bptt.training.seq2seq_runner import DEFAULTS, SIZE_NAMES, build_model, run_seq2seq_task, train_seq2seq_task

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "seq2seq.md"
README = pathlib.Path(__file__).resolve().parents[1] / "README.md"  # holds the table too
TABLE_MARKERS = ("<!-- seq2seq-table -->", "<!-- /seq2seq-table -->")
FLOW_MARKERS = ("<!-- seq2seq-flow -->", "<!-- /seq2seq-flow -->")
TASKS = ("reverse", "addition")
CELLS = {"lstm": "LSTM", "gru": "GRU"}
ORDERS = {False: "as written", True: "reversed"}
FLOW_LENGTH = DEFAULTS["reverse"]["length"]  # the flow's strings: all of the longest length trained on
FLOW_BATCH, FLOW_SEED = 200, 0


def settings():
    """The runner's defaults, read from its signature, so that the note says what ran."""
    parameters = inspect.signature(train_seq2seq_task).parameters
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def table(results):
    """The Markdown of the accuracy table and the note under it."""
    lines = ["| task | cell | source | steps | wall time | exact match | baseline |",
             "|------|------|--------|------:|----------:|------------:|---------:|"]
    for r in results:
        size = f"{r.length} digits" if r.task == "reverse" else f"{r.digits}-digit operands"
        lines.append(f"| {r.task} (1–{size}) | {CELLS[r.cell]} | {ORDERS[r.reverse_source]} | {r.steps:,} "
                     f"| {r.wall_seconds:.0f} s | {r.accuracy:.1%} | {r.baseline_accuracy:.1%} |")
    s = settings()
    note = (f"One-layer encoder and decoder of {s['hidden_size']} units, embeddings of {s['embedding_size']}, "
            f"the direct bridge; batches of {s['batch_size']} fresh sequences per step, Adam at {s['lr']:g} with "
            f"{s['warmup_steps']} warm-up steps and a cosine decay, gradients clipped to global norm {s['clip']:g}, "
            f"float32, seed {s['seed']}. Exact match of greedy decoding (end token included) on "
            f"{s['test_size']:,} held-out sequences, the same strings for both source orders; the baseline is the "
            f"task's trivial answer on those sequences (reverse: copy the source; addition: always \"9\"). Wall "
            f"time includes the scoring; measured {datetime.date.today().isoformat()} on {machine()}, shared with "
            "other jobs, so times are indicative.")
    return "\n".join(lines + ["", paragraph(note)])


def reach(model, reverse_source):
    """:func:`source_reach` of ``model`` on the flow batch: (9, 8), rows the target steps (the
    last the end token), columns the source tokens as written."""
    batch = tasks.reverse_task(np.random.default_rng(FLOW_SEED), FLOW_BATCH, FLOW_LENGTH, min_length=FLOW_LENGTH,
                               reverse_source=reverse_source)
    return source_reach(model, batch.source, batch.source_lengths, batch.target, batch.target_lengths,
                        source_reversed=reverse_source)


def paragraph(text):
    """``text`` wrapped as the docs' prose is."""
    return textwrap.fill(text, width=96)


def matrix(values):
    """A (target step, source token) matrix of norms as a Markdown table."""
    J, S = values.shape
    lines = ["| ℓ_j \\ e_s | " + " | ".join(f"s={s}" for s in range(S)) + " |",
             "|---|" + "---:|" * S]
    for j in range(J):
        step = f"j={j}" if j < J - 1 else f"j={j} (end)"
        lines.append(f"| {step} | " + " | ".join(f"{v:.1e}" for v in values[j]) + " |")
    return "\n".join(lines)


def flow(trained):
    """The Markdown of the flow section: the fresh GRU's matrices, then, per target step, the
    reach to the token it copies relative to the step's largest reach, fresh and trained.

    ``trained``: dict (cell, reverse_source) -> the reverse task's result with those settings."""
    fresh = {(cell, order): reach(build_model(cell, dtype=np.float64), order) for cell in CELLS for order in ORDERS}
    learnt = {}
    for (cell, order), result in trained.items():
        model = build_model(cell)
        model.load_state_dict(result.params)
        learnt[cell, order] = reach(model, order)
    S = FLOW_LENGTH
    copied = S - 1 - np.arange(S)  # target step j copies source token S-1-j
    columns = [(kind, cell, order) for kind in ("fresh", "trained") for cell in CELLS for order in ORDERS]
    lines = ["| j (copies s) | " + " | ".join(f"{kind} {CELLS[cell]}, {ORDERS[order]}"
                                              for kind, cell, order in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for j in range(S):
        row = []
        for kind, cell, order in columns:
            values = (fresh if kind == "fresh" else learnt)[cell, order][j]
            row.append(f"{values[copied[j]] / values.max():.2g}")
        lines.append(f"| {j} (s={copied[j]}) | " + " | ".join(row) + " |")
    gru = fresh["gru", False], fresh["gru", True]
    return "\n\n".join([
        paragraph(f"A fresh GRU (`build_model(\"gru\", dtype=np.float64)`, seed 0), {FLOW_BATCH} strings of {S} "
                  "digits, the source **as written**: `source_reach(...)`, entry [j, s] = mean ‖∂ℓ_j/∂e_s‖."),
        matrix(gru[0]),
        paragraph("The same model and strings, the source fed **reversed** (`reverse_source=True`; the columns "
                  "still the tokens as written, `source_reversed=True`):"),
        matrix(gru[1]),
        paragraph(f"The gradient of ℓ_j at the token that step j copies (s = {S - 1} − j) over ℓ_j's largest "
                  "entry (1: no source token gets more), for fresh models and for the models trained on the reverse "
                  "task in the table above:"),
        "\n".join(lines),
    ])


def write_block(text, markers, document):
    """``document`` with what lies between ``markers`` replaced by ``text``."""
    begin, end = markers
    if document.count(begin) != 1 or document.count(end) != 1 or document.index(begin) > document.index(end):
        sys.exit(f"expected one {begin} and, after it, one {end} in {DOC}")
    head, rest = document.split(begin)
    tail = rest.split(end)[1]
    return f"{head}{begin}\n{text}\n{end}{tail}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--print", action="store_true", help="print the blocks, do not write docs/seq2seq.md")
    args = parser.parse_args()
    results, trained = [], {}
    for task in TASKS:
        for cell in CELLS:
            for order in ORDERS:
                result = run_seq2seq_task(task, cell, reverse_source=order)
                size = getattr(result, SIZE_NAMES[task])
                print(f"{task} {SIZE_NAMES[task]}={size} {cell} {ORDERS[order]}: exact match {result.accuracy:.1%} "
                      f"(baseline {result.baseline_accuracy:.1%}) after {result.steps} steps, "
                      f"{result.wall_seconds:.0f} s", file=sys.stderr)
                results.append(result)
                if task == "reverse":
                    trained[cell, order] = result
    blocks = table(results), flow(trained)
    if args.print:
        print("\n\n".join(blocks))
    else:
        document = DOC.read_text()
        for text, markers in zip(blocks, (TABLE_MARKERS, FLOW_MARKERS)):
            document = write_block(text, markers, document)
        DOC.write_text(document)
        README.write_text(write_block(blocks[0], TABLE_MARKERS, README.read_text()))
        print(f"wrote the table and the flow into {DOC}, the table into {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
