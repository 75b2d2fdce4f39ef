"""Sampling text from a character language model, one character at a time.

Legend: V vocabulary size, L layers, H hidden units.
"""

import numpy as np

from ..checks import is_integer


def next_char_distribution(logits, temperature=1.0, top_k=None):
    """Probabilities of the next character from the head's logits.

    Parameters
    ----------
    logits : (V,)
    temperature : >= 0; below 1 sharpens the distribution, above 1 flattens it; 0 is greedy
        decoding: all the probability on the most likely character (the first of equal ones,
        as ``np.argmax``), the limit of a falling temperature
    top_k : None, or keep only the k most likely characters (k >= 1)

    Returns
    -------
    (V,) float64 probabilities summing to 1
    """
    if not temperature >= 0:
        raise ValueError(f"expected a temperature >= 0 (0: always the most likely character) but got {temperature!r}")
    if top_k is not None and not is_integer(top_k, 1):
        raise ValueError(f"expected top_k to be a positive integer but got {top_k!r}")
    logits = np.asarray(logits, dtype=np.float64)  # V
    if temperature == 0:
        greedy = np.zeros(logits.size)  # V
        greedy[np.argmax(logits)] = 1.0
        return greedy
    scaled = logits / temperature  # V
    if top_k is not None:
        if top_k < scaled.size:
            threshold = np.partition(scaled, -top_k)[-top_k]
            scaled = np.where(scaled >= threshold, scaled, -np.inf)
    probabilities = np.exp(scaled - scaled.max())
    return probabilities / probabilities.sum()


def default_prime(vocab):
    """The prime text when none is given: a newline, or the vocabulary's first character when
    the text it was built from had no newline."""
    return "\n" if "\n" in vocab.chars else vocab.chars[0]


def sample_chars(network, vocab, prime, length, *, temperature=1.0, top_k=None, rng=None, params=None):
    """``length`` characters generated after ``prime``, yielded one at a time.

    Every argument is checked at the call, before the first character (a caller may have
    written something by then only if the arguments are good).

    Parameters
    ----------
    network : a many-to-many :class:`bptt.nets.Network` with token-id input and V = vocab.size
    vocab : :class:`bptt.training.data.Vocabulary`
    prime : non-empty str of characters in the vocabulary (a ValueError lists any that are not)
    length : characters to generate, >= 0
    temperature, top_k : as :func:`next_char_distribution`; ``temperature=0`` generates the
        most likely character at every step, the same text whatever ``rng``
    rng : np.random.Generator (None: a fresh unseeded one)
    params : None for ``network.params``, or a dict of the same names and shapes

    Returns
    -------
    an iterator of ``length`` one-character strings
    """
    if not isinstance(prime, str) or not prime:
        raise ValueError(f"expected a non-empty prime text to start sampling from but got {prime!r}")
    if not is_integer(length, 0):
        raise ValueError(f"expected length to be a non-negative integer but got {length!r}")
    next_char_distribution(np.zeros(vocab.size), temperature, top_k)  # checks temperature and top_k
    unknown = sorted(set(prime) - set(vocab.chars))
    if unknown:
        shown = ", ".join(repr(char) for char in unknown[:20]) + (", ..." if len(unknown) > 20 else "")
        raise ValueError(f"the prime text has {len(unknown)} character(s) that are not in the model's vocabulary "
                         f"of {vocab.size}: {shown}")
    ids = vocab.encode(prime)  # N
    params = network.check_params(params)
    rng = np.random.default_rng() if rng is None else rng
    return _generate(network, vocab, ids, length, temperature, top_k, rng, params)


def _generate(network, vocab, ids, length, temperature, top_k, rng, params):
    """The generator behind :func:`sample_chars`, on checked arguments."""
    logits, state = network.predict(ids[:, None], params=params)  # N,1,V
    for _ in range(length):
        probabilities = next_char_distribution(logits[-1, 0], temperature, top_k)
        index = min(int(np.searchsorted(np.cumsum(probabilities), rng.random(), side="right")), vocab.size - 1)
        yield vocab.chars[index]
        logits, state = network.predict(np.array([[index]]), state, params=params)  # 1,1,V
