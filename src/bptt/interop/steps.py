"""The single-step layouts: a course's cell functions, which are its sequence layout at T = 1
with the step's names.

Legend: B batch, I input features, H hidden units.

A cell's backward takes the gradient of its new hidden state (the course's ``da_next``,
CS231n's ``dnext_h``) and, for LSTM, of its new cell state (``dc_next``, ``dnext_c``), and
returns the gradients of its input (``dxt``, ``dx``), its previous state (``da_prev`` and
``dc_prev``, ``dprev_h`` and ``dprev_c``) and its parameters. In the library's terms that is
one step with ``dy`` the hidden state's gradient and ``dh_n = (0, dc_next)``; the data
names map as ``DATA_NAMES`` says, with ``"dc_n"`` the new cell state's gradient.

- ``coursera-rnn-cell``, ``coursera-lstm-cell``: ``xt`` (n_x, m), ``a_prev``, ``c_prev``,
  ``da_next``, ``dc_next`` (n_a, m); parameters as the sequence layouts.
- ``cs231n-rnn-step``, ``cs231n-lstm-step``: ``x`` (N, D), ``prev_h``, ``prev_c``,
  ``dnext_h``, ``dnext_c`` (N, H); parameters as the sequence layouts.
"""

import numpy as np

from . import coursera_lstm, coursera_rnn, cs231n_lstm, cs231n_rnn


class StepLayout:
    """The layout of one step of ``sequence`` (a layout module), whose sequences lose their
    time axis ``time_axis``; everything about parameters is the sequence layout's."""

    def __init__(self, name, sequence, data_names, time_axis):
        self.NAME = name
        self.SEQUENCE = sequence
        self.DATA_NAMES = data_names
        self.time_axis = time_axis
        for attribute in ("describe", "param_shapes", "params_to_torch", "params_from_torch", "grads_to_torch",
                          "grads_from_torch", "state_to_torch", "state_from_torch", "state_shape"):
            setattr(self, attribute, getattr(sequence, attribute))

    def sequence_to_torch(self, x):
        """One step's (features and batch) -> (1, B, n)."""
        return self.SEQUENCE.sequence_to_torch(np.expand_dims(np.asarray(x), self.time_axis))

    def sequence_from_torch(self, x):
        """(1, B, n) -> one step's features and batch."""
        return np.squeeze(self.SEQUENCE.sequence_from_torch(x), self.time_axis)

    def sequence_shape(self, steps, batch, size):
        """The shape of one step's ``size`` features; ``steps`` must be 1."""
        if steps != 1:
            raise ValueError(f"a step layout holds one step, not {steps}")
        shape = list(self.SEQUENCE.sequence_shape(1, batch, size))
        del shape[self.time_axis]
        return tuple(shape)


COURSE_STEP = {"x": "xt", "h0": "a_prev", "c0": "c_prev", "dy": "da_next", "dc_n": "dc_next"}
CS231N_STEP = {"x": "x", "h0": "prev_h", "c0": "prev_c", "dy": "dnext_h", "dc_n": "dnext_c"}

STEP_LAYOUTS = (
    StepLayout("coursera-rnn-cell", coursera_rnn, COURSE_STEP, 2),
    StepLayout("coursera-lstm-cell", coursera_lstm, COURSE_STEP, 2),
    StepLayout("cs231n-rnn-step", cs231n_rnn, CS231N_STEP, 1),
    StepLayout("cs231n-lstm-step", cs231n_lstm, CS231N_STEP, 1),
)
