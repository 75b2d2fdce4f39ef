"""Dropout between stacked layers: torch's placement (every layer's output but the last) and
its exact backward, against torch with the same masks."""

import numpy as np
import pytest

import bptt
from bptt.layers import dropout_masks

# every test here runs with the NumPy cells and with the compiled ones
pytestmark = pytest.mark.usefixtures("each_kernels")

torch = pytest.importorskip("torch")

CLASSES = {"rnn": (bptt.RNN, torch.nn.RNN), "lstm": (bptt.LSTM, torch.nn.LSTM), "gru": (bptt.GRU, torch.nn.GRU)}


def _rel(a, b):
    b = b.detach().numpy() if hasattr(b, "detach") else b
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_dropout_matches_torch_layers_with_the_same_masks(cell, bidirectional):
    ours_cls, torch_cls = CLASSES[cell]
    rng = np.random.default_rng(4)
    T, B, I, H, L, p = 5, 3, 4, 6, 3, 0.4
    D = 2 if bidirectional else 1
    model = ours_cls(I, H, L, bidirectional=bidirectional, dropout=p, dtype=np.float64)
    model.params = {k: rng.normal(0, 0.5, size=v.shape) for k, v in model.params.items()}
    x = rng.normal(size=(T, B, I))
    states = [rng.normal(0, 0.5, size=(L * D, B, H)) for _ in model.cell.STATE_NAMES]
    h0 = tuple(states) if cell == "lstm" else states[0]
    dy = rng.normal(size=(T, B, D * H))
    dh_n = tuple(rng.normal(size=(L * D, B, H)) for _ in states)

    y, h_n, cache = model.forward(x, h0, dropout_rng=np.random.default_rng(11))
    grads, dx, dh0 = model.backward(cache, dy, dh_n if cell == "lstm" else dh_n[0])
    masks = dropout_masks(np.random.default_rng(11), p, (T, B, D * H), L, np.float64)
    assert len(masks) == L - 1
    assert {0.0, 1.0 / (1.0 - p)} == set(np.unique(masks[0]))

    # torch's placement, spelled out: one torch layer at a time, the mask on every output but the last
    x_t = torch.tensor(x, requires_grad=True)
    states_t = [torch.tensor(s, requires_grad=True) for s in states]
    out, finals = x_t, []
    layers = []
    for layer in range(L):
        module = torch_cls(x.shape[2] if layer == 0 else D * H, H, bidirectional=bidirectional)
        module.load_state_dict({
            name.replace(f"_l{layer}", "_l0"): torch.from_numpy(value)
            for name, value in model.params.items() if f"_l{layer}" in name
        })
        layers.append(module)
        part = [s[layer * D:(layer + 1) * D] for s in states_t]
        out, final = module(out, tuple(part) if cell == "lstm" else part[0])
        finals.append(final)
        if layer < L - 1:
            out = out * torch.from_numpy(masks[layer])
    finals = [torch.cat([f[j] for f in finals]) for j in range(len(states))] if cell == "lstm" \
        else [torch.cat(finals)]
    loss = (out * torch.from_numpy(dy)).sum() + sum((f * torch.from_numpy(d)).sum() for f, d in zip(finals, dh_n))
    loss.backward()

    assert _rel(y, out) < 1e-10
    ours_finals = h_n if cell == "lstm" else (h_n,)
    for ours, theirs in zip(ours_finals, finals):
        assert _rel(ours, theirs) < 1e-10
    for layer, module in enumerate(layers):
        for name, param in module.named_parameters():
            assert _rel(grads[name.replace("_l0", f"_l{layer}")], param.grad) < 1e-10, (layer, name)
    assert _rel(dx, x_t.grad) < 1e-10
    for ours, theirs in zip(dh0 if cell == "lstm" else (dh0,), states_t):
        assert _rel(ours, theirs.grad) < 1e-10


def test_dropout_rng_false_means_no_dropout_and_masks_have_the_right_rate():
    rng = np.random.default_rng(0)
    with_dropout = bptt.LSTM(3, 4, 2, dropout=0.5, dtype=np.float64, seed=1)
    without = bptt.LSTM(3, 4, 2, dtype=np.float64, seed=1)
    x = rng.normal(size=(6, 2, 3))
    np.testing.assert_array_equal(with_dropout.forward(x, dropout_rng=False)[0], without.forward(x)[0])
    dropped = with_dropout.forward(x, dropout_rng=np.random.default_rng(2))[0]
    assert np.abs(dropped - without.forward(x)[0]).max() > 1e-3
    masks = dropout_masks(np.random.default_rng(3), 0.3, (200, 50, 8), 2, np.float32)
    assert masks[0].dtype == np.float32
    assert abs((masks[0] == 0).mean() - 0.3) < 0.01


def test_bad_dropout_is_named():
    with pytest.raises(ValueError, match=r"dropout, a probability in \[0, 1\), but got 1.0"):
        bptt.GRU(3, 4, 2, dropout=1.0)
    with pytest.raises(ValueError, match="dropout probability in"):
        dropout_masks(np.random.default_rng(0), -0.1, (2, 2, 2), 2, np.float32)


def test_network_with_dropout_passes_a_gradient_check_at_fixed_masks():
    from bptt.nets import Network
    from bptt.proofs import gradcheck

    rng = np.random.default_rng(2)
    net = Network(bptt.LSTM(3, 4, 3, dropout=0.3, dtype=np.float64, seed=0), 5, input="embedding",
                  vocab_size=6, seed=1)
    ids = rng.integers(0, 6, size=(5, 2))
    targets = rng.integers(0, 5, size=(5, 2))

    def loss(params):  # the same seed draws the same masks at every evaluation
        return net.forward(ids, targets, params=params, dropout_rng=np.random.default_rng(9))[0]

    _, grads, _ = net.loss_and_grads(ids, targets, dropout_rng=np.random.default_rng(9))
    assert loss(net.params) != net.forward(ids, targets, dropout_rng=False)[0]  # the masks change the loss
    result = gradcheck(loss, net.state_dict(), grads, max_entries=12)
    assert result.passed, str(result)
