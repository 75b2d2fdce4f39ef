"""The encoder–decoder (bptt.nets.Seq2Seq): every gradient against a float64 torch mirror
(rtol 1e-10 relative to each tensor's largest entry) and central differences; decoding (greedy
and beam search); the reverse and addition tasks and their baselines; a short training run."""

import functools
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from seq2seq_mirror import Seq2SeqMirror, max_rel_err, torch_loss_and_grads  # noqa: E402

from bptt.layers import make_rnn  # noqa: E402
from bptt.nets import Seq2Seq, beam_search, greedy_decode, length_penalty, pad_sequences  # noqa: E402
from bptt.proofs import gradcheck  # noqa: E402
from bptt.training import SGD  # noqa: E402
from bptt.training import seq2seq_tasks as tasks  # noqa: E402

CELLS = ["rnn", "lstm", "gru"]
E_SOURCE, E_TARGET, V_SOURCE, V_TARGET = 3, 2, 7, 6
START, END = 1, 2


def make_model(kind, case, seed=0, dtype=np.float64, decoder_kind=None):
    """A Seq2Seq of ``case``'s sizes over fresh bptt stacks (biases non-zero and different)."""
    encoder = None
    if case.get("enc") is not None:
        enc = case["enc"]
        encoder = make_rnn(kind, E_SOURCE, enc["H"], enc["L"], bidirectional=enc.get("bi", False),
                           dropout=enc.get("dropout", 0.0), dtype=dtype, seed=seed)
    dec = case["dec"]
    decoder = make_rnn(decoder_kind or kind, E_TARGET, dec["H"], dec["L"], dropout=dec.get("dropout", 0.0),
                       dtype=dtype, seed=seed + 1)
    sizes = dict(features_size=case["F"]) if encoder is None else dict(source_vocab_size=V_SOURCE)
    return Seq2Seq(encoder, decoder, V_TARGET, bridge=case["bridge"], start_id=START, end_id=END,
                   reduction=case.get("reduction", "mean"), seed=seed + 2, **sizes)


def make_batch(model, case, seed=0):
    """source (S, B) ids or (B, F) features, source lengths, target (T, B), target lengths."""
    rng = np.random.default_rng(seed + 100)
    B = case["B"]
    if model.encoder is None:
        source = rng.normal(size=(B, case["F"])).astype(model.dtype)
    else:
        source = rng.integers(0, V_SOURCE, size=(case["S"], B))
    target = rng.integers(0, V_TARGET, size=(case["T"], B))
    as_array = lambda lengths: None if lengths is None else np.array(lengths)  # noqa: E731
    return source, as_array(case.get("src")), target, as_array(case.get("tgt"))


CASES = {
    "direct-2layers-lengths": dict(enc=dict(L=2, H=4), dec=dict(L=2, H=4), bridge=None, S=5, T=4, B=3,
                                   src=[5, 2, 4], tgt=[3, 4, 1]),
    "direct-bidirectional-summed": dict(enc=dict(L=2, H=4, bi=True), dec=dict(L=2, H=4), bridge=None, S=5, T=4,
                                        B=3, src=[3, 5, 1], tgt=[4, 2, 3]),
    "linear-bidirectional-2to1-layers": dict(enc=dict(L=2, H=3, bi=True), dec=dict(L=1, H=5), bridge="linear",
                                             S=4, T=5, B=3, src=[4, 1, 3], tgt=[2, 5, 4]),
    "tanh-1to2-layers": dict(enc=dict(L=1, H=3), dec=dict(L=2, H=4), bridge="tanh", S=5, T=3, B=2, src=[2, 5],
                             tgt=[3, 1]),
    "tanh-bidirectional-B1": dict(enc=dict(L=1, H=3, bi=True), dec=dict(L=1, H=4), bridge="tanh", S=4, T=3, B=1,
                                  src=[3], tgt=[2]),
    "direct-B1-S1-T1": dict(enc=dict(L=1, H=3), dec=dict(L=1, H=3), bridge=None, S=1, T=1, B=1),
    "linear-no-lengths-sum": dict(enc=dict(L=1, H=4, bi=True), dec=dict(L=2, H=3), bridge="linear", S=3, T=4,
                                  B=2, reduction="sum"),
    "features-linear": dict(enc=None, F=4, dec=dict(L=2, H=3), bridge="linear", T=4, B=3, tgt=[4, 1, 3]),
    "features-tanh-B1-sum": dict(enc=None, F=3, dec=dict(L=1, H=4), bridge="tanh", T=3, B=1, tgt=[2],
                                 reduction="sum"),
}


def assert_same(ours, theirs, name, rtol=1e-10):
    err = max_rel_err(ours, theirs)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:g}"


def assert_parity(model, source, source_lengths, target, target_lengths):
    loss, cache = model.forward(source, source_lengths, target, target_lengths)
    grads, dsource = model.backward(cache)
    loss_t, grads_t, dsource_t = torch_loss_and_grads(model, source, source_lengths, target, target_lengths)
    assert abs(loss - loss_t) <= 1e-12 * abs(loss_t)
    assert list(grads) == list(grads_t)  # torch's names, in the torch module's order
    for name in grads_t:
        assert_same(grads[name], grads_t[name], name)
    assert_same(dsource, dsource_t, "dsource")


# parity with torch


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", CELLS)
def test_loss_and_every_gradient_match_torch(kind, case):
    model = make_model(kind, CASES[case])
    assert_parity(model, *make_batch(model, CASES[case]))


@pytest.mark.parametrize("encoder_kind, decoder_kind", [("gru", "rnn"), ("rnn_relu", "gru")])
def test_mixed_cells_match_torch(encoder_kind, decoder_kind):
    case = CASES["linear-bidirectional-2to1-layers"]
    model = make_model(encoder_kind, case, decoder_kind=decoder_kind)
    assert_parity(model, *make_batch(model, case))


def test_gradients_reach_every_parameter():
    """No gradient is zero by accident of wiring: each tensor has a non-zero entry."""
    case = CASES["linear-bidirectional-2to1-layers"]
    model = make_model("lstm", case)
    _, grads = model.loss_and_grads(*make_batch(model, case))
    assert [name for name, g in grads.items() if not np.any(g)] == []


# central differences


@pytest.mark.parametrize("case", ["linear-bidirectional-2to1-layers", "direct-bidirectional-summed",
                                  "features-tanh-B1-sum"])
@pytest.mark.parametrize("kind", CELLS)
def test_gradcheck(kind, case):
    model = make_model(kind, CASES[case], seed=3)
    source, source_lengths, target, target_lengths = make_batch(model, CASES[case], seed=3)
    arrays = dict(model.params)
    if model.encoder is None:
        arrays["features"] = source

    def fun(point):
        params = {k: point[k] for k in model.params}
        return model.forward(point.get("features", source), source_lengths, target, target_lengths, params=params)[0]

    grads, dsource = model.backward(model.forward(source, source_lengths, target, target_lengths)[1])
    if model.encoder is None:
        grads["features"] = dsource
    # h = 3e-3, not 1e-3: deep encoder weights reach the loss weakly (gradients ~1e-4 of it),
    # where the rounding error ~1e-16 |loss| / h of h = 1e-3 reaches 4e-7 of their scale; the
    # truncation error, O(h⁴), is still ~1e-8 of it
    result = gradcheck(fun, arrays, grads, max_entries=6, step=3e-3)
    assert result.passed, str(result)


def test_gradcheck_with_dropout():
    """Dropout between the layers of both stacks: the masks of one generator seed are fixed, so
    the loss is a smooth function whose gradient the backward must give."""
    case = dict(enc=dict(L=2, H=3, dropout=0.4), dec=dict(L=2, H=3, dropout=0.3), bridge=None, S=4, T=3, B=2,
                src=[4, 2], tgt=[3, 2])
    model = make_model("lstm", case, seed=4)
    source, source_lengths, target, target_lengths = make_batch(model, case, seed=4)

    def fun(point):
        return model.forward(source, source_lengths, target, target_lengths, params=point,
                             dropout_rng=np.random.default_rng(9))[0]

    loss, cache = model.forward(source, source_lengths, target, target_lengths, dropout_rng=np.random.default_rng(9))
    assert loss != model.forward(source, source_lengths, target, target_lengths, dropout_rng=False)[0]
    with pytest.raises(ValueError, match="no dropout_rng"):
        model.forward(source, source_lengths, target, target_lengths)  # neither on nor off: refused
    with pytest.raises(TypeError, match="dropout_rng"):
        model.forward(source, source_lengths, target, target_lengths, dropout_rng=9)
    result = gradcheck(fun, dict(model.params), model.backward(cache)[0], max_entries=6, step=3e-3)
    assert result.passed, str(result)


# properties


@pytest.mark.parametrize("kind", CELLS)
def test_batch_is_the_sum_of_its_examples(kind):
    """With reduction="sum", a padded batch's loss and gradients are the sums of those of its
    examples run alone, unpadded: padding changes nothing."""
    case = dict(CASES["direct-bidirectional-summed"], reduction="sum")
    model = make_model(kind, case)
    source, source_lengths, target, target_lengths = make_batch(model, case)
    loss, grads = model.loss_and_grads(source, source_lengths, target, target_lengths)
    total_loss, total = 0.0, {name: np.zeros_like(g) for name, g in grads.items()}
    for b in range(case["B"]):
        one_loss, one = model.loss_and_grads(source[:source_lengths[b], b:b + 1], None,
                                             target[:target_lengths[b], b:b + 1], None)
        total_loss += one_loss
        for name, g in one.items():
            total[name] += g
    assert loss == pytest.approx(total_loss, rel=1e-12)
    for name in grads:
        assert_same(grads[name], total[name], name)


def test_tokens_past_the_lengths_are_not_read():
    case = CASES["direct-2layers-lengths"]
    model = make_model("gru", case)
    source, source_lengths, target, target_lengths = make_batch(model, case)
    loss, grads = model.loss_and_grads(source, source_lengths, target, target_lengths)
    T, S = target.shape[0], source.shape[0]
    source[np.arange(S)[:, None] >= source_lengths] = -1
    target[np.arange(T)[:, None] >= target_lengths] = 999
    loss_junk, grads_junk = model.loss_and_grads(source, source_lengths, target, target_lengths)
    assert loss_junk == loss
    for name in grads:
        assert np.array_equal(grads[name], grads_junk[name]), name


@pytest.mark.parametrize("case", ["linear-bidirectional-2to1-layers", "features-linear"])
def test_sequence_log_probs_add_up_to_the_loss(case):
    model = make_model("lstm", dict(CASES[case], reduction="sum"))
    batch = make_batch(model, CASES[case])
    log_probs = model.sequence_log_probs(*batch)
    assert log_probs.shape == (CASES[case]["B"],)
    assert -log_probs.sum() == pytest.approx(model.forward(*batch)[0], rel=1e-12)
    assert np.all(log_probs < 0)


def test_float32_stays_float32():
    case = CASES["linear-bidirectional-2to1-layers"]
    model64 = make_model("lstm", case)
    model32 = make_model("lstm", case, dtype=np.float32)
    batch = make_batch(model64, case)
    loss32, cache = model32.forward(*batch)
    grads32, dsource32 = model32.backward(cache)
    _, grads64 = model64.loss_and_grads(*batch)
    assert dsource32.dtype == np.float32
    for name, g in grads32.items():
        assert g.dtype == np.float32, name
        assert max_rel_err(g, grads64[name]) < 1e-4, name
    assert loss32 == pytest.approx(model64.forward(*batch)[0], rel=1e-5)


# parameters and errors


def test_state_dict_moves_to_torch_and_back():
    case = CASES["linear-bidirectional-2to1-layers"]
    model = make_model("lstm", case, seed=0)
    other = make_model("lstm", case, seed=5)
    mirror = Seq2SeqMirror(other)
    assert list(mirror.state_dict()) == list(model.params)
    model.load_state_dict(mirror.state_dict())  # torch tensors
    for name, value in model.state_dict().items():
        assert np.array_equal(value, other.params[name]), name
    broken = dict(model.state_dict())
    del broken["bridge.c.bias"]
    broken["bridge.h.weight"] = broken["bridge.h.weight"][:, :2]
    broken["extra"] = np.zeros(1)
    with pytest.raises(ValueError, match=r"missing keys: bridge.c.bias.*unexpected keys: extra.*bridge.h.weight"):
        model.load_state_dict(broken)


def layers(kind, H=4, L=1, bidirectional=False, input_size=3):
    return make_rnn(kind, input_size, H, L, bidirectional=bidirectional, dtype=np.float64, seed=0)


@pytest.mark.parametrize("build, message", [
    (lambda: Seq2Seq(layers("gru"), layers("gru", H=5), 6, source_vocab_size=7, start_id=1),
     "direct bridge.*needs the decoder's layers and hidden size"),
    (lambda: Seq2Seq(layers("gru"), layers("gru", bidirectional=True), 6, source_vocab_size=7, start_id=1),
     "unidirectional decoder"),
    (lambda: Seq2Seq(layers("gru"), layers("lstm"), 6, source_vocab_size=7, bridge="linear", start_id=1),
     "same parts"),
    (lambda: Seq2Seq(None, layers("gru"), 6, features_size=3, start_id=1), "needs bridge"),
    (lambda: Seq2Seq(None, layers("gru"), 6, bridge="tanh", start_id=1), "features_size"),
    (lambda: Seq2Seq(layers("gru"), layers("gru"), 6, start_id=1), "source_vocab_size"),
    (lambda: Seq2Seq(layers("gru"), layers("gru"), 6, source_vocab_size=7, start_id=6), r"start_id in \[0, 6\)"),
    (lambda: Seq2Seq(layers("gru"), layers("gru"), 6, source_vocab_size=7, bridge="relu", start_id=1), "bridge"),
    (lambda: Seq2Seq(layers("gru"), layers("gru"), 6, source_vocab_size=7, start_id=1, reduction="none"),
     "reduction"),
])
def test_configuration_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_input_errors():
    case = CASES["direct-2layers-lengths"]
    model = make_model("gru", case)
    source, source_lengths, target, target_lengths = make_batch(model, case)
    bad = source.copy()
    bad[0, 1] = V_SOURCE
    with pytest.raises(ValueError, match=r"token id of source in \[0, 7\) within its length but got 7 at \(0, 1\)"):
        model.forward(bad, source_lengths, target, target_lengths)
    with pytest.raises(ValueError, match=r"expected target of shape \(T, 3\)"):
        model.forward(source, source_lengths, target[:, :2], None)
    with pytest.raises(ValueError, match=r"every length in \[1, 4\]"):
        model.forward(source, source_lengths, target, [5, 1, 1])
    with pytest.raises(TypeError, match="integer token ids"):
        model.forward(source.astype(float), source_lengths, target, target_lengths)
    features_model = make_model("gru", CASES["features-linear"])
    with pytest.raises(ValueError, match="source_lengths are for token sources"):
        features_model.forward(np.zeros((3, 4)), [1, 1, 1], target, None)
    with pytest.raises(TypeError, match="float64"):
        features_model.forward(np.zeros((3, 4), np.float32), None, target, None)


# decoding


EXCLUDE = (tasks.PAD_ID, tasks.START_ID)  # never emitted


@functools.cache
def half_trained(kind):
    """A Seq2Seq trained for 100 SGD steps to reverse strings of 1 to 4 digits, in float64: it
    has learnt enough that its outputs depend on the source and end at varied lengths, and
    little enough that it is unsure, so that beams of different widths disagree."""
    encoder = make_rnn(kind, 8, 16, dtype=np.float64, seed=0)
    decoder = make_rnn(kind, 8, 16, dtype=np.float64, seed=1)
    model = Seq2Seq(encoder, decoder, tasks.VOCAB_SIZE, source_vocab_size=tasks.VOCAB_SIZE, start_id=tasks.START_ID,
                    end_id=tasks.END_ID, seed=2)
    optimizer = SGD(momentum=0.9)
    state = optimizer.init_state(model.params)
    rng = np.random.default_rng(0)
    for _ in range(100):
        batch = tasks.reverse_task(rng, 32, 4)
        _, grads = model.loss_and_grads(batch.source, batch.source_lengths, batch.target, batch.target_lengths)
        model.params, state = optimizer.update(model.params, grads, state, 0.1)
    return model


def conditioned_model(kind):
    """A random decoder conditioned on features, its head scaled up so that its next-token
    distributions are far from uniform."""
    model = make_model(kind, dict(enc=None, F=4, dec=dict(L=2, H=6), bridge="tanh"))
    model.params["head.weight"] = model.params["head.weight"] * 6
    return model


def sources(model, seed, B):
    """Sources for ``model``: reverse-task digits (S, B) and lengths, or (B, F) features and None."""
    rng = np.random.default_rng(seed)
    if model.encoder is None:
        return rng.normal(size=(B, model.features_size)), None
    batch = tasks.reverse_task(rng, B, 4)
    return batch.source, batch.source_lengths


MODELS = {"half-trained": half_trained, "conditioned": conditioned_model}


def score_under_model(model, source, source_lengths, sequences, alpha):
    """log P and normalized score of each sequence by the model's teacher-forced pass."""
    target, lengths = pad_sequences(sequences)
    log_probs = model.sequence_log_probs(source, source_lengths, target, lengths)
    return log_probs, log_probs / length_penalty(lengths, alpha)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize("kind", CELLS)
def test_beam_width_one_is_greedy(kind, which, alpha):
    model = MODELS[which](kind)
    source, source_lengths = sources(model, 1, 30)
    greedy = greedy_decode(model, source, source_lengths, max_length=6, exclude=EXCLUDE, alpha=alpha)
    beam = beam_search(model, source, source_lengths, beam_width=1, max_length=6, exclude=EXCLUDE, alpha=alpha)
    assert all(np.array_equal(g, b) for g, b in zip(greedy.sequences, beam.sequences))
    assert np.array_equal(greedy.log_probs, beam.log_probs)
    assert np.array_equal(greedy.scores, beam.scores)


@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize("kind", CELLS)
def test_decoded_scores_are_the_models(kind, which):
    """The log-probabilities decoding reports are those of the model's teacher-forced pass over
    the sequences it returns, and the outputs are valid token sequences."""
    model = MODELS[which](kind)
    source, source_lengths = sources(model, 2, 20)
    max_length = 5
    for decoded in (greedy_decode(model, source, source_lengths, max_length=max_length, exclude=EXCLUDE, alpha=0.5),
                    beam_search(model, source, source_lengths, beam_width=3, max_length=max_length,
                                exclude=EXCLUDE, alpha=0.5)):
        log_probs, scores = score_under_model(model, source, source_lengths, decoded.sequences, 0.5)
        assert_same(decoded.log_probs, log_probs, "log_probs")
        assert_same(decoded.scores, scores, "scores")
        for sequence in decoded.sequences:
            assert sequence.dtype == np.int64 and 1 <= len(sequence) <= max_length
            assert np.all((sequence >= 0) & (sequence < model.target_vocab_size))
            assert not np.isin(sequence, EXCLUDE).any()
            assert model.end_id not in sequence[:-1]
            assert sequence[-1] == model.end_id or len(sequence) == max_length


@pytest.mark.parametrize("alpha", [0.0, 0.7])
@pytest.mark.parametrize("kind", CELLS)
def test_wider_beams_score_at_least_greedy(kind, alpha):
    """On 100 random sources, beams of width 2, 4 and 8 never score below greedy decoding under
    the model, and score above it on some (a property that usually holds, not a theorem: see
    bptt.nets.decoding)."""
    model = half_trained(kind)
    source, source_lengths = sources(model, 3, 100)
    greedy = greedy_decode(model, source, source_lengths, max_length=6, exclude=EXCLUDE, alpha=alpha)
    _, greedy_scores = score_under_model(model, source, source_lengths, greedy.sequences, alpha)
    for width in (2, 4, 8):
        beam = beam_search(model, source, source_lengths, beam_width=width, max_length=6, exclude=EXCLUDE,
                           alpha=alpha)
        _, scores = score_under_model(model, source, source_lengths, beam.sequences, alpha)
        assert np.all(scores >= greedy_scores - 1e-12), (width, scores - greedy_scores)
        assert np.any(scores > greedy_scores + 1e-6), width


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("kind", CELLS)
def test_a_beam_wider_than_all_outputs_finds_the_best(kind, alpha):
    """With three tokens to emit (the end, 0 and 1) and at most 3 steps there are 15 outputs; a
    beam of 27 prunes nothing, so it must return the best of them, found here by scoring
    every one."""
    model = half_trained(kind)
    end, zero, one = tasks.END_ID, *tasks.encode("01").tolist()
    exclude = [i for i in range(tasks.VOCAB_SIZE) if i not in (end, zero, one)]
    texts = ["0", "1", "01", "10", "11", "00", "1", "01"]
    batch = tasks.make_batch(texts, [t[::-1] for t in texts])
    beam = beam_search(model, batch.source, batch.source_lengths, beam_width=27, max_length=3, exclude=exclude,
                       alpha=alpha)
    outputs = [list(p) + [end] for n in range(3) for p in itertools.product((zero, one), repeat=n)]
    outputs += [list(p) for p in itertools.product((zero, one), repeat=3)]
    assert len(outputs) == 15
    all_scores = np.array([
        score_under_model(model, batch.source, batch.source_lengths, [output] * len(texts), alpha)[1]
        for output in outputs
    ])  # 15,B
    best = all_scores.argmax(axis=0)
    assert len(set(best)) > 1  # the best output depends on the source
    for b in range(len(texts)):
        assert list(beam.sequences[b]) == outputs[best[b]]
        assert beam.scores[b] == pytest.approx(all_scores[best[b], b], rel=1e-12)


@pytest.mark.parametrize("which", list(MODELS))
@pytest.mark.parametrize("kind", CELLS)
def test_decoding_a_batch_equals_decoding_each_example(kind, which):
    model = MODELS[which](kind)
    source, source_lengths = sources(model, 4, 6)
    for decode in (lambda *a: greedy_decode(*a, max_length=6, exclude=EXCLUDE),
                   lambda *a: beam_search(*a, beam_width=3, max_length=6, exclude=EXCLUDE, alpha=0.6)):
        batch = decode(model, source, source_lengths)
        for b in range(6):
            if model.encoder is None:
                one = decode(model, source[b:b + 1], None)
            else:
                one = decode(model, source[:source_lengths[b], b:b + 1], None)
            assert np.array_equal(one.sequences[0], batch.sequences[b])
            assert one.scores[0] == pytest.approx(batch.scores[b], rel=1e-12)


def test_decoding_float32_and_errors():
    case = dict(enc=dict(L=1, H=4), dec=dict(L=1, H=4), bridge=None)
    model = make_model("lstm", case, dtype=np.float32)
    source = np.random.default_rng(5).integers(0, V_SOURCE, size=(4, 3))
    decoded = beam_search(model, source, None, beam_width=2, max_length=5, exclude=(0, START))
    assert decoded.log_probs.dtype == np.float32 and decoded.scores.dtype == np.float32
    with pytest.raises(ValueError, match="exclude to leave the end token"):
        greedy_decode(model, source, None, max_length=5, exclude=(END,))
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, source, None, beam_width=0, max_length=5)
    with pytest.raises(ValueError, match="max_length"):
        greedy_decode(model, source, None, max_length=0)


# the tasks


def test_reverse_task():
    batch = tasks.reverse_task(7, 50, 6, min_length=2)
    again = tasks.reverse_task(np.random.default_rng(7), 50, 6, min_length=2)
    assert all(np.array_equal(a, b) for a, b in zip(batch[:4], again[:4]))
    assert batch.source.dtype == np.int64 and batch.source.shape[1] == 50
    assert set(map(len, batch.source_texts)) == set(range(2, 7))
    for b, (source_text, target_text) in enumerate(zip(batch.source_texts, batch.target_texts)):
        n = len(source_text)
        assert target_text == source_text[::-1]
        assert batch.source_lengths[b] == n and batch.target_lengths[b] == n + 1
        assert tasks.decode(batch.source[:n, b]) == source_text
        assert list(batch.target[:n + 1, b]) == list(tasks.encode(target_text)) + [tasks.END_ID]
        assert np.all(batch.source[n:, b] == tasks.PAD_ID) and np.all(batch.target[n + 1:, b] == tasks.PAD_ID)
    flipped = tasks.reverse_task(7, 50, 6, min_length=2, reverse_source=True)
    for b, text in enumerate(flipped.source_texts):
        assert tasks.decode(flipped.source[:len(text), b]) == text[::-1] == flipped.target_texts[b]


def test_addition_task():
    d = 3
    batch = tasks.addition_task(11, 200, d)
    assert batch.source.shape[0] <= 2 * d + 1 and batch.target.shape[0] <= d + 2
    digit_counts = set()
    for b, (source_text, target_text) in enumerate(zip(batch.source_texts, batch.target_texts)):
        left, right = source_text.split("+")
        for operand in (left, right):
            assert operand == str(int(operand))  # no leading zeros
            digit_counts.add(len(operand))
        assert int(target_text) == int(left) + int(right)
        assert tasks.decode(batch.source[:, b]) == source_text
        assert tasks.decode(batch.target[:, b]) == target_text
    assert digit_counts == {1, 2, 3}
    flipped = tasks.addition_task(11, 200, d, reverse_source=True)
    assert flipped.source_texts == batch.source_texts
    assert all(tasks.decode(flipped.source[:, b]) == text[::-1] for b, text in enumerate(batch.source_texts))


def test_reverse_baseline_is_exact():
    """Copying the source, over every string of 1, 2 and 3 digits, each length weighed equally."""
    per_length = []
    for n in (1, 2, 3):
        texts = ["".join(p) for p in itertools.product("0123456789", repeat=n)]
        batch = tasks.make_batch(texts, [t[::-1] for t in texts])
        per_length.append(tasks.accuracy(tasks.reverse_baseline_predictions(batch), batch))
    assert per_length == [1.0, 0.1, 0.1]
    assert tasks.reverse_baseline(3) == pytest.approx(np.mean(per_length), rel=1e-15)
    assert tasks.reverse_baseline(3, min_length=2) == pytest.approx(0.1, rel=1e-15)


@pytest.mark.parametrize("max_digits", [1, 2, 3])
def test_addition_baseline_is_the_most_frequent_answer(max_digits):
    """The exact distribution of the sum, from the exact distribution of an operand."""
    top = 10 ** max_digits
    digits = np.array([len(str(n)) for n in range(top)])
    p_operand = 1.0 / (max_digits * np.where(digits == 1, 10, 9 * 10.0 ** (digits - 1)))  # top
    assert p_operand.sum() == pytest.approx(1.0, rel=1e-12)
    sums = np.add.outer(np.arange(top), np.arange(top)).reshape(-1)
    p_sum = np.bincount(sums, weights=np.outer(p_operand, p_operand).reshape(-1))
    assert str(int(p_sum.argmax())) == tasks.ADDITION_MODE
    assert p_sum.max() == pytest.approx(tasks.addition_baseline(max_digits), rel=1e-12)
    batch = tasks.make_batch(["4+5", "9+0", "1+9"], ["9", "9", "10"])
    assert tasks.accuracy(tasks.addition_baseline_predictions(batch), batch) == pytest.approx(2 / 3)


def test_exact_match_needs_the_end_token():
    batch = tasks.make_batch(["12", "345"], ["21", "543"])
    right = [np.append(tasks.encode("21"), tasks.END_ID), np.append(tasks.encode("543"), tasks.END_ID)]
    assert list(tasks.exact_match(right, batch.target, batch.target_lengths)) == [True, True]
    wrong = [tasks.encode("21"), np.append(tasks.encode("5431"), tasks.END_ID)]
    assert list(tasks.exact_match(wrong, batch.target, batch.target_lengths)) == [False, False]
    with pytest.raises(ValueError, match="digits and '\\+'"):
        tasks.encode("12a")


# training


def test_a_tiny_gru_learns_to_reverse():
    """300 SGD steps (momentum, no Adam) on strings of 3 digits: the loss falls from about
    log(14) below a fifth of it, and greedy decoding then gets most strings right (the copy
    baseline gets a tenth)."""
    encoder = make_rnn("gru", 8, 32, dtype=np.float32, seed=0)
    decoder = make_rnn("gru", 8, 32, dtype=np.float32, seed=1)
    model = Seq2Seq(encoder, decoder, tasks.VOCAB_SIZE, source_vocab_size=tasks.VOCAB_SIZE, start_id=tasks.START_ID,
                    end_id=tasks.END_ID, seed=2)
    optimizer = SGD(momentum=0.9)
    state = optimizer.init_state(model.params)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(300):
        batch = tasks.reverse_task(rng, 32, 3, min_length=3)
        loss, grads = model.loss_and_grads(batch.source, batch.source_lengths, batch.target, batch.target_lengths)
        model.params, state = optimizer.update(model.params, grads, state, 0.1)
        losses.append(loss)
    first, last = np.mean(losses[:10]), np.mean(losses[-20:])
    assert first > 2.0 and last < 0.2 * first, (first, last)
    batch = tasks.reverse_task(np.random.default_rng(1), 200, 3, min_length=3)
    decoded = greedy_decode(model, batch.source, batch.source_lengths, max_length=4,
                            exclude=(tasks.PAD_ID, tasks.START_ID))
    assert tasks.accuracy(decoded.sequences, batch) > 0.5 > tasks.reverse_baseline(3, min_length=3)


# the compiled kernels


@pytest.mark.parametrize("kind", CELLS)
def test_compiled_kernels_match_torch(kind, each_kernels):
    """The passes with the compiled kernels (step by step, and on threads) give the same
    gradients and decode the same outputs."""
    case = CASES["linear-bidirectional-2to1-layers"]
    model = make_model(kind, case)
    assert_parity(model, *make_batch(model, case))
    model = half_trained(kind)
    source, source_lengths = sources(model, 6, 8)
    decoded = beam_search(model, source, source_lengths, beam_width=3, max_length=5, exclude=EXCLUDE)
    log_probs, _ = score_under_model(model, source, source_lengths, decoded.sequences, 0.0)
    assert_same(decoded.log_probs, log_probs, "log_probs")
