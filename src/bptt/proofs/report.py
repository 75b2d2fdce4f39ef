"""The table behind ``bptt gradcheck``: every cell, every tensor, against central differences.

Each configuration draws its parameters, input, initial states and upstream gradients from a
seeded generator (non-zero, different ``bias_ih`` and ``bias_hh``), and checks the gradients
of the parameters, of ``x`` and of the initial state of the linear objective in
:mod:`bptt.proofs.objectives`.

ReLU has a kink at 0, where it has no derivative and central differences that straddle it
measure neither side's slope. Away from it the ReLU RNN is piecewise linear and its gradient
exact, so its points are drawn again (from the same generator, so still seeded) until no
pre-activation within the sequences' lengths lies within ``KINK_MARGIN`` of 0. The check
perturbs one entry at a time by up to two steps of 1e-3, which moves a pre-activation of these
points by at most about 0.03, so the margin is a filter, not a bound: the proof is a test that
perturbs every entry of every configuration (default seed) as the check does and finds no
pre-activation that changes sign.
"""

import itertools
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .. import recurrence
from ..cells import CELLS
from ..layers import layer_weights, param_shapes
from .gradcheck import gradcheck
from .objectives import split_arrays, stack_objective, state_keys

CHECKED_CELLS = ("rnn_tanh", "lstm", "gru", "rnn_relu")  # rnn_relu last: the others keep their seeds
KINKED_CELLS = ("rnn_relu",)  # cells whose nonlinearity has a kink at 0
KINK_MARGIN = 0.02  # the closest a checked pre-activation of a kinked cell may be to 0


@dataclass(frozen=True)
class ConfigRow:
    """One configuration of the table and the worst tensor found in it."""

    cell: str
    num_layers: int
    bidirectional: bool
    with_lengths: bool
    tensors: int
    entries: int
    worst_tensor: str
    max_rel_err: float
    passed: bool


def random_problem(cell, num_layers, num_directions, lengths, rng, steps=4, batch=3, input_size=3, hidden_size=4):
    """A random float64 point and upstream gradients for :func:`stack_objective`.

    Returns ``(arrays, dy, dstate_n)`` with the shapes that function documents.
    """
    shapes = param_shapes(cell, input_size, hidden_size, num_layers, num_directions)
    arrays = {name: rng.normal(0.0, 0.5, size=shape) for name, shape in shapes.items()}
    arrays["x"] = rng.normal(size=(steps, batch, input_size))
    state_shape = (num_layers * num_directions, batch, hidden_size)
    for name in state_keys(cell):
        arrays[name] = rng.normal(0.0, 0.5, size=state_shape)
    dy = rng.normal(size=(steps, batch, num_directions * hidden_size))
    if lengths is not None:
        dy[np.arange(steps)[:, None] >= lengths[None, :]] = 0.0  # no output there to differentiate
    dstate_n = tuple(rng.normal(size=state_shape) for _ in cell.STATE_NAMES)
    return arrays, dy, dstate_n


def pre_activations(cell, arrays, lengths, num_layers, num_directions):
    """The pre-activations ``W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` of a one-gate cell (a
    vanilla RNN) at a point of :func:`random_problem`, at every step within the lengths.

    Returns a list of (N, H) arrays, one per layer and direction, N the valid (step, sequence)
    pairs.
    """
    params, (h0,) = split_arrays(arrays, cell)
    x = arrays["x"]  # T,B,I
    T, B = x.shape[:2]
    mask = None if lengths is None else recurrence.length_mask(lengths, T)  # T,B,1
    within = np.ones((T, B), bool) if mask is None else mask[:, :, 0]  # T,B
    layer_input, found = x, []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            k = layer * num_directions + direction
            weights = layer_weights(params, layer, direction)
            # the reverse direction runs forward over each sequence reversed within its length
            seq = layer_input if direction == 0 else recurrence.reverse_time(layer_input, lengths)
            y, _, _ = recurrence.forward(cell, weights, seq, (h0[k],), mask, keep_cache=False)  # T,B,H
            previous = np.concatenate([h0[k][None], y[:-1]])  # T,B,H  h_{t-1}
            pre = seq @ weights.w_ih.T + weights.b_ih + previous @ weights.w_hh.T + weights.b_hh  # T,B,H
            found.append(pre[within])
            outputs.append(y if direction == 0 else recurrence.reverse_time(y, lengths))
        layer_input = np.concatenate(outputs, axis=-1)  # T,B,D*H
    return found


def kink_margin(cell, arrays, lengths, num_layers, num_directions):
    """How close the point comes to the kink: the smallest |pre-activation| of
    :func:`pre_activations`."""
    return min(float(np.abs(pre).min()) for pre in pre_activations(cell, arrays, lengths, num_layers, num_directions))


class ConfigProblem(NamedTuple):
    """One configuration of the table and the point it is checked at."""

    cell_name: str
    num_layers: int
    bidirectional: bool
    lengths: np.ndarray | None  # B
    arrays: dict  # parameters, "x" and the initial states, as random_problem
    dy: np.ndarray  # T,B,D*H
    dstate_n: tuple  # (L*D, B, H) per state


def config_problems(seed=0, cells=CHECKED_CELLS):
    """Every configuration of cell × layers {1, 2} × directions × {without, with lengths}, in
    the table's order, each with its seeded point (redrawn away from a kink, see the module's
    docstring). Returns an iterator of :class:`ConfigProblem`."""
    configs = itertools.product(cells, (1, 2), (False, True), (False, True))
    for index, (cell_name, num_layers, bidirectional, with_lengths) in enumerate(configs):
        rng = np.random.default_rng([seed, index])
        cell = CELLS[cell_name]
        num_directions = 2 if bidirectional else 1
        lengths = np.array([4, 2, 1]) if with_lengths else None
        arrays, dy, dstate_n = random_problem(cell, num_layers, num_directions, lengths, rng)
        kinked = cell_name in KINKED_CELLS
        while kinked and kink_margin(cell, arrays, lengths, num_layers, num_directions) < KINK_MARGIN:
            arrays, dy, dstate_n = random_problem(cell, num_layers, num_directions, lengths, rng)
        yield ConfigProblem(cell_name, num_layers, bidirectional, lengths, arrays, dy, dstate_n)


def cell_report(threshold=1e-7, max_entries=48, seed=0, cells=CHECKED_CELLS):
    """Check every configuration of :func:`config_problems`.

    Returns a list of :class:`ConfigRow`.
    """
    rows = []
    for problem in config_problems(seed, cells):
        cell = CELLS[problem.cell_name]
        arrays, dy, dstate_n, lengths = problem.arrays, problem.dy, problem.dstate_n, problem.lengths
        num_layers, num_directions = problem.num_layers, 2 if problem.bidirectional else 1

        def objective(point):
            return stack_objective(cell, point, dy, dstate_n, lengths, num_layers, num_directions)[0]

        _, grads = stack_objective(cell, arrays, dy, dstate_n, lengths, num_layers, num_directions)
        result = gradcheck(objective, arrays, grads, max_entries=max_entries, seed=seed, threshold=threshold)
        worst = result.worst
        rows.append(ConfigRow(
            cell=problem.cell_name, num_layers=num_layers, bidirectional=problem.bidirectional,
            with_lengths=lengths is not None, tensors=len(result.tensors),
            entries=sum(t.checked for t in result.tensors), worst_tensor=worst.name,
            max_rel_err=worst.max_rel_err, passed=result.passed,
        ))
    return rows


def format_report(rows, threshold):
    """The table as text, with a last line saying whether every tensor passed."""
    lines = [f"{'cell':<9} {'layers':>6} {'dirs':>4} {'lengths':>7} {'tensors':>7} {'entries':>7} "
             f"{'worst tensor':<20} {'max rel err':>11}"]
    for r in rows:
        lines.append(
            f"{r.cell:<9} {r.num_layers:>6} {2 if r.bidirectional else 1:>4} {'yes' if r.with_lengths else 'no':>7} "
            f"{r.tensors:>7} {r.entries:>7} {r.worst_tensor:<20} {r.max_rel_err:>11.2e}"
            + ("" if r.passed else "  FAIL")
        )
    failed = sum(not r.passed for r in rows)
    worst = max(r.max_rel_err for r in rows)
    verdict = (f"all {len(rows)} configurations pass: every tensor under {threshold:.0e} (worst {worst:.2e})"
               if not failed else f"{failed} of {len(rows)} configurations FAIL the threshold {threshold:.0e}")
    return "\n".join(lines + [verdict])
