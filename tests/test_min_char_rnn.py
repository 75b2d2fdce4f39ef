"""min-char-rnn, reproduced (issue 15, item 5): ``bptt train`` with the README's min-char-rnn
settings makes the same updates as Karpathy's min-char-rnn.py (2015), transcribed below from
its equations: one-hot input, ``h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)`` with one hidden
bias, ``y_t = W_hy h_t + b_y``, the softmax cross-entropy summed over 25 steps, batch 1, the
hidden state carried from chunk to chunk and reset (with the data pointer) where the next chunk
would reach the text's end, every gradient entry clipped to [-5, 5], and Adagrad with lr 0.1
and its epsilon inside the square root. From the same initial parameters the parameters after
each of the first updates (a wrap-around and clipped gradients among them) agree to float64
rounding. The README's command line runs as written, and such a run resumes bit for bit."""

import dataclasses
import os
import pathlib
import re
import shlex
from typing import NamedTuple

import numpy as np
import pytest

from bptt.cli import main
from bptt.nets import Network
from bptt.layers import RNN
from bptt.training.checkpoint import load_checkpoint
from bptt.training.data import trim_streams
from bptt.training.optim import Adagrad, clip_by_value
from bptt.training.trainer import TrainConfig, Trainer, read_metrics

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# 201 characters: the 200 input steps hold 8 full chunks of 25, but min-char-rnn takes 7 of
# them, since the 8th would end on the text's last character (p + 25 + 1 >= len(data))
TEXT = ("the cat sat on a mat; a rat ate a fat bat. " * 5)[:201]
UPDATES = 10  # 7 chunks, the wrap-around, 3 more
CHUNKS = 7

MIN_CHAR_RNN = dict(cell="rnn", num_layers=1, input="one_hot", init_std=0.01, freeze=("rnn.bias_hh_l0",), k1=25,
                    k2=None, batch_size=1, valid_fraction=0.0, last_window="min-char-rnn", loss_reduction="sum",
                    optimizer="adagrad", lr=0.1, eps=1e-8, eps_inside_sqrt=True, weight_decay=0.0,
                    schedule="constant", clip=None, clip_value=5.0, dtype="float64", dropout=0.0)
"""The settings of min-char-rnn.py; its hidden size (100) and text are the user's choice."""

QUIET = dict(log_every=1, sample_every=1000, checkpoint_every=1000, sample_length=0)


# min-char-rnn.py's training loop, transcribed from its equations

class Update(NamedTuple):
    """One update of the transcription: its loss, the largest gradient entry before clipping,
    whether the data pointer went back to the start before it, the parameters after it."""

    loss: float
    largest_gradient: float
    wrapped: bool
    params: dict


def chunk_loss_and_grads(inputs, targets, h_prev, W_xh, W_hh, W_hy, b_h, b_y):
    """The summed loss of one chunk, the gradient of every parameter, and the last hidden state.

    Column vectors, as min-char-rnn.py: ``x_t`` (V, 1) one-hot, ``h_t`` (H, 1), ``b_h`` (H, 1),
    ``b_y`` (V, 1).
    """
    V = W_xh.shape[1]
    x, h, probs = {}, {-1: h_prev}, {}
    loss = 0.0
    for t, (char, target) in enumerate(zip(inputs, targets)):
        x[t] = np.zeros((V, 1))
        x[t][char] = 1.0  # V,1
        h[t] = np.tanh(W_xh @ x[t] + W_hh @ h[t - 1] + b_h)  # H,1
        y = W_hy @ h[t] + b_y  # V,1  unnormalised log-probabilities
        probs[t] = np.exp(y) / np.sum(np.exp(y))  # V,1
        loss += -np.log(probs[t][target, 0])  # a sum over the chunk, not a mean
    dW_xh, dW_hh, dW_hy = np.zeros_like(W_xh), np.zeros_like(W_hh), np.zeros_like(W_hy)
    db_h, db_y = np.zeros_like(b_h), np.zeros_like(b_y)
    dh_future = np.zeros_like(h_prev)  # the gradient reaching h_t from step t + 1
    for t in reversed(range(len(inputs))):
        dy = probs[t].copy()  # d(-log p[target]) / dy = p - onehot(target)
        dy[targets[t]] -= 1.0
        dW_hy += dy @ h[t].T  # y = W_hy h + b_y
        db_y += dy
        dh = W_hy.T @ dy + dh_future  # from this step's output and from the future
        dpre = (1.0 - h[t] * h[t]) * dh  # h = tanh(pre)
        db_h += dpre  # pre = W_xh x + W_hh h_prev + b_h
        dW_xh += dpre @ x[t].T
        dW_hh += dpre @ h[t - 1].T
        dh_future = W_hh.T @ dpre
    return loss, [dW_xh, dW_hh, dW_hy, db_h, db_y], h[len(inputs) - 1]


def min_char_rnn(text, char_ids, initial, updates, seq_length=25, learning_rate=0.1, clip=5.0):
    """min-char-rnn.py's loop for ``updates`` updates from ``initial`` (W_xh, W_hh, W_hy, b_h,
    b_y, the last two as vectors); a list of :class:`Update`."""
    ids = [char_ids[char] for char in text]
    params = [initial[0].copy(), initial[1].copy(), initial[2].copy(), initial[3][:, None].copy(),
              initial[4][:, None].copy()]
    squares = [np.zeros_like(param) for param in params]  # Adagrad's running sums of squared gradients
    pointer, history = 0, []
    for n in range(updates):
        wrapped = n == 0 or pointer + seq_length + 1 >= len(ids)
        if wrapped:  # back to the start of the text, from a zero state
            h_prev = np.zeros((params[1].shape[0], 1))
            pointer = 0
        inputs = ids[pointer:pointer + seq_length]
        targets = ids[pointer + 1:pointer + seq_length + 1]
        loss, grads, h_prev = chunk_loss_and_grads(inputs, targets, h_prev, *params)
        largest = max(float(np.abs(grad).max()) for grad in grads)
        for param, grad, square in zip(params, grads, squares):
            np.clip(grad, -clip, clip, out=grad)  # elementwise, every parameter's gradient
            square += grad * grad
            param += -learning_rate * grad / np.sqrt(square + 1e-8)  # the epsilon inside the root
        pointer += seq_length
        W_xh, W_hh, W_hy, b_h, b_y = (param.copy() for param in params)
        history.append(Update(loss, largest, wrapped and n > 0, {
            "rnn.weight_ih_l0": W_xh, "rnn.weight_hh_l0": W_hh, "rnn.bias_ih_l0": b_h[:, 0],
            "rnn.bias_hh_l0": np.zeros_like(b_h[:, 0]), "head.weight": W_hy, "head.bias": b_y[:, 0]}))
    return history


def trainer_updates(config, run_dir):
    """The trainer's run of ``config``: its initial parameters, and the per-character loss and
    the parameters after every update."""
    trainer = Trainer.start(config, str(run_dir))
    initial = {name: value.copy() for name, value in trainer.state.params.items()}
    updates = []
    for event in trainer.run():
        if event.kind == "step":
            updates.append((event.data["loss"], {name: value.copy() for name, value in trainer.state.params.items()}))
    assert len(updates) == config.steps
    return trainer, initial, updates


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text(TEXT, encoding="utf-8")
    return str(path)


def min_char_config(corpus, **changes):
    return TrainConfig(corpus=corpus, **{**MIN_CHAR_RNN, **QUIET, "hidden_size": 8, "seed": 3, "steps": UPDATES,
                                         **changes})


def transcribed(trainer, initial):
    """min-char-rnn's updates from the trainer's initial parameters, in its vocabulary's order."""
    char_ids = {char: index for index, char in enumerate(trainer.data.vocab.chars)}
    names = ("rnn.weight_ih_l0", "rnn.weight_hh_l0", "head.weight", "rnn.bias_ih_l0", "head.bias")
    return min_char_rnn(TEXT, char_ids, [initial[name] for name in names], UPDATES)


def test_the_trainer_makes_min_char_rnns_updates(corpus, tmp_path):
    trainer, initial, ours = trainer_updates(min_char_config(corpus), tmp_path / "run")
    # the trainer's initialisation is min-char-rnn's: weights N(0, 0.01²), biases 0
    for name, value in initial.items():
        if "bias" in name:
            assert not value.any(), name
        else:
            assert 0.005 < value.std() < 0.02 and abs(value.mean()) < 0.01, name
    theirs = transcribed(trainer, initial)

    # the run exercises what it should: the wrap-around after 7 chunks, clipped gradients
    assert [n for n, update in enumerate(theirs) if update.wrapped] == [CHUNKS]
    assert any(update.largest_gradient > 5 for update in theirs)
    for n, ((loss, params), update) in enumerate(zip(ours, theirs)):
        assert loss * 25 == pytest.approx(update.loss, rel=1e-10), n  # metrics are per character
        assert list(params) == list(update.params)
        for name in params:
            np.testing.assert_allclose(params[name], update.params[name], rtol=1e-10, atol=0,
                                       err_msg=f"{name} after update {n + 1}")
    assert not ours[-1][1]["rnn.bias_hh_l0"].any()  # frozen at zero: one hidden bias
    assert trainer.state.epoch == 1
    assert [line["kind"] for line in read_metrics(trainer.run_dir)] == ["step"] * UPDATES  # no validation


@pytest.mark.parametrize("change,first_different", [
    (dict(last_window="drop"), CHUNKS + 1),  # trains the 8th chunk where min-char-rnn goes back to the start
    (dict(eps_inside_sqrt=False), 1),  # torch's Adagrad: sqrt(sum) + eps
    (dict(loss_reduction="mean"), 1),
    # Adagrad's first step hardly sees a gradient's scale (lr * g / sqrt(g² + eps)), so a
    # clipped gradient shows in the steps after it, through the sum of squares
    (dict(clip_value=None), None),
    (dict(freeze=()), 1),  # a second hidden bias that trains
])
def test_each_setting_matters(corpus, tmp_path, change, first_different):
    """Without any one of the settings the updates differ from min-char-rnn's (from the first
    one the setting touches, where that is known): the comparison above sees every setting."""
    _, _, exact = trainer_updates(min_char_config(corpus), tmp_path / "exact")
    _, _, other = trainer_updates(min_char_config(corpus, **change), tmp_path / "other")
    same = [all(np.allclose(ours[name], theirs[name], rtol=1e-10, atol=0) for name in ours)
            for (_, ours), (_, theirs) in zip(exact, other)]
    assert False in same, same
    if first_different is not None:
        assert same.index(False) + 1 == first_different, same


def test_a_min_char_rnn_run_resumes_bit_for_bit(corpus, tmp_path):
    straight = Trainer.start(min_char_config(corpus, steps=12), str(tmp_path / "straight"))
    list(straight.run())
    first = Trainer.start(min_char_config(corpus, steps=5), str(tmp_path / "resumed"))
    list(first.run())
    resumed = Trainer.resume(first.run_dir, {"steps": 12})
    assert resumed.config == straight.config
    list(resumed.run())
    a = load_checkpoint(os.path.join(straight.run_dir, "checkpoint.npz"))
    b = load_checkpoint(os.path.join(resumed.run_dir, "checkpoint.npz"))
    assert a["step"] == b["step"] == 12 and a["epoch"] == b["epoch"] == 1
    assert set(a["optimizer"]["sum"]) == set(a["params"]) - {"rnn.bias_hh_l0"}  # the frozen one has no slot
    for part in ("params", "optimizer"):
        for slot, arrays in a[part].items():
            if isinstance(arrays, dict):
                for name in arrays:
                    assert np.array_equal(arrays[name], b[part][slot][name]), (part, slot, name)
            elif isinstance(arrays, np.ndarray):
                assert np.array_equal(arrays, b[part][slot]), (part, slot)
            else:
                assert arrays == b[part][slot]
    assert np.array_equal(a["carry"][0], b["carry"][0])


def readme_line():
    """The README's min-char-rnn command line, without its comment."""
    lines = [line for block in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
             for line in block.splitlines() if "--eps-inside-sqrt" in line]
    assert len(lines) == 1, lines
    return lines[0].split("#", 1)[0].strip()


def test_the_readme_line_runs_and_is_the_proven_configuration(tmp_path, monkeypatch, capsys):
    argv = shlex.split(readme_line())
    assert argv[:2] == ["bptt", "train"]
    argv = argv[1:]
    corpus = argv[argv.index("--corpus") + 1]
    (tmp_path / corpus).write_text(TEXT, encoding="utf-8")
    argv[argv.index("--steps") + 1] = "2"
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--run-dir", "run", "--no-progress"]) == 0
    assert "no validation (--valid-fraction 0)" in capsys.readouterr().out
    config = Trainer.resume(str(tmp_path / "run"), {"steps": 3}).config
    assert config.hidden_size == 100 and config.steps == 3
    assert {name: getattr(config, name) for name in MIN_CHAR_RNN} == MIN_CHAR_RNN


# the parts, each on its own

def test_min_char_rnns_wrap_around_as_streams():
    streams = np.arange(201)[:, None]  # N,B
    assert trim_streams(streams, 25, "partial").shape[0] == 201
    assert trim_streams(streams, 25, "drop").shape[0] == 201  # 8 full windows of 25 steps
    assert trim_streams(streams, 25, "min-char-rnn").shape[0] == 176  # 7: min-char-rnn leaves out the 8th
    assert trim_streams(streams[:190], 25, "drop").shape[0] == trim_streams(streams[:190], 25, "min-char-rnn").shape[0]
    assert trim_streams(streams[:26], 25, "min-char-rnn").shape[0] == 26  # the first chunk, always


def test_adagrad_with_the_epsilon_inside_the_square_root():
    rng = np.random.default_rng(0)
    param, grad, total = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.random((3, 4))
    optimizer = Adagrad(eps=1e-2, eps_inside_sqrt=True)
    new, state = optimizer.update({"p": param}, {"p": grad}, {"step": 0, "sum": {"p": total}}, 0.1)
    np.testing.assert_allclose(state["sum"]["p"], total + grad**2, rtol=1e-15)
    np.testing.assert_allclose(new["p"], param - 0.1 * grad / np.sqrt(total + grad**2 + 1e-2), rtol=1e-14)
    outside, _ = dataclasses.replace(optimizer, eps_inside_sqrt=False).update(
        {"p": param}, {"p": grad}, {"step": 0, "sum": {"p": total}}, 0.1)
    np.testing.assert_allclose(outside["p"], param - 0.1 * grad / (np.sqrt(total + grad**2) + 1e-2), rtol=1e-14)


def test_clip_by_value_clips_each_entry():
    grads = {"a": np.array([-7.0, -5.0, 0.5, 6.0]), "b": np.array([[np.nan, 4.0]], np.float32)}
    clipped = clip_by_value(grads, 5.0)
    assert np.array_equal(clipped["a"], [-5.0, -5.0, 0.5, 5.0]) and grads["a"][0] == -7.0
    assert clipped["b"].dtype == np.float32 and np.isnan(clipped["b"][0, 0]) and clipped["b"][0, 1] == 4.0
    with pytest.raises(ValueError, match="clip_value > 0"):
        clip_by_value(grads, 0)


@pytest.mark.parametrize("loss,targets", [("cross_entropy", None), ("mse", "floats")])
def test_a_summed_loss_is_the_mean_times_its_positions(loss, targets):
    rng = np.random.default_rng(1)
    T, B, V = 5, 3, 4
    rnn = RNN(V, 6, dtype=np.float64, seed=2)
    x = rng.integers(0, V, (T, B))
    y = rng.integers(0, V, (T, B)) if targets is None else rng.standard_normal((T, B, V))
    mask = rng.random((T, B)) < 0.7
    mean, summed = (Network(rnn, V, input="one_hot", loss=loss, reduction=reduction, seed=4)
                    for reduction in ("mean", "sum"))
    count = int(mask.sum()) * (1 if targets is None else V)
    loss_mean, grads_mean, _ = mean.loss_and_grads(x, y, mask=mask)
    loss_sum, grads_sum, _ = summed.loss_and_grads(x, y, mask=mask)
    assert loss_sum == pytest.approx(loss_mean * count, rel=1e-14)
    for name in grads_mean:
        np.testing.assert_allclose(grads_sum[name], grads_mean[name] * count, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="reduction one of mean, sum"):
        Network(rnn, V, input="one_hot", reduction="none")


@pytest.mark.parametrize("options,words", [
    (["--freeze", "rnn.bias_hh_l1"], ["cannot freeze 'rnn.bias_hh_l1'", "rnn.bias_hh_l0"]),
    (["--optimizer", "adam", "--eps-inside-sqrt"], ["eps_inside_sqrt with optimizer 'adam' (it is Adagrad's)"]),
    (["--optimizer", "sgd", "--eps", "1e-8"], ["eps 1e-08 (sgd has no epsilon)"]),
    (["--clip-value", "-1", "--init-std", "-2"], ["clip_value -1.0", "init_std -2.0"]),
])
def test_bad_min_char_rnn_settings_are_named(corpus, tmp_path, capsys, options, words):
    status = main(["train", "--corpus", corpus, "--cell", "rnn", "--layers", "1", "--hidden", "4", "--input",
                   "one_hot", "--k1", "5", "--batch", "1", "--valid-fraction", "0", "--steps", "1",
                   "--run-dir", str(tmp_path / "run"), "--no-progress", *options])
    err = capsys.readouterr().err
    assert status == 2, err
    for word in words:
        assert word in err
    assert not (tmp_path / "run").exists()
