"""Sequence-to-sequence tasks for the encoder–decoder (``bptt.nets.Seq2Seq``): batches from a
seeded NumPy generator, exact-match accuracy, and each task's trivial baseline.

Legend: S source steps, T target steps, B batch.

Both tasks share one vocabulary of :data:`SYMBOLS`: the padding, start and end tokens, the ten
digits and ``+``. A batch is time-major and right-padded with :data:`PAD_ID`: the source (S, B)
with its lengths, the target (T, B) with its lengths, every target ending with :data:`END_ID`
(counted in its length), which the model learns to emit to stop. The model prepends
:data:`START_ID` to the decoder's input itself.

==========  ======================  ===================  ==========================================
task        source                  target               baseline (exact match)
==========  ======================  ===================  ==========================================
reverse     ``"0381"``              ``"1830"``           copy the source: right on palindromes,
                                                         mean over lengths n of 10^-floor(n/2)
addition    ``"123+45"``            ``"168"``            the most frequent answer, ``"9"``:
                                                         1 / (10 d²) for operands of 1..d digits
==========  ======================  ===================  ==========================================

``reverse_source=True`` feeds the source reversed (Sutskever, Vinyals & Le 2014), so that the
first target tokens sit close, in time, to the source tokens they depend on. For the reverse
task it turns the problem into copying.
"""

from typing import NamedTuple

import numpy as np

from ..checks import is_integer
from ..nets.seq2seq import pad_sequences

SYMBOLS = ("<pad>", "<s>", "</s>", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+")
"""The vocabulary of both tasks, by id: padding, start, end, the digits, the plus sign."""

PAD_ID, START_ID, END_ID = 0, 1, 2
VOCAB_SIZE = len(SYMBOLS)
_IDS = {symbol: i for i, symbol in enumerate(SYMBOLS)}


def encode(text):
    """The token ids of ``text``, a string of digits and ``+``: (len(text),) int64."""
    unknown = sorted(set(text) - set("0123456789+"))
    if unknown:
        raise ValueError(f"expected a text of digits and '+' but got {text!r} (with {', '.join(map(repr, unknown))})")
    return np.array([_IDS[c] for c in text], dtype=np.int64)


def decode(ids):
    """The text of token ids, up to the first end token; padding and start tokens are skipped."""
    text = []
    for i in np.asarray(ids).tolist():
        if i == END_ID:
            break
        if i not in (PAD_ID, START_ID):
            text.append(SYMBOLS[i])
    return "".join(text)


class Seq2SeqBatch(NamedTuple):
    """One batch of a task, time-major and right-padded with PAD_ID."""

    source: np.ndarray  # S,B int64
    source_lengths: np.ndarray  # B
    target: np.ndarray  # T,B int64, each ending with END_ID
    target_lengths: np.ndarray  # B, END_ID counted
    source_texts: list  # B strings, as written (never reversed)
    target_texts: list  # B strings, the answers


def make_batch(source_texts, target_texts, reverse_source=False):
    """A :class:`Seq2SeqBatch` of texts: the sources encoded (reversed with ``reverse_source``),
    the targets encoded with the end token appended."""
    if len(source_texts) != len(target_texts) or not source_texts:
        raise ValueError(f"expected as many targets as sources, at least one, but got {len(source_texts)} sources "
                         f"and {len(target_texts)} targets")
    sources = [encode(text)[::-1] if reverse_source else encode(text) for text in source_texts]
    targets = [np.append(encode(text), END_ID) for text in target_texts]
    source, source_lengths = pad_sequences(sources, PAD_ID)
    target, target_lengths = pad_sequences(targets, PAD_ID)
    return Seq2SeqBatch(source, source_lengths, target, target_lengths, list(source_texts), list(target_texts))


def _check_sizes(**sizes):
    for name, (value, minimum) in sizes.items():
        if not is_integer(value, minimum):
            raise ValueError(f"expected {name} as an integer >= {minimum} but got {value!r}")


def reverse_task(rng, batch_size, max_length, *, min_length=1, reverse_source=False):
    """Reverse a string of digits: ``"0381"`` in, ``"1830"`` out.

    Each string's length is uniform in ``[min_length, max_length]``, its digits uniform and
    independent (leading zeros included). Baseline: :func:`reverse_baseline`.

    Parameters
    ----------
    rng : np.random.Generator or int seed
    batch_size : B >= 1
    max_length, min_length : 1 <= min_length <= max_length, the digits per string
    reverse_source : feed the source reversed (which makes this task a copy)

    Returns
    -------
    Seq2SeqBatch, S = the longest string, T = S + 1
    """
    _check_sizes(batch_size=(batch_size, 1), min_length=(min_length, 1), max_length=(max_length, min_length))
    rng = np.random.default_rng(rng)
    lengths = rng.integers(min_length, max_length + 1, size=batch_size)  # B
    sources = ["".join(map(str, rng.integers(0, 10, size=n))) for n in lengths]
    return make_batch(sources, [text[::-1] for text in sources], reverse_source)


def addition_operands(rng, count, max_digits):
    """``count`` operands of the addition task: a digit count uniform in ``[1, max_digits]``,
    then a value uniform among the numbers with that many digits (0..9 for one digit)."""
    rng = np.random.default_rng(rng)
    digits = rng.integers(1, max_digits + 1, size=count)  # count
    low = np.where(digits == 1, 0, 10 ** (digits - 1))
    return rng.integers(low, 10 ** digits)


def addition_task(rng, batch_size, max_digits, *, reverse_source=False):
    """Add two integers (Zaremba & Sutskever 2014, "Learning to Execute"): ``"123+45"`` in,
    ``"168"`` out.

    Each operand draws its digit count uniformly from ``[1, max_digits]`` and then its value
    uniformly among the numbers of that many digits (:func:`addition_operands`), so that short
    and long operands are equally common. Baseline: :func:`addition_baseline`.

    Parameters
    ----------
    rng : np.random.Generator or int seed
    batch_size : B >= 1
    max_digits : d >= 1, the most digits of an operand
    reverse_source : feed the source reversed

    Returns
    -------
    Seq2SeqBatch, S <= 2d + 1, T <= d + 2 (a carry digit and the end token)
    """
    _check_sizes(batch_size=(batch_size, 1), max_digits=(max_digits, 1))
    rng = np.random.default_rng(rng)
    a, b = addition_operands(rng, 2 * batch_size, max_digits).reshape(2, batch_size)
    sources = [f"{x}+{y}" for x, y in zip(a.tolist(), b.tolist())]
    return make_batch(sources, [str(x + y) for x, y in zip(a.tolist(), b.tolist())], reverse_source)


def exact_match(predictions, target, target_lengths):
    """Which predictions equal their target exactly, the end token included.

    Parameters
    ----------
    predictions : B token sequences (e.g. ``Decoded.sequences``)
    target : (T, B) ids; target_lengths : (B,)

    Returns
    -------
    (B,) bool
    """
    target, target_lengths = np.asarray(target), np.asarray(target_lengths)
    if len(predictions) != target.shape[1]:
        raise ValueError(f"expected {target.shape[1]} predictions, one per target, but got {len(predictions)}")
    return np.array([
        np.array_equal(np.asarray(p), target[:n, b]) for b, (p, n) in enumerate(zip(predictions, target_lengths))
    ])


def accuracy(predictions, batch):
    """Exact-match accuracy of ``predictions`` on a :class:`Seq2SeqBatch`: a float in [0, 1]."""
    return float(exact_match(predictions, batch.target, batch.target_lengths).mean())


def reverse_baseline_predictions(batch):
    """The reverse task's baseline: copy the source as written, then the end token."""
    return [np.append(encode(text), END_ID) for text in batch.source_texts]


def reverse_baseline(max_length, min_length=1):
    """Expected exact-match accuracy of copying the source on the reverse task: a copy is right
    on a palindrome, which a uniform string of n digits is with probability 10^-floor(n/2);
    averaged over the lengths, uniform in ``[min_length, max_length]``."""
    _check_sizes(min_length=(min_length, 1), max_length=(max_length, min_length))
    return float(np.mean([10.0 ** -(n // 2) for n in range(min_length, max_length + 1)]))


ADDITION_MODE = "9"
"""The most frequent answer of the addition task at every ``max_digits``: the sum 9 comes from
ten pairs of one-digit operands, each of probability 1/(10 d)², and from no other pair."""


def addition_baseline_predictions(batch):
    """The addition task's baseline: always answer :data:`ADDITION_MODE`."""
    return [np.append(encode(ADDITION_MODE), END_ID) for _ in batch.source_texts]


def addition_baseline(max_digits):
    """Expected exact-match accuracy of always answering ``"9"``: ``1 / (10 d²)``, the
    probability of the most frequent sum (:data:`ADDITION_MODE`)."""
    _check_sizes(max_digits=(max_digits, 1))
    return 1.0 / (10 * max_digits ** 2)
