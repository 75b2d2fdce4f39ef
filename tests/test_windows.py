"""Every truncation a person writes, against a torch mirror that ``.detach()``es at the same
points (float64, rtol 1e-10): windows aligned to the start or the end, TBPTT(k1, k2) on one
sequence, per-loss depth, each alone and with a cut path, for every cell, with lengths, several
layers and both directions.

The mirror is written apart from the library: each sequence runs on its own (packed-sequence
semantics by construction), step by step with PyTorch's equations, and the state entering a
step is detached where the truncation restarts the gradient.
"""

import numpy as np
import pytest

import bptt
from bptt.recurrence import Window

torch = pytest.importorskip("torch")

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


def make_model(cell, I, H, L, bidirectional, seed):
    options = dict(num_layers=L, bidirectional=bidirectional, dtype=np.float64, seed=seed)
    if cell.startswith("rnn"):
        return bptt.RNN(I, H, nonlinearity=cell.removeprefix("rnn_"), **options)
    return {"lstm": bptt.LSTM, "gru": bptt.GRU}[cell](I, H, **options)


def torch_step(cell, w, x, state, cut):
    """One step of ``cell`` in PyTorch's equations; ``cut`` drops a path through time as
    ``bptt.recurrence.backward`` does: "hidden" the W_hh path, "cell" the paths around it."""
    h = state[0]
    h_gates = h.detach() if cut == "hidden" else h
    gi = w["ih"] @ x + w["b_ih"]
    gh = w["hh"] @ h_gates + w["b_hh"]
    if cell == "lstm":
        i, f, g, o = (gi + gh).chunk(4)
        c = state[1].detach() if cut == "cell" else state[1]
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new
    if cell == "gru":
        r = torch.sigmoid(gi[:len(h)] + gh[:len(h)])
        z = torch.sigmoid(gi[len(h):2 * len(h)] + gh[len(h):2 * len(h)])
        n = torch.tanh(gi[2 * len(h):] + r * gh[2 * len(h):])
        return ((1 - z) * n + z * (h.detach() if cut == "cell" else h),)
    pre = gi + gh
    return (torch.tanh(pre) if cell == "rnn_tanh" else torch.relu(pre),)


def mirror_loss(cell, params, x, states0, length, L, D, detached, dy, dstate_n, cut):
    """``Σ y·dy + Σ state_n·dstate_n`` of one sequence of ``length`` steps, with the gradient
    between steps e-1 and e dropped in every layer and direction where ``detached(e)``."""
    layer_input = [x[t] for t in range(length)]
    total = 0.0
    for layer in range(L):
        outputs = [[None] * length for _ in range(D)]
        for d in range(D):
            k = layer * D + d
            suffix = f"l{layer}" + ("_reverse" if d else "")
            w = {"ih": params[f"weight_ih_{suffix}"], "hh": params[f"weight_hh_{suffix}"],
                 "b_ih": params[f"bias_ih_{suffix}"], "b_hh": params[f"bias_hh_{suffix}"]}
            state = tuple(s[k] for s in states0)
            order = range(length) if d == 0 else reversed(range(length))
            for t in order:
                # forward: the state entering t crosses the edge at t; reverse: at t + 1
                if detached(t if d == 0 else t + 1):
                    state = tuple(s.detach() for s in state)
                state = torch_step(cell, w, layer_input[t], state, cut)
                outputs[d][t] = state[0]
            for s, ds in zip(state, dstate_n):
                total = total + (s * ds[k]).sum()
        layer_input = [torch.cat([outputs[d][t] for d in range(D)]) for t in range(length)]
    for t in range(length):
        total = total + (layer_input[t] * dy[t]).sum()
    return total


def mirror_grads(cell, model, x, states0, dy, dstate_n, lengths, window, cut):
    """Gradients of the truncated objective in torch: for windows one graph per sequence with
    the state detached at each window's edge; for k2 > k1 one graph per chunk, detached where
    the chunk's reach begins, with only that chunk's losses (and, for the last, the final state)."""
    T, B = x.shape[:2]
    L, D = model.num_layers, model.num_directions
    params = {k: torch.tensor(v, requires_grad=True) for k, v in model.params.items()}
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states0]
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        chunks = window.chunks(n)
        s_b = [s[:, b] for s in st]
        dy_b = torch.tensor(dy[:n, b])
        ds_b = [torch.tensor(d[:, b]) for d in dstate_n]
        if window.k1 == window.k2:
            edges = {start for start, _ in chunks[1:]}
            passes = [(lambda t, edges=edges: t in edges, dy_b, ds_b)]
        else:
            passes = []
            for j, (start, stop) in enumerate(chunks):
                reach = window.reach(start)
                keep = torch.zeros(n, 1)
                keep[start:stop] = 1.0
                final = ds_b if j == len(chunks) - 1 else [torch.zeros_like(d) for d in ds_b]
                passes.append((lambda t, reach=reach: t == reach and t > 0, dy_b * keep, final))
        for detached, dy_pass, final in passes:
            loss = mirror_loss(cell, params, xt[:, b], s_b, n, L, D, detached, dy_pass, final, cut)
            loss.backward()
    grads = {k: p.grad.numpy() for k, p in params.items()}
    # with the hidden path cut, an LSTM's h0 reaches nothing: no gradient at all
    return grads, xt.grad.numpy(), tuple(np.zeros(s.shape) if s.grad is None else s.grad.numpy() for s in st)


def assert_close(actual, expected, what):
    scale = np.max(np.abs(expected)) or 1.0
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12 * scale, err_msg=what)


def check_against_mirror(cell, window, *, L=1, bidirectional=False, lengths=None, cut=None, T=7, B=3, seed=0):
    rng = np.random.default_rng(seed)
    I, H = 3, 4
    model = make_model(cell, I, H, L, bidirectional, seed)
    model.load_state_dict({k: rng.normal(0.0, 0.6, v.shape) for k, v in model.params.items()})  # b_ih != b_hh
    D = model.num_directions
    x = rng.normal(size=(T, B, I))
    states0 = [rng.normal(0.0, 0.5, (L * D, B, H)) for _ in range(2 if cell == "lstm" else 1)]
    mask = np.ones((T, B, 1)) if lengths is None else (np.arange(T)[:, None] < np.asarray(lengths))[:, :, None]
    dy = rng.normal(size=(T, B, D * H)) * mask
    dstate_n = [rng.normal(size=(L * D, B, H)) for _ in states0]
    h0 = tuple(states0) if cell == "lstm" else states0[0]
    _, _, cache = model.forward(x, h0, lengths)
    dh_n = tuple(dstate_n) if cell == "lstm" else dstate_n[0]
    grads, dx, dstate0 = model.backward(cache, dy, dh_n, window=window, cut=cut)
    expected, expected_dx, expected_dstate0 = mirror_grads(cell, model, x, states0, dy, dstate_n, lengths,
                                                           Window(*window), cut)
    for name in grads:
        assert_close(grads[name], expected[name], name)
    assert_close(dx, expected_dx, "dx")
    for got, want in zip(dstate0 if cell == "lstm" else (dstate0,), expected_dstate0):
        assert_close(got, want, "dstate0")


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("window", [(3, 3, "start"), (3, 3, "end"), (2, 5, "start"), (2, 4, "end"), (1, 3, "end")])
def test_one_layer_against_torch(cell, window):
    check_against_mirror(cell, window, seed=len(cell) + window[1])


@pytest.mark.parametrize("cell", CELLS)
def test_windows_with_lengths_layers_and_both_directions(cell):
    check_against_mirror(cell, (3, 3, "end"), L=2, bidirectional=True, lengths=[7, 4, 1], seed=1)
    check_against_mirror(cell, (2, 2, "start"), L=2, bidirectional=True, lengths=[5, 7, 2], seed=2)


@pytest.mark.parametrize("cell", CELLS)
def test_tbptt_with_lengths_and_layers(cell):
    check_against_mirror(cell, (2, 3, "end"), L=2, lengths=[7, 5, 1], seed=3)
    check_against_mirror(cell, (3, 5, "start"), L=1, lengths=[6, 7, 3], seed=4)


@pytest.mark.parametrize("cell, cut", [("lstm", "hidden"), ("lstm", "cell"), ("gru", "hidden"), ("gru", "cell"),
                                       ("rnn_tanh", "hidden")])
def test_windows_with_a_cut_path(cell, cut, each_kernels):
    check_against_mirror(cell, (3, 3, "end"), cut=cut, seed=5)
    check_against_mirror(cell, (2, 4, "start"), cut=cut, lengths=[7, 3, 6], seed=6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_single_step_and_single_example(cell):
    check_against_mirror(cell, (1, 1, "end"), T=1, B=1, seed=7)
    check_against_mirror(cell, (2, 3, "start"), T=5, B=1, seed=8)


def test_each_window_is_its_own_bptt(rng):
    """Windows of k: the gradient is the sum of full BPTT over each window, from the state that
    entered it (the losses of one window never reach another)."""
    model = bptt.GRU(3, 4, dtype=np.float64, seed=0)
    x, dy = rng.normal(size=(8, 2, 3)), rng.normal(size=(8, 2, 4))
    _, _, cache = model.forward(x)
    grads, dx, _ = model.backward(cache, dy, window=(3, 3, "end"))
    total = {k: 0.0 for k in grads}
    state = None
    for start, stop in [(0, 2), (2, 5), (5, 8)]:
        _, state_next, part = model.forward(x[start:stop], state)
        part_grads, part_dx, _ = model.backward(part, dy[start:stop])
        np.testing.assert_allclose(dx[start:stop], part_dx, rtol=1e-12)
        total = {k: total[k] + part_grads[k] for k in grads}
        state = state_next
    for name in grads:
        np.testing.assert_allclose(grads[name], total[name], rtol=1e-12)


def test_truncations_that_are_full_bptt(rng):
    model = bptt.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=0)
    x, dy = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 4))
    _, _, cache = model.forward(x)
    full, full_dx, _ = model.backward(cache, dy)
    for window in [(6, 6, "start"), (9, 9, "end"), (1, 6, "end"), (2, 7, "start")]:
        grads, dx, _ = model.backward(cache, dy, window=window)
        np.testing.assert_allclose(dx, full_dx, rtol=1e-12, err_msg=str(window))
        for name in grads:
            np.testing.assert_allclose(grads[name], full[name], rtol=1e-12, err_msg=f"{window} {name}")


def test_depth_is_tbptt_of_one_step_chunks(rng):
    model = bptt.RNN(3, 4, dtype=np.float64, seed=0)
    x, dy = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 4))
    _, _, cache = model.forward(x, lengths=[6, 4])
    by_depth = model.backward(cache, dy, depth=3)
    for align in ("start", "end"):
        by_window = model.backward(cache, dy, window=Window(1, 3, align))
        for name in by_depth[0]:
            np.testing.assert_array_equal(by_depth[0][name], by_window[0][name])


@pytest.mark.parametrize("window, message", [
    ((0, 3), "1 <= k1 <= k2"),
    ((3, 2), "1 <= k1 <= k2"),
    ((2, 2, "middle"), "align 'start' or 'end'"),
    ((1, 2, "end", 4), "(k1, k2) or (k1, k2, align)"),
    (3, "(k1, k2) or (k1, k2, align)"),
])
def test_bad_windows_are_named(window, message, rng):
    model = bptt.LSTM(3, 4, dtype=np.float64, seed=0)
    _, _, cache = model.forward(rng.normal(size=(5, 2, 3)))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model.backward(cache, np.zeros((5, 2, 4)), window=window)


def test_tbptt_refuses_both_directions_and_depth_with_window(rng):
    model = bptt.GRU(3, 4, bidirectional=True, dtype=np.float64, seed=0)
    _, _, cache = model.forward(rng.normal(size=(5, 2, 3)))
    with pytest.raises(ValueError, match="unidirectional"):
        model.backward(cache, np.zeros((5, 2, 8)), window=(2, 3))
    with pytest.raises(ValueError, match="not both"):
        model.backward(cache, np.zeros((5, 2, 8)), depth=2, window=(2, 2))
