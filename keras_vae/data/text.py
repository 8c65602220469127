"""Text sequences for a sequence VAE: `text:PATH` files and TFDS text datasets.

An example is int32 token ids of shape `(max_length,)`: the tokens of one
sequence, then `EOS`, then `PAD` (ids fixed by `keras_vae.data.tokens`: 0 PAD,
1 UNK, 2 BOS, 3 EOS, vocabulary tokens from 4). A sequence of more than
`max_length - 1` tokens is cut to its first `max_length - 1` and still ends
with `EOS`; `BOS` never appears in the data (Bowman et al. 2016, "Generating
Sentences from a Continuous Space").

Tokens:
    `"char"`: the Unicode code points of the text, unchanged (no lower-casing;
        spaces and tabs inside a line are tokens too).
    `"word"`: the text lower-cased (Unicode), every punctuation or symbol
        character (Unicode classes P and S: `,` `'` `$` `<` `—` ...) made a
        token of its own, then split at whitespace (ASCII and Unicode Z):
        `"Hello, World!  It's"` -> `hello , world ! it ' s`. Words are joined
        back with one space, so `detokenize` returns the standardized text.

Vocabulary: counted on the train split only (validation and test text never
shapes it), most frequent first, ties broken by the token's string (code point
order), at most `vocab_size` tokens after the four special ones; rarer tokens
map to UNK. `DatasetInfo.vocabulary` carries the full tuple, specials first.

`text:PATH` is a UTF-8 file (a leading byte order mark is ignored), one
sequence per line; trailing whitespace is stripped and blank lines skipped.
Split: every line goes to the bucket (of 100) given by the SHA-256 of its
standardized text (the line itself for `"char"`, its words joined by one space
for `"word"`): 0-89 `train`, 90-94 `validation`, 95-99 `test`, the buckets of
`folder:PATH`. A line repeated in the file, or (word level) written with other
case or spacing, is one example in all its copies and lands in one split, so
no test sentence is trained on; the split is the same on every machine and
adding lines never moves the others. Examples keep the file order (the tail
shuffles).

TFDS text datasets (`TEXT_TFDS_DATASETS`) follow `tfds_sources`: `test` from
TFDS, `validation` held out of the end of TFDS `train` by the same rule.
"""

from __future__ import annotations

import codecs
import collections
import dataclasses
import hashlib
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_vae.config import DataError, UsageError
from keras_vae.data import pipeline, tfds_sources
from keras_vae.data.folder import SPLIT_BUCKETS
from keras_vae.data.tokens import BOS, EOS, PAD, SPECIAL_TOKENS, vocabulary_with_specials

PREFIX = "text:"
TOKENS = ("char", "word")
_BATCH = 512  # texts per map call when counting, hashing and encoding
# tfds_sources names an image folder as the fallback for a missing dataset.
_TEXT_FALLBACK = "train on a UTF-8 text file, one sequence per line, with --dataset=text:PATH"


@dataclasses.dataclass(frozen=True)
class TextTfdsSpec:
    """How one TFDS text dataset becomes token sequences.

    Attributes:
        text_key: The string feature holding the text.
        label_key: The int feature yielded as the label.
        train_examples: Size of the TFDS `train` split when the dataset has no
            validation split (it is carved out of `train`); None when the
            dataset has its own.
        clean: A regular expression (RE2) replaced by a space before
            tokenization, for markup in the text; None for none.
    """

    text_key: str
    label_key: str
    train_examples: int | None
    clean: str | None = None


TEXT_TFDS_DATASETS = {
    # The reviews carry HTML line breaks ("<br /><br />").
    "imdb_reviews": TextTfdsSpec("text", "label", 25_000, r"<br\s*/?>"),
}


def _check_arguments(split: str, tokens: str, max_length: int, vocab_size: int) -> None:
    if split not in SPLIT_BUCKETS:
        raise UsageError(
            f"Expected split to be one of {', '.join(SPLIT_BUCKETS)}. Received: split={split!r}"
        )
    try:
        _separator(tokens)
    except ValueError as error:
        raise UsageError(str(error)) from None
    for name, value, least in (("max_length", max_length, 2), ("vocab_size", vocab_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            why = " (one token and EOS)" if name == "max_length" else ""
            raise UsageError(
                f"Expected {name} to be an integer >= {least}{why}. Received: {name}={value!r}"
            )


def _separator(tokens: str) -> str:
    """What joins the tokens of a text again: "" for characters, " " for words."""
    if tokens not in TOKENS:
        raise ValueError(f"Expected tokens to be 'char' or 'word'. Received: tokens={tokens!r}")
    return "" if tokens == "char" else " "


def split_tokens(texts: tf.Tensor, tokens: str) -> tf.RaggedTensor:
    """The standardized tokens of texts (see the module docstring).

    Args:
        texts: tf.string `(N,)`, UTF-8 (invalid bytes become U+FFFD).
        tokens: `"char"` or `"word"`.

    Returns:
        tf.string RaggedTensor `(N, None)`.
    """
    texts = tf.convert_to_tensor(texts, tf.string)
    if not _separator(tokens):  # characters
        return tf.strings.unicode_split(texts, "UTF-8", errors="replace")
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, r"([\pP\pS])", r" \1 ")
    # `split` alone splits at ASCII whitespace only.
    return tf.strings.split(tf.strings.regex_replace(texts, r"\pZ", " "))


def split_of(key: str) -> str:
    """The split of a line, from its standardized text.

    Args:
        key: The line (`"char"`) or its words joined by one space (`"word"`).

    Returns:
        `"train"`, `"validation"` or `"test"`.
    """
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    for split, buckets in SPLIT_BUCKETS.items():
        if bucket in buckets:
            return split
    raise AssertionError(bucket)  # unreachable: the buckets cover 0..99


def build_vocabulary(texts, tokens: str, vocab_size: int) -> tuple[str, ...]:
    """The vocabulary of some texts: most frequent first, ties by string.

    Args:
        texts: A list of str, or a `tf.data.Dataset` of tf.string scalars.
        tokens: `"char"` or `"word"`.
        vocab_size: Most tokens kept.

    Returns:
        At most `vocab_size` tokens, without the special ones.
    """
    if not isinstance(texts, tf.data.Dataset):
        texts = tf.data.Dataset.from_tensor_slices(tf.constant(list(texts), tf.string))

    def unique(batch):
        values, _, counts = tf.unique_with_counts(split_tokens(batch, tokens).flat_values)
        return values, counts

    batches = texts.batch(_BATCH).map(unique, num_parallel_calls=pipeline.AUTOTUNE)
    counts = collections.Counter()
    for values, value_counts in batches.as_numpy_iterator():
        counts.update(dict(zip(values.tolist(), value_counts.tolist(), strict=True)))
    # UTF-8 byte order is code point order; decoding cannot fail (U+FFFD above).
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(token.decode("utf-8") for token, _ in ranked[:vocab_size])


def make_encoder(vocabulary, tokens: str, max_length: int):
    """The function from texts to examples, for a full vocabulary.

    Args:
        vocabulary: The full vocabulary tuple, `SPECIAL_TOKENS` first.
        tokens: `"char"` or `"word"`.
        max_length: Length of an example, EOS and padding included.

    Returns:
        A function: tf.string `(N,)` -> int32 `(N, max_length)`, each row the
        token ids, EOS, then PAD (cut to `max_length - 1` tokens before EOS).
    """
    vocabulary = tuple(vocabulary)
    if vocabulary[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
        raise ValueError(
            f"Expected a vocabulary starting with {SPECIAL_TOKENS}. "
            f"Received: {vocabulary[: len(SPECIAL_TOKENS)]}"
        )
    # The mask token takes index 0 and the one OOV index 1; the vocabulary
    # follows from 2: exactly PAD, UNK, BOS, EOS, tokens (checked below, Keras 3.15).
    lookup = keras.layers.StringLookup(
        vocabulary=list(vocabulary[2:]),
        mask_token=vocabulary[PAD],
        oov_token=vocabulary[1],
        num_oov_indices=1,
    )
    if tuple(lookup.get_vocabulary()) != vocabulary:
        raise AssertionError(f"StringLookup reordered the vocabulary: {lookup.get_vocabulary()}")

    def encode(texts):
        ids = tf.cast(lookup(split_tokens(texts, tokens)), tf.int32)[:, : max_length - 1]
        eos = tf.fill(tf.stack([ids.nrows(), 1]), tf.constant(EOS, tf.int32))
        ids = tf.concat([ids, tf.RaggedTensor.from_tensor(eos)], axis=1)
        return ids.to_tensor(default_value=PAD, shape=[None, max_length])

    return encode


def detokenize(token_ids, vocabulary, tokens: str = "char") -> list[str]:
    """Token ids back to text (NumPy): up to the first EOS, without PAD and BOS.

    Args:
        token_ids: int `(B, T)`.
        vocabulary: The full vocabulary tuple, `SPECIAL_TOKENS` first.
        tokens: `"char"` (tokens joined with "") or `"word"` (with " ").

    Returns:
        B strings; UNK shows as `"<unk>"`.
    """
    token_ids = np.asarray(token_ids)
    if token_ids.ndim != 2:
        raise ValueError(f"Expected token_ids of shape (B, T). Received: {token_ids.shape}")
    separator = _separator(tokens)
    texts = []
    for row in token_ids.tolist():
        end = row.index(EOS) if EOS in row else len(row)
        texts.append(separator.join(vocabulary[i] for i in row[:end] if i not in (PAD, BOS)))
    return texts


def detokenize_tf(token_ids, vocabulary, tokens: str = "char") -> tf.Tensor:
    """`detokenize` with TensorFlow ops only, for a SavedModel signature.

    Args:
        token_ids: int32 or int64 `(B, T)`.
        vocabulary: The full vocabulary tuple (becomes a graph constant).
        tokens: `"char"` or `"word"`.

    Returns:
        tf.string `(B,)`.
    """
    separator = _separator(tokens)
    token_ids = tf.convert_to_tensor(token_ids)
    pieces = tf.gather(tf.constant(list(vocabulary), tf.string), token_ids)  # (B, T)
    # Positions strictly before the first EOS: no EOS at or before them.
    before_eos = tf.equal(tf.cumsum(tf.cast(tf.equal(token_ids, EOS), tf.int32), axis=1), 0)
    keep = before_eos & tf.not_equal(token_ids, PAD) & tf.not_equal(token_ids, BOS)
    return tf.strings.reduce_join(tf.ragged.boolean_mask(pieces, keep), axis=1, separator=separator)


def read_lines(path: str) -> list[str]:
    """The sequences of a text file: its non-blank lines, trailing whitespace stripped.

    Raises:
        DatasetNotFoundError: The file does not exist.
        DataError: It is a directory, not UTF-8, or holds no non-blank line.
    """
    expected = "expected a UTF-8 text file, one sequence per line"
    local = os.path.expanduser(path)
    if not tf.io.gfile.exists(local):
        raise pipeline.DatasetNotFoundError(f"Text file {local} does not exist: {expected}.")
    if tf.io.gfile.isdir(local):
        raise DataError(f"Text file {local} is a directory: {expected}; name a file in it.")
    with tf.io.gfile.GFile(local, "rb") as file:
        data = file.read()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise DataError(
            f"Text file {local} is not UTF-8: line {line} has the byte "
            f"0x{data[error.start]:02x} ({error.reason}). Convert it, e.g. "
            f"`iconv -f latin1 -t utf-8 {local} > {local}.utf8`, and use the converted file."
        ) from None
    lines = [line for line in (raw.rstrip() for raw in text.split("\n")) if line]
    if not lines:
        what = "is empty" if not data else "has only blank lines"
        raise DataError(f"Text file {local} {what}: {expected}.")
    return lines


def _split_keys(lines: list[str], tokens: str) -> list[str]:
    """The text each line is hashed by: itself, or its words joined by a space."""
    if tokens == "char":
        return lines
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(lines, tf.string)).batch(_BATCH)
    ds = ds.map(
        lambda batch: tf.strings.reduce_join(split_tokens(batch, tokens), axis=1, separator=" "),
        num_parallel_calls=pipeline.AUTOTUNE,
        deterministic=True,  # keys in line order
    )
    return [key.decode("utf-8") for batch in ds.as_numpy_iterator() for key in batch.tolist()]


def _encoded(texts: tf.data.Dataset, encode, num_examples: int) -> tf.data.Dataset:
    """Single examples `(ids, labels)` from single `(text, labels)`, encoded in batches."""
    ds = texts.batch(_BATCH).map(
        lambda text, labels: (encode(text), labels),
        num_parallel_calls=pipeline.AUTOTUNE,
        deterministic=True,
    )
    # `unbatch` hides the length; Keras' progress bar and `len` want it.
    return ds.unbatch().apply(tf.data.experimental.assert_cardinality(num_examples))


def make_source(
    path: str,
    split: str,
    *,
    tokens: str = "char",
    max_length: int = 64,
    vocab_size: int = 10_000,
) -> pipeline.Source:
    """A UTF-8 text file, one sequence per line, as a stream of token ids.

    Args:
        path: The file (`--dataset=text:PATH` without the prefix).
        split: `"train"`, `"validation"` or `"test"` (the hash rule of the
            module docstring).
        tokens: `"char"` or `"word"`.
        max_length: Length of an example, EOS and padding included; >= 2.
        vocab_size: Most tokens in the vocabulary besides the four specials.

    Returns:
        The `Source`: `(token_ids, {})`, token_ids int32 `(max_length,)`, in
        file order; `info.vocabulary` is the full vocabulary of the train split.

    Raises:
        UsageError: A bad `split`, `tokens`, `max_length` or `vocab_size`.
        DatasetNotFoundError: The file does not exist.
        DataError: A directory, not UTF-8, no non-blank line, or no line in
            the train split or in `split`.
    """
    _check_arguments(split, tokens, max_length, vocab_size)
    lines = read_lines(path)
    split_by_key = {}  # distinct keys, hashed once
    lines_of = {name: [] for name in SPLIT_BUCKETS}
    for line, key in zip(lines, _split_keys(lines, tokens), strict=True):
        if key not in split_by_key:
            split_by_key[key] = split_of(key)
        lines_of[split_by_key[key]].append(line)
    for needed in dict.fromkeys(("train", split)):  # the vocabulary needs train lines
        if not lines_of[needed]:
            per_split = ", ".join(f"{name} {len(lines_of[name])}" for name in SPLIT_BUCKETS)
            raise DataError(
                f"Text file {path} has {len(lines)} lines ({len(split_by_key)} distinct; "
                f"{per_split}) but none in the {needed} split (~{len(SPLIT_BUCKETS[needed])}% "
                "of the distinct lines, chosen by a hash of each line): add more lines."
            )
    vocabulary = vocabulary_with_specials(build_vocabulary(lines_of["train"], tokens, vocab_size))
    selected = lines_of[split]
    logging.info("Text file %s: %d of its %d lines are %s.", path, len(selected), len(lines), split)
    info = pipeline.DatasetInfo(
        name=f"{PREFIX}{path}",
        split=split,
        image_shape=(max_length,),
        num_examples=len(selected),
        label_names=(),
        binary=False,
        vocabulary=vocabulary,
    )
    texts = tf.data.Dataset.from_tensor_slices(tf.constant(selected, tf.string))
    texts = texts.map(lambda text: (text, {}))
    encode = make_encoder(vocabulary, tokens, max_length)
    return pipeline.Source(examples=_encoded(texts, encode, len(selected)), info=info)


def tfds_split(name: str, split: str) -> str:
    """The TFDS split string of one of our splits, e.g. `"train[:22500]"`
    (`tfds_sources.split_string`: validation is held out of train)."""
    return tfds_sources.split_string(TEXT_TFDS_DATASETS[name].train_examples, split)


def _tfds_examples(name: str, split: str, data_dir: str | None, download: bool):
    """The TFDS examples of one of our splits, and their number
    (`tfds_sources.open_split`, its missing-data message ending with text's way out)."""
    ds, num_examples, _ = tfds_sources.open_split(
        name, tfds_split(name, split), data_dir, download, _TEXT_FALLBACK
    )
    return ds, num_examples


def make_tfds_source(
    name: str,
    split: str,
    *,
    tokens: str = "word",
    max_length: int = 64,
    vocab_size: int = 10_000,
    data_dir: str | None = None,
    download: bool = False,
) -> pipeline.Source:
    """A TFDS text dataset (`TEXT_TFDS_DATASETS`) as a stream of token ids.

    Args:
        name: e.g. `"imdb_reviews"`.
        split: `"train"`, `"validation"` or `"test"` (see `tfds_split`).
        tokens: `"char"` or `"word"`.
        max_length: Length of an example, EOS and padding included; >= 2.
        vocab_size: Most tokens in the vocabulary besides the four specials.
        data_dir: TFDS data directory; None for the TFDS default.
        download: Let TFDS download a dataset that is not in `data_dir`.

    Returns:
        The `Source`: `(token_ids, labels)`, token_ids int32 `(max_length,)`
        and labels `{label_key: int64 scalar}`, in the order of the TFDS
        files; `info.vocabulary` is the full vocabulary of our train split.

    Raises:
        UsageError: An unknown name or a bad argument.
        DatasetNotFoundError: The dataset is not prepared in `data_dir` and
            `download` is False, or the download failed.
    """
    if name not in TEXT_TFDS_DATASETS:
        known = ", ".join(TEXT_TFDS_DATASETS)
        raise UsageError(f"Expected a TFDS text dataset, one of: {known}. Received: {name!r}")
    _check_arguments(split, tokens, max_length, vocab_size)
    spec = TEXT_TFDS_DATASETS[name]

    def clean(texts):
        if spec.clean:
            texts = tf.strings.regex_replace(texts, spec.clean, " ")
        return tf.strings.regex_replace(texts, r"[\s\pZ]+$", "")  # trailing whitespace

    train, _ = _tfds_examples(name, "train", data_dir, download)
    train_texts = train.map(
        lambda example: clean(example[spec.text_key]), num_parallel_calls=pipeline.AUTOTUNE
    )
    vocabulary = vocabulary_with_specials(build_vocabulary(train_texts, tokens, vocab_size))
    ds, num_examples = _tfds_examples(name, split, data_dir, download)
    info = pipeline.DatasetInfo(
        name=name,
        split=split,
        image_shape=(max_length,),
        num_examples=num_examples,
        label_names=(spec.label_key,),
        binary=False,
        vocabulary=vocabulary,
    )
    texts = ds.map(
        lambda example: (
            clean(example[spec.text_key]),
            {spec.label_key: tf.cast(example[spec.label_key], tf.int64)},
        ),
        num_parallel_calls=pipeline.AUTOTUNE,
        deterministic=True,
    )
    encode = make_encoder(vocabulary, tokens, max_length)
    return pipeline.Source(examples=_encoded(texts, encode, num_examples), info=info)
