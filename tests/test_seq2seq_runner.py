"""Training an encoder–decoder on the reverse and addition tasks: the events and the result
record, learning, seeding, the held-out scores and baselines, the settings' errors."""

import json

import numpy as np
import pytest

from bptt.nets import Seq2Seq, greedy_decode
from bptt.training import seq2seq_runner
from bptt.training import seq2seq_tasks as tasks
from bptt.training.task_runner import TaskDiverged
from bptt.training.seq2seq_runner import (DEFAULTS, TaskError, build_model, evaluate, held_out_set, run_seq2seq_task,
                                          task_batch, train_seq2seq_task)

TINY = dict(hidden_size=8, embedding_size=4, batch_size=4, test_size=20)


def test_events_and_result_record():
    events = list(train_seq2seq_task("reverse", "gru", steps=5, length=3, eval_every=2, seed=1, **TINY))
    assert [(e.kind, e.step) for e in events] == [("step", 1), ("step", 2), ("eval", 2), ("step", 3), ("step", 4),
                                                  ("eval", 4), ("step", 5), ("eval", 5), ("done", 5)]
    assert all(set(e.data) == {"loss", "lr"} for e in events if e.kind == "step")
    assert all(set(e.data) == {"accuracy", "loss"} for e in events if e.kind == "eval")
    result = events[-1].data["result"]
    assert not events[-1].data["numeric"].counts
    assert result.accuracy == events[-2].data["accuracy"] and result.test_loss == events[-2].data["loss"]
    record = json.loads(json.dumps(result.as_dict()))
    assert "params" not in record
    settings = dict(task="reverse", cell="gru", length=3, digits=None, reverse_source=False, steps=5, hidden_size=8,
                    embedding_size=4, batch_size=4, lr=1e-2, warmup_steps=4, clip=1.0, gate_bias=0.0, seed=1,
                    test_seed=0, test_size=20, dtype="float32")
    assert {key: record[key] for key in settings} == settings
    metrics = {"accuracy", "baseline_accuracy", "expected_baseline_accuracy", "test_loss", "train_loss", "wall_seconds"}
    assert set(record) == set(settings) | metrics
    assert 0 <= record["accuracy"] <= 1 and record["expected_baseline_accuracy"] == pytest.approx(0.4)
    assert record["test_loss"] > 0 and record["train_loss"] > 0 and record["wall_seconds"] >= 0
    assert set(result.params) == set(build_model("gru", 8, 4).params)
    assert all(p.dtype == np.float32 for p in result.params.values())


def test_a_tiny_gru_learns_to_reverse_three_digits():
    """150 steps, well under a second: the loss falls to a fraction of log V and greedy decoding
    beats copying the source (right on palindromes only) by far."""
    events = list(train_seq2seq_task("reverse", "gru", steps=150, length=3, hidden_size=32, batch_size=32,
                                     test_size=300))
    losses = [e.data["loss"] for e in events if e.kind == "step"]
    result = events[-1].data["result"]
    assert np.mean(losses[:10]) > 2.0 and result.train_loss < 0.2 * np.mean(losses[:10])
    assert result.accuracy > 0.6 and result.accuracy > result.baseline_accuracy + 0.3, result.as_dict()


def test_addition_and_its_baseline():
    result = run_seq2seq_task("addition", "lstm", steps=3, digits=2, reverse_source=True, **TINY)
    assert (result.task, result.digits, result.length, result.reverse_source) == ("addition", 2, None, True)
    assert result.expected_baseline_accuracy == pytest.approx(1 / 40)
    test = held_out_set("addition", 2, 20, reverse_source=True)
    assert result.baseline_accuracy == np.mean([text == "9" for text in test.target_texts])
    assert DEFAULTS["addition"]["digits"] == run_seq2seq_task("addition", "rnn", steps=1, **TINY).digits


def test_a_seed_repeats_a_run_bit_for_bit():
    first, second = (run_seq2seq_task("reverse", "lstm", steps=20, length=4, seed=7, **TINY) for _ in range(2))
    other = run_seq2seq_task("reverse", "lstm", steps=20, length=4, seed=8, **TINY)
    assert (first.train_loss, first.test_loss, first.accuracy) == (second.train_loss, second.test_loss,
                                                                   second.accuracy)
    assert first.test_loss != other.test_loss
    for name in first.params:
        np.testing.assert_array_equal(first.params[name], second.params[name])


@pytest.mark.parametrize("reverse_source", [False, True])
def test_the_scores_are_greedy_decoding_on_the_held_out_set(reverse_source):
    result = run_seq2seq_task("reverse", "gru", steps=30, length=4, reverse_source=reverse_source, seed=2,
                              test_seed=5, hidden_size=16, batch_size=16, test_size=50)
    model = build_model("gru", 16)
    model.load_state_dict(result.params)
    test = held_out_set("reverse", 4, 50, seed=5, reverse_source=reverse_source)
    decoded = greedy_decode(model, test.source, test.source_lengths, max_length=5,
                                           exclude=(tasks.PAD_ID, tasks.START_ID))
    assert result.accuracy == tasks.accuracy(decoded.sequences, test)
    loss, _ = model.forward(test.source, test.source_lengths, test.target, test.target_lengths)
    assert result.test_loss == pytest.approx(loss, rel=1e-5)
    assert evaluate(model, test) == {"accuracy": result.accuracy, "loss": result.test_loss}
    # the same strings either way, the source only reversed; training never sees them
    plain = held_out_set("reverse", 4, 50, seed=5)
    assert plain.source_texts == test.source_texts
    assert tasks.reverse_baseline_predictions(plain)[0].tolist() == list(tasks.encode(plain.source_texts[0])) + [2]
    training = task_batch("reverse", np.random.default_rng([1, 5]), 50, 4)
    assert training.source_texts != test.source_texts


def test_float64_and_the_gate_bias():
    result = run_seq2seq_task("reverse", "lstm", steps=2, length=2, dtype=np.float64, gate_bias=1.5, **TINY)
    assert result.dtype == "float64" and all(p.dtype == np.float64 for p in result.params.values())
    H = 5
    for cell in ("lstm", "gru"):
        plain, biased = build_model(cell, H, 3, seed=1), build_model(cell, H, 3, gate_bias=2.0, seed=1)
        expected = np.zeros(plain.params["encoder.bias_ih_l0"].shape)
        expected[H:2 * H] = 2.0  # LSTM's f in (i, f, g, o), GRU's z in (r, z, n)
        for stack in ("encoder", "decoder"):
            difference = biased.params[f"{stack}.bias_ih_l0"] - plain.params[f"{stack}.bias_ih_l0"]
            np.testing.assert_allclose(difference, expected, atol=1e-6)


def test_bad_settings_fail_at_the_call_and_name_every_problem():
    with pytest.raises(ValueError, match=r"^bad task settings: task 'sort' \(expected one of reverse, addition\); "
                                         r"cell 'tcn' \(expected one of lstm, gru, rnn\); hidden_size 0 .*; lr -1 "):
        train_seq2seq_task("sort", "tcn", hidden_size=0, lr=-1)
    with pytest.raises(TaskError, match=r"digits 3 \(the reverse task is sized by length, not digits\)"):
        train_seq2seq_task("reverse", digits=3)
    with pytest.raises(TaskError, match=r"length 4 \(the addition task is sized by digits, not length\)"):
        train_seq2seq_task("addition", length=4)
    with pytest.raises(TaskError, match=r"length 0 \(expected an integer >= 1\); steps 2.5 "):
        train_seq2seq_task("reverse", length=0, steps=2.5)
    with pytest.raises(TaskError, match=r"batch_size '8' .*; clip 0 \(expected a number > 0, or None"):
        train_seq2seq_task("addition", batch_size="8", clip=0)
    with pytest.raises(TaskError, match=r"seed -1 .*gate_bias nan .*dtype <class 'numpy.float16'>"):
        train_seq2seq_task("addition", seed=-1, gate_bias=float("nan"), dtype=np.float16)


def test_a_nan_loss_stops_the_run_with_a_clear_error(monkeypatch):
    def diverging(self, *args, **kwargs):
        return float("nan"), {name: np.zeros_like(value) for name, value in self.params.items()}

    monkeypatch.setattr(Seq2Seq, "loss_and_grads", diverging)
    with pytest.raises(TaskDiverged,
                       match=r"the training loss became nan .* at step 1; try a smaller learning rate"):
        run_seq2seq_task("reverse", "gru", steps=3, **TINY)


def test_the_cli_runs_an_encoder_decoder_task(capsys):
    from bptt import cli

    assert cli.main(["task", "reverse", "--length", "3", "--steps", "60", "--hidden", "16", "--cell", "gru",
                     "--no-progress", "--eval-every", "0"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("reverse (1-3 digits) gru H=16, 60 steps in ")
    assert "on 1,000 held-out sequences (baseline" in last and "copy the source" in last
    assert cli.main(["task", "adding", "--digits", "3"]) == 2
    assert "--digits go with the encoder-decoder tasks (reverse, addition), not adding" in capsys.readouterr().err
    assert cli.main(["task", "addition", "--length", "3", "--steps", "1"]) == 2
    assert "length" in capsys.readouterr().err
