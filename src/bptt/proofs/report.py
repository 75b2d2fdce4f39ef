"""The table behind ``bptt gradcheck``: every cell, every tensor, against central differences.

Each configuration draws its parameters, input, initial states and upstream gradients from a
seeded generator (non-zero, different ``bias_ih`` and ``bias_hh``), and checks the gradients
of the parameters, of ``x`` and of the initial state of the linear objective in
:mod:`bptt.proofs.objectives`.
"""

import itertools
from dataclasses import dataclass

import numpy as np

from ..cells import CELLS
from ..layers import param_shapes
from .gradcheck import gradcheck
from .objectives import stack_objective, state_keys

CHECKED_CELLS = ("rnn_tanh", "lstm", "gru")


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


def cell_report(threshold=1e-7, max_entries=48, seed=0, cells=CHECKED_CELLS):
    """Check every configuration of cell × layers {1, 2} × directions × {without, with lengths}.

    Returns a list of :class:`ConfigRow`.
    """
    rows = []
    configs = itertools.product(cells, (1, 2), (False, True), (False, True))
    for index, (cell_name, num_layers, bidirectional, with_lengths) in enumerate(configs):
        rng = np.random.default_rng([seed, index])
        cell = CELLS[cell_name]
        num_directions = 2 if bidirectional else 1
        lengths = np.array([4, 2, 1]) if with_lengths else None
        arrays, dy, dstate_n = random_problem(cell, num_layers, num_directions, lengths, rng)

        def objective(point):
            return stack_objective(cell, point, dy, dstate_n, lengths, num_layers, num_directions)[0]

        _, grads = stack_objective(cell, arrays, dy, dstate_n, lengths, num_layers, num_directions)
        result = gradcheck(objective, arrays, grads, max_entries=max_entries, seed=seed, threshold=threshold)
        worst = result.worst
        rows.append(ConfigRow(
            cell=cell_name, num_layers=num_layers, bidirectional=bidirectional, with_lengths=with_lengths,
            tensors=len(result.tensors), entries=sum(t.checked for t in result.tensors),
            worst_tensor=worst.name, max_rel_err=worst.max_rel_err, passed=result.passed,
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
