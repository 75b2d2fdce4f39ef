"""Truncated BPTT(k1, k2) over long streams, against a float64 torch mirror that
``.detach()``es the state where each window starts (rtol 1e-10)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nets_mirror import Mirror, assert_same, assert_same_grads, detach, make_network, to_numpy_state  # noqa: E402

import bptt  # noqa: E402
from bptt.nets import Network, Window, tbptt, windows  # noqa: E402

# every test here runs with the NumPy cells and with the compiled ones
pytestmark = pytest.mark.usefixtures("each_kernels")

CELLS = ["rnn", "lstm", "gru"]


def torch_tbptt(mirror, x, targets, k1, k2, state=None, mask=None, lr=None):
    """TBPTT(k1, k2) the way a torch user writes it, as a list of (loss, grads, state).

    Every k1 steps: run the last k2 steps from the detached state stored where they start, take
    the mean loss of the last k1 of them, and keep (detached) the state where the next window
    starts. With ``lr``, an SGD step between windows.
    """
    N, B = np.shape(targets)[:2]
    if mask is None:
        mask = np.ones((N, B), bool)
    names, tensors = zip(*mirror.named_parameters())
    entering = None if state is None else (
        tuple(torch.tensor(s) for s in state) if isinstance(state, tuple) else torch.tensor(state))
    results = []
    loss_start = 0
    while loss_start < N:
        stop = min(loss_start + k1, N)
        start = max(0, stop - k2)
        next_start = max(0, min(stop + k1, N) - k2) if stop < N else stop
        inp = mirror.inputs(x[start:stop])
        out, middle, last = mirror.window(inp, entering, next_start - start)
        loss = mirror.loss(mirror.head(out[loss_start - start:]), targets[loss_start:stop], mask[loss_start:stop])
        grads = torch.autograd.grad(loss, tensors)
        results.append((loss.item(), {n: g.numpy() for n, g in zip(names, grads)}, to_numpy_state(last)))
        if middle is not None:
            entering = detach(middle)
        if lr is not None:
            with torch.no_grad():
                for t, g in zip(tensors, grads):
                    t -= lr * g
        loss_start = stop
    return results


def stream(net, rng, N, B, *, mask=False):
    if net.input == "features":
        x = rng.normal(size=(N, B, net.input_size))
    else:
        x = rng.integers(0, net.vocab_size, (N, B))
    if net.loss == "cross_entropy":
        targets = rng.integers(0, net.output_size, (N, B))
    else:
        targets = rng.normal(size=(N, B, net.output_size))
    shape = (net.num_layers, B, net.hidden_size)
    parts = tuple(0.5 * rng.normal(size=shape) for _ in net.cell.STATE_NAMES)
    loss_mask = (rng.random((N, B)) < 0.7) if mask else None
    return x, targets, parts if len(parts) > 1 else parts[0], loss_mask


def check_updates(ours, theirs):
    assert len(ours) == len(theirs)
    for j, (update, (loss, grads, state)) in enumerate(zip(ours, theirs)):
        assert update.loss == pytest.approx(loss, rel=1e-12, abs=1e-300), f"window {j}"
        assert_same_grads(update.grads, grads)
        assert_same(update.state, state, f"window {j} carried state")


SCHEDULES = [(2, 2), (3, 3), (2, 3), (1, 4), (2, 5), (3, 7), (7, 7), (2, 10)]


@pytest.mark.parametrize("k1,k2", SCHEDULES)
@pytest.mark.parametrize("kind", CELLS)
def test_tbptt_matches_torch_with_embedding(kind, k1, k2):
    rng = np.random.default_rng(k1 * 10 + k2)
    net = make_network(kind, 3, 4, 5, 2, input="embedding", vocab_size=6, seed=k1)
    x, targets, state, _ = stream(net, rng, 7, 2)
    ours = list(tbptt(net, x, targets, k1, k2, state, params=net.state_dict()))
    check_updates(ours, torch_tbptt(Mirror(kind, net), x, targets, k1, k2, state))


@pytest.mark.parametrize("k1,k2", [(2, 2), (2, 3), (3, 8)])
@pytest.mark.parametrize("kind", CELLS)
def test_tbptt_matches_torch_with_features_mse_and_mask(kind, k1, k2):
    rng = np.random.default_rng(k1 * 10 + k2)
    net = make_network(kind, 3, 4, 2, loss="mse", seed=k2)
    x, targets, state, mask = stream(net, rng, 8, 3, mask=True)
    ours = list(tbptt(net, x, targets, k1, k2, state, mask))
    check_updates(ours, torch_tbptt(Mirror(kind, net), x, targets, k1, k2, state, mask))


@pytest.mark.parametrize("k1,k2", [(2, 2), (2, 3), (1, 3)])
@pytest.mark.parametrize("kind", CELLS)
def test_tbptt_with_sgd_between_windows_matches_torch(kind, k1, k2):
    """Each window reads the parameters the trainer left, and the state the previous window
    computed (with the parameters of its own time)."""
    rng = np.random.default_rng(5)
    net = make_network(kind, 3, 4, 5, 2, input="one_hot", seed=7)
    x, targets, state, _ = stream(net, rng, 7, 2)
    mirror = Mirror(kind, net)
    ours = []
    for update in tbptt(net, x, targets, k1, k2, state):
        ours.append(update)
        for name, grad in update.grads.items():
            net.params[name] -= 0.5 * grad
    check_updates(ours, torch_tbptt(mirror, x, targets, k1, k2, state, lr=0.5))


@pytest.mark.parametrize("kind", CELLS)
def test_one_window_reaching_the_start_is_full_bptt(kind):
    rng = np.random.default_rng(3)
    net = make_network(kind, 3, 4, 5, 2, input="embedding", vocab_size=6)
    x, targets, state, mask = stream(net, rng, 6, 2, mask=True)
    (update,) = tbptt(net, x, targets, 6, 9, state, mask)
    loss, grads, state_n = net.loss_and_grads(x, targets, state, mask=mask)
    assert update.loss == loss
    assert_same_grads(update.grads, grads, rtol=1e-14)
    assert_same(update.state, state_n, "state_n", rtol=0)


def test_carried_state_is_the_stream_state(rng):
    """At fixed parameters every carried state is the state of one forward over the stream."""
    net = make_network("lstm", 3, 4, 5, input="embedding", vocab_size=6)
    x, targets, state, _ = stream(net, rng, 7, 2)
    for k1, k2 in [(2, 2), (2, 5), (3, 4)]:
        for window, update in zip(windows(7, k1, k2), tbptt(net, x, targets, k1, k2, state)):
            _, expected = net.predict(x[:window.stop], state)
            assert_same(update.state, expected, f"state after step {window.stop}", rtol=1e-14)


def test_windows():
    assert windows(7, 2, 3) == [Window(0, 0, 2), Window(1, 2, 4), Window(3, 4, 6), Window(4, 6, 7)]
    assert windows(6, 3) == [Window(0, 0, 3), Window(3, 3, 6)]
    assert windows(5, 2, 50) == [Window(0, 0, 2), Window(0, 2, 4), Window(0, 4, 5)]
    with pytest.raises(ValueError, match="k1 <= k2"):
        windows(5, 3, 2)
    with pytest.raises(ValueError, match="k1 to be a positive integer"):
        windows(5, 0, 2)


def test_errors_are_raised_at_the_call(rng):
    net = make_network("gru", 3, 4, 5, input="embedding", vocab_size=6)
    x, targets, _, _ = stream(net, rng, 5, 2)
    with pytest.raises(ValueError, match="k1 <= k2"):
        tbptt(net, x, targets, 3, 2)
    with pytest.raises(ValueError, match=r"expected targets of shape \(5, 2\)"):
        tbptt(net, x, targets[:4], 2)
    bad = x.copy()
    bad[4, 0] = -1
    with pytest.raises(ValueError, match="token id"):
        tbptt(net, bad, targets, 2)
    with pytest.raises(ValueError, match="unidirectional"):
        tbptt(make_network("gru", 3, 4, 5, bidirectional=True), rng.normal(size=(5, 2, 3)), targets, 2)
    with pytest.raises(ValueError, match="many_to_many"):
        tbptt(make_network("gru", 3, 4, 5, mode="many_to_one"), rng.normal(size=(5, 2, 3)), targets, 2)


@pytest.mark.parametrize("k1, k2", [(3, 3), (2, 5)])
def test_resuming_at_a_window_from_its_next_state_continues_exactly(k1, k2):
    rng = np.random.default_rng(5)
    net = Network(bptt.LSTM(4, 5, num_layers=2, dtype=np.float64, seed=1), 6, input="embedding",
                  vocab_size=7, seed=2)
    ids = rng.integers(0, 7, size=(13, 3))
    targets = rng.integers(0, 6, size=(13, 3))
    params = net.state_dict()
    updates = list(tbptt(net, ids, targets, k1, k2, params=params))
    for j in range(1, len(updates)):
        resumed = list(tbptt(net, ids, targets, k1, k2, state=updates[j - 1].next_state, params=params,
                             start_window=j))
        assert len(resumed) == len(updates) - j
        for a, b in zip(resumed, updates[j:]):
            assert a.loss == b.loss
            for name in a.grads:
                np.testing.assert_array_equal(a.grads[name], b.grads[name])
    with pytest.raises(ValueError, match=r"start_window in \[0, \d+\)"):
        tbptt(net, ids, targets, k1, k2, start_window=len(updates))
