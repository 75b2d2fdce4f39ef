"""Run the benchmark and write docs/performance.md: the machine, the method, the table.

    python scripts/write_performance.py                     # every case, the compiled backend
    python scripts/write_performance.py --repeat 15 --json docs/performance.json
    python scripts/write_performance.py --cases 'lstm-*' --kernels c   # a part, for a quick look
    python scripts/write_performance.py --from-json docs/performance.json   # no new run

Each implementation asked for (``c``, the compiled backend and the default, and with
``--kernels reference,c`` the readable reference too) gets its own run and table.
The tables are whatever this machine measured in this run; the section on levers is history,
kept in scripts/performance_levers.md so that a rerun does not lose it.
"""

import argparse
import datetime
import json
import pathlib
import sys

from bptt import kernels
from bptt.tools import bench

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "performance.md"

METHOD = """\
## Method

`bptt bench --vs torch` (the module `bptt.bench`) times bptt and PyTorch in one process:

- Both libraries get the same number of threads: `threadpoolctl.threadpool_limits(n)` for
  NumPy's BLAS, `torch.set_num_threads(n)`.
- Every case is warmed up (two runs each). Then each repetition, for each library in turn (the
  order alternates between repetitions): sleep {pause} s, one untimed run, one timed run. The
  pause matters on a small machine: after a GEMM, OpenBLAS's and torch's worker threads keep
  spinning for a while and steal the cores from the other library; timed back to back, torch
  looked 2x slower than it is.
- A run during which other processes used more than {quiet:.0%} of a core (read from
  `/proc/stat`, minus this process's own CPU time) is taken again, up to 8 times; such runs kept
  anyway are counted in the last column.
- We report the medians, the median of the per-repetition ratios bptt/torch (`ratio`) and the
  ratio of the medians (`r(med)`). A target counts as met only when both are at or under it.
- GFLOP/s count the matrix products only (`2·T·B·K·H·(I+H)` for a forward pass, three times
  that for forward plus backward); the gate arithmetic is not counted. `peak` is that rate as a
  fraction of this machine's GEMM peak, a 2048 x 2048 product measured in the same run (best of
  5, at the start and at the end).
- Modes: `forward` keeps what backward needs (torch: autograd on); `train` is forward plus
  backward of the whole sequence with gradients of the input and of every parameter (torch:
  `y.backward(dy)`, gradients set to None before each run); `inference` keeps no cache (bptt:
  `forward(..., keep_cache=False)`; torch: `inference_mode`). torch's float32 LSTM and GRU use
  oneDNN's fused RNN kernels, which is what a user gets by default.
"""


def table(report):
    rows = ["| case | mode | T | B | I | H | bptt ms | torch ms | ratio | r(med) | bptt GFLOP/s (peak) "
            "| torch GFLOP/s (peak) | target | noisy |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["cases"]:
        target = ""
        if r.get("target") is not None:
            target = f"<= {r['target']:.1f} " + ("met" if r.get("target_met") else "**missed**")
        torch_cols = ("", "", "", "", "")
        if "torch_ms" in r:
            torch_cols = (f"{r['torch_ms']:.2f}", f"{r['ratio']:.2f}", f"{r['ratio_of_medians']:.2f}",
                          f"{r['torch_gflops']:.0f} ({100 * r['torch_peak_fraction']:.0f}%)", target)
        rows.append(
            f"| {r['name']} | {r['mode']} | {r['T']} | {r['B']} | {r['I']} | {r['H']} | {r['bptt_ms']:.2f} "
            f"| {torch_cols[0]} | {torch_cols[1]} | {torch_cols[2]} "
            f"| {r['bptt_gflops']:.0f} ({100 * r['bptt_peak_fraction']:.0f}%) | {torch_cols[3]} | {torch_cols[4]} "
            f"| {r.get('noisy_runs', 0)} |"
        )
    return "\n".join(rows)


def memory(report):
    if "cache_per_step" not in report:
        return ""
    lines = ["## Memory", "",
             "Cache per step (float32, B=32, I=128, H=256): everything the cache of one layer holds, "
             "the copy of `x` included, the weights not.", "",
             "| cell | KiB per step | numbers per hidden unit and sequence |", "|---|---|---|"]
    for c in report["cache_per_step"]:
        lines.append(f"| {c['cell']} | {c['bytes_per_step'] / 1024:.1f} | {c['numbers_per_unit']:.2f} |")
    p = report["peak_memory"]
    lines += ["",
              f"Peak memory that NumPy allocated (tracemalloc) for a {p['cell'].upper()} with T={p['T']}, "
              f"B={p['B']}, I={p['I']}, H={p['H']}, {p['dtype']}, the input excluded:", "",
              "| pass | peak MiB |", "|---|---|",
              f"| inference (`keep_cache=False`) | {p['inference_bytes'] / 2**20:.1f} |",
              f"| forward, keeping the cache | {p['forward_bytes'] / 2**20:.1f} |",
              f"| forward and backward | {p['train_bytes'] / 2**20:.1f} |", ""]
    return "\n".join(lines)


KERNELS = {"reference": "the readable reference (`--kernels reference`)", "c": "the compiled backend (the default)"}


def sampling(reports):
    lines = [sampling_line(name, report) for name, report in reports.items() if "sampling" in report]
    return "## Sampling\n\n" + "\n\n".join(lines) + "\n" if lines else ""


def sampling_line(name, report):
    s = report["sampling"]
    line = (f"{KERNELS[name]}: a {s['layers']}-layer, {s['hidden']}-unit LSTM character model (V={s['vocab']}, one-hot input, "
            f"linear head, softmax sampling), one character per call at B=1, {s['chars']} characters: "
            f"bptt **{s['bptt_chars_per_s']:.0f} chars/s**")
    if "torch_chars_per_s" in s:
        line += (f"; torch (nn.LSTM + nn.Linear, inference_mode, multinomial) "
                 f"**{s['torch_chars_per_s']:.0f} chars/s** by default (time ratio bptt/torch "
                 f"{s['ratio_torch']:.2f}) and **{s['torch_no_onednn_chars_per_s']:.0f} chars/s** with oneDNN "
                 f"off (ratio {s['ratio_torch_no_onednn']:.2f}): oneDNN's LSTM reorders its weights on "
                 f"every call, which dominates one step at a time")
    return line + "."


def machine(report):
    m = report["machine"]
    return "\n".join([
        "## Machine",
        "",
        f"- CPU: {m.get('cpu')} (family/model {m.get('cpu_family_model', '?')}), {m.get('cores')} cores, "
        f"{m.get('simd', '')}",
        f"- Python {m['python']}, NumPy {m['numpy']}, BLAS {m.get('blas')}",
        f"- torch {m.get('torch')} (oneDNN available: {m.get('torch_onednn')}; CPU capability "
        f"{m.get('torch_cpu_capability', '?')})",
        f"- vector instructions chosen by the environment: "
        + (", ".join(f"`{k}={v}`" for k, v in m.get("isa_settings", {}).items()) or "none"),
        f"- threads {report['threads']}, repetitions {report['repeat']}; GEMM peak "
        f"{report['gemm_peak_gflops']['f32']:.0f} GFLOP/s float32, {report['gemm_peak_gflops']['f64']:.0f} "
        f"float64",
        "",
    ])


LEVERS_FILE = pathlib.Path(__file__).resolve().with_name("performance_levers.md")


def document(reports, note, date):
    """The page, from one report per implementation (``{"c": report}``, ``{"reference": ..., "c": ...}``),
    measured on ``date`` (ISO)."""
    first = next(iter(reports.values()))
    parts = [
        "# Performance",
        "",
        "bptt against PyTorch on the CPU, measured by `python scripts/write_performance.py` "
        f"({date}). Regenerate it on your machine; the numbers below are this machine's only.",
        "",
    ]
    if note:
        parts += [note, ""]
    parts.append(machine(first))
    for name, report in reports.items():
        parts += [f"## Results: {KERNELS[name]}", "", table(report), ""]
    parts += ["`ratio`: median of the per-repetition ratios bptt/torch; `r(med)`: ratio of the medians; "
              "`noisy`: runs kept although other processes were busy. Each table comes from its own run, "
              "with its own torch column.", ""]
    parts += [memory(report) for report in reports.values() if "cache_per_step" in report][:1]
    parts += [sampling(reports), METHOD.format(pause=first["pause_s"], quiet=first.get("max_load", first.get("quiet")))]
    if LEVERS_FILE.exists():
        parts.append(LEVERS_FILE.read_text())
    return "\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", help="comma-separated names or patterns (default: all)")
    parser.add_argument("--json", metavar="PATH", help="also write the raw report here")
    parser.add_argument("--note", default="", help="a paragraph to put under the title (e.g. the load)")
    parser.add_argument("--from-json", metavar="PATH", help="write the doc from a saved report instead of running")
    parser.add_argument("--kernels", default="c", help="comma-separated implementations to run (default c)")
    parser.add_argument("-o", "--output", default=str(DOC))
    parser.add_argument("--date", default=datetime.date.today().isoformat(),
                        help="the day of the run, for --from-json (default today)")
    args = parser.parse_args(argv)
    if args.from_json:
        reports = json.loads(pathlib.Path(args.from_json).read_text())
        if "cases" in reports:  # one report, not one per implementation
            reports = {reports.get("kernels", "c"): reports}
    else:
        patterns = args.cases.split(",") if args.cases else None
        reports = {}
        for number, name in enumerate(k.strip() for k in args.kernels.split(",")):
            kernels.use(name)
            print(f"kernels: {name}\n" + bench.table_header(True), file=sys.stderr)
            reports[name] = bench.run(bench.select_cases(patterns), threads=args.threads, repeat=args.repeat,
                                      memory=number == 0,
                                      progress=lambda row: print(bench.format_row(row), file=sys.stderr, flush=True))
    pathlib.Path(args.output).write_text(document(reports, args.note, args.date))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(reports, indent=1))
    for report in reports.values():
        print(bench.format_report(report))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
