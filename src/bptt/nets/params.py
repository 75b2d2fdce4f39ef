"""What every network does with its dict of parameters: load a ``state_dict`` checked against
its names and shapes, and check parameters handed to a pass."""

import numpy as np

from ..parameters import Parameters


def load_arrays(shapes, state_dict, dtype, owner):
    """The arrays of ``state_dict`` (numpy arrays or torch tensors) as ``dtype`` copies, for the
    names and shapes ``shapes`` (dict name -> shape). Missing, unexpected and misshapen keys
    are listed in one ValueError naming ``owner`` (the model's repr)."""
    problems = []
    missing = [k for k in shapes if k not in state_dict]
    unexpected = [k for k in state_dict if k not in shapes]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(unexpected))
    arrays = {}
    for name, shape in shapes.items():
        if name in state_dict:
            value = state_dict[name]
            value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            if value.shape != shape or value.dtype.kind != "f":
                problems.append(f"{name}: expected floats of shape {shape} but got {value.dtype} {value.shape}")
            arrays[name] = value
    if problems:
        raise ValueError(f"cannot load state_dict into {owner}: " + "; ".join(problems))
    return {name: arrays[name].astype(dtype, copy=True) for name in shapes}


def checked_params(params, shapes, own, what):
    """``params`` (None: ``own``, the model's), after checking its names and shapes against
    ``shapes``; a ValueError lists what ``what`` (e.g. "network") expects."""
    if params is None:
        return own
    if set(params) != set(shapes) or any(np.shape(params[k]) != s for k, s in shapes.items()):
        raise ValueError(f"expected params with the {what}'s names and shapes: " + ", ".join(
            f"{k} {s}" for k, s in shapes.items()))
    return params


class NetParameters(Parameters):
    """A network's parameters (``self.params``, in ``self.dtype``, whose names and shapes are
    the network's): loaded from a ``state_dict`` and checked by name and shape; ``KIND`` is how
    a check names the network ("network", "model")."""

    KIND = "network"

    def shapes(self):
        """Parameter names and shapes, in the order of the equivalent torch module's ``state_dict``."""
        return {name: value.shape for name, value in self.params.items()}

    def load_state_dict(self, state_dict):
        """Replace the parameters with ``state_dict`` (numpy arrays or torch tensors), converted
        to the network's dtype. Missing, unexpected and misshapen keys are listed in one
        ValueError; on error the parameters are left unchanged."""
        self.params = load_arrays(self.shapes(), state_dict, self.dtype, repr(self))

    def check_params(self, params):
        """``params`` (None: ``self.params``), after checking its keys and shapes."""
        return checked_params(params, self.shapes(), self.params, self.KIND)
