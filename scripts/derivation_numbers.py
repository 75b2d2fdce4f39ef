"""The numbers quoted in docs/derivation.md, computed by the library.

    python scripts/derivation_numbers.py            # print the blocks
    python scripts/derivation_numbers.py --write    # refresh them and the code links in the doc
    python scripts/derivation_numbers.py --check    # exit 1 if the doc disagrees

The doc holds each block between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->``, and
links each equation to its code as ``[`code`](../src/bptt/<file>#L<line>)``: the line must
contain the quoted code, and ``--write`` moves the number to where the code now is.
Everything is float64 and seeded, so the blocks are the same on every machine up to the
last printed digit.
"""

import argparse
import pathlib
import re
import sys

import numpy as np

from bptt import recurrence
from bptt.cells import lstm
from bptt.layers import layer_weights, param_shapes, stack_backward_truncated, stack_forward
from bptt.proofs.flow import per_step_grads, reach_by_cell, walk_back
from bptt.proofs.truncation import truncation_report

DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "derivation.md"
T, B, I, H = 6, 1, 3, 4
SEED = 7


def problem():
    """A small LSTM with a loss at every step: ``L = Σ_t h_t · dy_t`` with random ``dy``.

    As in the course: a random initial hidden state ``a0`` and a zero cell state.
    """
    rng = np.random.default_rng(SEED)
    params = {k: rng.normal(0.0, 0.5, size=s) for k, s in param_shapes(lstm, I, H, 1, 1).items()}
    x = rng.normal(size=(T, B, I))
    state0 = (rng.normal(0.0, 0.5, size=(B, H)), np.zeros((B, H)))
    dy = rng.normal(size=(T, B, H))
    return params, x, state0, dy


def rounding(value, bound=1e-8):
    """A number that is rounding error when small, printed as a bound so that it reads the
    same whatever BLAS summed it."""
    return f"< {bound:.0e}" if value < bound else f"{value:.2g}"


def output_gate_rows(a):
    """The rows of W_o within a (..., 4H, ·) torch-layout gradient (gates i, f, g, o)."""
    return a[..., 3 * H:4 * H, :]


def dwo_block():
    params, x, state0, dy = problem()
    weights = layer_weights(params, 0, 0)
    steps = per_step_grads(lstm, weights, x, state0, dy)
    # the course's Wo acts on [a_prev; x]: W_hh's o rows then W_ih's o rows
    terms = np.concatenate([output_gate_rows(steps["w_hh"]), output_gate_rows(steps["w_ih"])], axis=-1)
    total = terms.sum(axis=0)
    _, _, cache = recurrence.forward(lstm, weights, x, state0)
    full, _, _ = recurrence.backward(dy, (None, None), cache)
    full_wo = np.concatenate([output_gate_rows(full.w_hh), output_gate_rows(full.w_ih)], axis=-1)
    lines = ["| step t | ‖dWo term at t‖ |", "|---:|---:|"]
    lines += [f"| {t} | {np.linalg.norm(terms[t]):.4f} |" for t in range(T)]
    lines.append(f"| **sum** | **{np.linalg.norm(total):.4f}** |")
    last = np.linalg.norm(terms[-1] - full_wo) / np.linalg.norm(full_wo)
    lines += [
        "",
        f"- Σ_t of the terms equals the gradient of one backward call to rounding: max |difference| "
        f"{rounding(np.abs(total - full_wo).max(), 1e-15)}.",
        f"- Keeping only the last step's term is off by {last:.0%} of ‖dWo‖.",
    ]
    return "\n".join(lines)


def entry_block():
    params, x, state0, dy = problem()
    weights = layer_weights(params, 0, 0)
    _, _, cache = recurrence.forward(lstm, weights, x, state0)
    from_future = {t - 1: dstate for t, _, dstate in walk_back(dy, (None, None), cache) if t > 0}
    lines = ["| step t | ‖dy_t‖ (its own loss) | ‖dh from t+1‖ | ‖dc from t+1‖ |", "|---:|---:|---:|---:|"]
    for t in range(T):
        dh_future, dc_future = from_future.get(t, (np.zeros((B, H)), np.zeros((B, H))))
        lines.append(f"| {t} | {np.linalg.norm(dy[t]):.4f} | {np.linalg.norm(dh_future):.4f} | "
                     f"{np.linalg.norm(dc_future):.4f} |")
    return "\n".join(lines)


def truncation_block():
    params, x, state0, dy = problem()
    state0_stack = tuple(s[None] for s in state0)
    _, _, cache = stack_forward(lstm, params, x, state0_stack, None, 1, 1)
    full, _, _ = stack_backward_truncated(dy, (None, None), cache, T)
    lines = ["| depth k | ‖dWo_k − dWo‖ / ‖dWo‖ | ‖dW_hh,k − dW_hh‖ / ‖dW_hh‖ |", "|---:|---:|---:|"]
    for depth in range(1, T + 1):
        grads, _, _ = stack_backward_truncated(dy, (None, None), cache, depth)
        wo = np.linalg.norm(output_gate_rows(grads["weight_hh_l0"] - full["weight_hh_l0"]))
        wo /= np.linalg.norm(output_gate_rows(full["weight_hh_l0"]))
        hh = np.linalg.norm(grads["weight_hh_l0"] - full["weight_hh_l0"]) / np.linalg.norm(full["weight_hh_l0"])
        lines.append(f"| {depth}{' = T' if depth == T else ''} | {rounding(wo, 1e-12)} | {rounding(hh, 1e-12)} |")
    return "\n".join(lines)


def gradcheck_block():
    lines = ["| depth k | tensor | vs the truncated objective | vs the full loss | bias |", "|---:|---|---:|---:|---:|"]
    for depth in (1, 3):
        for row in truncation_report("lstm", depth, steps=T, max_entries=None, seed=SEED):
            if row.name in ("weight_hh_l0", "weight_ih_l0", "h0"):
                lines.append(f"| {depth} | `{row.name}` | {rounding(row.rel_err_truncated)} | {row.rel_err_full:.2f} | "
                             f"{row.bias:.3f} |")
    return "\n".join(lines)


def flow_block():
    curves = reach_by_cell(("rnn", "lstm", "gru"), length=100, hidden_size=64)
    ks = (1, 10, 20, 50, 99)
    lines = ["| cell | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
    lines += [f"| {name} | " + " | ".join(f"{values[k]:.1e}" for k in ks) + " |" for name, values in curves.items()]
    return "\n".join(lines)


BLOCKS = {
    "flow": flow_block,
    "dwo-sum": dwo_block,
    "entry": entry_block,
    "truncation": truncation_block,
    "gradcheck": gradcheck_block,
}


LINK = re.compile(r"\[`(?P<code>[^`]+)`\]\(\.\./src/bptt/(?P<path>[\w/]+\.py)#L(?P<line>\d+)\)")
SOURCE = DOC.parents[1] / "src" / "bptt"


def code_line(path, code):
    """The 1-based number of the first line of ``src/bptt/<path>`` that contains ``code``."""
    for number, line in enumerate((SOURCE / path).read_text().splitlines(), start=1):
        if code in line:
            return number
    raise ValueError(f"docs link to `{code}` in {path}: no such line any more")


def refresh_links(doc_text):
    """``doc_text`` with every code link pointing at the line that holds its code."""
    return LINK.sub(lambda m: f"[`{m['code']}`](../src/bptt/{m['path']}#L{code_line(m['path'], m['code'])})", doc_text)


def fill(doc_text, blocks):
    """``doc_text`` with every block replaced by its fresh content."""
    for name, content in blocks.items():
        pattern = re.compile(rf"(<!-- numbers:{name} -->\n)(?:.*?\n)?(<!-- /numbers:{name} -->)", re.S)
        if not pattern.search(doc_text):
            raise ValueError(f"{DOC.name} has no block numbers:{name}")
        doc_text = pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), doc_text)
    return doc_text


def stale_blocks(doc_text, blocks):
    """The names of the blocks whose content in ``doc_text`` differs from ``blocks``."""
    fresh = fill(doc_text, blocks)
    stale = []
    for name in blocks:
        pattern = re.compile(rf"<!-- numbers:{name} -->\n(.*?)<!-- /numbers:{name} -->", re.S)
        if pattern.search(doc_text).group(1) != pattern.search(fresh).group(1):
            stale.append(name)
    return stale


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    parser.add_argument("doc", nargs="?", default=str(DOC))
    args = parser.parse_args(argv)
    blocks = {name: make() for name, make in BLOCKS.items()}
    path = pathlib.Path(args.doc)
    if args.write:
        path.write_text(refresh_links(fill(path.read_text(), blocks)))
    elif args.check:
        text = path.read_text()
        stale = stale_blocks(text, blocks) + (["code links"] if refresh_links(text) != text else [])
        if stale:
            print(f"{path}: stale {', '.join(stale)}; run scripts/derivation_numbers.py --write", file=sys.stderr)
            return 1
    else:
        for name, content in blocks.items():
            print(f"<!-- numbers:{name} -->\n{content}\n<!-- /numbers:{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
