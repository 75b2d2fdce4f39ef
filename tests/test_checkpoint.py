"""Checkpoints round-trip exactly, are written atomically, and refuse bad files clearly."""

import os

import numpy as np
import pytest

from bptt.training import checkpoint
from bptt.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _tree():
    rng = np.random.default_rng(0)
    return {
        "params": {"rnn.weight_ih_l0": rng.normal(size=(8, 3)).astype(np.float32), "head.bias": rng.normal(size=5)},
        "optimizer": {"step": 12, "exp_avg": {"head.bias": rng.normal(size=5)}},
        "rng": np.random.default_rng(3).bit_generator.state,  # 128-bit integers
        "vocab": "\n ab€",
        "state": [rng.normal(size=(2, 4, 6)), rng.normal(size=(2, 4, 6))],
        "limit": None,
        "lr": 1e-3,
    }


def _assert_same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


def test_round_trip_is_exact(tmp_path):
    path = tmp_path / "run.npz"
    tree = _tree()
    save_checkpoint(path, tree)
    loaded = load_checkpoint(path)
    _assert_same({**tree, "state": list(tree["state"])}, loaded)
    rng = np.random.default_rng()
    rng.bit_generator.state = loaded["rng"]
    assert rng.random() == np.random.default_rng(3).random()


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    save_checkpoint(path, {"step": 1, "w": np.ones(3)})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"step": 2, "w": np.zeros(3)})
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["run.npz"]  # no partial file left behind


def test_truncated_corrupt_foreign_and_newer_files_are_named(tmp_path):
    path = tmp_path / "run.npz"
    save_checkpoint(path, _tree())
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.npz is truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.npz")
    (tmp_path / "text.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="text.npz is truncated or corrupt"):
        load_checkpoint(tmp_path / "text.npz")
    np.savez(tmp_path / "foreign.npz", w=np.ones(2))
    with pytest.raises(CheckpointError, match="foreign.npz is not a bptt checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.npz")


def test_a_newer_format_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    monkeypatch.setattr(checkpoint, "FORMAT", checkpoint.FORMAT + 1)
    save_checkpoint(path, {"step": 1})
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match=rf"format {checkpoint.FORMAT + 1}, newer than this bptt reads \({checkpoint.FORMAT}\)"):
        load_checkpoint(path)


def test_values_that_cannot_be_stored_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store set at x"):
        save_checkpoint(tmp_path / "a.npz", {"x": {1, 2}})
    with pytest.raises(TypeError, match="without '/'"):
        save_checkpoint(tmp_path / "a.npz", {"a/b": 1})
    assert not os.listdir(tmp_path)
