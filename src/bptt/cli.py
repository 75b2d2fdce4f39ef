"""The ``bptt`` command. Thin: every verb parses its arguments, calls the library, and prints.

Each verb is a pair: ``_add_<verb>(subparsers)`` declares its arguments and ``_run_<verb>(args)``
does the work and returns the exit status. Errors a user can cause are reported as one line on
stderr with a non-zero exit, never a traceback.
"""

import argparse
import sys


class UserError(Exception):
    """A problem with what the user asked for, reported as one line and exit status 2."""


# gradcheck


def _add_gradcheck(subparsers):
    p = subparsers.add_parser(
        "gradcheck",
        help="check every gradient of every cell against central differences",
        description="Central-difference gradient checks in float64 over cell x layers {1,2} x "
        "directions x {with, without lengths}. Exits 1 if any tensor exceeds the threshold.",
    )
    p.add_argument("--threshold", type=float, default=1e-7, help="max relative error allowed (default 1e-7)")
    p.add_argument("--entries", type=int, default=48,
                   help="entries checked per tensor, a random sample when larger (default 48; 0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--truncate", type=int, metavar="K",
                   help="check BPTT truncated at depth K instead: against the objective it "
                   "differentiates (passes) and against the full loss (shows the bias)")


def _run_gradcheck(args):
    from .proofs.report import CHECKED_CELLS, cell_report, format_report
    from .proofs.truncation import format_truncation, truncation_report

    max_entries = args.entries or None
    if args.truncate is None:
        rows = cell_report(threshold=args.threshold, max_entries=max_entries, seed=args.seed)
        print(format_report(rows, args.threshold))
        return 0 if all(row.passed for row in rows) else 1
    if args.truncate < 1:
        raise UserError(f"expected --truncate K with K >= 1 but got {args.truncate}")
    passed = True
    for cell_name in CHECKED_CELLS:
        rows = truncation_report(cell_name, args.truncate, max_entries=max_entries, seed=args.seed)
        print(format_truncation(cell_name, args.truncate, rows, args.threshold), end="\n\n")
        passed = passed and all(row.passed(args.threshold) for row in rows)
    print("truncated BPTT is the exact gradient of the truncated objective: "
          + ("every tensor passes" if passed else "some tensors FAIL"))
    print("against the full loss the same gradients fail; the bias column is the price of truncation")
    return 0 if passed else 1


# flow


def _add_flow(subparsers):
    p = subparsers.add_parser(
        "flow",
        help="how much gradient reaches k steps back, per cell (vanishing gradients, shown)",
        description="Measures ||dL_T/dh_{T-k}|| for a loss at the last step of a random sequence, "
        "for freshly initialised cells, prints it at a few k and draws it (log scale).",
    )
    p.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated, from rnn, rnn_relu, lstm, gru")
    p.add_argument("--length", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units H (default 64)")
    p.add_argument("--batch", type=int, default=16, help="sequences averaged over (default 16)")
    p.add_argument("--gate-bias", type=float, default=2.0,
                   help="added to the bias of LSTM's forget and GRU's update gate (default 2.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="write the plot here (PNG; needs matplotlib)")
    p.add_argument("--json", action="store_true", help="print the curves as JSON")


def _run_flow(args):
    import json

    from .proofs.flow import reach_by_cell

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if args.length < 2 or args.hidden < 1 or args.batch < 1:
        raise UserError(f"expected --length >= 2, --hidden >= 1, --batch >= 1 but got "
                        f"{args.length}, {args.hidden}, {args.batch}")
    try:
        curves = reach_by_cell(cells, args.length, args.hidden, batch=args.batch,
                               gate_bias=args.gate_bias, seed=args.seed)
    except ValueError as error:
        raise UserError(str(error)) from error
    if args.json:
        print(json.dumps({name: values.tolist() for name, values in curves.items()}))
    else:
        ks = sorted({k for k in (1, 5, 10, 20, 50, args.length - 1) if k < args.length})
        print(f"mean ||dL_T/dh_(T-k)||, T={args.length}, H={args.hidden}, gate bias {args.gate_bias:g}")
        print(f"{'cell':<8}" + "".join(f"{'k=' + str(k):>11}" for k in ks))
        for name, values in curves.items():
            print(f"{name:<8}" + "".join(f"{values[k]:>11.2e}" for k in ks))
    if args.output:
        from .plots import plot_reach

        try:
            path = plot_reach(curves, args.output, f"Gradient reaching k steps back (T={args.length}, "
                              f"H={args.hidden}, gate bias {args.gate_bias:g})")
        except ImportError as error:
            raise UserError(str(error)) from error
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


# diagnose


def _add_diagnose(subparsers):
    from .interop import LAYOUTS

    p = subparsers.add_parser(
        "diagnose",
        help="tell what is wrong with the gradients of your own RNN/LSTM/GRU backprop",
        description="Compares the gradients your code computed with full BPTT, BPTT truncated at every "
        "depth, and BPTT with the hidden or the cell path through time cut, and says which one they are "
        "and what your code is missing. Exits 0 if every gradient is correct, 1 otherwise.",
    )
    p.add_argument("--layout", required=True, choices=list(LAYOUTS), help="how the arrays are named and shaped")
    p.add_argument("--params", required=True, metavar="P.npz", help="the layer's parameters")
    p.add_argument("--inputs", required=True, metavar="X.npz",
                   help="x, the initial state (a0 or h0, optionally c0) and the upstream gradient (da or dy)")
    p.add_argument("--grads", required=True, metavar="G.npz", help="the gradients your code computed (dWf, dx, ...)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def _run_diagnose(args):
    from .interop import LayoutError
    from .proofs.diagnose import diagnose, load_npz

    try:
        arrays = [load_npz(path, role) for path, role in ((args.params, "params"), (args.inputs, "inputs"),
                                                          (args.grads, "grads"))]
        result = diagnose(args.layout, *arrays)
    except LayoutError as error:
        raise UserError(str(error)) from error
    print(result.to_json(indent=2) if args.json else result)
    return 0 if result.passed else 1


VERBS = {
    "gradcheck": (_add_gradcheck, _run_gradcheck),
    "diagnose": (_add_diagnose, _run_diagnose),
    "flow": (_add_flow, _run_flow),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bptt", description="Recurrent networks with hand-written, proven backpropagation through time."
    )
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add, _ in VERBS.values():
        add(subparsers)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return VERBS[args.verb][1](args)
    except UserError as error:
        print(f"bptt {args.verb}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bptt {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
