"""What truncated backpropagation differentiates, checked, and what it costs.

With per-loss truncation at depth k, the term ``L_t`` of the loss sends its gradient back to
steps t-k+1 .. t only. That gradient is the exact gradient of another objective,

    F_k(θ) = Σ_t L_t(a run of steps t-k+1 .. t, from the state that entered step t-k+1
                     at the current parameters θ₀, held constant)

so a gradient check of truncated BPTT passes against F_k and fails against the full loss
F(θ) = Σ_t L_t. The relative difference between the truncated and the full gradient is the
truncation bias. The objectives here are the linear ones of :mod:`bptt.proofs.objectives`.
"""

from dataclasses import dataclass

import numpy as np

from ..cells import CELLS
from ..layers import stack_backward_truncated, stack_forward
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


def truncated_objective(cell, arrays0, dy, dstate_n, depth, num_layers):
    """``F_k`` of the module docstring as a function of a dict of arrays.

    The states entering each window are computed once, at ``arrays0``, and held constant; a
    window that starts at step 0 starts from the arrays' own initial state, which stays a
    variable. ``dy`` (T, B, H), ``dstate_n`` a tuple of (L, B, H): the upstream gradients that
    make each ``L_t`` linear, as in :func:`bptt.proofs.objectives.stack_objective`.
    """
    fixed = entering_states(cell, arrays0, num_layers)
    T = dy.shape[0]

    def objective(arrays):
        params, state0 = split_arrays(arrays, cell)
        total = 0.0
        for t in range(T):
            start = max(0, t - depth + 1)
            state = state0 if start == 0 else fixed[start]
            y, state_n, _ = stack_forward(cell, params, arrays["x"][start:t + 1], state, None, num_layers, 1)
            total += np.sum(y[-1] * dy[t])
            if t == T - 1:
                total += sum(np.sum(s * d) for s, d in zip(state_n, dstate_n))
        return float(total)

    return objective


@dataclass(frozen=True)
class TruncationRow:
    """One tensor: the check of its truncated gradient, and the bias against the full one."""

    name: str
    rel_err_truncated: float  # against central differences of F_k: rounding error when right
    rel_err_full: float  # the same gradient checked against the full loss F: fails
    bias: float  # ||g_k - g|| / ||g||, the truncation bias

    def passed(self, threshold):
        return self.rel_err_truncated <= threshold


def truncation_report(cell_name, depth, num_layers=1, steps=8, max_entries=48, seed=0, threshold=1e-7):
    """Check truncated BPTT at ``depth`` against ``F_k`` and against the full loss.

    Returns a list of :class:`TruncationRow`, one per parameter, ``x`` and initial state.
    """
    cell = CELLS[cell_name]
    rng = np.random.default_rng(seed)
    arrays, dy, dstate_n = random_problem(cell, num_layers, 1, None, rng, steps=steps)
    _, full = stack_objective(cell, arrays, dy, dstate_n, None, num_layers, 1)
    params, state0 = split_arrays(arrays, cell)
    _, _, cache = stack_forward(cell, params, arrays["x"], state0, None, num_layers, 1)
    truncated, truncated["x"], dstate0 = stack_backward_truncated(dy, dstate_n, cache, depth)
    truncated.update(zip(state_keys(cell), dstate0))
    objective_k = truncated_objective(cell, arrays, dy, dstate_n, depth, num_layers)

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


def format_truncation(cell_name, depth, rows, threshold):
    """One cell's table: each tensor against ``F_k`` (must pass) and against the full loss."""
    lines = [
        f"{cell_name}, truncated at depth {depth}",
        f"  {'tensor':<16} {'vs truncated objective':>22} {'vs full loss':>13} {'bias |g_k-g|/|g|':>17}",
    ]
    for r in rows:
        lines.append(
            f"  {r.name:<16} {r.rel_err_truncated:>17.2e} {'ok' if r.passed(threshold) else 'FAIL':>4} "
            f"{r.rel_err_full:>13.2e} {r.bias:>17.3f}"
        )
    return "\n".join(lines)
