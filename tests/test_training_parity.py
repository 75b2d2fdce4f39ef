"""Training itself equals torch (issue 4, item 8): the first updates of a character language
model trained by ``Trainer`` in float64 (embedding, 2-layer LSTM, linear head, Adam, clipping
by global norm, TBPTT with the state carried between windows) give the losses, the parameters,
the optimizer's moments and the carried state of a torch mirror written the way a torch user
writes it, to rtol 1e-10.

The mirror walks the same windows (``bptt.nets.windows``) over the same streams
(``Trainer.data.train``), detaches the state where each window starts, and starts every epoch
from a zero state, as the trainer does. The losses are read from metrics.jsonl (``log_every=1``),
the rest from the checkpoint the run leaves.
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from nets_mirror import Mirror, assert_same, detach  # noqa: E402

from bptt.nets import windows  # noqa: E402
from bptt.training.checkpoint import load_checkpoint  # noqa: E402
from bptt.training.trainer import TrainConfig, Trainer, read_metrics  # noqa: E402

UPDATES = 6
CLIP = 0.46  # between the gradient norms of these runs: some updates are clipped, some are not
TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog, {i * i % 97} times.\n" for i in range(60))
CORPORA = {
    "few KB": TEXT,  # 3.8 KB: streams much longer than 6 windows
    "epoch wraps": TEXT[:40],  # 30 training characters: 2 streams of 14 steps, an epoch of 5 updates
}


def torch_training(mirror, streams, k1, k2, lr, clip, updates):
    """TBPTT(k1, k2) training with torch.optim.Adam and clip_grad_norm_, epoch after epoch.

    Returns the loss of every update, the optimizer, and the state entering the next window.
    """
    inputs, targets = torch.as_tensor(streams[:-1]), torch.as_tensor(streams[1:])  # N,B each
    plan = windows(inputs.shape[0], k1, k2)
    optimizer = torch.optim.Adam(mirror.parameters(), lr=lr)
    losses, entering = [], None
    for update in range(updates):
        j = update % len(plan)
        if j == 0:
            entering = None  # every epoch starts from a zero state
        start, loss_start, stop = plan[j]
        next_start = plan[j + 1].start if j + 1 < len(plan) else stop
        embedded = mirror.embedding(inputs[start:stop])  # T,B,E
        out, middle, _ = mirror.window(embedded, entering, next_start - start)
        logits = mirror.head(out[loss_start - start:])  # T_loss,B,V
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets[loss_start:stop].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(mirror.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        entering = None if middle is None else detach(middle)
        if j + 1 == len(plan):
            entering = None
    return losses, optimizer, entering


@pytest.mark.parametrize("corpus", sorted(CORPORA))
@pytest.mark.parametrize("k1,k2", [(3, 3), (3, 5)])
def test_training_equals_torch(tmp_path, corpus, k1, k2):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPORA[corpus], encoding="utf-8")
    config = TrainConfig(corpus=str(path), cell="lstm", hidden_size=5, num_layers=2, embedding_size=4, k1=k1, k2=k2,
                         batch_size=2, optimizer="adam", lr=0.05, clip=CLIP, dtype="float64", seed=3,
                         valid_fraction=0.25, steps=UPDATES, log_every=1, eval_every=100, sample_every=100,
                         checkpoint_every=100, sample_length=0, valid_windows=1)
    trainer = Trainer.start(config, str(tmp_path / "run"))
    mirror = Mirror("lstm", trainer.network)  # the initial parameters, loaded strictly by name
    events = list(trainer.run())

    theirs, optimizer, entering = torch_training(mirror, trainer.data.train, k1, k2, config.lr, CLIP, UPDATES)

    steps = [m for m in read_metrics(trainer.run_dir) if m["kind"] == "step"]
    assert [m["step"] for m in steps] == list(range(1, UPDATES + 1))
    norms = [m["grad_norm"] for m in steps]
    assert min(norms) < CLIP < max(norms), f"clipping must act in some updates only: {norms}"
    if corpus == "epoch wraps":
        assert [m["epoch"] for m in steps] == [0, 0, 0, 0, 1, 1]
    np.testing.assert_allclose([m["loss"] for m in steps], theirs, rtol=1e-10, atol=0)
    assert [e.data["loss"] for e in events if e.kind == "step"] == [m["loss"] for m in steps]

    saved = load_checkpoint(os.path.join(trainer.run_dir, "checkpoint.npz"))
    assert saved["step"] == UPDATES
    names = [name for name, _ in mirror.named_parameters()]
    assert list(saved["params"]) == names
    for name, tensor in mirror.named_parameters():
        assert_same(saved["params"][name], tensor.detach().numpy(), name)
        moments = optimizer.state[tensor]
        assert saved["optimizer"]["step"] == int(moments["step"]) == UPDATES
        assert_same(saved["optimizer"]["exp_avg"][name], moments["exp_avg"].numpy(), f"exp_avg {name}")
        assert_same(saved["optimizer"]["exp_avg_sq"][name], moments["exp_avg_sq"].numpy(), f"exp_avg_sq {name}")
    if entering is None:
        assert saved["carry"] is None
    else:
        assert_same(tuple(saved["carry"]), tuple(s.numpy() for s in entering), "carried state")
