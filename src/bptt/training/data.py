"""Text for character language models: the corpus, its vocabulary, and the parallel streams
that stateful truncated BPTT walks through.

Legend: N tokens, B streams (batch), T window length (k1), V vocabulary size.

    corpus = load_corpus()                       # or load_corpus("my.txt"), load_corpus("dir/")
    vocab = Vocabulary.from_text(corpus.text)
    ids = vocab.encode(corpus.text)              # (N,) int64
    train, valid = split_train_valid(ids, 0.05)
    streams = make_streams(train, batch_size=32, k1=64)          # (N/B, B)
    for inputs, targets in iter_windows(streams, k1=64): ...     # (T, B) each
    streams = trim_streams(streams, k1=64, last_window="drop")   # an epoch of full windows only

The default corpus is the Python standard library's own source, which every Python install
has: no download, real text, a few MB.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_CORPUS_BYTES = 4 * 1024 * 1024
"""The cap on the built-in corpus, in UTF-8 bytes."""

STDLIB_SKIPPED_PACKAGES = frozenset({"test", "idlelib", "turtledemo", "lib2to3", "ensurepip", "tkinter",
                                     "distutils", "__phello__"})
"""Standard-library packages left out of the built-in corpus: tests and tools that some
distributors ship separately, so that the corpus depends on the Python version only."""


@dataclass(frozen=True)
class Corpus:
    """A text and where it came from.

    text : str, the files concatenated
    sources : tuple of str, the files read, in order (paths relative to ``root`` for a directory)
    skipped : tuple of str, files of a directory that were left out: empty or not UTF-8 text
    root : str, the file or directory read
    """

    text: str
    sources: tuple
    skipped: tuple
    root: str


def _decode(data, path):
    """UTF-8 text of the bytes of ``path``; a ValueError naming the file and byte offset if they are not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text: byte 0x{data[error.start]:02x} at byte offset {error.start} "
                         f"({error.reason})") from None
    if "\0" in text:
        offset = data.index(b"\0")
        raise ValueError(f"{path} looks binary, not text: a NUL byte at byte offset {offset}")
    return text


def _truncate(text, max_bytes):
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8")
    if max_bytes is None or len(data) <= max_bytes:
        return text
    return data[:max_bytes].decode("utf-8", errors="ignore")


def stdlib_files():
    """The standard library's source files of the built-in corpus, sorted by relative path.

    The ``*.py`` files in the directory of ``os.__file__`` and in its packages one level down,
    leaving out ``STDLIB_SKIPPED_PACKAGES``, directories that are not package names
    (``site-packages``, ``config-...``), symbolic links (distributors link site-wide settings
    in) and the build-specific ``_sysconfigdata*`` module.

    Returns
    -------
    root : Path, the standard library's directory
    files : list of str, POSIX paths relative to ``root``
    """
    root = Path(os.__file__).resolve().parent
    files = []
    for path in root.glob("*.py"):
        if not path.is_symlink() and not path.name.startswith("_sysconfigdata"):
            files.append(path.name)
    for package in root.iterdir():
        if package.is_dir() and package.name.isidentifier() and package.name not in STDLIB_SKIPPED_PACKAGES:
            files.extend(f"{package.name}/{path.name}" for path in package.glob("*.py") if not path.is_symlink())
    return root, sorted(files)


def stdlib_corpus(max_bytes=DEFAULT_CORPUS_BYTES):
    """The built-in corpus: the files of :func:`stdlib_files`, each after a header line
    ``# ==== <relative path> ====``, cut to ``max_bytes`` UTF-8 bytes.

    Deterministic for a given Python installation, and the same for every install of one Python
    version except for files that a distributor patched. Files that are not UTF-8 text are
    skipped and listed in ``Corpus.skipped``.
    """
    root, files = stdlib_files()
    pieces, sources, skipped, size = [], [], [], 0
    for relative in files:
        try:
            text = _decode((root / relative).read_bytes(), root / relative)
        except ValueError:
            skipped.append(relative)
            continue
        piece = f"# ==== {relative} ====\n{text}\n"
        pieces.append(piece)
        sources.append(relative)
        size += len(piece.encode("utf-8"))
        if size >= max_bytes:
            break
    return Corpus(_truncate("".join(pieces), max_bytes), tuple(sources), tuple(skipped), str(root))


def read_corpus(path, max_bytes=None):
    """A user's corpus: one UTF-8 text file, or a directory of them.

    A directory is read recursively; its regular files, hidden ones (a name starting with ``.``)
    left out, are taken in the order of their relative paths and joined with a blank line.
    Files that are empty or not UTF-8 text (binary files) are left out and listed in
    ``Corpus.skipped``.

    Parameters
    ----------
    path : str or Path
    max_bytes : int or None, a cap on the text's UTF-8 size; None reads everything

    Raises
    ------
    FileNotFoundError : ``path`` does not exist
    ValueError : a file that is not UTF-8 text (naming the file and byte offset); an empty
        corpus; a directory without text files
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"corpus not found: {path} does not exist")
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(path).parts)),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        texts, sources, skipped = [], [], []
        for file in files:
            relative = file.relative_to(path).as_posix()
            try:
                text = _decode(file.read_bytes(), file)
            except ValueError:
                text = ""
            if text:
                texts.append(text)
                sources.append(relative)
            else:
                skipped.append(relative)
        if not texts:
            raise ValueError(f"corpus directory {path} has no non-empty UTF-8 text files "
                             f"({len(skipped)} files that are empty or not text)")
        text = "\n\n".join(texts)
    else:
        text = _decode(path.read_bytes(), path)
        sources, skipped = [path.name], []
    if not text:
        raise ValueError(f"corpus {path} is empty: expected some text but got 0 bytes")
    return Corpus(_truncate(text, max_bytes), tuple(sources), tuple(skipped), str(path))


def load_corpus(path=None, max_bytes=None):
    """The built-in corpus (``path`` None, capped at ``DEFAULT_CORPUS_BYTES`` unless
    ``max_bytes`` says otherwise) or a user's file or directory (:func:`read_corpus`)."""
    if path is None:
        return stdlib_corpus(DEFAULT_CORPUS_BYTES if max_bytes is None else max_bytes)
    return read_corpus(path, max_bytes)


def _code_points(text):
    """(N,) uint32: the code points of ``text`` (lone surrogates kept, to be reported)."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype="<u4")


@dataclass(frozen=True)
class Vocabulary:
    """A character vocabulary: id ``i`` is the character ``chars[i]``.

    ``chars`` holds each character once, sorted by code point, so the vocabulary of a text does
    not depend on the order of the text, and a checkpoint stores it as one string.

    Unknown characters (say in a prime for sampling): :meth:`encode` raises a ValueError that
    lists them, or with ``unknown="drop"`` leaves them out.
    """

    chars: str

    def __post_init__(self):
        codes = _code_points(self.chars)
        if codes.size == 0:
            raise ValueError("expected a vocabulary of at least one character but got an empty string")
        if np.any(np.diff(codes.astype(np.int64)) <= 0):
            raise ValueError("expected the vocabulary's characters unique and sorted by code point "
                             "(as Vocabulary.from_text makes them)")

    @classmethod
    def from_text(cls, text):
        """The vocabulary of every character in ``text`` (a non-empty str)."""
        if not text:
            raise ValueError("expected a non-empty text to build a vocabulary from but got ''")
        codes = np.unique(_code_points(text))  # V
        return cls(codes.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass"))

    @property
    def size(self):
        """V, the number of characters."""
        return len(self.chars)

    def encode(self, text, unknown="raise"):
        """Character ids of ``text``.

        Parameters
        ----------
        text : str
        unknown : "raise" (a ValueError listing the characters not in the vocabulary) or
            "drop" (leave those characters out)

        Returns
        -------
        ids : (N,) int64 in [0, V)
        """
        if unknown not in ("raise", "drop"):
            raise ValueError(f"expected unknown='raise' or unknown='drop' but got {unknown!r}")
        vocab_codes = _code_points(self.chars)  # V
        codes = _code_points(text)  # N
        ids = np.minimum(np.searchsorted(vocab_codes, codes), self.size - 1)  # N
        known = vocab_codes[ids] == codes  # N
        if not known.all():
            if unknown == "drop":
                return ids[known].astype(np.int64)
            missing = np.unique(codes[~known]).astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass")
            shown = ", ".join(repr(char) for char in missing[:20]) + (", ..." if len(missing) > 20 else "")
            raise ValueError(f"{len(missing)} characters are not in the vocabulary of {self.size}: {shown}; "
                             f"leave them out of the text, or pass unknown='drop'")
        return ids.astype(np.int64)

    def decode(self, ids):
        """The text of character ids: ``ids`` any integer array (flattened) in [0, V)."""
        ids = np.asarray(ids).ravel()
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"expected integer character ids but got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.size):
            raise ValueError(f"expected character ids in [0, {self.size}) but got values from {ids.min()} "
                             f"to {ids.max()}")
        codes = _code_points(self.chars)[ids.astype(np.int64)]  # N
        return codes.tobytes().decode("utf-32-le", errors="surrogatepass")


def split_train_valid(ids, valid_fraction):
    """The token array cut in two: the training part, and the last ``valid_fraction`` of it.

    Parameters
    ----------
    ids : (N,) array
    valid_fraction : float in [0, 1)

    Returns
    -------
    train : (N - floor(N * valid_fraction),) view of ids
    valid : (floor(N * valid_fraction),) view of ids
    """
    if not 0 <= valid_fraction < 1:
        raise ValueError(f"expected valid_fraction in [0, 1) but got {valid_fraction!r}")
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"expected token ids of shape (N,) but got {ids.shape}")
    split = ids.shape[0] - int(ids.shape[0] * valid_fraction)
    return ids[:split], ids[split:]


def make_streams(ids, batch_size, k1, name="corpus"):
    """``B`` contiguous parallel streams of tokens, one per column, as torch's word-language-model
    ``batchify``: stream ``b`` is the ``b``-th of ``B`` equal consecutive chunks of ``ids``; the
    last ``N mod B`` tokens are dropped. Checks that at least one window of ``k1`` steps fits.

    Parameters
    ----------
    ids : (N,) integer array
    batch_size : B >= 1
    k1 : window length >= 1 (steps of truncated BPTT between hidden-state hand-overs)
    name : what ``ids`` are, for the error message ("corpus", "validation split", ...)

    Returns
    -------
    streams : (N // B, B) C-contiguous copy; ``streams[:, b]`` is ``ids[b*(N//B) : (b+1)*(N//B)]``
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise ValueError(f"expected token ids as a 1-d integer array of shape (N,) but got shape {ids.shape} "
                         f"of dtype {ids.dtype}")
    if int(batch_size) != batch_size or batch_size < 1 or int(k1) != k1 or k1 < 1:
        raise ValueError(f"expected batch_size >= 1 and k1 >= 1 as integers but got {batch_size!r} and {k1!r}")
    needed = batch_size * (k1 + 1)
    if ids.shape[0] < needed:
        raise ValueError(f"the {name} has {ids.shape[0]} tokens, fewer than one window needs: B={batch_size} "
                         f"streams of k1 + 1 = {k1 + 1} tokens = {needed} tokens; use a smaller batch size or k1, "
                         f"or more text")
    steps = ids.shape[0] // batch_size
    return np.ascontiguousarray(ids[: steps * batch_size].reshape(batch_size, steps).T)  # N/B, B


def window_count(streams, k1):
    """The number of full windows of ``k1`` steps in ``streams`` ((N, B)): ``(N - 1) // k1``.

    A window needs one token beyond its last input, for the last target; the tail that makes
    no full window is left out, so every window has the same shape.
    """
    return (streams.shape[0] - 1) // k1


def window_at(streams, k1, index):
    """Window number ``index`` of the streams.

    Parameters
    ----------
    streams : (N, B), from :func:`make_streams`
    k1 : window length T
    index : int in [0, window_count(streams, k1))

    Returns
    -------
    inputs : (T, B) view, ``streams[index*T : index*T + T]``
    targets : (T, B) view, the inputs shifted one step ahead, ``streams[index*T + 1 : index*T + T + 1]``

    The next window's inputs start right after this window's, so a hidden state carried from
    the end of one window to the start of the next continues each stream.
    """
    count = window_count(streams, k1)
    if not 0 <= index < count:
        raise IndexError(f"expected a window index in [0, {count}) but got {index}")
    start = index * k1
    return streams[start : start + k1], streams[start + 1 : start + k1 + 1]


def iter_windows(streams, k1):
    """Every full window of the streams in order: ``(inputs, targets)``, each (T, B), as :func:`window_at`."""
    for index in range(window_count(streams, k1)):
        yield window_at(streams, k1, index)


LAST_WINDOWS = ("partial", "drop", "min-char-rnn")
"""What an epoch of truncated BPTT does with the end of its streams (:func:`trim_streams`)."""


def trim_streams(streams, k1, last_window):
    """The streams cut to the steps one epoch of truncated BPTT with windows of ``k1`` steps
    walks, its inputs ``trimmed[:-1]`` and targets ``trimmed[1:]``.

    ``last_window`` says what becomes of the end of the streams:

    - ``"partial"``: nothing is cut; the last window is shorter when k1 does not divide the
      N - 1 input steps.
    - ``"drop"``: only full windows, ``(N - 1) // k1`` of them; the shorter tail is left out.
    - ``"min-char-rnn"``: full windows that each leave at least one token after their last
      target, ``max(1, (N - 2) // k1)`` of them: min-char-rnn.py goes back to the start when
      ``p + seq_length + 1 >= len(data)``, so it leaves out a last window that would end on the
      text's last character too (the first window it always takes).

    Parameters
    ----------
    streams : (N, B), from :func:`make_streams` (at least k1 + 1 steps)
    k1 : window length T >= 1
    last_window : one of ``LAST_WINDOWS``

    Returns
    -------
    trimmed : (steps + 1, B) view of the first rows of ``streams``, ``steps`` a multiple of
        k1 (or N - 1 for ``"partial"``)
    """
    if last_window not in LAST_WINDOWS:
        raise ValueError(f"expected last_window one of {', '.join(LAST_WINDOWS)} but got {last_window!r}")
    steps = streams.shape[0] - 1  # input steps: every token but the last has a target
    if steps < k1:
        raise ValueError(f"expected streams of at least k1 + 1 = {k1 + 1} steps but got {streams.shape[0]}")
    if last_window == "drop":
        steps = steps // k1 * k1
    elif last_window == "min-char-rnn":
        steps = max(1, (steps - 1) // k1) * k1
    return streams[: steps + 1]
