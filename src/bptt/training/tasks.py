"""Long-range memory tasks: batches from a seeded NumPy generator, and each task's trivial
baseline, the score of a model that remembers nothing.

Legend: T time steps, B batch, I input features, V classes.

Every generator takes ``rng`` (a ``np.random.Generator``, or a seed for one) and returns a
:class:`TaskBatch`. Inputs are float (float32 unless ``dtype`` says otherwise), time-major.
``mode`` says where the loss is taken: ``"last"`` on the output of the last step only (targets
have no T axis), ``"every"`` on every step (targets (T, B)). ``loss`` is ``"mse"`` (float targets)
or ``"cross_entropy"`` (int64 class targets).

==============  ===========  ================  ==========================================
task            inputs       targets           baseline
==============  ===========  ================  ==========================================
adding          (T, B, 2)    (B, 1) float      MSE 1/6 ≈ 0.167 (always predict 1)
copy            (T, B, A+2)  (T, B) in [0, A]  cross-entropy S log(A) / (D + 2S) per step
temporal order  (T, B, 8)    (B,) in [0, 4)    accuracy 1/4, cross-entropy log 4
==============  ===========  ================  ==========================================
"""

import math
from typing import NamedTuple

import numpy as np

from ..checks import FLOAT_DTYPES


class TaskBatch(NamedTuple):
    """One batch of a task; the shapes are those of the generator that made it."""

    inputs: np.ndarray  # T, B, I
    targets: np.ndarray  # B, ... for mode "last"; T, B for mode "every"
    mode: str  # "last" or "every"
    loss: str  # "mse" or "cross_entropy"


def _check_arguments(dtype, **sizes):
    """Raise unless ``dtype`` is float32 or float64 and each size is an integer >= its minimum."""
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise TypeError(f"expected dtype float32 or float64 but got {np.dtype(dtype)}")
    for key, (value, minimum) in sizes.items():
        if int(value) != value or value < minimum:
            raise ValueError(f"expected {key} as an integer >= {minimum} but got {value!r}")


def _one_hot(ids, size, dtype):
    """(T, B, size) one-hot rows of ``ids`` ((T, B) ints)."""
    return np.eye(size, dtype=dtype)[ids]


ADDING_BASELINE_MSE = 1 / 6
"""MSE of always predicting 1, the mean of the target: the variance of the sum of two
independent U(0, 1) values, 2 * 1/12 = 1/6."""


def adding_problem(rng, batch_size, steps, dtype=np.float32):
    """The adding problem (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015).

    Channel 0 holds a value drawn uniformly from [0, 1) at every step; channel 1 is a marker,
    1 at exactly two steps (one in the first half ``[0, T//2)``, one in the second half
    ``[T//2, T)``) and 0 elsewhere. The target, read at the last step, is the sum of the two
    marked values. Baseline: ``ADDING_BASELINE_MSE``.

    Parameters
    ----------
    rng : np.random.Generator or int seed
    batch_size : B >= 1
    steps : T >= 2
    dtype : float dtype of inputs and targets

    Returns
    -------
    TaskBatch(inputs (T, B, 2), targets (B, 1), mode "last", loss "mse")
    """
    _check_arguments(dtype, batch_size=(batch_size, 1), steps=(steps, 2))
    rng = np.random.default_rng(rng)
    inputs = np.zeros((steps, batch_size, 2), dtype=dtype)  # T, B, 2
    inputs[:, :, 0] = rng.random((steps, batch_size)).astype(dtype)
    batch = np.arange(batch_size)
    first = rng.integers(0, steps // 2, size=batch_size)  # B
    second = rng.integers(steps // 2, steps, size=batch_size)  # B
    inputs[first, batch, 1] = 1
    inputs[second, batch, 1] = 1
    targets = (inputs[first, batch, 0] + inputs[second, batch, 0])[:, None]  # B, 1
    return TaskBatch(inputs, targets, "last", "mse")


def copy_baseline(delay, length=10, alphabet_size=8):
    """Cross-entropy per step of the memoryless copy strategy (Arjovsky, Shah & Bengio 2016):
    predict blank for the first ``delay + length`` steps (no loss), then uniform over the
    ``alphabet_size`` symbols for the last ``length`` (``log(alphabet_size)`` each), averaged
    over all ``delay + 2 * length`` steps: ``length * log(alphabet_size) / (delay + 2 * length)``."""
    return length * math.log(alphabet_size) / (delay + 2 * length)


def copy_task(rng, batch_size, delay, length=10, alphabet_size=8, dtype=np.float32):
    """The copy task (Arjovsky, Shah & Bengio 2016): remember ``length`` symbols over ``delay`` steps.

    Input ids per sequence, ``T = delay + 2 * length`` steps: ``length`` symbols drawn uniformly
    from ``1..A`` (``A = alphabet_size``), then ``delay - 1`` blanks (0), the delimiter ``A + 1``,
    and ``length`` blanks. Target ids: blanks for ``delay + length`` steps, then the symbols.
    Baseline: :func:`copy_baseline`.

    Parameters
    ----------
    rng : np.random.Generator or int seed
    batch_size : B >= 1
    delay : D >= 1, steps from the end of the symbols to the end of the delimiter
    length : S >= 1, symbols to copy
    alphabet_size : A >= 1
    dtype : float dtype of the inputs

    Returns
    -------
    TaskBatch(inputs (T, B, A + 2) one-hot, targets (T, B) int64 in [0, A] (V = A + 1 classes),
              mode "every", loss "cross_entropy")
    """
    _check_arguments(dtype, batch_size=(batch_size, 1), delay=(delay, 1), length=(length, 1),
                     alphabet_size=(alphabet_size, 1))
    rng = np.random.default_rng(rng)
    steps = delay + 2 * length
    symbols = rng.integers(1, alphabet_size + 1, size=(length, batch_size))  # S, B
    input_ids = np.zeros((steps, batch_size), dtype=np.int64)  # T, B
    input_ids[:length] = symbols
    input_ids[length + delay - 1] = alphabet_size + 1
    targets = np.zeros((steps, batch_size), dtype=np.int64)  # T, B
    targets[-length:] = symbols
    return TaskBatch(_one_hot(input_ids, alphabet_size + 2, dtype), targets, "every", "cross_entropy")


ORDER_SYMBOLS = "abcdBEXY"
"""Input symbols of the temporal-order task, by one-hot index: distractors a-d, start B, end E,
relevant X and Y."""

ORDER_BASELINE_ACCURACY = 0.25
"""Accuracy of guessing one class: the four classes are equally likely."""

ORDER_BASELINE_CROSS_ENTROPY = math.log(4)
"""Cross-entropy of predicting the uniform distribution over the four classes."""


def temporal_order(rng, batch_size, steps, dtype=np.float32):
    """The temporal-order task (Hochreiter & Schmidhuber 1997, experiment 6a).

    Each sequence starts with ``B`` and ends with ``E``; between them, distractors drawn
    uniformly from ``a, b, c, d``, except at two positions, ``t1`` uniform in
    ``[T//10, 2T//10]`` and ``t2`` uniform in ``[5T//10, 6T//10]`` (for T = 100: [10, 20] and
    [50, 60], as in the paper), which hold ``X`` or ``Y``. The class, read at the last step, is
    the order of the two: ``XX`` 0, ``XY`` 1, ``YX`` 2, ``YY`` 3. Baselines:
    ``ORDER_BASELINE_ACCURACY`` and ``ORDER_BASELINE_CROSS_ENTROPY``.

    Parameters
    ----------
    rng : np.random.Generator or int seed
    batch_size : B >= 1
    steps : T >= 10
    dtype : float dtype of the inputs

    Returns
    -------
    TaskBatch(inputs (T, B, 8) one-hot over ``ORDER_SYMBOLS``, targets (B,) int64 in [0, 4),
              mode "last", loss "cross_entropy")
    """
    _check_arguments(dtype, batch_size=(batch_size, 1), steps=(steps, 10))
    rng = np.random.default_rng(rng)
    ids = rng.integers(0, 4, size=(steps, batch_size))  # T, B: distractors a-d
    ids[0] = ORDER_SYMBOLS.index("B")
    ids[-1] = ORDER_SYMBOLS.index("E")
    batch = np.arange(batch_size)
    first = rng.integers(steps // 10, 2 * steps // 10 + 1, size=batch_size)  # B
    second = rng.integers(5 * steps // 10, 6 * steps // 10 + 1, size=batch_size)  # B
    is_y = rng.integers(0, 2, size=(2, batch_size))  # 2, B: 0 for X, 1 for Y
    ids[first, batch] = ORDER_SYMBOLS.index("X") + is_y[0]
    ids[second, batch] = ORDER_SYMBOLS.index("X") + is_y[1]
    targets = (2 * is_y[0] + is_y[1]).astype(np.int64)  # B
    return TaskBatch(_one_hot(ids, len(ORDER_SYMBOLS), dtype), targets, "last", "cross_entropy")
