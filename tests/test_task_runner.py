"""Training on long-range tasks: the result record, seeding, the held-out metric, learning, the CLI."""

import json
import math

import numpy as np
import pytest

from bptt import cli
from bptt.training import task_runner
from bptt.training.task_runner import (TaskError, build_network, evaluate, held_out_set, run_task, task_batch,
                                       train_task)

TINY = dict(hidden_size=8, batch_size=4, test_size=30)


def test_events_and_result_record():
    events = list(train_task("order", "gru", 10, 5, eval_every=2, **TINY))
    assert [(e.kind, e.step) for e in events] == [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("step", 4),
                                                  ("eval", 4), ("step", 5), ("eval", 5), ("done", 5)]
    result = events[-1].data["result"]
    assert (result.task, result.cell, result.length, result.steps, result.seed) == ("order", "gru", 10, 5, 0)
    assert (result.metric, result.baseline, result.baseline_accuracy) == ("cross_entropy", math.log(4), 0.25)
    assert result.value == events[-2].data["cross_entropy"] and 0 <= result.accuracy <= 1
    assert result.solved == (result.value < result.baseline / 10)
    assert set(result.params) == set(build_network("order", "gru", 8).params)
    assert all(p.dtype == np.float32 for p in result.params.values())
    record = json.loads(json.dumps(result.as_dict()))
    assert "params" not in record and record["test_size"] == 30 and record["wall_seconds"] >= 0


def test_baselines_and_shapes_of_each_task():
    adding = run_task("adding", "rnn", 12, 2, **TINY)
    assert (adding.metric, adding.baseline, adding.accuracy) == ("mse", pytest.approx(1 / 6), None)
    copy = run_task("copy", "lstm", 3, 2, **TINY)  # delay 3: 3 + 2 * 10 steps
    assert copy.metric == "cross_entropy" and copy.baseline == pytest.approx(10 * math.log(8) / 23)
    assert copy.baseline_accuracy == 1 / 8
    assert held_out_set("copy", 3, 5).inputs.shape == (23, 5, 10)


def test_a_seed_repeats_a_run_exactly():
    first, second = (run_task("adding", "lstm", 15, 20, seed=7, **TINY) for _ in range(2))
    other = run_task("adding", "lstm", 15, 20, seed=8, **TINY)
    assert first.value == second.value and first.value != other.value
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])


@pytest.mark.parametrize("task, length", [("adding", 15), ("copy", 4)])
def test_the_metric_is_the_loss_on_the_held_out_set(task, length):
    result = run_task(task, "gru", length, 10, seed=3, test_seed=5, **TINY)
    network = build_network(task, "gru", 8)
    network.load_state_dict(result.params)
    test = held_out_set(task, length, 30, seed=5)
    loss, _, _ = network.forward(test.inputs, test.targets)  # one pass, the network's own loss
    assert result.value == pytest.approx(loss, rel=1e-5)
    assert evaluate(network, test)[result.metric] == result.value
    first_training_batch = task_batch(task, np.random.default_rng([1, 3]), 30, length)
    assert not np.array_equal(first_training_batch.inputs, test.inputs)


def test_gate_bias_is_added_to_the_gate_that_keeps_the_state():
    H = 5
    for cell in ("lstm", "gru"):
        plain = build_network("adding", cell, H, gate_bias=0.0, seed=1).params["rnn.bias_ih_l0"]
        biased = build_network("adding", cell, H, gate_bias=3.0, seed=1).params["rnn.bias_ih_l0"]
        expected = np.zeros_like(plain)
        expected[H:2 * H] = 3.0  # LSTM's f in (i, f, g, o), GRU's z in (r, z, n)
        np.testing.assert_allclose(biased - plain, expected, atol=1e-6)


def test_a_gru_learns_the_adding_problem_at_length_10():
    result = run_task("adding", "gru", 10, 600, hidden_size=16, batch_size=16, test_size=200)
    assert result.solved and result.value < result.baseline / 20


def test_bad_settings_fail_at_the_call_and_name_every_problem():
    with pytest.raises(TaskError, match=r"task 'sum'.*cell 'tcn'.*steps 0.*lr -1"):
        train_task("sum", "tcn", 10, 0, lr=-1)
    with pytest.raises(TaskError, match=r"length 5 \(expected an integer >= 10\)"):
        train_task("order", "lstm", 5, 10)


def test_a_nan_loss_stops_the_run_with_a_clear_error(monkeypatch):
    def poisoned(*args):
        batch = task_batch(*args)
        batch.inputs[0, 0, 0] = np.nan
        return batch

    monkeypatch.setattr(task_runner, "task_batch", poisoned)
    with pytest.raises(TaskError, match=r"the training loss became nan .* at step 1; try a smaller learning rate"):
        run_task("adding", "lstm", 10, 5, **TINY)


def test_cli_json_prints_one_object(capsys):
    assert cli.main(["task", "order", "--cell", "rnn", "--length", "10", "--steps", "3", "--hidden", "8",
                     "--batch", "4", "--seed", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1
    record = json.loads(out)
    assert (record["task"], record["cell"], record["steps"], record["seed"]) == ("order", "rnn", 3, 2)
    assert record["baseline"] == math.log(4) and record["test_size"] == 1000


def test_cli_ends_with_the_metric_beside_the_baseline(capsys):
    assert cli.main(["task", "adding", "--length", "10", "--steps", "3", "--hidden", "8", "--no-progress"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("adding T=10 lstm H=8, 3 steps in") and "(baseline 0.1667, a tenth 0.01667)" in last


@pytest.mark.parametrize("argv, message", [
    (["task", "sum"], "task 'sum' (expected one of adding, copy, order, reverse, addition)"),
    (["task", "adding", "--cell", "tcn"], "cell 'tcn' (expected one of lstm, gru, rnn)"),
    (["task", "adding", "--length", "1"], "length 1 (expected an integer >= 2)"),
    (["task", "copy", "--steps", "0"], "steps 0 (expected an integer >= 1)"),
    (["task", "order", "--lr", "0"], "lr 0.0 (expected > 0)"),
])
def test_cli_bad_arguments_are_one_line(capsys, argv, message):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"bptt task: bad task settings: {message}\n"
