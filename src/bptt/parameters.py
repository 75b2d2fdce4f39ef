"""What every model does with its dict of parameters ``params`` (name -> ndarray, in torch's
``state_dict`` order), as torch's modules do: iterate over them and copy them out."""


class Parameters:
    """The torch habits of a model that holds ``self.params``."""

    def parameters(self):
        """An iterator over the parameter arrays (the model's own), in ``state_dict`` order."""
        return iter(self.params.values())

    def named_parameters(self):
        """An iterator over ``(name, array)`` pairs (the model's own arrays), in ``state_dict`` order."""
        return iter(self.params.items())

    def state_dict(self):
        """A copy of the parameters: dict name -> ndarray, torch's names and shapes."""
        return {name: value.copy() for name, value in self.params.items()}
