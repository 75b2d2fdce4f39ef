"""Central-difference gradient checks of any scalar function of a dict of arrays.

The numerical derivative of entry ``j`` of tensor ``name`` is the fourth-order central
difference

    f'(θ_j) ≈ [8 (f(θ + h e_j) − f(θ − h e_j)) − (f(θ + 2h e_j) − f(θ − 2h e_j))] / (12 h)

whose truncation error is O(h⁴): with h = 1e-3 in float64 both it (~1e-12) and the rounding
error (~1e-16 |f| / h) stay far below the 1e-7 that a correct gradient must reach, where the
two-point formula, O(h²), cannot get both small at once.

The relative error of an entry is ``|a − n| / max(|a|, |n|, floor)`` with ``a`` the analytic and
``n`` the numerical value, and ``floor = 1e-3 × (largest |a| or |n| of the tensor)``: entries a
thousand times smaller than the tensor's largest are measured against that scale, so that a
gradient that is zero by structure is not failed by rounding noise, while any error bigger than
a millionth of the tensor's scale still shows.
"""

from dataclasses import dataclass

import numpy as np

FLOOR = 1e-3


@dataclass(frozen=True)
class TensorCheck:
    """The check of one gradient tensor."""

    name: str
    shape: tuple
    checked: int  # entries compared
    max_rel_err: float
    worst_index: tuple  # where the largest relative error occurs
    analytic: float  # the two values there
    numeric: float

    def passed(self, threshold):
        return self.max_rel_err <= threshold


@dataclass(frozen=True)
class GradcheckResult:
    """Per-tensor results of :func:`gradcheck`, in the order of the arrays given."""

    tensors: list
    threshold: float

    @property
    def passed(self):
        return all(t.passed(self.threshold) for t in self.tensors)

    @property
    def worst(self):
        return max(self.tensors, key=lambda t: t.max_rel_err)

    def __str__(self):
        lines = [f"{'tensor':<22} {'shape':<14} {'checked':>8} {'max rel err':>12}  {'worst at':<14} {'':4}"]
        for t in self.tensors:
            lines.append(
                f"{t.name:<22} {str(t.shape):<14} {t.checked:>8} {t.max_rel_err:>12.2e}  "
                f"{str(t.worst_index):<14} {'ok' if t.passed(self.threshold) else 'FAIL'}"
            )
        return "\n".join(lines)


def numerical_derivatives(fun, arrays, name, indices, step=1e-3):
    """Fourth-order central differences of ``fun(arrays)`` at the given entries of one tensor.

    Parameters
    ----------
    fun : callable, dict name -> ndarray to a float
    arrays : dict name -> float64 ndarray; perturbed in place and restored before returning
    name : the tensor to differentiate
    indices : (N,) flat indices into ``arrays[name]``
    step : h

    Returns
    -------
    (N,) float64
    """
    flat = arrays[name].reshape(-1)  # a view: the perturbations reach ``fun``
    out = np.empty(len(indices))
    for k, j in enumerate(indices):
        original = flat[j]
        values = []
        for offset in (step, -step, 2 * step, -2 * step):
            flat[j] = original + offset
            values.append(float(fun(arrays)))
        flat[j] = original
        f1, fm1, f2, fm2 = values
        out[k] = (8.0 * (f1 - fm1) - (f2 - fm2)) / (12.0 * step)
    return out


def relative_errors(analytic, numeric, scale):
    """Entrywise ``|a − n| / max(|a|, |n|, FLOOR × scale)`` (see the module docstring)."""
    floor = max(FLOOR * scale, np.finfo(np.float64).tiny)
    return np.abs(analytic - numeric) / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)


def gradcheck(fun, arrays, grads, *, max_entries=None, seed=0, step=1e-3, threshold=1e-7):
    """Compare analytic gradients with central differences, tensor by tensor.

    Parameters
    ----------
    fun : callable, dict name -> ndarray to a float (the scalar being differentiated)
    arrays : dict name -> float64 ndarray, the point of evaluation; left unchanged
    grads : dict name -> ndarray, the analytic gradients to check; each key must be in
        ``arrays`` with the same shape. Tensors of ``arrays`` without a gradient are held fixed.
    max_entries : None to check every entry, or the number of entries to check per tensor, a
        random sample (drawn with ``seed``) where a tensor is larger
    step : h of the central difference
    threshold : the largest relative error that passes

    Returns
    -------
    GradcheckResult
    """
    for name, value in arrays.items():
        if np.asarray(value).dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 arrays but {name} is {np.asarray(value).dtype}")
        if np.asarray(value).size == 0:
            raise ValueError(f"gradcheck needs non-empty arrays but {name} has shape {np.shape(value)}")
    unknown = [name for name in grads if name not in arrays]
    if unknown:
        raise ValueError(f"gradients given for names that are not among the arrays: {', '.join(unknown)}")
    work = {name: np.array(value, dtype=np.float64, copy=True) for name, value in arrays.items()}
    rng = np.random.default_rng(seed)
    results = []
    for name, grad in grads.items():
        grad = np.asarray(grad, dtype=np.float64)
        if grad.shape != work[name].shape:
            raise ValueError(f"expected the gradient of {name} of shape {work[name].shape} but got {grad.shape}")
        if max_entries is None or grad.size <= max_entries:
            indices = np.arange(grad.size)
        else:
            indices = np.sort(rng.choice(grad.size, size=max_entries, replace=False))
        numeric = numerical_derivatives(fun, work, name, indices, step)
        analytic = grad.reshape(-1)[indices]
        scale = max(np.abs(grad).max(initial=0.0), np.abs(numeric).max(initial=0.0))
        errors = relative_errors(analytic, numeric, scale)
        worst = int(np.argmax(errors))
        results.append(TensorCheck(
            name=name,
            shape=grad.shape,
            checked=len(indices),
            max_rel_err=float(errors[worst]),
            worst_index=tuple(int(i) for i in np.unravel_index(indices[worst], grad.shape)),
            analytic=float(analytic[worst]),
            numeric=float(numeric[worst]),
        ))
    return GradcheckResult(results, threshold)
