"""What every network does with its dict of parameters beyond a layer's: name their shapes, and
check parameters handed to a pass."""

import numpy as np

from ..parameters import Parameters


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

    def check_params(self, params):
        """``params`` (None: ``self.params``), after checking its keys and shapes."""
        return checked_params(params, self.shapes(), self.params, self.KIND)
