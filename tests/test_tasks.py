"""Long-range tasks: shapes, structure, seeding, and the stated baselines measured on big samples."""

import math

import numpy as np
import pytest

from bptt.training import tasks


def test_adding_problem_structure():
    T, B = 50, 300
    batch = tasks.adding_problem(np.random.default_rng(0), B, T)
    assert batch.inputs.shape == (T, B, 2) and batch.targets.shape == (B, 1)
    assert batch.inputs.dtype == batch.targets.dtype == np.float32
    assert (batch.mode, batch.loss) == ("last", "mse")
    values, markers = batch.inputs[:, :, 0], batch.inputs[:, :, 1]
    assert values.min() >= 0 and values.max() <= 1
    assert set(np.unique(markers)) == {0.0, 1.0}
    np.testing.assert_array_equal(markers[: T // 2].sum(axis=0), 1)  # one marker in the first half
    np.testing.assert_array_equal(markers[T // 2 :].sum(axis=0), 1)  # one in the second
    np.testing.assert_allclose(batch.targets[:, 0], (values * markers).sum(axis=0), rtol=1e-6)
    assert tasks.adding_problem(1, 2, 4, dtype=np.float64).inputs.dtype == np.float64


def test_adding_baseline_is_one_sixth():
    batch = tasks.adding_problem(np.random.default_rng(1), 200_000, 4, dtype=np.float64)
    mse_of_predicting_one = np.mean((batch.targets - 1.0) ** 2)
    assert tasks.ADDING_BASELINE_MSE == pytest.approx(0.1667, abs=1e-4)
    assert mse_of_predicting_one == pytest.approx(tasks.ADDING_BASELINE_MSE, abs=3e-3)


def test_copy_task_structure():
    delay, length, A, B = 30, 10, 8, 64
    batch = tasks.copy_task(np.random.default_rng(2), B, delay, length=length, alphabet_size=A)
    T = delay + 2 * length
    assert batch.inputs.shape == (T, B, A + 2) and batch.inputs.dtype == np.float32
    assert batch.targets.shape == (T, B) and batch.targets.dtype == np.int64
    assert (batch.mode, batch.loss) == ("every", "cross_entropy")
    np.testing.assert_array_equal(batch.inputs.sum(axis=2), 1)  # one-hot
    input_ids = batch.inputs.argmax(axis=2)  # T, B
    symbols = input_ids[:length]
    assert symbols.min() >= 1 and symbols.max() <= A
    np.testing.assert_array_equal(input_ids[length : length + delay - 1], 0)
    np.testing.assert_array_equal(input_ids[length + delay - 1], A + 1)  # the delimiter
    np.testing.assert_array_equal(input_ids[length + delay :], 0)
    np.testing.assert_array_equal(batch.targets[: delay + length], 0)
    np.testing.assert_array_equal(batch.targets[delay + length :], symbols)


def test_copy_baseline_matches_the_memoryless_strategy():
    delay, length, A = 100, 10, 8
    batch = tasks.copy_task(np.random.default_rng(3), 5_000, delay, length=length, alphabet_size=A)
    # predict blank with certainty until the symbols are due, then uniform over the A symbols
    uniform = np.full(A + 1, 1 / A)
    uniform[0] = 0.0
    probabilities = np.where(np.arange(delay + 2 * length)[:, None, None] < delay + length,
                             np.eye(A + 1)[0], uniform)  # T, 1, V
    chosen = np.take_along_axis(np.broadcast_to(probabilities, batch.targets.shape + (A + 1,)),
                                batch.targets[..., None], axis=2)
    cross_entropy = -np.mean(np.log(chosen))
    assert tasks.copy_baseline(delay, length, A) == pytest.approx(length * math.log(8) / 120)
    assert cross_entropy == pytest.approx(tasks.copy_baseline(delay, length, A), rel=1e-12)
    symbol_counts = np.bincount(batch.targets[delay + length :].ravel(), minlength=A + 1)[1:]
    assert symbol_counts.min() / symbol_counts.mean() > 0.95  # symbols uniform, so the uniform guess is best


def test_temporal_order_structure_and_baseline():
    T, B = 100, 20_000
    batch = tasks.temporal_order(np.random.default_rng(4), B, T)
    assert batch.inputs.shape == (T, B, 8) and batch.inputs.dtype == np.float32
    assert batch.targets.shape == (B,) and batch.targets.dtype == np.int64
    assert (batch.mode, batch.loss) == ("last", "cross_entropy")
    ids = batch.inputs.argmax(axis=2)  # T, B
    symbol = {name: index for index, name in enumerate(tasks.ORDER_SYMBOLS)}
    np.testing.assert_array_equal(ids[0], symbol["B"])
    np.testing.assert_array_equal(ids[-1], symbol["E"])
    relevant = ids >= symbol["X"]  # T, B
    np.testing.assert_array_equal(relevant.sum(axis=0), 2)
    np.testing.assert_array_equal(relevant[10:21].sum(axis=0), 1)  # t1 in [10, 20]
    np.testing.assert_array_equal(relevant[50:61].sum(axis=0), 1)  # t2 in [50, 60]
    np.testing.assert_array_equal(ids[1:-1][~relevant[1:-1]] < 4, True)  # distractors a-d elsewhere
    first = np.where(relevant[10:21], ids[10:21], 0).max(axis=0) - symbol["X"]
    second = np.where(relevant[50:61], ids[50:61], 0).max(axis=0) - symbol["X"]
    np.testing.assert_array_equal(batch.targets, 2 * first + second)

    frequencies = np.bincount(batch.targets, minlength=4) / B
    assert frequencies.max() == pytest.approx(tasks.ORDER_BASELINE_ACCURACY, abs=0.01)  # best constant guess
    best_constant_cross_entropy = -np.sum(frequencies * np.log(frequencies))
    assert best_constant_cross_entropy == pytest.approx(tasks.ORDER_BASELINE_CROSS_ENTROPY, abs=1e-3)
    assert tasks.ORDER_BASELINE_CROSS_ENTROPY == pytest.approx(math.log(4))


@pytest.mark.parametrize("generator, size", [(tasks.adding_problem, 20), (tasks.copy_task, 5),
                                             (tasks.temporal_order, 20)])
def test_seeding_is_reproducible(generator, size):
    first = generator(np.random.default_rng(7), 8, size)
    again = generator(np.random.default_rng(7), 8, size)
    other = generator(np.random.default_rng(8), 8, size)
    for a, b in zip(first[:2], again[:2]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.inputs, other.inputs)
    np.testing.assert_array_equal(generator(7, 8, size).inputs, first.inputs)


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="steps as an integer >= 10 but got 9"):
        tasks.temporal_order(0, 4, 9)
    with pytest.raises(ValueError, match="delay as an integer >= 1 but got 0"):
        tasks.copy_task(0, 4, 0)
    with pytest.raises(TypeError, match="float32 or float64 but got int64"):
        tasks.adding_problem(0, 4, 10, dtype=np.int64)
