"""The gradient of each target step's loss that reaches each source token of an encoder–decoder
(bptt.proofs.flow.source_reach): against torch autograd, one target step at a time, in float64
at rtol 1e-10; the reversed source's columns; the errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from seq2seq_mirror import Seq2SeqMirror  # noqa: E402

from bptt.layers import make_rnn  # noqa: E402
from bptt.nets import Seq2Seq  # noqa: E402
from bptt.proofs.flow import source_reach  # noqa: E402
from bptt.training import seq2seq_tasks as tasks  # noqa: E402

V_SOURCE, V_TARGET, START, END = 7, 6, 1, 2


def make_model(kind, *, bridge=None, bidirectional=False, layers=1, seed=0):
    """A tiny float64 Seq2Seq (non-zero, different biases, as every layer's initialisation gives)."""
    encoder = make_rnn(kind, 3, 4, layers, bidirectional=bidirectional, dtype=np.float64, seed=seed)
    decoder = make_rnn(kind, 2, 4 if bridge is None else 5, layers, dtype=np.float64, seed=seed + 1)
    return Seq2Seq(encoder, decoder, V_TARGET, source_vocab_size=V_SOURCE, bridge=bridge, start_id=START, end_id=END,
                   seed=seed + 2)


def make_batch(S, T, B, source_lengths, target_lengths, seed=0):
    rng = np.random.default_rng(seed + 100)
    source = rng.integers(0, V_SOURCE, size=(S, B))
    target = rng.integers(0, V_TARGET, size=(T, B))
    as_array = lambda lengths: None if lengths is None else np.array(lengths)  # noqa: E731
    return source, as_array(source_lengths), target, as_array(target_lengths)


def torch_reach(model, source, source_lengths, target, target_lengths, source_reversed=False):
    """The same mean norms from torch autograd: per target step j, the gradient of Σ_b ℓ_j^b
    with respect to the embedded source, each example's norm, averaged example by example."""
    mirror = Seq2SeqMirror(model)
    (S, B), T = source.shape, target.shape[0]
    source_lengths = np.full(B, S) if source_lengths is None else source_lengths
    target_lengths = np.full(B, T) if target_lengths is None else target_lengths
    embedded = mirror.source_embedding(torch.as_tensor(source))  # S,B,E_s
    packed = torch.nn.utils.rnn.pack_padded_sequence(embedded, torch.as_tensor(source_lengths), enforce_sorted=False)
    _, encoder_state = mirror.encoder(packed)
    state = mirror.decoder_state(encoder_state, None)
    target_t = torch.as_tensor(target)
    decoder_input = torch.cat([torch.full((1, B), model.start_id, dtype=target_t.dtype), target_t[:-1]])
    y, _ = mirror.decoder(mirror.target_embedding(decoder_input), state)  # T,B,H_d
    log_probs = torch.log_softmax(mirror.head(y), dim=-1)  # T,B,V
    reach = np.full((T, S), np.nan)
    for j in range(T):
        within = [b for b in range(B) if j < target_lengths[b]]
        loss_j = -sum(log_probs[j, b, target[j, b]] for b in within)  # Σ_b ℓ_j^b
        (dembedded,) = torch.autograd.grad(loss_j, embedded, retain_graph=True)
        norms = dembedded.norm(dim=-1).numpy()  # S,B
        for s in range(S):
            values = []
            for b in within:
                n = source_lengths[b]
                if s < n:
                    values.append(norms[n - 1 - s if source_reversed else s, b])
            if values:
                reach[j, s] = np.mean(values)
    return reach


CASES = {
    "direct-lengths": (dict(), (5, 4, 3, [5, 2, 4], [3, 4, 1])),
    "no-lengths-B1": (dict(), (3, 2, 1, None, None)),
    "tanh-bidirectional": (dict(bridge="tanh", bidirectional=True), (4, 3, 3, [4, 1, 3], [2, 3, 3])),
    "linear-2-layers": (dict(bridge="linear", layers=2), (4, 5, 2, [2, 4], [5, 3])),
}


@pytest.mark.parametrize("source_reversed", [False, True])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_source_reach_matches_torch(kind, case, source_reversed):
    options, sizes = CASES[case]
    model = make_model(kind, **options)
    batch = make_batch(*sizes)
    ours = source_reach(model, *batch, source_reversed=source_reversed)
    theirs = torch_reach(model, *batch, source_reversed=source_reversed)
    assert ours.dtype == np.float64 and ours.shape == theirs.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=0)


def test_reversed_columns_are_the_tokens_as_written():
    """The reverse task fed both ways: the same strings, each token's entry under its written
    position; on sources of one length, reading the reversed batch with ``source_reversed``
    flips the columns of reading it as fed."""
    model = Seq2Seq(make_rnn("gru", 3, 4, dtype=np.float64, seed=3), make_rnn("gru", 2, 4, dtype=np.float64, seed=4),
                    tasks.VOCAB_SIZE, source_vocab_size=tasks.VOCAB_SIZE, start_id=tasks.START_ID,
                    end_id=tasks.END_ID, seed=5)
    batch = tasks.reverse_task(0, 6, 5, min_length=5, reverse_source=True)
    args = (batch.source, batch.source_lengths, batch.target, batch.target_lengths)
    as_fed = source_reach(model, *args)
    as_written = source_reach(model, *args, source_reversed=True)
    np.testing.assert_array_equal(as_written, as_fed[:, ::-1])
    assert as_written.shape == (6, 5) and np.all(as_written > 0)


def test_positions_no_example_has_are_nan():
    model = make_model("lstm")
    source, _, target, _ = make_batch(4, 3, 2, None, None)
    reach = source_reach(model, source, np.array([2, 3]), target, np.array([1, 2]))
    assert np.isnan(reach[2]).all() and np.isnan(reach[:, 3]).all()  # no target step 2, no source token 3
    assert not np.isnan(reach[:2, :3]).any()


def test_float32_and_the_models_own_params():
    """A float32 model gives float64 norms near the float64 model's; ``params`` replaces the model's."""
    model = make_model("gru")
    batch = make_batch(5, 4, 3, [5, 2, 4], [3, 4, 1])
    exact = source_reach(model, *batch)
    single = Seq2Seq(make_rnn("gru", 3, 4, dtype=np.float32), make_rnn("gru", 2, 4, dtype=np.float32), V_TARGET,
                     source_vocab_size=V_SOURCE, start_id=START, end_id=END)
    single.load_state_dict(model.params)
    approx = source_reach(single, *batch)
    assert approx.dtype == np.float64
    np.testing.assert_allclose(approx, exact, rtol=1e-4)
    other = make_model("gru", seed=9)
    np.testing.assert_array_equal(source_reach(model, *batch, params=other.params), source_reach(other, *batch))


def test_errors():
    features_model = Seq2Seq(None, make_rnn("gru", 2, 4, dtype=np.float64), V_TARGET, features_size=3, bridge="linear",
                             start_id=START)
    with pytest.raises(ValueError, match="with an encoder"):
        source_reach(features_model, np.zeros((2, 3)), None, np.zeros((2, 2), dtype=np.int64), None)
    model = make_model("gru")
    source, _, target, _ = make_batch(4, 3, 2, None, None)
    with pytest.raises(ValueError, match="source"):
        source_reach(model, source + V_SOURCE, None, target, None)
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        source_reach(model, source, None, target[:, :1], None)
