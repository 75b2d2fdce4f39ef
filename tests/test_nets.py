"""The Networks wing: embedding, head, losses and the network, against a float64 torch mirror
(rtol 1e-10 relative to each tensor's largest entry) and central differences."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nets_mirror import Mirror, assert_same, assert_same_grads, make_network, to_numpy_state  # noqa: E402

import bptt  # noqa: E402
from bptt.nets import (  # noqa: E402
    Network,
    cross_entropy_backward,
    cross_entropy_forward,
    embedding_backward,
    embedding_forward,
    head_backward,
    head_forward,
    mse_backward,
    mse_forward,
)
from bptt.proofs import gradcheck  # noqa: E402

CELLS = ["rnn", "lstm", "gru"]


def random_batch(net, rng, T, B, *, state=True, lengths=None, mask=False):
    """x, targets, state, lengths, mask of a time-major batch for ``net``; mask (T, B) random
    with at least one True."""
    if net.input == "features":
        x = rng.normal(size=(T, B, net.input_size))
    else:
        x = rng.integers(0, net.vocab_size, size=(T, B))
    positions = (T, B) if net.mode == "many_to_many" else (B,)
    if net.loss == "cross_entropy":
        targets = rng.integers(0, net.output_size, size=positions)
    else:
        targets = rng.normal(size=positions + (net.output_size,))
    h0 = None
    if state:
        shape = (net.num_layers * net.num_directions, B, net.hidden_size)
        parts = tuple(0.5 * rng.normal(size=shape) for _ in net.cell.STATE_NAMES)
        h0 = parts if len(parts) > 1 else parts[0]
    loss_mask = None
    if mask:
        loss_mask = rng.random((T, B)) < 0.6
        loss_mask[0, 0] = True
    return x, targets, h0, None if lengths is None else np.array(lengths), loss_mask


CASES = {
    "features-ce-mask-2layers": dict(net=dict(input="features"), I=3, L=2, T=5, B=3, mask=True),
    "embedding-ce-lengths-mask": dict(net=dict(input="embedding", vocab_size=7), I=3, T=5, B=3,
                                      lengths=[5, 2, 4], mask=True),
    "one_hot-ce": dict(net=dict(input="one_hot"), I=6, T=4, B=2),
    "features-mse-mask-lengths-2layers": dict(net=dict(loss="mse"), I=3, L=2, T=5, B=3,
                                              lengths=[3, 5, 1], mask=True),
    "embedding-mse-zero-state": dict(net=dict(input="embedding", vocab_size=5, loss="mse"), I=2, T=4, B=2,
                                     state=False),
    "many_to_one-embedding-ce-lengths": dict(net=dict(input="embedding", vocab_size=6, mode="many_to_one"),
                                             I=3, L=2, T=5, B=3, lengths=[2, 5, 4]),
    "many_to_one-features-mse": dict(net=dict(loss="mse", mode="many_to_one"), I=3, T=4, B=3),
    "B1-T1": dict(net=dict(input="embedding", vocab_size=4), I=3, T=1, B=1),
    "B1-T1-mse-2layers": dict(net=dict(loss="mse"), I=2, L=2, T=1, B=1),
    "bidirectional-ce-lengths-mask-2layers": dict(net=dict(), bidirectional=True, I=3, L=2, T=5, B=3,
                                                  lengths=[4, 5, 2], mask=True),
    "bidirectional-many_to_one-lengths": dict(net=dict(mode="many_to_one", loss="mse"), bidirectional=True,
                                              I=2, T=4, B=3, lengths=[1, 4, 3]),
}


def run_case(kind, case, seed=0):
    rng = np.random.default_rng(seed)
    net = make_network(kind, case["I"], 4, 5, case.get("L", 1), bidirectional=case.get("bidirectional", False),
                       seed=seed, **case["net"])
    x, targets, state, lengths, mask = random_batch(
        net, rng, case["T"], case["B"], state=case.get("state", True), lengths=case.get("lengths"),
        mask=case.get("mask", False),
    )
    return net, x, targets, state, lengths, mask


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", CELLS)
def test_loss_and_every_gradient_match_torch(kind, case):
    net, x, targets, state, lengths, mask = run_case(kind, CASES[case])
    loss, state_n, cache = net.forward(x, targets, state, lengths, mask)
    grads, dx, dstate0 = net.backward(cache)

    mirror = Mirror(kind, net)
    x_t = torch.tensor(x, requires_grad=True) if net.input == "features" else x
    state_t = None
    if state is not None:
        state_t = tuple(torch.tensor(s, requires_grad=True) for s in (state if isinstance(state, tuple) else (state,)))
    loss_t, state_n_t = mirror(x_t, targets, state_t if state_t is None or len(state_t) > 1 else state_t[0],
                               lengths, mask)
    names, tensors = zip(*mirror.named_parameters())
    inputs = list(tensors) + ([x_t] if net.input == "features" else []) + list(state_t or [])
    torch_all = torch.autograd.grad(loss_t, inputs)

    assert abs(loss - loss_t.item()) <= 1e-12 * abs(loss_t.item())
    assert_same(state_n, to_numpy_state(state_n_t), "state_n")
    assert_same_grads(grads, {n: g.numpy() for n, g in zip(names, torch_all)})
    rest = list(torch_all[len(names):])
    if net.input == "features":
        assert_same(dx, rest.pop(0).numpy(), "dx")
    else:
        assert dx is None
    if state_t is not None:
        ours = dstate0 if isinstance(dstate0, tuple) else (dstate0,)
        assert_same(ours, tuple(g.numpy() for g in rest), "dstate0")


def test_relu_rnn_matches_torch():
    net, x, targets, state, lengths, mask = run_case("rnn_relu", CASES["features-ce-mask-2layers"])
    loss, grads, state_n = net.loss_and_grads(x, targets, state, lengths, mask)
    mirror = Mirror("rnn_relu", net)
    loss_t, state_n_t = mirror(x, targets, state, lengths, mask)
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    assert_same(state_n, to_numpy_state(state_n_t), "state_n")
    assert_same_grads(grads, {n: g.numpy() for n, g in zip(
        [n for n, _ in mirror.named_parameters()], torch.autograd.grad(loss_t, list(mirror.parameters())))})


# per-loss truncation by depth


def detach(state):
    if state is None:
        return None
    return tuple(p.detach() for p in state) if isinstance(state, tuple) else state.detach()


def torch_truncated_loss(mirror, net, x, targets, state, mask, depth):
    """The objective whose gradient per-loss truncation at ``depth`` computes: the loss term at
    step t sees the state entering step t-depth+1 as a constant (torch ``.detach()``)."""
    inp = mirror.inputs(x)
    T, B = inp.shape[:2]
    entering = [state]
    with torch.no_grad():
        s = state
        for t in range(T):
            _, s = mirror.rnn(inp[t:t + 1], s)
            entering.append(s)
    if net.mode == "many_to_one":
        mask = np.zeros((T, B), bool)
        mask[-1] = True
        targets = np.broadcast_to(targets, (T,) + targets.shape)
    elif mask is None:
        mask = np.ones((T, B), bool)
    count = mask.sum() * (net.output_size if net.loss == "mse" else 1)
    total = 0.0
    for t in range(T):
        start = max(0, t - depth + 1)
        out, _ = mirror.rnn(inp[start:t + 1], detach(entering[start]))
        head_out = mirror.head(out[-1])[torch.as_tensor(mask[t])]  # n_t,V
        target = torch.as_tensor(np.asarray(targets[t])[mask[t]])
        if net.loss == "cross_entropy":
            term = torch.nn.functional.cross_entropy(head_out, target, reduction="sum")
        else:
            term = torch.nn.functional.mse_loss(head_out, target, reduction="sum")
        total = total + term / count
    return total


@pytest.mark.parametrize("depth", [1, 2, 5, 9])
@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("case", ["features-ce-mask-2layers", "embedding-mse-zero-state", "many_to_one-features-mse"])
def test_per_loss_truncation_matches_torch(kind, case, depth):
    net, x, targets, state, lengths, mask = run_case(kind, CASES[case], seed=1)
    loss, grads, _ = net.loss_and_grads(x, targets, state, lengths, mask, depth=depth)
    mirror = Mirror(kind, net)
    state_t = None if state is None else (
        tuple(torch.tensor(s) for s in state) if isinstance(state, tuple) else torch.tensor(state))
    objective = torch_truncated_loss(mirror, net, x, targets, state_t, mask, depth)
    assert loss == pytest.approx(objective.item(), rel=1e-12)
    names, tensors = zip(*mirror.named_parameters())
    assert_same_grads(grads, {n: g.numpy() for n, g in zip(names, torch.autograd.grad(objective, tensors))})
    if depth >= CASES[case]["T"]:
        _, exact, _ = net.loss_and_grads(x, targets, state, lengths, mask)
        assert_same_grads(grads, exact, rtol=1e-13)


# central differences


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("case", ["embedding-ce-lengths-mask", "features-mse-mask-lengths-2layers",
                                  "many_to_one-embedding-ce-lengths"])
def test_gradcheck(kind, case):
    net, x, targets, state, lengths, mask = run_case(kind, CASES[case], seed=2)
    names = net.cell.STATE_NAMES
    arrays = dict(net.params)
    states = state if isinstance(state, tuple) else (state,)
    arrays.update({f"{n}0": s for n, s in zip(names, states)})
    if net.input == "features":
        arrays["x"] = x

    def fun(point):
        params = {k: point[k] for k in net.params}
        h0 = tuple(point[f"{n}0"] for n in names)
        return net.forward(point.get("x", x), targets, h0 if len(h0) > 1 else h0[0], lengths, mask,
                           params=params)[0]

    _, cache = net.forward(x, targets, state, lengths, mask)[::2]
    grads, dx, dstate0 = net.backward(cache)
    grads = dict(grads)
    grads.update({f"{n}0": d for n, d in zip(names, dstate0 if isinstance(dstate0, tuple) else (dstate0,))})
    if dx is not None:
        grads["x"] = dx
    result = gradcheck(fun, arrays, grads, max_entries=12)
    assert result.passed, str(result)


# properties


def test_batch_first_equals_time_major(rng):
    rnn_tm = bptt.GRU(3, 4, 2, dtype=np.float64, seed=3)
    rnn_bf = bptt.GRU(3, 4, 2, dtype=np.float64, seed=3, batch_first=True)
    tm, bf = Network(rnn_tm, 5, seed=4), Network(rnn_bf, 5, seed=4)
    x = rng.normal(size=(6, 2, 3))
    targets = rng.integers(0, 5, (6, 2))
    mask = rng.random((6, 2)) < 0.7
    loss, grads, state = tm.loss_and_grads(x, targets, mask=mask, lengths=[6, 4])
    loss_bf, grads_bf, state_bf = bf.loss_and_grads(x.swapaxes(0, 1), targets.T, mask=mask.T, lengths=[6, 4])
    assert loss_bf == loss
    assert_same_grads(grads_bf, grads, rtol=0)
    np.testing.assert_array_equal(state_bf, state)
    out, _ = tm.predict(x)
    out_bf, _ = bf.predict(x.swapaxes(0, 1))
    np.testing.assert_array_equal(out_bf, out.swapaxes(0, 1))


def test_float32_stays_float32(rng):
    net = Network(bptt.LSTM(3, 4, dtype=np.float32, seed=0), 5, input="embedding", vocab_size=6, seed=1)
    loss, grads, (h, c) = net.loss_and_grads(rng.integers(0, 6, (4, 2)), rng.integers(0, 5, (4, 2)),
                                             mask=rng.random((4, 2)) < 0.5)
    assert all(g.dtype == np.float32 for g in grads.values())
    assert h.dtype == c.dtype == np.float32
    mse = Network(bptt.RNN(3, 4, dtype=np.float32, seed=0), 2, loss="mse", mode="many_to_one", seed=1)
    _, grads, h = mse.loss_and_grads(rng.normal(size=(4, 2, 3)).astype(np.float32),
                                     rng.normal(size=(2, 2)).astype(np.float32), lengths=[2, 4])
    assert all(g.dtype == np.float32 for g in grads.values()) and h.dtype == np.float32


def test_batched_equals_per_example_for_many_to_one(rng):
    net = make_network("lstm", 3, 4, 5, 2, input="embedding", vocab_size=7, mode="many_to_one")
    x, targets, lengths = rng.integers(0, 7, (5, 3)), rng.integers(0, 5, 3), np.array([5, 2, 3])
    loss, grads, _ = net.loss_and_grads(x, targets, lengths=lengths)
    # the mean over B of each sequence's own loss, run alone on its own length
    parts = [net.loss_and_grads(x[:lengths[b], b:b + 1], targets[b:b + 1]) for b in range(3)]
    assert loss == pytest.approx(np.mean([p[0] for p in parts]), rel=1e-13)
    assert_same_grads(grads, {k: np.mean([p[1][k] for p in parts], axis=0) for k in grads}, rtol=1e-13)


def test_masked_out_targets_are_never_read(rng):
    net = make_network("gru", 3, 4, 5, input="embedding", vocab_size=6)
    x, targets = rng.integers(0, 6, (4, 2)), rng.integers(0, 5, (4, 2))
    mask = np.ones((4, 2), bool)
    mask[1, 0] = mask[3, 1] = False
    loss, grads, _ = net.loss_and_grads(x, targets, mask=mask)
    targets[1, 0], targets[3, 1] = -1, 99  # padding ids
    loss_padded, grads_padded, _ = net.loss_and_grads(x, targets, mask=mask)
    assert loss_padded == loss
    assert_same_grads(grads_padded, grads, rtol=0)


def test_state_dict_loads_into_torch_and_back(rng):
    net = make_network("lstm", 3, 4, 5, 2, input="embedding", vocab_size=7)
    mirror = Mirror("lstm", net)  # loads strictly: the names are torch's
    with torch.no_grad():
        for p in mirror.parameters():
            p.mul_(0.5)
    net.load_state_dict(mirror.state_dict())
    for name, value in mirror.state_dict().items():
        np.testing.assert_array_equal(net.params[name], value.numpy())
    with pytest.raises(ValueError, match="missing keys: head.bias"):
        net.load_state_dict({k: v for k, v in mirror.state_dict().items() if k != "head.bias"})


# the pure functions


def test_embedding_backward_sums_repeated_ids(rng):
    weight = rng.normal(size=(5, 3))
    ids = np.array([[1, 1], [4, 1], [0, 4]])
    x, cache = embedding_forward({"weight": weight}, ids)
    np.testing.assert_array_equal(x, weight[ids])
    dx = rng.normal(size=(3, 2, 3))
    dweight = embedding_backward(dx, cache)["weight"]
    code = np.eye(5)[ids.reshape(-1)]  # 6,5  x = code @ weight, so dW = codeᵀ dx
    np.testing.assert_allclose(dweight, code.T @ dx.reshape(-1, 3), rtol=1e-14)
    assert not dweight[2].any()


def test_head_matches_torch_linear(rng):
    params = {"weight": rng.normal(size=(4, 6)), "bias": rng.normal(size=4)}
    y = rng.normal(size=(3, 2, 6))
    dout = rng.normal(size=(3, 2, 4))
    out, cache = head_forward(params, y)
    grads, dy = head_backward(dout, cache)
    linear = torch.nn.Linear(6, 4)
    linear.load_state_dict({k: torch.tensor(v) for k, v in params.items()})
    y_t = torch.tensor(y, requires_grad=True)
    out_t = linear(y_t)
    dw, db, dy_t = torch.autograd.grad(out_t, [linear.weight, linear.bias, y_t], torch.tensor(dout))
    assert_same(out, out_t.detach().numpy(), "out")
    assert_same(grads["weight"], dw.numpy(), "weight")
    assert_same(grads["bias"], db.numpy(), "bias")
    assert_same(dy, dy_t.numpy(), "dy")


def test_cross_entropy_is_stable_and_matches_torch(rng):
    logits = rng.normal(size=(4, 3, 5)) * 1e4  # exp would overflow without the shift
    targets = rng.integers(0, 5, (4, 3))
    mask = rng.random((4, 3)) < 0.5
    mask[0, 0] = True
    loss, cache = cross_entropy_forward(logits, targets, mask)
    dlogits = cross_entropy_backward(0.7, cache)
    logits_t = torch.tensor(logits, requires_grad=True)
    loss_t = torch.nn.functional.cross_entropy(logits_t[torch.tensor(mask)], torch.tensor(targets[mask]))
    (dlogits_t,) = torch.autograd.grad(loss_t, logits_t, torch.tensor(0.7))
    assert np.isfinite(loss) and loss == pytest.approx(loss_t.item(), rel=1e-12)
    assert_same(dlogits, dlogits_t.numpy(), "dlogits")


def test_mse_matches_torch(rng):
    pred, target = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 3, 2))
    mask = rng.random((4, 3)) < 0.5
    mask[0, 0] = True
    loss, cache = mse_forward(pred, target, mask)
    dpred = mse_backward(1.3, cache)
    pred_t = torch.tensor(pred, requires_grad=True)
    loss_t = torch.nn.functional.mse_loss(pred_t[torch.tensor(mask)], torch.tensor(target[mask]))
    (dpred_t,) = torch.autograd.grad(loss_t, pred_t, torch.tensor(1.3))
    assert loss == pytest.approx(loss_t.item(), rel=1e-12)
    assert_same(dpred, dpred_t.numpy(), "dpred")


def test_no_step_carries_a_loss_gives_zero():
    mask = np.zeros((2, 3), bool)
    loss, cache = cross_entropy_forward(np.ones((2, 3, 4)), np.zeros((2, 3), int), mask)
    assert loss == 0.0 and not cross_entropy_backward(1.0, cache).any()
    loss, cache = mse_forward(np.ones((2, 3, 4)), np.zeros((2, 3, 4)), mask)
    assert loss == 0.0 and not mse_backward(1.0, cache).any()


# errors for people


@pytest.fixture
def small():
    return make_network("lstm", 3, 4, 5, input="embedding", vocab_size=6)


def test_error_wrong_target_shape(small):
    with pytest.raises(ValueError, match=r"expected targets of shape \(4, 2\)"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 3), int))


def test_error_token_id_out_of_range(small):
    x = np.zeros((4, 2), int)
    x[2, 1] = 6
    with pytest.raises(ValueError, match=r"token id of x in \[0, 6\) but got 6 at \(2, 1\)"):
        small.loss_and_grads(x, np.zeros((4, 2), int))


def test_error_target_class_out_of_range(small):
    targets = np.zeros((4, 2), int)
    targets[0, 1] = 5
    with pytest.raises(ValueError, match=r"target class id in \[0, 5\) but got 5 at \(0, 1\)"):
        small.loss_and_grads(np.zeros((4, 2), int), targets)


def test_error_float_ids_and_targets(small):
    with pytest.raises(TypeError, match="integer token ids"):
        small.loss_and_grads(np.zeros((4, 2)), np.zeros((4, 2), int))
    with pytest.raises(TypeError, match="integer class ids"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 2)))


def test_error_mask_and_state(small):
    with pytest.raises(ValueError, match=r"expected mask of shape \(4, 2\)"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 2), int), mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"expected state as a tuple \(h, c\)"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 2), int), state=np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match=r"expected state h of shape \(1, 2, 4\)"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 2), int),
                             state=(np.zeros((1, 3, 4)), np.zeros((1, 2, 4))))


def test_error_depth_needs_unidirectional_without_lengths(small):
    with pytest.raises(ValueError, match="no lengths"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 2), int), lengths=[4, 2], depth=2)
    with pytest.raises(ValueError, match="positive integer"):
        small.loss_and_grads(np.zeros((4, 2), int), np.zeros((4, 2), int), depth=0)


def test_error_configuration():
    rnn = bptt.GRU(3, 4, dtype=np.float64)
    with pytest.raises(ValueError, match='vocab_size, a positive integer, with input="embedding"'):
        Network(rnn, 5, input="embedding")
    with pytest.raises(ValueError, match=r"rnn.input_size \(3\)"):
        Network(rnn, 5, input="one_hot", vocab_size=4)
    with pytest.raises(ValueError, match="expected loss one of"):
        Network(rnn, 5, loss="nll")
    with pytest.raises(ValueError, match="mask is for"):
        Network(rnn, 5, mode="many_to_one").loss_and_grads(np.zeros((2, 1, 3)), np.zeros(1, int),
                                                           mask=np.ones((2, 1), bool))
    with pytest.raises(TypeError, match="float64"):
        Network(rnn, 5, loss="mse").loss_and_grads(np.zeros((2, 1, 3)), np.zeros((2, 1, 5), np.float32))


def test_refilling_the_inputs_between_forward_and_backward_changes_nothing(rng):
    net = make_network("lstm", 3, 4, 5, 2, loss="mse")
    x, targets, state, _, mask = random_batch(net, rng, 4, 2, mask=True)
    _, grads, _ = net.loss_and_grads(x, targets, state, mask=mask)
    _, _, cache = net.forward(x, targets, state, mask=mask)
    for array in (x, targets, *state):
        array[...] = rng.normal(size=array.shape)  # the caller loads the next batch in place
    mask[...] = True
    assert_same_grads(net.backward(cache)[0], grads, rtol=0)
