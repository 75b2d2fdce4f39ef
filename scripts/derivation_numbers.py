"""The numbers quoted in docs/derivation.md, computed by the library.

    python scripts/derivation_numbers.py            # print the blocks
    python scripts/derivation_numbers.py --write    # refresh them and the code links in the doc
    python scripts/derivation_numbers.py --check    # exit 1 if the doc disagrees

The doc holds each block between ``<!-- numbers:NAME -->`` and ``<!-- /numbers:NAME -->``, and
links each equation to its code as ``[`code`](../src/bptt/<file>#L<line>)``: the line must
contain the quoted code outside any comment or docstring, and ``--write`` moves the number to
where the code now is. Each block's caption in the doc, the paragraph right above it, names
the block. Everything is float64 and seeded, so the blocks are the same on every machine up
to the last printed digit.
"""

import argparse
import ast
import io
import pathlib
import re
import sys
import tokenize

import numpy as np

from bptt import LSTM, kernels, recurrence
from bptt.cells import lstm, rnn_tanh
from bptt.layers import layer_weights, param_shapes, stack_backward_window, stack_forward
from bptt.nets import Network
from bptt.proofs.flow import gradient_reach, per_step_grads, reach_by_cell, walk_back
from bptt.proofs.gradcheck import gradcheck
from bptt.proofs.objectives import stack_objective
from bptt.proofs.truncation import jacobian_asymmetry, truncation_report
from bptt.recurrence import Window

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


def course_wo(w_hh, w_ih):
    """The course's ``Wo`` (H, H + I), acting on ``[a_prev; x]``, from torch-layout (…, 4H, ·)
    arrays of gates i, f, g, o: W_hh's o rows, then W_ih's."""
    return np.concatenate([w_hh[..., 3 * H:4 * H, :], w_ih[..., 3 * H:4 * H, :]], axis=-1)


def relative(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def dwo_block():
    params, x, state0, dy = problem()
    weights = layer_weights(params, 0, 0)
    steps = per_step_grads(lstm, weights, x, state0, dy)
    terms = course_wo(steps["w_hh"], steps["w_ih"])  # T,H,H+I
    total = terms.sum(axis=0)
    _, _, cache = recurrence.forward(lstm, weights, x, state0)
    full, _, _ = recurrence.backward(dy, (None, None), cache)
    full_wo = course_wo(full.w_hh, full.w_ih)
    lines = ["| step t | ‖dWo term at t‖ |", "|---:|---:|"]
    lines += [f"| {t} | {np.linalg.norm(terms[t]):.4f} |" for t in range(T)]
    lines.append(f"| **sum** | **{np.linalg.norm(total):.4f}** |")
    lines += [
        "",
        f"- Σ_t of the terms equals the gradient of one backward call to rounding: max |difference| "
        f"{rounding(np.abs(total - full_wo).max(), 1e-15)}.",
        f"- Keeping only the last step's term is off by {relative(terms[-1], full_wo):.0%} of ‖dWo‖.",
    ]
    return "\n".join(lines)


def entry_block():
    params, x, state0, dy = problem()
    weights = layer_weights(params, 0, 0)
    _, _, cache = recurrence.forward(lstm, weights, x, state0)
    from_future = {t - 1: dstate for t, _, dstate in walk_back(dy, (None, None), cache) if t > 0}
    lines = ["| step t | ‖dy_t‖ (its own loss) | ‖dh_t^next‖ (from t+1) | ‖dc_t^next‖ (from t+1) |",
             "|---:|---:|---:|---:|"]
    for t in range(T):
        dh_future, dc_future = from_future.get(t, (np.zeros((B, H)), np.zeros((B, H))))
        lines.append(f"| {t} | {np.linalg.norm(dy[t]):.4f} | {np.linalg.norm(dh_future):.4f} | "
                     f"{np.linalg.norm(dc_future):.4f} |")
    return "\n".join(lines)


def window_label(window):
    if window.k1 == 1:
        return f"depth {window.k2}" + (" = T" if window.k2 == T else "")
    if window.k1 == window.k2:
        return f"windows of {window.k1}" + (", from the end" if window.align == "end" else "")
    return f"TBPTT({window.k1}, {window.k2})"


def reach_profile(window, steps):
    """How many steps each loss reaches back, its own included: entry t for the loss at t."""
    reach = [0] * steps
    for start, stop in window.chunks(steps):
        for t in range(start, stop):
            reach[t] = t - window.reach(start) + 1
    return reach


TRUNCATIONS = [Window(1, k) for k in range(1, T + 1)] + [
    Window(2, 2), Window(3, 3), Window(4, 4), Window(4, 4, "end"), Window(2, 3), Window(2, 4), Window(3, 5)]


def truncation_block():
    params, x, state0, dy = problem()
    _, _, cache = stack_forward(lstm, params, x, tuple(s[None] for s in state0), None, 1, 1)
    full, _, _ = stack_backward_window(dy, (None, None), cache, Window(T, T))
    full_wo = course_wo(full["weight_hh_l0"], full["weight_ih_l0"])
    lines = ["| truncation | steps each loss reaches, t = 0 … 5 | ‖dWo_w − dWo‖ / ‖dWo‖ | "
             "‖dW_hh,w − dW_hh‖ / ‖dW_hh‖ |", "|---|---|---:|---:|"]
    for window in TRUNCATIONS:
        grads, _, _ = stack_backward_window(dy, (None, None), cache, window)
        wo = relative(course_wo(grads["weight_hh_l0"], grads["weight_ih_l0"]), full_wo)
        hh = relative(grads["weight_hh_l0"], full["weight_hh_l0"])
        profile = " ".join(map(str, reach_profile(window, T)))
        lines.append(f"| {window_label(window)} | {profile} | {rounding(wo, 1e-12)} | {rounding(hh, 1e-12)} |")
    return "\n".join(lines)


def gradcheck_block():
    lines = ["| truncation | tensor | vs its objective F_w | vs the full loss F | bias ‖g_w − g‖ / ‖g‖ |",
             "|---|---|---:|---:|---:|"]
    for window in (Window(1, 1), Window(1, 3), Window(3, 3), Window(2, 4)):
        for row in truncation_report("lstm", window, steps=T, max_entries=None, seed=SEED):
            if row.name in ("weight_hh_l0", "weight_ih_l0", "h0"):
                lines.append(f"| {window_label(window)} | `{row.name}` | {rounding(row.rel_err_truncated)} | "
                             f"{row.rel_err_full:.2f} | {row.bias:.3f} |")
    return "\n".join(lines)


def head_block():
    """A many-to-many network (LSTM, linear head, mean cross-entropy): the head's gradients of
    a truncated backward checked against the full loss."""
    rng = np.random.default_rng(SEED)
    net = Network(LSTM(I, H, dtype=np.float64, seed=SEED), 5, seed=SEED)
    x = rng.normal(size=(T, 2, I))
    targets = rng.integers(0, 5, size=(T, 2))

    def loss(params):
        return net.forward(x, targets, params=params)[0]

    _, full, _ = net.loss_and_grads(x, targets)
    names = ("head.weight", "head.bias", "rnn.weight_hh_l0")
    lines = ["| depth k | tensor | vs the full loss F | ‖g_k − g‖ / ‖g‖ |", "|---:|---|---:|---:|"]
    for depth in (1, 3):
        _, grads, _ = net.loss_and_grads(x, targets, depth=depth)
        check = gradcheck(loss, net.params, {name: grads[name] for name in names}, seed=SEED)
        for tensor in check.tensors:
            bias = relative(grads[tensor.name], full[tensor.name])
            shown = "0 (bit for bit)" if bias == 0 else f"{bias:.3f}"
            lines.append(f"| {depth} | `{tensor.name}` | {rounding(tensor.max_rel_err)} | {shown} |")
    return "\n".join(lines)


def loose_block():
    """A vanilla RNN whose gradient vanishes fast: at depth k the part of the gradient lost is
    tiny, and a check against the full loss passes at a loose tolerance, or even at 1e-7."""
    steps, batch, hidden = 40, 4, 16
    rng = np.random.default_rng(0)
    bound = 1.0 / np.sqrt(hidden)
    arrays = {k: rng.uniform(-bound, bound, size=s) for k, s in param_shapes(rnn_tanh, I, hidden, 1, 1).items()}
    arrays["x"] = rng.normal(size=(steps, batch, I))
    arrays["h0"] = np.zeros((1, batch, hidden))
    dy = rng.normal(size=(steps, batch, hidden))
    dstate_n = (np.zeros((1, batch, hidden)),)
    params = {k: v for k, v in arrays.items() if k.startswith(("weight", "bias"))}
    _, full = stack_objective(rnn_tanh, arrays, dy, dstate_n, None, 1, 1)
    _, _, cache = stack_forward(rnn_tanh, params, arrays["x"], (arrays["h0"],), None, 1, 1)

    def loss(point):
        return stack_objective(rnn_tanh, point, dy, dstate_n, None, 1, 1)[0]

    lines = ["| depth k | ‖dW_hh,k − dW_hh‖ / ‖dW_hh‖ | vs the full loss F | passes at 1e-3 | "
             "passes at 1e-7 |", "|---:|---:|---:|:---:|:---:|"]
    for depth in (5, 10, 20, 30):
        grads, _, _ = stack_backward_window(dy, dstate_n, cache, Window(1, depth))
        err = gradcheck(loss, arrays, {"weight_hh_l0": grads["weight_hh_l0"]}).tensors[0].max_rel_err
        lines.append(f"| {depth} | {relative(grads['weight_hh_l0'], full['weight_hh_l0']):.1e} | {err:.1e} | "
                     f"{'yes' if err <= 1e-3 else 'no'} | {'yes' if err <= 1e-7 else 'no'} |")
    return "\n".join(lines)


def asymmetry_block():
    lines = ["| gradient field g | u·(J v) | v·(J u) | \\|u·Jv − v·Ju\\| / max |", "|---|---:|---:|---:|"]
    for window in (None, Window(1, 3), Window(3, 3), Window(2, 4)):
        asymmetry, u_jv, v_ju = jacobian_asymmetry("lstm", window, steps=T, seed=SEED)
        label = "full BPTT (the control)" if window is None else window_label(window)
        lines.append(f"| {label} | {u_jv:.6f} | {v_ju:.6f} | {rounding(asymmetry, 1e-9)} |")
    return "\n".join(lines)


FLOW_KS = (1, 10, 20, 50, 99)


def flow_row(name, values):
    return f"| {name} | " + " | ".join(f"{values[k]:.1e}" for k in FLOW_KS) + " |"


def flow_block():
    curves = reach_by_cell(("rnn", "lstm", "gru"), length=100, hidden_size=64, paths=True)
    alone = reach_by_cell(("lstm",), length=100, hidden_size=64, paths=True, cut="hidden")["lstm (cell)"]
    lines = ["| curve | " + " | ".join(f"k = {k}" for k in FLOW_KS) + " |", "|---|" + "---:|" * len(FLOW_KS)]
    lines += [flow_row(f"{name}: ‖dL_T/d{'c' if 'cell' in name else 'h'}_(T−k)‖", values)
              for name, values in curves.items()]
    lines.append(flow_row("lstm (cell), W_hh path cut: ‖dL_T/dc_(T−k)‖", alone))
    return "\n".join(lines)


GAINS = (0.5, 1, 1.5, 2, 2.5)  # at 4 the forward is chaotic over 100 steps: see the doc


def flow_scale_block():
    """Vanilla RNNs that differ only in W_hh: PyTorch's initialisation, and g·Q for an
    orthogonal Q (every singular value g)."""
    length, batch, hidden, inputs = 100, 16, 64, 8
    rng = np.random.default_rng(0)
    bound = 1.0 / np.sqrt(hidden)
    shapes = param_shapes(rnn_tanh, inputs, hidden, 1, 1)
    params = {k: rng.uniform(-bound, bound, size=s) for k, s in shapes.items()}
    x = rng.normal(size=(length, batch, inputs))
    direction = rng.normal(size=(batch, hidden))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    orthogonal, _ = np.linalg.qr(rng.normal(size=(hidden, hidden)))
    choices = [("PyTorch's U(±1/√H)", params["weight_hh_l0"])]
    choices += [(f"{g:g} · Q", g * orthogonal) for g in GAINS]
    lines = ["| W_hh | ‖W_hh‖₂ | " + " | ".join(f"k = {k}" for k in FLOW_KS) + " |",
             "|---|---:|" + "---:|" * len(FLOW_KS)]
    for label, w_hh in choices:
        weights = layer_weights(dict(params, weight_hh_l0=w_hh), 0, 0)
        reach = gradient_reach(rnn_tanh, weights, x, (np.zeros((batch, hidden)),), direction)
        lines.append(flow_row(f"{label} | {np.linalg.norm(w_hh, 2):.2f}", reach))
    return "\n".join(lines)


BLOCKS = {
    "dwo-sum": dwo_block,
    "entry": entry_block,
    "flow": flow_block,
    "flow-scale": flow_scale_block,
    "truncation": truncation_block,
    "gradcheck": gradcheck_block,
    "head": head_block,
    "loose": loose_block,
    "asymmetry": asymmetry_block,
}


LINK = re.compile(r"\[`(?P<code>[^`]+)`\]\(\.\./src/bptt/(?P<path>[\w/]+\.py)#L(?P<line>\d+)\)")
SOURCE = DOC.parents[1] / "src" / "bptt"


def code_text(source):
    """The lines of a Python ``source`` as code alone: comments cut off, docstrings blanked.

    A link must point at code that computes, not at a comment or a docstring that restates it.
    """
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            lines[row - 1] = lines[row - 1][:col]
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            for row in range(body[0].lineno, body[0].end_lineno + 1):
                lines[row - 1] = ""
    return lines


def code_line(path, code):
    """The 1-based number of the first line of code of ``src/bptt/<path>`` that contains
    ``code`` (comments and docstrings do not count)."""
    for number, line in enumerate(code_text((SOURCE / path).read_text()), start=1):
        if code in line:
            return number
    raise ValueError(f"docs link to `{code}` in {path}: no line of code holds it (comments and docstrings "
                     f"do not count)")


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
    before = kernels.selected()
    kernels.use("reference")  # the numbers are the NumPy kernels', the same on every machine to the digit
    try:
        blocks = {name: make() for name, make in BLOCKS.items()}
    finally:
        kernels.use(before)
    path = pathlib.Path(args.doc)
    if args.write:
        path.write_text(refresh_links(fill(path.read_text(), blocks)))
    elif args.check:
        text = path.read_text()
        try:
            links_stale = refresh_links(text) != text
        except ValueError as error:
            print(f"{path}: {error}", file=sys.stderr)
            return 1
        stale = stale_blocks(text, blocks) + (["code links"] if links_stale else [])
        if stale:
            print(f"{path}: stale {', '.join(stale)}; run scripts/derivation_numbers.py --write", file=sys.stderr)
            return 1
    else:
        for name, content in blocks.items():
            print(f"<!-- numbers:{name} -->\n{content}\n<!-- /numbers:{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
