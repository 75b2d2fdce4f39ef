"""What truncated backpropagation differentiates, checked, and what it costs.

A truncation (``bptt.Window(k1, k2, align)``) cuts the sequence into chunks of k1 steps and
sends the gradient of the losses of a chunk [s, e) back to step r = s - (k2 - k1) and no
further (per-loss depth k is Window(1, k); windows of k are Window(k, k)). That gradient is
the exact gradient of another objective,

    F_w(θ) = Σ_chunks Σ_{t in [s, e)} L_t(a run of steps r .. t, from the state that entered
                                          step r at the current parameters θ₀, held constant)

(the final state's term belongs to the last chunk), so a gradient check of truncated BPTT
passes against F_w and fails against the full loss F(θ) = Σ_t L_t. The relative difference
between the truncated and the full gradient is the truncation bias.

The truncated gradient is not the gradient of any one function of θ, though: F_w depends on
θ₀, the point where it is taken. A gradient field g is a gradient only if its Jacobian is
symmetric (u·Jv = v·Ju for all u, v); :func:`jacobian_asymmetry` measures how far truncated
BPTT is from that, with full BPTT as the control. The objectives here are the linear ones of
:mod:`bptt.proofs.objectives`.
"""

from dataclasses import dataclass

import numpy as np

from ..cells import CELLS
from ..layers import stack_backward_window, stack_forward
from ..recurrence import Window
from .gradcheck import gradcheck
from .objectives import split_arrays, stack_objective, state_keys
from .report import random_problem


def entering_states(cell, arrays, num_layers):
    """The state entering every step, at the point ``arrays``.

    Returns a list of T tuples of (L, B, H) arrays, one per ``cell.STATE_NAMES``.
    """
    params, state = split_arrays(arrays, cell)
    states = []
    for t in range(arrays["x"].shape[0]):
        states.append(state)
        _, state, _ = stack_forward(cell, params, arrays["x"][t:t + 1], state, None, num_layers, 1)
    return states


def truncated_objective(cell, arrays0, dy, dstate_n, window, num_layers):
    """``F_w`` of the module docstring as a function of a dict of arrays.

    The states entering each chunk's reach are computed once, at ``arrays0``, and held
    constant; a reach that starts at step 0 starts from the arrays' own initial state, which
    stays a variable. ``dy`` (T, B, H), ``dstate_n`` a tuple of (L, B, H): the upstream
    gradients that make each ``L_t`` linear, as in :func:`bptt.proofs.objectives.stack_objective`.
    ``window``: a :class:`bptt.recurrence.Window`.
    """
    fixed = entering_states(cell, arrays0, num_layers)
    T = dy.shape[0]
    chunks = window.chunks(T)

    def objective(arrays):
        params, state0 = split_arrays(arrays, cell)
        total = 0.0
        for start, stop in chunks:
            reach = window.reach(start)
            state = state0 if reach == 0 else fixed[reach]
            y, state_n, _ = stack_forward(cell, params, arrays["x"][reach:stop], state, None, num_layers, 1)
            total += np.sum(y[start - reach:] * dy[start:stop])
            if stop == T:
                total += sum(np.sum(s * d) for s, d in zip(state_n, dstate_n))
        return float(total)

    return objective


def describe_objective(window, steps):
    """What ``window`` differentiates, in one sentence."""
    if window.k1 == 1:
        return (f"F_{window.k2}: each loss L_t as a function of steps t-{window.k2 - 1} .. t, from the state "
                f"entering them held at the current parameters")
    counted = "first" if window.align == "start" else "last"
    chunks = ", ".join(f"[{s}, {e})" for s, e in window.chunks(steps))
    extra = window.k2 - window.k1
    back = "" if extra == 0 else f" and the {extra} step{'s' if extra > 1 else ''} before it"
    return (f"the losses of each chunk of {window.k1} steps counted from the {counted} ({chunks}), each as a "
            f"function of its chunk{back}, from the state entering there held at the current parameters")


@dataclass(frozen=True)
class TruncationRow:
    """One tensor: the check of its truncated gradient, and the bias against the full one."""

    name: str
    rel_err_truncated: float  # against central differences of F_w: rounding error when right
    rel_err_full: float  # the same gradient checked against the full loss F: fails
    bias: float  # ||g_w - g|| / ||g||, the truncation bias

    def passed(self, threshold):
        return self.rel_err_truncated <= threshold


def truncation_report(cell_name, window, num_layers=1, steps=8, max_entries=48, seed=0):
    """Check truncated BPTT (a :class:`bptt.recurrence.Window`, or an int: per-loss depth)
    against ``F_w`` and against the full loss.

    Returns a list of :class:`TruncationRow`, one per parameter, ``x`` and initial state.
    """
    cell = CELLS[cell_name]
    window = Window(1, window) if isinstance(window, int) else window
    rng = np.random.default_rng(seed)
    arrays, dy, dstate_n = random_problem(cell, num_layers, 1, None, rng, steps=steps)
    _, full = stack_objective(cell, arrays, dy, dstate_n, None, num_layers, 1)
    truncated = truncated_gradients(cell, arrays, dy, dstate_n, window, num_layers)
    objective_k = truncated_objective(cell, arrays, dy, dstate_n, window, num_layers)

    def objective_full(point):
        return stack_objective(cell, point, dy, dstate_n, None, num_layers, 1)[0]

    against_k = gradcheck(objective_k, arrays, truncated, max_entries=max_entries, seed=seed)
    against_full = gradcheck(objective_full, arrays, truncated, max_entries=max_entries, seed=seed)
    rows = []
    for check_k, check_full in zip(against_k.tensors, against_full.tensors):
        g_k, g = truncated[check_k.name], full[check_k.name]
        rows.append(TruncationRow(
            name=check_k.name,
            rel_err_truncated=check_k.max_rel_err,
            rel_err_full=check_full.max_rel_err,
            bias=float(np.linalg.norm(g_k - g) / max(np.linalg.norm(g), np.finfo(float).tiny)),
        ))
    return rows


def truncated_gradients(cell, arrays, dy, dstate_n, window, num_layers):
    """The truncated gradients at the point ``arrays``: a dict with its keys."""
    params, state0 = split_arrays(arrays, cell)
    _, _, cache = stack_forward(cell, params, arrays["x"], state0, None, num_layers, 1)
    grads, grads["x"], dstate0 = stack_backward_window(dy, dstate_n, cache, window)
    grads.update(zip(state_keys(cell), dstate0))
    return grads


def jacobian_asymmetry(cell_name, window=None, num_layers=1, steps=8, seed=0, pairs=3, step=1e-3,
                       resolution=1e-9):
    """How far a gradient field is from being the gradient of any function: for random unit
    directions u, v over every array, ``|u·Jv - v·Ju| / max(|u·Jv|, |v·Ju|)``, the largest over
    ``pairs`` pairs, where J is the Jacobian of the field (J v by fourth-order central
    differences of the gradient along v). ``window``: a :class:`bptt.recurrence.Window` or None
    for full BPTT, whose Jacobian is a Hessian and symmetric up to the differences' error.
    Asymmetries below ``resolution``, what the differences resolve, count as equal, and of
    equal ones the first pair is kept: which is largest among rounding errors is not a fact
    about the field, and would differ from one BLAS to another.

    Returns ``(asymmetry, u·Jv, v·Ju)`` of the worst pair.
    """
    cell = CELLS[cell_name]
    rng = np.random.default_rng(seed)
    arrays, dy, dstate_n = random_problem(cell, num_layers, 1, None, rng, steps=steps)
    window = window or Window(steps, steps)

    def field(point):
        grads = truncated_gradients(cell, point, dy, dstate_n, window, num_layers)
        return np.concatenate([grads[name].ravel() for name in arrays])

    def directional(v):  # J v = d/dε g(θ + ε v)
        def at(e):
            return field({name: a + e * v[name] for name, a in arrays.items()})
        return (8 * (at(step) - at(-step)) - (at(2 * step) - at(-2 * step))) / (12 * step)

    def direction():
        v = {name: rng.normal(size=a.shape) for name, a in arrays.items()}
        norm = np.sqrt(sum(np.sum(a * a) for a in v.values()))
        return {name: a / norm for name, a in v.items()}

    def flat(v):
        return np.concatenate([v[name].ravel() for name in arrays])

    worst = None
    for _ in range(pairs):
        u, v = direction(), direction()
        u_jv, v_ju = float(flat(u) @ directional(v)), float(flat(v) @ directional(u))
        asymmetry = abs(u_jv - v_ju) / max(abs(u_jv), abs(v_ju))
        if worst is None or max(asymmetry, resolution) > max(worst[0], resolution):
            worst = (asymmetry, u_jv, v_ju)
    return worst


def format_truncation(cell_name, window, rows, threshold, steps=8):
    """One cell's table: each tensor against ``F_w`` (must pass) and against the full loss."""
    lines = [
        f"{cell_name}, {describe_window(window)}: against {describe_objective(window, steps)}",
        f"  {'tensor':<16} {'vs truncated objective':>22} {'vs full loss':>13} {'bias |g_w-g|/|g|':>17}",
    ]
    for r in rows:
        lines.append(
            f"  {r.name:<16} {r.rel_err_truncated:>17.2e} {'ok' if r.passed(threshold) else 'FAIL':>4} "
            f"{r.rel_err_full:>13.2e} {r.bias:>17.3f}"
        )
    return "\n".join(lines)


def describe_window(window):
    """"truncated at depth 3", "windows of 4 counted from the last step", "TBPTT(2, 5) ..."."""
    if window.k1 == 1:
        return f"truncated at depth {window.k2}"
    counted = f"counted from the {'first' if window.align == 'start' else 'last'} step"
    if window.k1 == window.k2:
        return f"windows of {window.k1} {counted}"
    return f"TBPTT({window.k1}, {window.k2}) {counted}"
