"""Tests of keras_vae.data.text: text files and TFDS text as token sequences.

Token ids (keras_vae.data.tokens): 0 PAD, 1 UNK, 2 BOS, 3 EOS, tokens from 4.
TFDS runs under `tfds.testing.mock_data`, which ignores split slices (every
split yields the same examples, tfds 4.9.10); the hold-out test therefore
plants examples with an `as_dataset_fn` that does slice.
"""

import collections
import math
import random
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from data_helpers import batches

from keras_vae.config import DataError, UsageError
from keras_vae.data import pipeline, text, tokens

WORDS = "the a cat dog sat on mat ran fast slow big small red blue green old new".split()


def _write(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return str(path)


def _line_in(split, stem):
    """A line (stem + counter) that the hash puts in `split`."""
    return next(f"{stem} {k}" for k in range(1000) if text.split_of(f"{stem} {k}") == split)


def _all_rows(source):
    """Every example of a source, in order: int32 (N, max_length)."""
    return np.stack([ids for ids, _ in source.examples.as_numpy_iterator()])


def _vocab(*token_list):
    return tokens.vocabulary_with_specials(token_list)


def test_special_ids_golden():
    # build_vocabulary: a 3, b 2, c 2, d 1, e 1 -> the cap keeps a, then b before c (tie).
    counted = text.build_vocabulary(["b a c", "a c b", "a d", "e"], "word", vocab_size=3)
    assert counted == ("a", "b", "c")
    vocabulary = tokens.vocabulary_with_specials(counted)
    assert vocabulary[:4] == ("<pad>", "<unk>", "<s>", "</s>")
    assert (tokens.PAD, tokens.UNK, tokens.BOS, tokens.EOS) == (0, 1, 2, 3)
    ids = text.make_encoder(vocabulary, "word", max_length=4)(
        tf.constant(["a b c d", "d a", "", "c"])
    )
    assert ids.dtype == tf.int32
    # a=4, b=5, c=6; "a b c d" is cut to 3 tokens + EOS; d is out of vocabulary.
    np.testing.assert_array_equal(ids, [[4, 5, 6, 3], [1, 4, 3, 0], [3, 0, 0, 0], [6, 3, 0, 0]])


def test_vocabulary_ties_and_order_independent():
    texts = ["b a c", "a c b", "a d", "e"]
    assert text.build_vocabulary(texts, "word", 4) == ("a", "b", "c", "d")  # d < e by string
    assert text.build_vocabulary(texts[::-1], "word", 4) == ("a", "b", "c", "d")
    assert text.build_vocabulary(texts, "word", 100) == ("a", "b", "c", "d", "e")
    # char level counts spaces too: ' ' 4, a 3, b 2, c 2, d 1, e 1.
    assert text.build_vocabulary(texts, "char", 3) == (" ", "a", "b")


def test_word_standardization_golden():
    lines = ["Hello, World!  It's 3pm.", "ÉCOLE\u00a0Straße — «ok» $5\tend"]
    pieces = text.split_tokens(tf.constant(lines), "word").to_list()
    assert [[p.decode() for p in row] for row in pieces] == [
        ["hello", ",", "world", "!", "it", "'", "s", "3pm", "."],
        ["école", "straße", "—", "«", "ok", "»", "$", "5", "end"],
    ]


@pytest.mark.parametrize(
    "level, lines, standardized",
    [
        (
            "char",
            ["Hello, World!", "ÉCOLE straße 👍", "tab\tinside  two"],
            ["Hello, World!", "ÉCOLE straße 👍", "tab\tinside  two"],
        ),
        (
            "word",
            ["Hello, World!  It's 3pm.", "Don't PANIC:  42"],
            ["hello , world ! it ' s 3pm .", "don ' t panic : 42"],
        ),
    ],
)
def test_round_trip(level, lines, standardized):
    vocabulary = _vocab(*text.build_vocabulary(lines, level, 100))
    ids = text.make_encoder(vocabulary, level, max_length=40)(tf.constant(lines)).numpy()
    assert text.detokenize(ids, vocabulary, level) == standardized
    decoded = text.detokenize_tf(tf.constant(ids), vocabulary, level).numpy()
    assert [s.decode("utf-8") for s in decoded] == standardized


def test_truncation_keeps_eos_last():
    vocabulary = _vocab(*"abcdefg")
    encode = text.make_encoder(vocabulary, "char", max_length=5)
    ids = encode(tf.constant(["abcdefg", "abcd", "abc"])).numpy()
    # a..g = 4..10: 4 tokens + EOS; exactly 4 tokens + EOS; 3 tokens + EOS + PAD.
    np.testing.assert_array_equal(ids, [[4, 5, 6, 7, 3], [4, 5, 6, 7, 3], [4, 5, 6, 3, 0]])
    assert text.detokenize(ids, vocabulary, "char") == ["abcd", "abcd", "abc"]


def test_detokenize_golden():
    vocabulary = _vocab("a", "b")
    ids = [[2, 4, 1, 5, 3, 4, 0], [4, 0, 5, 0, 0, 0, 0], [3, 4, 4, 4, 4, 4, 4]]
    # Row 0: BOS skipped, UNK shown, stops at EOS; row 1: no EOS, PAD skipped.
    assert text.detokenize(ids, vocabulary, "char") == ["a<unk>b", "ab", ""]
    assert text.detokenize(ids, vocabulary, "word") == ["a <unk> b", "a b", ""]
    for level in ("char", "word"):
        got = text.detokenize_tf(tf.constant(ids, tf.int64), vocabulary, level).numpy()
        assert [s.decode() for s in got] == text.detokenize(ids, vocabulary, level)


def test_detokenize_tf_in_a_saved_model(tmp_path):
    vocabulary = _vocab("a", "b")

    class Detokenizer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
        def detokenize(self, token_ids):
            return {"text": text.detokenize_tf(token_ids, vocabulary, "word")}

    module = Detokenizer()
    tf.saved_model.save(module, str(tmp_path), signatures={"detokenize": module.detokenize})
    loaded = tf.saved_model.load(str(tmp_path))
    out = loaded.signatures["detokenize"](token_ids=tf.constant([[4, 1, 5, 3, 4], [5, 5, 0, 0, 0]]))
    assert out["text"].numpy().tolist() == [b"a <unk> b", b"b b"]


@pytest.fixture(scope="module")
def line_file(tmp_path_factory):
    """2,000 distinct lines of random words; 50 of them three times in all."""
    rng = random.Random(0)
    distinct = set()
    while len(distinct) < 2000:
        distinct.add(" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8))))
    distinct = sorted(distinct)
    lines = distinct + [distinct[i] for i in range(0, 100, 2) for _ in range(2)]
    rng.shuffle(lines)
    path = _write(tmp_path_factory.mktemp("text") / "lines.txt", lines)
    return path, lines


def test_split_is_disjoint_stable_and_near_90_5_5(line_file):
    path, lines = line_file
    max_length = max(map(len, lines)) + 1  # no line is cut
    by_split = {}
    for split in ("train", "validation", "test"):
        source = text.make_source(path, split, tokens="char", max_length=max_length)
        rows = _all_rows(source)
        assert source.info.num_examples == len(rows)
        decoded = text.detokenize(rows, source.info.vocabulary, "char")
        assert not any("<unk>" in line for line in decoded)
        # File order is kept.
        assert decoded == [line for line in lines if text.split_of(line) == split]
        by_split[split] = collections.Counter(decoded)
    train, validation, test = by_split.values()
    assert not (
        set(train) & set(validation) or set(train) & set(test) or set(validation) & set(test)
    )
    # Every occurrence once, repeats included: the counts add up to the file.
    assert train + validation + test == collections.Counter(lines)
    repeated = [line for line, n in collections.Counter(lines).items() if n == 3]
    assert len(repeated) == 50
    assert all(max(c[line] for c in by_split.values()) == 3 for line in repeated)
    # Fractions of the 2,000 distinct lines: a binomial draw per line if the
    # hash is uniform; 4 standard deviations (train 2.7%, others 1.9%).
    for counts, share in zip(by_split.values(), (0.90, 0.05, 0.05), strict=True):
        tolerance = 4 * math.sqrt(share * (1 - share) / 2000)
        assert abs(len(counts) / 2000 - share) < tolerance


def test_same_examples_on_every_call(line_file):
    path, _ = line_file
    first = text.make_source(path, "test", tokens="word", max_length=12)
    second = text.make_source(path, "test", tokens="word", max_length=12)
    assert first.info == second.info and first.info.num_examples > 0
    np.testing.assert_array_equal(_all_rows(first), _all_rows(second))


def test_split_of_is_pinned():
    # bucket = first 8 bytes of sha256(key), big-endian, mod 100: "x 0" -> 62,
    # "x 13" -> 91, "x 25" -> 98, "x 38" -> 92, "x 39" -> 95; 0-89 train, 90-94 validation,
    # 95-99 test. Changing the rule moves users' sentences between splits (a
    # test sentence could then have been trained on).
    assert [_line_in(split, "x") for split in ("train", "validation", "test")] == [
        "x 0",
        "x 13",
        "x 25",
    ]
    assert text.split_of("x 39") == "test" and text.split_of("x 38") == "validation"


def test_word_variants_of_a_line_share_a_split(tmp_path):
    rng = random.Random(1)
    lines = [" ".join(rng.choice(WORDS) for _ in range(5)) + f" n{k} ." for k in range(300)]
    variants = ["The cat sat.", "the  CAT sat .", "THE cat   Sat ."]
    path = _write(tmp_path / "variants.txt", lines[:100] + variants + lines[100:])
    found = {}
    for split in ("train", "validation", "test"):
        source = text.make_source(path, split, tokens="word", max_length=16)
        decoded = text.detokenize(_all_rows(source), source.info.vocabulary, "word")
        found[split] = decoded.count("the cat sat .")
    expected_split = text.split_of("the cat sat .")
    assert found == {s: (3 if s == expected_split else 0) for s in found}


def test_vocabulary_from_train_only_and_capped(tmp_path):
    lines = [f"common word{i}" for i in range(300)]
    path = _write(tmp_path / "words.txt", lines)
    where = {i: text.split_of(line) for i, line in enumerate(lines)}
    train_words = sorted(f"word{i}" for i in where if where[i] == "train")
    source = text.make_source(path, "train", tokens="word", max_length=6)
    # "common" in every train line first, then count 1 each, by string.
    assert source.info.vocabulary == _vocab("common", *train_words)
    test = text.make_source(path, "test", tokens="word", max_length=6)
    assert test.info.vocabulary == source.info.vocabulary
    rows = _all_rows(test)
    assert len(rows) == sum(w == "test" for w in where.values()) > 0
    # A word of a test line only: UNK.
    np.testing.assert_array_equal(rows, np.tile([4, 1, 3, 0, 0, 0], (len(rows), 1)))

    capped = text.make_source(path, "train", tokens="word", max_length=6, vocab_size=5)
    assert capped.info.vocabulary == _vocab("common", *train_words[:4])
    rows = _all_rows(capped)
    decoded = text.detokenize(rows, capped.info.vocabulary, "word")
    assert sum(line == "common <unk>" for line in decoded) == len(train_words) - 4


def test_through_the_tail(tmp_path):
    rng = random.Random(2)
    lines = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))).capitalize() + "."
        for _ in range(200)
    ]
    path = _write(tmp_path / "lines.txt", lines)
    src = text.make_source(path, "train", tokens="word", max_length=20)
    ds = pipeline.tail(
        src,
        batch_size=8,
        shuffle=True,
        seed=0,
        repeat=False,
        drop_remainder=False,
        binarize=False,
        with_labels=False,
        cache=True,
    )
    assert ds.element_spec == tf.TensorSpec((None, 20), tf.int32)
    got = batches(ds)
    n = src.info.num_examples
    # Known lengths (Keras' progress bar and `len` want them).
    assert src.examples.cardinality() == n and ds.cardinality() == math.ceil(n / 8)
    assert [b.shape for b in got] == [(8, 20)] * (n // 8) + ([(n % 8, 20)] if n % 8 else [])
    rows = np.concatenate(got)
    assert rows.dtype == np.int32
    eos = rows == tokens.EOS
    assert (eos.sum(axis=1) == 1).all()
    after = np.cumsum(eos, axis=1) - eos > 0  # strictly after the EOS
    assert (rows[after] == tokens.PAD).all()
    before = ~after & ~eos
    assert (rows[before] >= 4).all()  # no PAD, UNK (all train tokens), BOS before EOS
    assert (rows.max() < len(src.info.vocabulary)) and len(src.info.vocabulary) == 4 + 18
    # A shuffle of the source's examples: the same rows in another order.
    unshuffled = _all_rows(src)
    assert not np.array_equal(rows, unshuffled)
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(unshuffled, axis=0))


def test_tfds_split_rule():
    assert text.tfds_split("imdb_reviews", "train") == "train[:22500]"
    assert text.tfds_split("imdb_reviews", "validation") == "train[22500:]"
    assert text.tfds_split("imdb_reviews", "test") == "test"


def test_imdb_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=5):
        sources = {
            split: text.make_tfds_source(
                "imdb_reviews", split, max_length=12, vocab_size=50, data_dir=str(tmp_path)
            )
            for split in ("train", "validation", "test")
        }
        elements = {split: batches(s.examples.batch(5)) for split, s in sources.items()}
    for split, source in sources.items():
        info = source.info
        assert (info.name, info.split, info.image_shape) == ("imdb_reviews", split, (12,))
        assert info.num_examples == 5 and info.label_names == ("label",) and not info.binary
        assert source.examples.cardinality() == 5
        ((ids, labels),) = elements[split]
        assert ids.shape == (5, 12) and ids.dtype == np.int32
        assert (np.sum(ids == tokens.EOS, axis=1) == 1).all()
        assert labels["label"].dtype == np.int64 and set(labels["label"]) <= {0, 1}
        # Mock text: random letters a-j and spaces, so words of a-j only.
        assert all(set(word) <= set("abcdefghij") for word in info.vocabulary[4:])
        assert 4 < len(info.vocabulary) <= 54


def _planted_imdb(train_size, test_size):
    """`_as_dataset` replacement that honours `train[a:b]`: review i says who it is."""

    def as_dataset(self, split, **kwargs):
        name, start, stop = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", split).groups()
        size = train_size if name == "train" else test_size
        rows = range(size)[slice(int(start) if start else None, int(stop) if stop else None)]
        held = train_size - train_size // 10
        if name == "train":
            texts = [f"Review {i}<br /><br />{'seen' if i < held else 'held'}" for i in rows]
        else:
            texts = [f"Review {i}" for i in rows]
        return tf.data.Dataset.from_tensor_slices({"text": texts, "label": [i % 2 for i in rows]})

    return as_dataset


def test_imdb_validation_is_held_out_of_train(tmp_path, monkeypatch):
    # 200 train reviews: the last 20 (10%) are validation.
    spec = text.TEXT_TFDS_DATASETS["imdb_reviews"]
    monkeypatch.setitem(
        text.TEXT_TFDS_DATASETS, "imdb_reviews", text.TextTfdsSpec("text", "label", 200, spec.clean)
    )
    found = {}
    with tfds.testing.mock_data(as_dataset_fn=_planted_imdb(200, 30)):
        for split in ("train", "validation", "test"):
            source = text.make_tfds_source(
                "imdb_reviews", split, tokens="char", max_length=24, data_dir=str(tmp_path)
            )
            ids, labels = zip(*source.examples.as_numpy_iterator(), strict=True)
            decoded = text.detokenize(np.stack(ids), source.info.vocabulary, "char")
            numbers = [int(re.match(r"Review (\d+)", line).group(1)) for line in decoded]
            np.testing.assert_array_equal([lab["label"] for lab in labels], np.mod(numbers, 2))
            assert source.info.num_examples == len(decoded)
            found[split] = (numbers, decoded, source.info.vocabulary)
    assert found["train"][0] == list(range(180)) and found["validation"][0] == list(range(180, 200))
    assert found["test"][0] == list(range(30))
    # "<br />" became a space; "held" (only in validation) is not in the vocabulary.
    assert found["train"][1][0] == "Review 0  seen"
    assert found["validation"][1][0] == "Review 180  <unk>e<unk><unk>"
    vocabulary = found["train"][2]
    assert found["validation"][2] == vocabulary
    assert set(vocabulary[4:]) == set("Review 0123456789sn")
    assert not set("<br/>hld") & set(vocabulary[4:])


def test_missing_tfds_dataset(tmp_path):
    with pytest.raises(pipeline.DatasetNotFoundError) as error:
        text.make_tfds_source("imdb_reviews", "train", data_dir=str(tmp_path))
    message = str(error.value)
    assert "\n" not in message and "'imdb_reviews'" in message and str(tmp_path) in message
    assert "tfds build imdb_reviews" in message and "--dataset=text:PATH" in message
    assert "images" not in message


@pytest.mark.parametrize(
    "content, error_type, pattern",
    [
        (None, pipeline.DatasetNotFoundError, r"Text file .*missing.txt does not exist: expected"),
        ("dir", DataError, r"is a directory: expected a UTF-8 text file, one sequence per line"),
        (b"good\nsecond\n\nbad \xff line\n", DataError, r"not UTF-8: line 4 has the byte 0xff"),
        (b"", DataError, r"is empty: expected a UTF-8"),
        (b"\n  \n\t\r\n", DataError, r"has only blank lines: expected"),
    ],
)
def test_file_errors(tmp_path, content, error_type, pattern):
    path = tmp_path / "missing.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(error_type, match=pattern) as error:
        text.make_source(str(path), "train")
    assert "\n" not in str(error.value)


def test_a_leading_byte_order_mark_is_ignored(tmp_path):
    path = tmp_path / "bom.txt"
    line = _line_in("train", "bom")
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\r\n")
    source = text.make_source(str(path), "train", max_length=10)
    assert text.detokenize(_all_rows(source), source.info.vocabulary) == [line]


def test_empty_split_error(tmp_path):
    train_line = _line_in("train", "only")
    path = _write(tmp_path / "tiny.txt", [train_line, train_line])
    assert text.make_source(path, "train").info.num_examples == 2
    with pytest.raises(DataError) as error:
        text.make_source(path, "validation")
    assert str(error.value) == (
        f"Text file {path} has 2 lines (1 distinct; train 2, validation 0, test 0) but none "
        "in the validation split (~5% of the distinct lines, chosen by a hash of each line): "
        "add more lines."
    )
    # No train line: no vocabulary for any split.
    path = _write(tmp_path / "tiny_test.txt", [_line_in("test", "only")])
    with pytest.raises(DataError, match=r"train 0, validation 0, test 1\) but none in the train"):
        text.make_source(path, "test")


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"tokens": "byte"}, r"Expected tokens to be 'char' or 'word'. Received: tokens='byte'"),
        ({"max_length": 1}, r"Expected max_length to be an integer >= 2 \(one token and EOS\)"),
        ({"vocab_size": 0}, r"Expected vocab_size to be an integer >= 1. Received: vocab_size=0"),
        ({"split": "dev"}, r"Expected split to be one of train, validation, test"),
    ],
)
def test_usage_errors(tmp_path, kwargs, pattern):
    path = _write(tmp_path / "lines.txt", ["a line"])
    kwargs = {"split": "train", **kwargs}
    with pytest.raises(UsageError, match=pattern):
        text.make_source(path, **kwargs)
    with pytest.raises(UsageError, match=pattern):
        text.make_tfds_source("imdb_reviews", **kwargs)


def test_unknown_tfds_text_dataset():
    with pytest.raises(UsageError, match=r"one of: imdb_reviews. Received: 'ag_news'"):
        text.make_tfds_source("ag_news", "train")
