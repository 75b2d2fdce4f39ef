"""Corpora, the character vocabulary, the train/validation split and the parallel streams."""

import numpy as np
import pytest

from bptt.training import data

TEXT = "Grüße, 世界! naïve café — 🐍 snakes\nsecond line\n"


def test_vocabulary_round_trip_with_multibyte_characters():
    vocab = data.Vocabulary.from_text(TEXT)
    assert vocab.size == len(set(TEXT))
    assert list(vocab.chars) == sorted(set(TEXT))
    ids = vocab.encode(TEXT)
    assert ids.dtype == np.int64 and ids.shape == (len(TEXT),)
    assert ids.min() >= 0 and ids.max() < vocab.size
    assert [vocab.chars[i] for i in ids] == list(TEXT)
    assert vocab.decode(ids) == TEXT
    assert vocab.decode(ids.reshape(1, -1)) == TEXT
    assert vocab.decode(np.array([], dtype=np.int64)) == ""
    assert data.Vocabulary(vocab.chars) == vocab


def test_unknown_characters_raise_or_drop():
    vocab = data.Vocabulary.from_text("abc ")
    with pytest.raises(ValueError, match=r"2 characters are not in the vocabulary of 4: 'x', '🐍'.*'drop'"):
        vocab.encode("a 🐍 x b 🐍")
    assert vocab.decode(vocab.encode("a 🐍 x b", unknown="drop")) == "a   b"
    with pytest.raises(ValueError, match="unknown='raise' or unknown='drop'"):
        vocab.encode("a", unknown="ignore")
    with pytest.raises(ValueError, match=r"ids in \[0, 4\)"):
        vocab.decode([0, 4])
    with pytest.raises(ValueError, match="sorted"):
        data.Vocabulary("ba")
    with pytest.raises(ValueError, match="non-empty"):
        data.Vocabulary.from_text("")


def test_read_file_and_directory(tmp_path):
    (tmp_path / "one.txt").write_text(TEXT, encoding="utf-8")
    corpus = data.load_corpus(tmp_path / "one.txt")
    assert corpus.text == TEXT and corpus.sources == ("one.txt",)

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee", encoding="utf-8")
    (folder / "a.txt").write_text("ay", encoding="utf-8")
    (folder / "sub" / "c.md").write_text("see", encoding="utf-8")
    (folder / "image.bin").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (folder / "empty.txt").write_bytes(b"")
    (folder / ".hidden").write_text("secret", encoding="utf-8")
    corpus = data.load_corpus(folder)
    assert corpus.sources == ("a.txt", "b.txt", "sub/c.md")
    assert corpus.skipped == ("empty.txt", "image.bin")
    assert corpus.text == "ay\n\nbee\n\nsee"
    assert data.read_corpus(tmp_path / "one.txt", max_bytes=7).text == "Grüße"  # ü and ß are 2 bytes each
    assert data.read_corpus(tmp_path / "one.txt", max_bytes=3).text == "Gr"  # not half an ü


def test_bad_corpora_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.txt does not exist"):
        data.load_corpus(tmp_path / "nowhere.txt")
    (tmp_path / "latin1.txt").write_bytes("abc café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: byte 0xe9 at byte offset 7"):
        data.load_corpus(tmp_path / "latin1.txt")
    (tmp_path / "zeros.bin").write_bytes(b"ab\x00\x00")
    with pytest.raises(ValueError, match=r"zeros.bin looks binary.*byte offset 2"):
        data.load_corpus(tmp_path / "zeros.bin")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        data.load_corpus(tmp_path / "empty.txt")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no non-empty UTF-8 text files"):
        data.load_corpus(tmp_path / "nothing")


def test_default_corpus_is_deterministic_and_large():
    first, second = data.load_corpus(), data.load_corpus()
    assert first == second
    size = len(first.text.encode("utf-8"))
    assert 1_000_000 < size <= data.DEFAULT_CORPUS_BYTES
    assert list(first.sources) == sorted(first.sources) and len(first.sources) > 10
    assert not any(source.startswith(("test/", "site-packages/")) for source in first.sources)
    assert first.text.startswith(f"# ==== {first.sources[0]} ====\n")
    assert data.load_corpus(max_bytes=50_000).text == first.text.encode("utf-8")[:50_000].decode("utf-8", "ignore")


def test_split_sizes():
    ids = np.arange(1000)
    train, valid = data.split_train_valid(ids, 0.1)
    assert train.shape == (900,) and valid.shape == (100,)
    np.testing.assert_array_equal(np.concatenate([train, valid]), ids)
    train, valid = data.split_train_valid(ids[:7], 0.25)
    assert train.shape == (6,) and valid.shape == (1,)
    assert data.split_train_valid(ids, 0.0)[1].shape == (0,)
    with pytest.raises(ValueError, match=r"valid_fraction in \[0, 1\)"):
        data.split_train_valid(ids, 1.0)


def test_streams_are_contiguous_and_windows_shift_by_one():
    N, B, k1 = 103, 4, 6
    ids = np.arange(N, dtype=np.int64) * 10
    streams = data.make_streams(ids, B, k1)
    assert streams.shape == (N // B, B) and streams.flags["C_CONTIGUOUS"]
    for b in range(B):  # stream b is the b-th contiguous chunk of the corpus
        np.testing.assert_array_equal(streams[:, b], ids[b * (N // B) : (b + 1) * (N // B)])

    windows = list(data.iter_windows(streams, k1))
    assert len(windows) == data.window_count(streams, k1) == (N // B - 1) // k1 == 4
    for index, (inputs, targets) in enumerate(windows):
        assert inputs.shape == targets.shape == (k1, B)
        np.testing.assert_array_equal(inputs[1:], targets[:-1])
        np.testing.assert_array_equal(targets, inputs + 10)  # the next token of each stream
        np.testing.assert_array_equal(inputs, streams[index * k1 : (index + 1) * k1])
        np.testing.assert_array_equal(data.window_at(streams, k1, index)[0], inputs)
    # consecutive windows continue each stream: a carried hidden state stays on its stream
    for (_, targets), (next_inputs, _) in zip(windows, windows[1:]):
        np.testing.assert_array_equal(next_inputs[0], targets[-1])
    with pytest.raises(IndexError, match=r"\[0, 4\)"):
        data.window_at(streams, k1, 4)


def test_corpus_shorter_than_one_window():
    data.make_streams(np.arange(4 * 7), 4, 6)  # exactly one window fits
    with pytest.raises(ValueError, match=r"validation split has 27 tokens, fewer than one window .* 28 tokens"):
        data.make_streams(np.arange(27), 4, 6, name="validation split")
    with pytest.raises(ValueError, match="1-d integer"):
        data.make_streams(np.zeros(100), 4, 6)
