"""The ``bptt`` command. Thin: every verb parses its arguments, calls the library, and prints.

Each verb is a pair: ``_add_<verb>(subparsers)`` declares its arguments and ``_run_<verb>(args)``
does the work and returns the exit status. A fault is reported as one line on stderr, never a
traceback, and ends the command with one of these exit statuses (README, "Training"):

    0    done
    1    a check found a fault: gradcheck, diagnose or check says some gradient or array is wrong
    2    refused: bad arguments, settings or input (a corpus, a checkpoint, an .npz file), found
         before anything was written
    3    training diverged: the loss, a gradient or an update stopped being finite; the last
         good checkpoint is kept
    4    the system refused to read or write a file: a missing folder, no permission, a read-only
         or full disk, a file too large; the previous checkpoint and metrics are kept whole and
         no temporary file is left behind
    130  interrupted (Ctrl-C, SIGINT); ``train`` saves its last completed step first
    141  the reader of stdout went away (``bptt sample ... | head``)
    143  terminated (SIGTERM); ``train`` saves its last completed step first

NumPy's floating-point warnings of a training run are counted and reported in one sentence on
stderr, not printed one by one. Every ``--json`` output is one JSON document that begins with
``"schema": 1`` (:func:`_print_json`) and has the keys docs/json.md lists, its tests hold it to.
"""

import argparse
import contextlib
import math
import os
import signal
import sys

from . import __version__, kernels

DONE, FOUND, REFUSED, DIVERGED, SYSTEM = 0, 1, 2, 3, 4
INTERRUPTED, BROKEN_PIPE, TERMINATED = 130, 141, 143
JSON_SCHEMA = 1  # the version of docs/json.md that every --json output follows


class CommandError(Exception):
    """A fault reported as one line on stderr, ending the command with exit status ``status``."""

    status = REFUSED


class UserError(CommandError):
    """A problem with what the user asked for, reported as one line and exit status 2."""


class DivergedError(CommandError):
    """Training stopped because a number stopped being finite: exit status 3."""

    status = DIVERGED


class WriteError(CommandError):
    """The system refused to write (or read) a file: exit status 4."""

    status = SYSTEM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that a command stops as Ctrl-C stops it: a
    training run saves its last completed step."""


def _print_json(record, indent=None):
    """Print ``record`` (a dict) as one JSON document with ``"schema"`` first; numbers that are
    not finite (NaN, an infinite threshold) become null, since strict JSON has none."""
    import json

    print(json.dumps({"schema": JSON_SCHEMA, **_finite(record)}, indent=indent, allow_nan=False))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _check_output(path, option="-o"):
    """Refuse, before any work, an output file whose folder does not exist, is not a folder or
    cannot be written (read-only, no permission): a WriteError (exit 4) naming the option."""
    folder = os.path.dirname(os.path.abspath(path))
    shown = os.path.dirname(path) or folder
    if not os.path.isdir(folder):
        what = f"{shown} is not a folder" if os.path.exists(folder) else f"the folder {shown} does not exist"
        raise WriteError(f"cannot write {option} {path}: {what}")
    if not os.access(folder, os.W_OK):
        raise WriteError(f"cannot write {option} {path}: the folder {shown} cannot be written (read-only or no "
                         f"permission)")


THREADS_HELP = ("threads of the compiled passes at B > 1, with the compiled kernels (default: every CPU this "
                "process may use, NumPy's BLAS held to one thread meanwhile; one where threadpoolctl is not "
                "installed)")


def _training_threads(requested):
    """``training.threads.training_threads`` (the passes' threads and BLAS held to one while
    training), its refusals as one line."""
    from .training.threads import training_threads

    try:
        return training_threads(requested)
    except ValueError as error:
        raise UserError(str(error)) from error


# info


def _add_info(subparsers):
    p = subparsers.add_parser(
        "info", help="the version, the kernels, their instruction set and threads",
        description="Says which version of bptt this is, which implementation runs (reference, or c: the C "
        "the install compiled), the instruction set of the compiled ones this CPU runs, and the threads of their passes.",
    )
    p.add_argument("--json", action="store_true", help="print it as JSON (docs/json.md)")


def _run_info(args):
    from . import __version__

    try:
        record = {"version": __version__, **kernels.info()}
    except ValueError as error:  # a bad $BPTT_THREADS
        raise UserError(str(error)) from error
    if args.json:
        _print_json(record)
        return DONE
    print(f"bptt {record['version']}")
    print(f"kernels: {record['kernels']}" + (f" ({record['isa']})" if record["isa"] else ""))
    print(f"compiled kernels built at install: {', '.join(record['built']) or 'none (no C compiler then)'}; "
          f"this CPU runs: {', '.join(record['runnable']) or 'none'}")
    print(f"threads of the compiled passes: {record['threads']}, of {record['cpus']} CPUs this process may use")
    return DONE


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
    truncation = p.add_mutually_exclusive_group()
    truncation.add_argument("--truncate", type=int, metavar="K",
                            help="check BPTT truncated at depth K instead: against the objective it "
                            "differentiates (passes) and against the full loss (shows the bias)")
    truncation.add_argument("--window", metavar="K1,K2[,ALIGN]",
                            help="check TBPTT(K1, K2) instead (K1 = K2: windows of K1 steps), chunks "
                            "counted from the start (default) or the end (ALIGN start|end)")


def _run_gradcheck(args):
    from .proofs.report import CHECKED_CELLS, cell_report, format_report
    from .proofs.truncation import format_truncation, jacobian_asymmetry, truncation_report

    max_entries = args.entries or None
    if args.truncate is None and args.window is None:
        rows = cell_report(threshold=args.threshold, max_entries=max_entries, seed=args.seed)
        print(format_report(rows, args.threshold))
        return 0 if all(row.passed for row in rows) else 1
    window = _parse_window(args.truncate, args.window)
    passed, biased = True, False
    for cell_name in CHECKED_CELLS:
        rows = truncation_report(cell_name, window, max_entries=max_entries, seed=args.seed)
        print(format_truncation(cell_name, window, rows, args.threshold))
        asymmetry, u_jv, v_ju = jacobian_asymmetry(cell_name, window, seed=args.seed)
        control = jacobian_asymmetry(cell_name, None, seed=args.seed)[0]
        print(f"  Jacobian of the gradient field, u·Jv against v·Ju: {u_jv:.6g} against {v_ju:.6g}, "
              f"{asymmetry:.1e} apart (full BPTT, the control: {control:.1e})", end="\n\n")
        passed = passed and all(row.passed(args.threshold) for row in rows)
        biased = biased or any(not row.rel_err_full <= args.threshold for row in rows)
    print("truncated BPTT is the exact gradient of the truncated objective: "
          + ("every tensor passes" if passed else "some tensors FAIL"))
    print("against the full loss the same gradients fail; the bias column is the price of truncation" if biased
          else "the truncation reaches every step of these sequences: truncated and full BPTT are the same here")
    if biased:
        print("and the truncated gradient is the gradient of no single function: its Jacobian is not symmetric, "
              "while full BPTT's (a Hessian) is, to rounding")
    return 0 if passed else 1


def _parse_window(truncate, window):
    """The Window of ``--truncate K`` or ``--window K1,K2[,ALIGN]``, or a UserError."""
    from .layers import check_window
    from .recurrence import Window

    if truncate is not None:
        if truncate < 1:
            raise UserError(f"expected --truncate K with K >= 1 but got {truncate}")
        return Window(1, truncate)
    parts = [part.strip() for part in window.split(",")]
    try:
        if len(parts) <= 3:
            return check_window((int(parts[0]), int(parts[1]), *parts[2:]))
        detail = ""
    except IndexError:
        detail = ""
    except ValueError as error:
        detail = f" ({error})" if str(error) else ""
    raise UserError(f"expected --window K1,K2 or K1,K2,start|end with 1 <= K1 <= K2 but got {window!r}{detail}")


# flow


def _add_flow(subparsers):
    p = subparsers.add_parser(
        "flow",
        help="how much gradient reaches k steps back, per cell (vanishing gradients, shown)",
        description="Measures ||dL_T/dh_{T-k}|| for a loss at the last step of a random sequence, "
        "for freshly initialised cells, prints it at a few k and draws it (log scale). With --paths, "
        "also the LSTM's ||dL_T/dc_{T-k}||, the gradient reaching its cell state (h_{T-k} held fixed).",
    )
    p.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated, from rnn, rnn_relu, lstm, gru")
    p.add_argument("--length", type=int, default=100, help="sequence length T (default 100)")
    p.add_argument("--hidden", type=int, default=64, help="hidden units H (default 64)")
    p.add_argument("--batch", type=int, default=16, help="sequences averaged over (default 16)")
    p.add_argument("--gate-bias", type=float, default=2.0,
                   help="added to the bias of LSTM's forget and GRU's update gate (default 2.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", help="write the plot here (PNG; needs matplotlib)")
    p.add_argument("--json", action="store_true",
                   help='print {"T", "H", "k": [0 .. T-1], "curves": {name: [one value per k]}} as JSON')
    p.add_argument("--paths", action="store_true",
                   help='also the curve of every other part of a state: "lstm (cell)", ||dL_T/dc_{T-k}||')


def _run_flow(args):
    from .proofs.flow import reach_by_cell

    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    if args.length < 2 or args.hidden < 1 or args.batch < 1:
        raise UserError(f"expected --length >= 2, --hidden >= 1, --batch >= 1 but got "
                        f"{args.length}, {args.hidden}, {args.batch}")
    try:
        curves = reach_by_cell(cells, args.length, args.hidden, batch=args.batch,
                               gate_bias=args.gate_bias, seed=args.seed, paths=args.paths)
    except ValueError as error:
        raise UserError(str(error)) from error
    measured = "||dL_T/dh_(T-k)||" + ("; (cell): ||dL_T/dc_(T-k)||" if args.paths else "")
    if args.json:
        _print_json({"T": args.length, "H": args.hidden, "k": list(range(args.length)),
                     "curves": {name: values.tolist() for name, values in curves.items()}})
    else:
        ks = sorted({k for k in (1, 5, 10, 20, 50, args.length - 1) if k < args.length})
        width = max([8] + [len(name) + 1 for name in curves])
        print(f"mean {measured}, T={args.length}, H={args.hidden}, gate bias {args.gate_bias:g}")
        print(f"{'cell':<{width}}" + "".join(f"{'k=' + str(k):>11}" for k in ks))
        for name, values in curves.items():
            print(f"{name:<{width}}" + "".join(f"{values[k]:>11.2e}" for k in ks))
    if args.output:
        from .plots import plot_reach

        try:
            path = plot_reach(curves, args.output, f"Gradient reaching k steps back (T={args.length}, "
                              f"H={args.hidden}, gate bias {args.gate_bias:g})",
                              "mean ||dL_T / dh_{T-k}||" + ("; (cell): ||dL_T / dc_{T-k}||" if args.paths else ""))
        except ImportError as error:
            raise UserError(str(error)) from error
        except OSError as error:
            raise WriteError(f"cannot write {args.output}: {error.strerror or error}") from error
        print(f"wrote {path}", file=sys.stderr if args.json else sys.stdout)
    return 0


# diagnose


def _add_diagnose(subparsers):
    from .interop import LAYOUTS

    p = subparsers.add_parser(
        "diagnose",
        help="tell what is wrong with the gradients of your own RNN/LSTM/GRU backprop",
        description="Compares the gradients your code computed with full BPTT, every truncation (per-loss "
        "depth, windows counted from either end, TBPTT(k1, k2)) and BPTT with the hidden or the cell path "
        "through time cut, and says which one they are and what your code is missing. Exits 0 if every "
        "gradient is correct, 1 otherwise. Save each file with np.savez(path, **arrays).",
        epilog="keys of each layout (params; inputs; grads are 'd' + any of them, e.g. dWf, dx, da0):\n"
        + "\n".join(f"  {name}: {_layout_keys(layout)}" for name, layout in LAYOUTS.items())
        + "\nshapes: the README's table",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--layout", required=True, choices=list(LAYOUTS), help="how the arrays are named and shaped")
    p.add_argument("--params", required=True, metavar="P.npz", help="the layer's parameters")
    p.add_argument("--inputs", required=True, metavar="X.npz",
                   help="x, the initial state (a0 or h0, optionally c0) and the upstream gradient (da or dy)")
    p.add_argument("--grads", required=True, metavar="G.npz", help="the gradients your code computed (dWf, dx, ...)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def _layout_keys(layout):
    """"Wf, bf, ...; x, a0, [c0], da": a layout's parameter and input names, for the help."""
    cell = "rnn_tanh" if "rnn" in layout.NAME else "lstm"
    params = ", ".join(layout.param_shapes(cell, 3, 5))
    optional = {"c0", "dc_n"} if "dc_n" not in layout.DATA_NAMES else {"dc_n"}
    inputs = ", ".join(f"[{layout.DATA_NAMES[k]}]" if k in optional else layout.DATA_NAMES[k]
                       for k in layout.DATA_NAMES if cell == "lstm" or k not in ("c0", "dc_n"))
    return f"{params}; {inputs}"


def _run_diagnose(args):
    from .interop import LayoutError
    from .proofs.diagnose import diagnose, load_npz

    try:
        arrays = [load_npz(path, role) for path, role in ((args.params, "params"), (args.inputs, "inputs"),
                                                          (args.grads, "grads"))]
        result = diagnose(args.layout, *arrays)
    except LayoutError as error:
        raise UserError(str(error)) from error
    return _print_diagnosis(result, args.json)


def _print_diagnosis(result, as_json):
    """Print a Diagnosis (its table and verdict, or its JSON); the status: 0 when it passed."""
    if as_json:
        _print_json(result.to_dict(), indent=2)
    else:
        print(result)
    return DONE if result.passed else FOUND


# check


def _add_check(subparsers):
    from .proofs.check import FUNCTION_NAMES

    names = "; ".join(f"{layout}: {forward}, {backward}" for layout, (forward, backward) in FUNCTION_NAMES.items())
    p = subparsers.add_parser(
        "check",
        help="check the forward and backward functions of your own RNN/LSTM solution file",
        description="Runs your solution file, calls its forward and backward functions (found by the "
        f"course's names: {names}; for a sequence layout also its cell functions, when the file has "
        "them) on test cases of its own, compares every array with the library's and says what is wrong: "
        "the forward, the cell, a truncation, a missing path through time. Writes nothing. Exits 0 if "
        "everything is right, 1 otherwise.",
    )
    p.add_argument("solution", metavar="solution.py", help="your Python file")
    p.add_argument("--layout", required=True, choices=list(FUNCTION_NAMES), help="whose functions these are")
    p.add_argument("--seed", type=int, default=0, help="shifts the seeds of the test cases")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON")


def _run_check(args):
    from .proofs.check import LearnerError, check_file

    try:
        result = check_file(args.solution, args.layout, seed=args.seed)
    except (FileNotFoundError, LearnerError) as error:
        raise UserError(str(error)) from error
    return _print_diagnosis(result, args.json)


# train


def _parameter_names(text):
    """``--freeze rnn.bias_hh_l0,head.bias`` as a tuple of names."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected parameter names separated by commas but got {text!r}")
    return names


def _add_train(subparsers):
    from .training.data import LAST_WINDOWS
    from .training.trainer import CELLS, INPUTS, REDUCTIONS, TrainConfig

    defaults = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a character language model with truncated BPTT",
        description="Train a character language model (embedding, recurrent stack, linear head) on the "
        "built-in corpus (the Python standard library's source) or your text, with TBPTT(k1, k2) over "
        "--batch parallel streams. Writes a run folder with checkpoint, metrics.jsonl, samples and loss.png. "
        "Ctrl-C and SIGTERM save the last completed step; exit statuses: bptt --help.",
    )
    p.add_argument("--corpus", help="a UTF-8 text file or a folder of them (default: the built-in corpus)")
    p.add_argument("--run-dir", help="the run folder (default: runs/<date>-<cell>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="go on with the run in RUN_DIR")
    p.add_argument("--cell", choices=CELLS, help=f"default {defaults.cell}")
    p.add_argument("--hidden", dest="hidden_size", type=int, help=f"hidden units (default {defaults.hidden_size})")
    p.add_argument("--layers", dest="num_layers", type=int, help=f"default {defaults.num_layers}")
    p.add_argument("--input", choices=INPUTS, help="characters enter the stack through an embedding or as one-hot "
                   f"codes of the vocabulary's size (default {defaults.input})")
    p.add_argument("--embedding", dest="embedding_size", type=int,
                   help=f"embedding size, with --input embedding (default {defaults.embedding_size})")
    p.add_argument("--dropout", type=float, help="dropout between stacked layers (default 0)")
    p.add_argument("--init-std", type=float, help="draw every weight from N(0, STD²) and set every bias to 0 "
                   "(min-char-rnn: 0.01; default: torch's initialisation)")
    p.add_argument("--freeze", type=_parameter_names, metavar="NAME[,NAME...]",
                   help="parameters the optimizer leaves as initialised, by their state_dict names "
                   "(rnn.bias_hh_l0: one hidden bias, as min-char-rnn)")
    p.add_argument("--k1", type=int, help=f"steps between updates (default {defaults.k1})")
    p.add_argument("--k2", type=int, help="steps each update backpropagates through (default k1)")
    p.add_argument("--batch", dest="batch_size", type=int, help=f"parallel streams (default {defaults.batch_size})")
    p.add_argument("--last-window", choices=LAST_WINDOWS,
                   help="the end of the streams in each epoch: a shorter last window, only full windows (drop), "
                   "or full windows with a character after the last target (min-char-rnn's wrap-around); the "
                   f"next epoch starts from a zero state (default {defaults.last_window})")
    p.add_argument("--loss-reduction", choices=REDUCTIONS,
                   help="each window's loss, and so its gradient: the mean or the sum (min-char-rnn) over its "
                   f"characters; metrics stay per character (default {defaults.loss_reduction})")
    p.add_argument("--optimizer", choices=("sgd", "adagrad", "rmsprop", "adam", "adamw"),
                   help=f"default {defaults.optimizer}")
    p.add_argument("--lr", type=float, help=f"learning rate (default {defaults.lr:g})")
    p.add_argument("--eps", type=float, help="the optimizer's epsilon (default its own: adagrad 1e-10, the others "
                   "1e-8)")
    p.add_argument("--eps-inside-sqrt", action="store_true", default=None,
                   help="adagrad: divide by sqrt(sum + eps), as min-char-rnn, not by sqrt(sum) + eps, as torch")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=("constant", "step", "cosine"), help=f"default {defaults.schedule}")
    p.add_argument("--warmup", dest="warmup_steps", type=int, help="warm-up steps of the cosine schedule")
    p.add_argument("--clip", type=float, help=f"max global gradient norm, 0 for none (default {defaults.clip:g})")
    p.add_argument("--clip-value", type=float, help="clip every gradient entry to [-V, V], before --clip; 0 for "
                   "none (default none; min-char-rnn: 5)")
    p.add_argument("--dtype", choices=("float32", "float64"), help=f"default {defaults.dtype}")
    p.add_argument("--seed", type=int, help=f"default {defaults.seed}")
    p.add_argument("--steps", type=int, help="stop after this many updates in all, counted from the run's start: "
                   "a run resumed at step 300 with --steps 500 does 200 more")
    p.add_argument("--minutes", type=float, help="stop after this many minutes of this invocation (a resumed run "
                   "gets them anew; default 2 when --steps is not given either)")
    p.add_argument("--valid-fraction", type=float,
                   help="the share of the corpus held out for validation, 0 for none: the whole corpus trains "
                   f"(default {defaults.valid_fraction:g})")
    p.add_argument("--log-every", type=int, help=f"log metrics every N steps (default {defaults.log_every})")
    p.add_argument("--eval-every", type=int, help=f"validate every N steps (default {defaults.eval_every})")
    p.add_argument("--sample-every", type=int, help=f"sample every N steps (default {defaults.sample_every})")
    p.add_argument("--checkpoint-every", type=int, help=f"default {defaults.checkpoint_every}")
    p.add_argument("--no-progress", action="store_true", help="print lines instead of a progress bar")
    p.add_argument("--threads", type=int, help=THREADS_HELP)


TRAIN_SETTINGS = ("corpus", "cell", "hidden_size", "num_layers", "input", "embedding_size", "dropout", "init_std",
                  "freeze", "k1", "k2", "batch_size", "last_window", "loss_reduction", "optimizer", "lr", "eps",
                  "eps_inside_sqrt", "weight_decay", "schedule", "warmup_steps", "clip", "clip_value", "dtype", "seed",
                  "valid_fraction", "steps", "minutes", "log_every", "eval_every", "sample_every", "checkpoint_every")


def _run_train(args):
    import dataclasses
    import time

    from .training.checkpoint import CheckpointError
    from .training.trainer import RunWriteError, TrainConfig, Trainer, TrainingError

    threads, where = _training_threads(args.threads)  # before any file is written
    given = {name: getattr(args, name) for name in TRAIN_SETTINGS if getattr(args, name) is not None}
    for name in ("clip", "clip_value"):
        if given.get(name) == 0:
            given[name] = None
    if "corpus" in given:  # a run resumes from any folder
        given["corpus"] = os.path.abspath(given["corpus"])
    try:
        if args.resume:
            if args.run_dir:
                raise UserError("give either --resume RUN_DIR or --run-dir, not both")
            trainer = Trainer.resume(args.resume, given)
        else:
            config = TrainConfig(**given)
            if config.steps is None and config.minutes is None:
                config = dataclasses.replace(config, minutes=2.0)
            run_dir = args.run_dir or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + f"-{config.cell}")
            trainer = Trainer.start(config, run_dir)
    except RunWriteError as error:
        raise WriteError(str(error)) from error
    except (TrainingError, CheckpointError) as error:
        raise UserError(str(error)) from error
    if where:
        print(where)
    with threads:
        return _watch_training(trainer, progress=not args.no_progress)


def _watch_training(trainer, progress):
    """Drive the trainer: a progress bar (tqdm, when installed) or lines, samples, the plot.
    Ctrl-C and SIGTERM save the last completed step."""
    import time

    from .training.trainer import Diverged, RunWriteError

    config, state = trainer.config, trainer.state
    print(f"run folder {trainer.run_dir}: {trainer.network!r}")
    print(f"corpus: {trainer.data.characters:,} characters in "
          f"{trainer.data.sources} file(s), vocabulary {trainer.data.vocab.size}; "
          f"TBPTT k1={config.k1} k2={config.k2 or config.k1}, batch {config.batch_size}"
          + (f"; resuming at step {state.step}" if state.step else ""))
    if trainer.data.skipped:
        print(f"skipped {len(trainer.data.skipped)} file(s) that are empty or not UTF-8 text")
    began = time.perf_counter()
    seconds = None if config.steps else 60 * config.minutes  # a bar of time where only minutes limit the run
    if not progress:
        bar = None
    elif seconds is None:
        bar = _progress_bar(config.steps, "training", state.step)
    else:
        bar = _time_bar(seconds, f"training for {_amount(config.minutes, 'minute')}")
    say = bar.write if bar is not None else print
    valid_bpc = None
    try:
        for event in trainer.run():
            _stop_if_terminated()
            if event.kind == "step":
                d = event.data
                status = dict(loss=f"{d['loss']:.3f}", bpc=f"{d['bpc']:.3f}", chars_s=f"{d['chars_per_s']:,.0f}")
                if valid_bpc is not None:
                    status["valid_bpc"] = f"{valid_bpc:.3f}"
                if bar is not None and seconds is None:
                    bar.update(event.step - bar.n)
                    bar.set_postfix(status, refresh=False)
                elif bar is not None:
                    bar.update(min(time.perf_counter() - began, seconds) - bar.n)
                    bar.set_postfix({"step": event.step, **status}, refresh=False)
                else:
                    print(f"step {event.step}: " + ", ".join(f"{k} {v}" for k, v in status.items()))
            elif event.kind == "valid":
                valid_bpc = event.data["valid_bpc"]
            elif event.kind == "sample":
                say(f"--- sample at step {event.step} ---\n{event.data['text']}\n---")
            elif event.kind == "checkpoint":
                _plot_run(trainer)
            elif event.kind == "done":
                if bar is not None:
                    bar.update((event.step if seconds is None else seconds) - bar.n)
                    bar.close()
                _plot_run(trainer)
                valid = event.data["valid_bpc"]
                print(event.data["reason"] + ("; no validation (--valid-fraction 0)" if valid is None else
                                              f"; validation {valid:.3f} bits per character"))
                print(f"--- sample ---\n{trainer.sample(config.sample_length, seed=config.seed)}\n---")
                print(f"run folder: {trainer.run_dir}  (checkpoint {event.data['path']})")
                _report_warnings(trainer.numeric, "train")
    except Diverged as error:
        raise DivergedError(str(error)) from error
    except RunWriteError as error:
        raise WriteError(str(error)) from error
    except KeyboardInterrupt as stop:
        _close(bar)
        how = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
        with _signals_ignored():  # a second Ctrl-C must not cut the save short
            try:
                path = trainer.save()
            except RunWriteError as error:
                raise WriteError(f"{how} at step {trainer.state.step}, and the save failed: {error}") from error
            # the plot is drawn again on resume; the signal may have cut matplotlib's import short
            with contextlib.suppress(Exception):
                _plot_run(trainer)
        _report_warnings(trainer.numeric, "train")
        print(f"bptt train: {how} at step {trainer.state.step}: saved {path}; go on with "
              f"bptt train --resume {trainer.run_dir}", file=sys.stderr)
        return TERMINATED if isinstance(stop, Terminated) else INTERRUPTED
    finally:
        _close(bar)
    return DONE


def _amount(count, noun):
    """"1 minute", "2.5 minutes"."""
    return f"{count:g} {noun}" + ("" if count == 1 else "s")


def _report_warnings(numeric, verb):
    """NumPy's counted floating-point warnings as one sentence on stderr, if there were any."""
    sentence = numeric.sentence()
    if sentence:
        print(f"bptt {verb}: {sentence}: a sign of weights grown large; a smaller --lr may help", file=sys.stderr)


def _close(bar):
    if bar is not None:
        bar.close()


@contextlib.contextmanager
def _signals_ignored():
    """SIGINT and SIGTERM ignored for the duration (in the main thread; elsewhere, unchanged)."""
    try:
        previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _progress_bar(total, description, initial=0):
    """A tqdm bar counting steps, or None where tqdm (an optional extra) is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=description)


def _time_bar(seconds, description):
    """A tqdm bar of ``seconds`` of wall time, its ETA the time left, or None without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=seconds, unit="s", dynamic_ncols=True, desc=description,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")


def _plot_run(trainer):
    """loss.png of a run from its metrics; skipped quietly without matplotlib. A WriteError
    (exit 4) where the system refuses to write it."""
    from .training.trainer import read_metrics

    try:
        from .plots import plot_curves
    except ImportError:
        return
    run_dir = trainer.run_dir
    metrics = read_metrics(run_dir)
    train = [(m["step"], m["bpc"]) for m in metrics if m["kind"] == "step"]
    valid = [(m["step"], m["valid_bpc"]) for m in metrics if m["kind"] == "valid"]
    if not train and not valid:
        return
    path = os.path.join(run_dir, "loss.png")
    try:
        plot_curves({"training": tuple(zip(*train)) or ((), ()), "validation": tuple(zip(*valid)) or ((), ())},
                    path, os.path.basename(os.path.normpath(run_dir)), "bits per character")
    except ImportError:
        return
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}; training stopped at step "
                         f"{trainer.state.step} and {trainer.kept()}") from error


# sample


def _add_sample(subparsers):
    p = subparsers.add_parser("sample", help="generate text from a trained run or checkpoint",
                              description="Stream characters generated by a trained character model.")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT", help="a run folder or its checkpoint.npz")
    p.add_argument("--prime", help="text to start from (default a newline, or the vocabulary's first character "
                   "when it has none)")
    p.add_argument("--length", type=int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="below 1 sharpens the distribution, above 1 flattens it; 0 always picks the most likely "
                   "character (default 0.8)")
    p.add_argument("--top-k", type=int, help="sample only among the k most likely characters")
    p.add_argument("--seed", type=int, help="for a repeatable sample")


def _run_sample(args):
    import numpy as np

    from .training.checkpoint import CheckpointError
    from .training.sampling import default_prime, sample_chars
    from .training.trainer import NumericWarnings, load_model

    if not args.temperature >= 0:  # NaN too
        raise UserError(f"expected --temperature >= 0 (0 picks the most likely character) but got {args.temperature}")
    try:
        network, vocab = load_model(args.source)
    except (CheckpointError, ValueError) as error:
        raise UserError(f"cannot sample from {args.source}: {error}") from error
    prime = default_prime(vocab) if args.prime is None else args.prime
    numeric = NumericWarnings()
    try:
        # every argument is checked here, before anything is written
        chars = sample_chars(network, vocab, prime, args.length, temperature=args.temperature,
                             top_k=args.top_k, rng=np.random.default_rng(args.seed))
    except ValueError as error:
        raise UserError(str(error)) from error
    sys.stdout.write(prime)
    with numeric.watch(0):
        for char in chars:
            sys.stdout.write(char)
            sys.stdout.flush()
    sys.stdout.write("\n")
    if numeric.counts:
        print(f"bptt sample: {numeric.sentence(steps=False)}: the model's weights are large", file=sys.stderr)
    return DONE


# task


def _add_task(subparsers):
    import inspect

    from .training import seq2seq_runner
    from .training.task_runner import TASKS, train_task

    memory = {name: p.default for name, p in inspect.signature(train_task).parameters.items()}
    seq2seq = {name: p.default for name, p in inspect.signature(seq2seq_runner.train_seq2seq_task).parameters.items()}
    p = subparsers.add_parser(
        "task",
        help="train on a long-range memory task or an encoder-decoder task and compare with its trivial baseline",
        description="Train a one-layer network on fresh batches of the adding problem, the copy task or the "
        "temporal-order task, or an encoder-decoder on reversing a digit string or adding two integers written "
        "as strings (Adam, warm-up and cosine decay, clipping), then report the metric on held-out sequences "
        "beside the score of a trivial model. A memory task is solved under a tenth of its baseline; an "
        "encoder-decoder task reports exact match.",
    )
    names = TASKS + seq2seq_runner.TASKS
    p.add_argument("task", metavar="{" + ",".join(names) + "}",
                   help="adding: MSE; copy and order: cross-entropy; reverse and addition: exact match")
    p.add_argument("--cell", default="lstm", metavar="{lstm,gru,rnn}", help="default lstm")
    reverse, addition = seq2seq_runner.DEFAULTS["reverse"], seq2seq_runner.DEFAULTS["addition"]
    p.add_argument("--length", type=int,
                   help="sequence length T; for copy the delay D, sequences D + 20 long (default 100); for "
                   f"reverse the longest string (default {reverse['length']})")
    p.add_argument("--digits", type=int, help=f"addition: digits of each operand at most (default {addition['digits']})")
    p.add_argument("--steps", type=int,
                   help="updates, each on a fresh batch (default 3000; reverse "
                   f"{reverse['steps']}, addition {addition['steps']})")
    p.add_argument("--hidden", type=int,
                   help=f"hidden units (default {memory['hidden_size']}; encoder-decoder {seq2seq['hidden_size']})")
    p.add_argument("--embedding", type=int, help=f"encoder-decoder: embedding size (default {seq2seq['embedding_size']})")
    p.add_argument("--batch", type=int,
                   help=f"default {memory['batch_size']}; encoder-decoder {seq2seq['batch_size']}")
    p.add_argument("--reverse-source", action="store_true",
                   help="encoder-decoder: feed each source reversed (Sutskever et al. 2014)")
    p.add_argument("--lr", type=float, default=memory["lr"],
                   help=f"Adam's peak learning rate (default {memory['lr']:g})")
    p.add_argument("--gate-bias", type=float,
                   help="added to LSTM's forget / GRU's update gate bias (default "
                   f"{memory['gate_bias']:g}; encoder-decoder {seq2seq['gate_bias']:g})")
    p.add_argument("--seed", type=int, default=memory["seed"], help=f"default {memory['seed']}")
    p.add_argument("--eval-every", type=int, default=250,
                   help="score the test set every N steps too, 0 for only at the end (default 250)")
    p.add_argument("--json", action="store_true",
                   help="print the result and its settings as one JSON object (docs/json.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, help=THREADS_HELP)


def _task_events(args):
    """The events of the task ``args`` asks for, and its number of steps; each setting not
    given takes the default of its kind of task."""
    from .training import seq2seq_runner
    from .training.task_runner import TASKS, train_task

    if args.task not in TASKS + seq2seq_runner.TASKS:
        raise UserError(f"bad task settings: task {args.task!r} (expected one of "
                        f"{', '.join(TASKS + seq2seq_runner.TASKS)})")
    given = {"hidden_size": args.hidden, "batch_size": args.batch, "gate_bias": args.gate_bias}
    given = {name: value for name, value in given.items() if value is not None}
    if args.task in seq2seq_runner.TASKS:
        steps = seq2seq_runner.DEFAULTS[args.task]["steps"] if args.steps is None else args.steps
        if args.embedding is not None:
            given["embedding_size"] = args.embedding
        events = seq2seq_runner.train_seq2seq_task(
            args.task, args.cell, steps=steps, length=args.length, digits=args.digits,
            reverse_source=args.reverse_source, lr=args.lr, seed=args.seed, eval_every=args.eval_every or None,
            **given)
        return events, steps
    extra = [flag for flag, value in (("--digits", args.digits), ("--embedding", args.embedding),
                                      ("--reverse-source", args.reverse_source or None)) if value is not None]
    if extra:
        raise UserError(f"{', '.join(extra)} go with the encoder-decoder tasks (reverse, addition), not {args.task}")
    steps = 3000 if args.steps is None else args.steps
    events = train_task(args.task, args.cell, 100 if args.length is None else args.length, steps, lr=args.lr,
                        seed=args.seed, eval_every=args.eval_every or None, **given)
    return events, steps


def _run_task(args):
    from .training.task_runner import TaskDiverged, TaskError

    threads, where = _training_threads(args.threads)
    try:
        events, steps = _task_events(args)
    except TaskError as error:
        raise UserError(str(error)) from error
    if where and not args.json:
        print(where)
    bar = None if args.no_progress else _progress_bar(steps, f"{args.task} {args.cell}")
    say = bar.write if bar is not None else print
    try:
        with threads:
            for event in events:
                _stop_if_terminated()
                if event.kind == "step" and bar is not None:
                    bar.update(event.step - bar.n)
                    bar.set_postfix(loss=f"{event.data['loss']:.4g}", refresh=False)
                elif event.kind == "eval" and not args.json:
                    say(f"step {event.step}: test " + ", ".join(f"{k} {v:.4g}" for k, v in event.data.items()))
                elif event.kind == "done":
                    result, numeric = event.data["result"], event.data["numeric"]
    except TaskDiverged as error:
        raise DivergedError(str(error)) from error
    except TaskError as error:
        raise UserError(str(error)) from error
    finally:
        _close(bar)
    _report_warnings(numeric, "task")
    if args.json:
        _print_json({**result.as_dict(), "eval_every": args.eval_every, "kernels": kernels.selected()})
        return DONE
    print(_task_line(result))
    return DONE


def _task_line(result):
    """The result of a task in one line."""
    if result.task in ("reverse", "addition"):
        size = f"1-{result.length} digits" if result.task == "reverse" else f"operands up to {result.digits} digits"
        baseline = "copy the source" if result.task == "reverse" else "the most frequent sum"
        source = ", source reversed" if result.reverse_source else ""
        return (f"{result.task} ({size}) {result.cell} H={result.hidden_size}{source}, {result.steps} steps in "
                f"{result.wall_seconds:.0f} s: exact match {result.accuracy:.1%} on {result.test_size:,} held-out "
                f"sequences (baseline {result.baseline_accuracy:.1%}: {baseline})")
    metric = {"mse": "MSE", "cross_entropy": "cross-entropy"}[result.metric]
    accuracy = "" if result.accuracy is None else (f", accuracy {result.accuracy:.1%} (baseline "
                                                  f"{result.baseline_accuracy:.1%})")
    return (f"{result.task} T={result.length} {result.cell} H={result.hidden_size}, {result.steps} steps in "
            f"{result.wall_seconds:.0f} s: test {metric} {result.value:.4g} (baseline {result.baseline:.4g}, a tenth "
            f"{result.baseline / 10:.4g}){accuracy}: " + ("solved" if result.solved else "not solved"))


# bench


def _add_bench(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="time bptt beside PyTorch: forward, forward+backward, memory, sampling",
        description="Times bptt and (with --vs torch, when installed) torch in the same process, "
        "interleaved run by run after warm-up, with both thread counts fixed, and prints medians, the "
        "ratio bptt/torch, GFLOP/s and the fraction of this machine's GEMM peak. A run taken while "
        "other processes used the CPU is taken again. The targets are set for the compiled kernels, the "
        "default; --kernels reference times the readable reference.",
    )
    p.add_argument("--vs", choices=["torch", "none"], default="torch", help="compare with (default torch)")
    p.add_argument("--threads", type=int, default=2, help="threads for both libraries (default 2)")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per library and case (default 7)")
    p.add_argument("--cases", help="comma-separated case names or patterns, e.g. 'lstm-*,gru-f32-train' "
                   "(default: all; --list shows them)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--pause", type=float, default=0.25,
                   help="seconds to sleep before each run, so the other library's threads go idle (default 0.25)")
    p.add_argument("--max-load", type=float, default=0.1, metavar="SHARE",
                   help="retake a run during which other processes used more than this share of a core "
                   "(default 0.1; inf: never)")
    p.add_argument("--quiet", action="store_true", help="print the report only, not each case as it finishes")
    p.add_argument("--no-memory", action="store_true", help="skip cache sizes and peak memory")
    p.add_argument("--no-sampling", action="store_true", help="skip sampling throughput")
    p.add_argument("--peak-size", type=int, default=2048,
                   help="side of the square GEMM whose rate is this machine's peak (default 2048)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (docs/json.md)")


def _run_bench(args):
    from .tools import bench

    if args.list:
        for case in bench.default_cases():
            target = "" if case.target is None else f"  target <= {case.target:.1f}"
            print(f"{case.name:<22} {case.mode:<9} T={case.T} B={case.B} I={case.I} H={case.H}{target}")
        return DONE
    if args.threads < 1 or args.repeat < 1 or args.pause < 0 or args.peak_size < 1 or not args.max_load >= 0:
        raise UserError(f"expected --threads >= 1, --repeat >= 1, --pause >= 0, --peak-size >= 1, --max-load >= 0 "
                        f"but got {args.threads}, {args.repeat}, {args.pause}, {args.peak_size}, {args.max_load}")
    patterns = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    try:
        cases = bench.select_cases(patterns)
    except ValueError as error:
        raise UserError(str(error)) from error
    vs_torch = args.vs == "torch"
    if vs_torch and not bench.torch_importable():
        print("bptt bench: torch is not installed; timing bptt alone", file=sys.stderr)
    progress = None
    if not args.quiet:  # rows as they finish go to stderr; stdout gets the final report alone
        print(bench.table_header(vs_torch and bench.torch_importable()), file=sys.stderr)
        progress = lambda row: print(bench.format_row(row), file=sys.stderr, flush=True)  # noqa: E731
    try:
        report = bench.run(cases, threads=args.threads, repeat=args.repeat, pause=args.pause,
                           vs_torch=vs_torch, memory=not args.no_memory, sample=not args.no_sampling,
                           max_load=args.max_load, progress=progress, peak_size=args.peak_size)
    except ImportError as error:
        raise UserError(f"{error} (pip install threadpoolctl, or bptt[bench])") from error
    if args.json:
        _print_json(report, indent=1)
    else:
        print(bench.format_report(report))
    return DONE


VERBS = {
    "gradcheck": (_add_gradcheck, _run_gradcheck),
    "info": (_add_info, _run_info),
    "diagnose": (_add_diagnose, _run_diagnose),
    "check": (_add_check, _run_check),
    "flow": (_add_flow, _run_flow),
    "train": (_add_train, _run_train),
    "sample": (_add_sample, _run_sample),
    "bench": (_add_bench, _run_bench),
    "task": (_add_task, _run_task),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bptt", description="Recurrent networks with hand-written, proven backpropagation through time.",
        epilog="exit statuses: 0 done; 1 a check found a fault; 2 refused (bad arguments or input, nothing "
        "written); 3 training diverged (the last good checkpoint kept); 4 the system refused to read or write "
        "a file (a missing folder, no permission, a full disk; the previous checkpoint kept); 130 Ctrl-C, 143 "
        "SIGTERM (train saves first); 141 stdout closed",
    )
    parser.add_argument("--version", action="version", version=f"bptt {__version__}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for add, _ in VERBS.values():
        add(subparsers)
    for verb in subparsers.choices.values():
        verb.add_argument("--kernels", choices=kernels.NAMES,
                          help="the cells' elementwise step in NumPy or in the C the install compiled for "
                          "this machine (default: $BPTT_KERNELS, else c where the install built it)")
    return parser


_terminating = []  # SIGTERM's arrival, kept for where its exception was swallowed


def _raise_terminated(signum, frame):
    _terminating.append(signum)
    raise Terminated()


def _stop_if_terminated():
    """Raise Terminated where SIGTERM came and its exception did not get through: a handler that
    runs inside a weakref callback or a ``__del__`` has what it raises printed and dropped."""
    if _terminating:
        raise Terminated()


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises Terminated for the duration, so that a command stops as Ctrl-C stops it
    (cleaning up, a run saving) instead of dying where it is; off the main thread, unchanged."""
    _terminating.clear()
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    unraisable = sys.unraisablehook

    def quiet_about_terminated(report):  # the swallowed Terminated is raised again, without its traceback
        if not isinstance(report.exc_value, Terminated):
            unraisable(report)

    sys.unraisablehook = quiet_about_terminated
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        sys.unraisablehook = unraisable
        _terminating.clear()


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.kernels:
            kernels.use(args.kernels)
        else:
            kernels.selected()  # $BPTT_KERNELS, checked before any work
    except (kernels.KernelsUnavailable, ValueError) as error:
        print(f"bptt {args.verb}: {error}", file=sys.stderr)
        return REFUSED
    try:
        with _sigterm_raises():
            if getattr(args, "output", None):  # -o of any verb: its folder is there before any work
                _check_output(args.output)
            return VERBS[args.verb][1](args)
    except CommandError as error:
        print(f"bptt {args.verb}: {error}", file=sys.stderr)
        return error.status
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"bptt {args.verb}: {'terminated (SIGTERM)' if terminated else 'interrupted'}", file=sys.stderr)
        return TERMINATED if terminated else INTERRUPTED
    except BrokenPipeError:
        # the reader went away (``bptt sample ... | head``): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE
    except OSError as error:  # the system refused a file operation that no verb foresaw
        where = f"{error.filename}: " if error.filename else ""
        print(f"bptt {args.verb}: {where}{error.strerror or error}", file=sys.stderr)
        return SYSTEM


if __name__ == "__main__":
    sys.exit(main())
