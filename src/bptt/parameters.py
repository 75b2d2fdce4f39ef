"""What every model does with its dict of parameters ``params`` (name -> ndarray, in torch's
``state_dict`` order), as torch's modules do: iterate over them, copy them out, load them."""

import numpy as np


def loaded_arrays(shapes, state_dict, dtype, owner):
    """The arrays of ``state_dict`` (numpy arrays or torch tensors) as ``dtype`` copies, in the
    order of ``shapes`` (dict name -> shape). Missing and unexpected keys, misshapen values and
    values that are not floats are all listed in one ValueError naming ``owner``."""
    missing = [k for k in shapes if k not in state_dict]
    unexpected = [k for k in state_dict if k not in shapes]
    arrays, bad = {}, []
    for name, shape in shapes.items():
        if name in state_dict:
            value = state_dict[name]
            array = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
            if array.shape != shape:
                bad.append(f"{name}: expected {shape} but got {tuple(array.shape)}")
            elif array.dtype.kind != "f":
                bad.append(f"{name}: expected a float dtype but got {array.dtype}")
            arrays[name] = array
    problems = [f"{what}: " + ", ".join(keys) for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected)) if keys]
    if bad:
        problems.append("bad values: " + "; ".join(bad))
    if problems:
        raise ValueError(f"cannot load state_dict into {owner}: " + "; ".join(problems))
    return {name: arrays[name].astype(dtype, copy=True) for name in shapes}


class Parameters:
    """The torch habits of a model that holds ``self.params`` in ``self.dtype``, with names and
    shapes ``self.shapes()``, and its repr, ``self._torch_repr()``."""

    def __repr__(self):
        """The model as torch prints its modules; for an object whose ``__init__`` failed part
        way (a debugger or a traceback's locals show it), the class alone, not a second error."""
        try:
            return self._torch_repr()
        except AttributeError:
            return f"<{type(self).__name__}, not fully constructed>"

    def parameters(self):
        """An iterator over the parameter arrays (the model's own), in ``state_dict`` order."""
        return iter(self.params.values())

    def named_parameters(self):
        """An iterator over ``(name, array)`` pairs (the model's own arrays), in ``state_dict`` order."""
        return iter(self.params.items())

    def state_dict(self):
        """A copy of the parameters: dict name -> ndarray, torch's names and shapes."""
        return {name: value.copy() for name, value in self.params.items()}

    def load_state_dict(self, state_dict):
        """Replace the parameters with ``state_dict`` (numpy arrays or torch tensors), converted
        to the model's dtype. Missing, unexpected and misshapen keys are all listed in one
        ValueError; on error the parameters are left unchanged."""
        self.params = loaded_arrays(self.shapes(), state_dict, self.dtype, repr(self))
