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


VERBS = {
    "gradcheck": (_add_gradcheck, _run_gradcheck),
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
