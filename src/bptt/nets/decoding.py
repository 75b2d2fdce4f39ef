"""Decoding a :class:`~bptt.nets.seq2seq.Seq2Seq`: greedy and beam search, batched, over the
cache-free passes (``Seq2Seq.initial_state`` and ``Seq2Seq.decode_step`` run the stacks with
``keep_cache=False``, as the public ``forward(..., keep_cache=False)`` does).

Legend: B batch, K beam width, V target vocabulary, L_d, H_d the decoder's layers and units.

A hypothesis is the tokens emitted after the start token. It ends at the end token (which it
includes) or, cut, after ``max_length`` tokens. Its log-probability is ``log P(y) = Σ_t log
p(y_t | y_<t, source)``, the model's own (``Seq2Seq.sequence_log_probs`` of the same tokens),
and its score is that log-probability under the length normalization of Wu et al. (2016, GNMT):

    score(y) = log P(y) / lp(|y|),    lp(n) = ((5 + n) / 6) ** alpha

with ``|y|`` the tokens emitted, the end token counted. ``alpha = 0`` is the plain
log-probability (which favours short outputs); ``alpha = 1`` nearly divides by the length.

Beam search of width K keeps, at every step, the best ``K − f`` one-token extensions of the live
hypotheses by log-probability (all live hypotheses have the same length, so their scores rank
the same), where f counts the hypotheses already finished; an extension that emits the end
token is finished and leaves the beam, so the search ends when K hypotheses are finished (or at
``max_length``, where the live ones are finished as they stand), and returns the finished
hypothesis of the best score. With K = 1 this is greedy decoding, step for step. A width at
least the number of all possible outputs explores all of them, so it returns the best output
exactly. Between those, a wider beam is not guaranteed to score at least what greedy decoding
does (the greedy prefix may be pruned for prefixes that later fall behind), only usually.
"""

from typing import NamedTuple

import numpy as np

from ..checks import is_integer


class Decoded(NamedTuple):
    """The outputs of a decoder, one per sequence of the batch."""

    sequences: list  # B int64 arrays: the tokens emitted, the end token included where one was
    log_probs: np.ndarray  # B  log P(y) under the model
    scores: np.ndarray  # B  log P(y) / lp(|y|)


def length_penalty(length, alpha):
    """GNMT's ``lp(n) = ((5 + n) / 6) ** alpha``; ``length`` an int or an array of them."""
    return ((5.0 + np.asarray(length, dtype=np.float64)) / 6.0) ** alpha


def _check_options(model, max_length, end_id, exclude, alpha):
    """The end token (None: the model's) and the excluded ids as a list, after the checks."""
    if not is_integer(max_length, 1):
        raise ValueError(f"expected max_length to be a positive integer but got {max_length!r}")
    if end_id is None:
        end_id = model.end_id
    V = model.target_vocab_size
    if end_id is not None and not (is_integer(end_id, 0) and end_id < V):
        raise ValueError(f"expected end_id in [0, {V}) but got {end_id!r}")
    exclude = sorted({int(token) for token in exclude})
    if any(not 0 <= token < V for token in exclude):
        raise ValueError(f"expected excluded token ids in [0, {V}) but got {exclude}")
    if end_id in exclude or len(exclude) >= V:
        raise ValueError(f"expected exclude to leave the end token ({end_id}) and at least one other but got {exclude}")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"expected alpha, the length normalization's exponent, >= 0 but got {alpha!r}")
    return end_id, exclude


def _step(model, tokens, state, exclude, params):
    """One cache-free decoder step; the excluded tokens get log-probability -inf."""
    log_probs, state = model.decode_step(tokens, state, params=params)  # N,V
    if exclude:
        log_probs[:, exclude] = -np.inf
    return log_probs, state


def greedy_decode(model, source, source_lengths=None, *, max_length, end_id=None, exclude=(), alpha=0.0,
                  params=None):
    """Emit the most probable token at every step (the lowest id on a tie).

    Parameters
    ----------
    model : a Seq2Seq
    source, source_lengths : as ``Seq2Seq.forward``: (S, B) ids and B lengths, or (B, F) features
    max_length : the most tokens emitted per sequence
    end_id : the token that ends a hypothesis; None for the model's ``end_id`` (if that is None
        too, every hypothesis runs to ``max_length``)
    exclude : token ids never emitted (e.g. the padding and start tokens); the log-probabilities
        of the others are not renormalized, so scores stay the model's
    alpha : the exponent of the length normalization of the scores (module docstring)
    params : None for ``model.params``, or a dict of the same names and shapes

    Returns
    -------
    Decoded
    """
    end_id, exclude = _check_options(model, max_length, end_id, exclude, alpha)
    state = model.initial_state(source, source_lengths, params=params)  # (L_d, B, H_d) per part
    B = state[0].shape[1]
    tokens = np.full(B, model.start_id, dtype=np.int64)  # B
    emitted = np.zeros((max_length, B), dtype=np.int64)  # T,B
    lengths = np.zeros(B, dtype=np.int64)  # B
    log_probs = np.zeros(B, dtype=model.dtype)  # B
    live = np.ones(B, dtype=bool)  # B
    for step in range(max_length):
        step_log_probs, state = _step(model, tokens, state, exclude, params)  # B,V
        tokens = step_log_probs.argmax(axis=1)  # B
        picked = step_log_probs[np.arange(B), tokens]  # B
        emitted[step] = tokens
        log_probs = np.where(live, log_probs + picked, log_probs)
        lengths += live
        live &= tokens != end_id
        if not live.any():
            break
    sequences = [emitted[:lengths[b], b].copy() for b in range(B)]
    return Decoded(sequences, log_probs, log_probs / length_penalty(lengths, alpha).astype(model.dtype))


def beam_search(model, source, source_lengths=None, *, beam_width, max_length, end_id=None, exclude=(), alpha=0.0,
                params=None):
    """Beam search of width K, every sequence of the batch at once (B*K rows per step).

    Parameters
    ----------
    model : a Seq2Seq
    source, source_lengths : as ``Seq2Seq.forward``
    beam_width : K >= 1; 1 is :func:`greedy_decode`
    max_length, end_id, exclude, alpha, params : as :func:`greedy_decode`

    Returns
    -------
    Decoded, the best-scoring finished hypothesis of each sequence (the earliest found on a tie)
    """
    if not is_integer(beam_width, 1):
        raise ValueError(f"expected beam_width to be a positive integer but got {beam_width!r}")
    end_id, exclude = _check_options(model, max_length, end_id, exclude, alpha)
    K = int(beam_width)
    state = model.initial_state(source, source_lengths, params=params)  # (L_d, B, H_d) per part
    B = state[0].shape[1]
    state = tuple(np.repeat(s, K, axis=1) for s in state)  # (L_d, B*K, H_d): row b*K + k
    # log P of each live hypothesis, -inf where there is none: at first one per sequence, so
    # that the K copies of the start do not fill the beam with one hypothesis K times
    cumulative = np.full((B, K), -np.inf, dtype=model.dtype)  # B,K
    cumulative[:, 0] = 0.0
    tokens = np.full(B * K, model.start_id, dtype=np.int64)  # B*K
    emitted = np.zeros((B, K, 0), dtype=np.int64)  # B,K,t  each hypothesis's tokens so far
    open_slots = np.full(B, K)  # B  K minus the hypotheses finished
    finished = [[] for _ in range(B)]  # per sequence: (score, log P, tokens), in the order found
    rows = np.arange(B)[:, None]  # B,1
    for step in range(max_length):
        step_log_probs, state = _step(model, tokens, state, exclude, params)  # B*K,V
        V = step_log_probs.shape[1]
        candidates = (cumulative[:, :, None] + step_log_probs.reshape(B, K, V)).reshape(B, K * V)  # B,K*V
        best = np.argsort(-candidates, axis=1, kind="stable")[:, :K]  # B,K  ties: lowest (k, token)
        kept = np.take_along_axis(candidates, best, axis=1)  # B,K
        kept[np.arange(K)[None, :] >= open_slots[:, None]] = -np.inf  # only the best K − f extensions
        parent, token = best // V, best % V  # B,K
        emitted = np.concatenate([emitted[rows, parent], token[:, :, None]], axis=2)  # B,K,t+1
        ends = np.isfinite(kept) & ((token == end_id) | (step == max_length - 1))  # B,K
        score = kept / np.asarray(length_penalty(step + 1, alpha), dtype=model.dtype)
        for b, k in zip(*np.nonzero(ends)):
            finished[b].append((score[b, k], kept[b, k], emitted[b, k].copy()))
        open_slots -= ends.sum(axis=1)
        cumulative = np.where(ends, -np.inf, kept)
        if not np.isfinite(cumulative).any():
            break
        state = tuple(s[:, (rows * K + parent).reshape(-1)] for s in state)  # each row's parent's state
        tokens = token.reshape(-1)
    chosen = [max(found, key=lambda hypothesis: hypothesis[0]) for found in finished]
    return Decoded(
        [tokens for _, _, tokens in chosen],
        np.array([log_p for _, log_p, _ in chosen], dtype=model.dtype),
        np.array([score for score, _, _ in chosen], dtype=model.dtype),
    )
