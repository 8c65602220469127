"""The one tail every dataset goes through, the dataset description and seeds.

A source module (`shapes`, `tfds_sources`, `folder`, `frey`) describes one
split as a `Source`: an unbatched `tf.data.Dataset` of examples and what it
knows about them. `tail` alone shuffles, caches, repeats, batches and converts
them, so every dataset has the one pipeline shape of this package:

    stream sources (single uint8 images, decoded, cropped and resized):
        labels on/off -> cache (uint8) -> seeded shuffle buffer, reshuffled
        each epoch -> repeat -> batch -> float32 or dynamic binarization
        -> prefetch -> options
    indexed sources (`shapes`: an example is its position in the split):
        seeded O(1)-memory permutation of the positions, new each epoch
        -> repeat -> batch -> render the batch -> labels on/off
        -> prefetch -> options

Reproducibility: the stream of batches is a function of the seed alone (and
of the global TensorFlow seed, which TF mixes into every op-level seed of
`shuffle` and `Dataset.random`; training sets it from the same config seed).
A resumed run rebuilds the pipeline and skips the batches already used, so the
order of examples and of random draws must never depend on which iterator
reads the dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Callable

import tensorflow as tf

from keras_vae.config import DataError

AUTOTUNE = tf.data.AUTOTUNE

# The shuffle buffer holds decoded uint8 images: a full shuffle for MNIST or
# CIFAR-10 (47 MB / 138 MB), 21,845 images of 64x64x3 for CelebA.
SHUFFLE_BUFFER_BYTES = 256 * 2**20

# `tf.random.experimental.index_shuffle` takes a seed of shape [2] and pads it
# to the raw op's [3] with this constant. Its batched form ([n, 2] seeds) pads
# the wrong axis and fails ("Seed must be a vector of size [3] or a matrix of
# size [4, 3] but got [5,2]", TF 2.21), while `tf.raw_ops.RandomIndexShuffle`
# works; so batched calls use the raw op with the same padding: results equal
# the public function's, element by element.
_INDEX_SHUFFLE_PAD = 498247692


class DatasetNotFoundError(DataError):
    """A dataset is not on disk (and may not or could not be downloaded)."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What `keras_vae.data.load` returns next to the `tf.data.Dataset`.

    Attributes:
        name: The dataset name as passed to `load` (e.g. `"mnist"`,
            `"folder:/data/faces"`).
        split: `"train"`, `"validation"` or `"test"`.
        image_shape: (H, W, C) of the yielded images.
        num_examples: Examples in this split; for folders, after skipping
            unreadable files.
        label_names: Keys of the labels dict yielded with `with_labels=True`;
            `()` when the dataset has no labels.
        binary: True when the source pixels are binary (the `shapes` data), so
            a Bernoulli likelihood is exact and binarization is a no-op.
        vocabulary: For a sequence dataset, its tokens by id (the first four
            are `keras_vae.data.tokens.SPECIAL_TOKENS`); its examples are then
            int32 token ids of shape `image_shape` = `(max_length,)`, not
            images. `()` for image datasets.
    """

    name: str
    split: str
    image_shape: tuple[int, ...]
    num_examples: int
    label_names: tuple[str, ...]
    binary: bool
    vocabulary: tuple[str, ...] = ()

    @property
    def is_sequence(self):
        """True for token sequences (`vocabulary` given), False for images."""
        return bool(self.vocabulary)


@dataclasses.dataclass(frozen=True)
class Source:
    """One split of a dataset, as a source module hands it to `tail`.

    Attributes:
        examples: The unbatched examples, in the source's fixed order. A
            stream source yields `(image, labels)`: `image` uint8 of shape
            `info.image_shape`, `labels` a dict of int64 scalars named by
            `info.label_names` (`{}` when there are none). An indexed source
            yields int64 scalar positions 0, 1, ..., num_examples - 1.
        info: The description of the examples.
        render: None for a stream source. For an indexed source, the lookup
            of a batch of positions: int64 (B,) -> `(images, labels)`, images
            float32 (B, H, W, C) in [0, 1], labels a dict of int64 (B,). One
            call per batch costs a fraction of one per example, and rendering
            costs less than caching, so indexed sources are neither cached nor
            shuffled through a buffer: the tail permutes their positions.
    """

    examples: tf.data.Dataset
    info: DatasetInfo
    render: Callable[[tf.Tensor], tuple[tf.Tensor, dict[str, tf.Tensor]]] | None = None


def derive_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one use of randomness, derived from the run's seed.

    Each random stream of a pipeline (shuffle order, binarization draws, the
    epoch keys of `shapes`) gets its own seed, so that the streams are not
    correlated even though the user passes one seed. The derivation is a hash,
    so it is the same on every machine and Python version.

    Args:
        seed: The user's seed.
        purpose: A short name of the stream, e.g. `"shuffle"`.

    Returns:
        An int in [0, 2**63).
    """
    digest = hashlib.sha256(f"keras_vae/{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shuffle_buffer_size(num_examples: int, image_shape: tuple[int, ...]) -> int:
    """Examples in the shuffle buffer: all of them if they fit the byte budget
    (counting a byte per pixel, or per token of a sequence)."""
    example_bytes = math.prod(image_shape)
    return max(1, min(num_examples, SHUFFLE_BUFFER_BYTES // example_bytes))


def cache_filename(prefix: str, name: str, split: str, image_shape, with_labels: bool) -> str:
    """The file `Dataset.cache` writes for `cache=prefix`: one per variant.

    A tf.data cache file silently replays whatever was written first, so the
    dataset, split, image shape and label choice are part of the name.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    suffix = "-labels" if with_labels else ""
    filename = f"{prefix}{slug}-{split}-{'x'.join(map(str, image_shape))}{suffix}"
    directory = os.path.dirname(filename)
    if directory:
        tf.io.gfile.makedirs(directory)
    return filename


def to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 in [0, 1], exactly k/255 (an IEEE division, not x * (1/255))."""
    return tf.cast(images, tf.float32) / 255.0


def index_shuffle(index: tf.Tensor, seed: tf.Tensor, max_index: int) -> tf.Tensor:
    """`tf.random.experimental.index_shuffle`, also for a batch of seeds.

    A stateless permutation of [0, max_index]: O(1) memory, whatever the size.

    Args:
        index: int64 tensor (B,), values in [0, max_index].
        seed: int64 tensor (2,) shared by all, or (B, 2) one per element.
        max_index: Largest index of the permutation.

    Returns:
        int64 tensor (B,): the position of each index in the permutation.
    """
    seed = tf.cast(seed, tf.int64)
    pad = tf.fill(
        tf.concat([tf.shape(seed)[:-1], [1]], axis=0), tf.constant(_INDEX_SHUFFLE_PAD, tf.int64)
    )
    return tf.raw_ops.RandomIndexShuffle(
        index=index,
        seed=tf.concat([pad, seed], axis=-1),
        max_index=tf.fill(tf.shape(index), tf.constant(max_index, tf.int64)),
        rounds=4,
    )


def tail(
    source: Source,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool,
    binarize: bool,
    with_labels: bool,
    cache: bool | str,
) -> tf.data.Dataset:
    """The batches of a source: the one place that shuffles, caches and batches.

    Args:
        source: The examples and their description.
        batch_size: Examples per batch.
        shuffle: Shuffle with `seed`, in a new order every epoch.
        seed: Seed of the shuffle order and of the binarization draws.
        repeat: Repeat forever (training with `steps_per_epoch`).
        drop_remainder: Drop the last, smaller batch of each pass (with
            `repeat`, batches run across epoch boundaries instead).
        binarize: Replace each pixel x by a fresh Bernoulli(x) draw per epoch;
            a no-op, skipped, for binary sources.
        with_labels: Keep the labels: yield `(images, labels)`.
        cache: Stream sources: True for an in-memory cache, a str for a cache
            file prefix, False for none. Indexed sources are never cached.

    Returns:
        A dataset of float32 batches (B, H, W, C) in [0, 1] with static H, W,
        C, or `(images, labels)` with labels a dict of int64 (B,). For a
        sequence source (`info.vocabulary`), int32 token ids (B, T) as the
        source yields them (no conversion, no binarization).
    """
    if source.render is None:
        ds = _ordered_stream(source, shuffle, seed, repeat, with_labels, cache)
    else:
        ds = _ordered_positions(source, shuffle, seed, repeat)
    ds = ds.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    if source.render is None and not source.info.is_sequence:
        ds = _convert(ds, binarize and not source.info.binary, seed, with_labels, repeat)
    elif source.render is not None:
        ds = _render(ds, source, shuffle, with_labels)
    return with_options(ds.prefetch(AUTOTUNE))


def _ordered_stream(
    source: Source, shuffle: bool, seed: int, repeat: bool, with_labels: bool, cache: bool | str
) -> tf.data.Dataset:
    """Labels on/off, cache, shuffle buffer and repeat of single examples."""
    info = source.info
    ds = source.examples
    if not with_labels:
        # Before the cache, which then holds the images only.
        ds = ds.map(lambda image, labels: image)
    if cache:
        # After decode + resize, before the shuffle: the cache holds the
        # compact uint8 images, and every epoch after the first reads them.
        if isinstance(cache, str):
            ds = ds.cache(
                cache_filename(cache, info.name, info.split, info.image_shape, with_labels)
            )
        else:
            ds = ds.cache()
    if shuffle:
        # Reshuffled each pass by a seed generator that belongs to this
        # dataset object (TF 2.21): a new iterator of the same object
        # continues its sequence of orders, a rebuilt object restarts it. A
        # resumed run rebuilds the pipeline and skips the batches already
        # used, so it continues the stream exactly. (With `repeat`, a second
        # iterator of one object is not reproducible: it continues from
        # wherever the first iterator's read-ahead left the generator.) The
        # seed is a Python int: `Dataset.shuffle(seed=<tensor>)` inside a
        # dataset function raises when the global seed is 0.
        buffer = shuffle_buffer_size(info.num_examples, info.image_shape)
        ds = ds.shuffle(buffer, seed=derive_seed(seed, "shuffle"), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds


def _ordered_positions(source: Source, shuffle: bool, seed: int, repeat: bool) -> tf.data.Dataset:
    """Positions of an indexed source, each epoch's paired with its permutation key.

    Elements: `position` unshuffled, else `(position, key)` with `key` int64,
    one per epoch; `_render` permutes the positions of a batch with their keys.
    """
    if not shuffle:
        return source.examples.repeat() if repeat else source.examples
    num_examples = source.info.num_examples
    # Each epoch gets a fresh key from a random dataset that draws new keys
    # for every new iterator; the permutation itself is stateless, so a seed
    # reproduces it. With `repeat` the stream of keys is fixed by the seed
    # alone, so a rebuilt pipeline (a resumed run) reads the same infinite
    # stream. (Not `flat_map(lambda key: positions.shuffle(n, seed=key))`: a
    # buffer of the whole split, and `Dataset.shuffle(seed=<tensor>)` in a
    # dataset function raises when the global seed is 0, TF 2.21.)
    # The purpose is "shapes/epoch" for shapes: renaming it changes every run's stream.
    keys = tf.data.Dataset.random(
        seed=derive_seed(seed, f"{source.info.name}/epoch"), rerandomize_each_iteration=not repeat
    )
    if not repeat:
        keys = keys.take(1)

    def epoch(key):
        return tf.data.Dataset.zip(source.examples, tf.data.Dataset.from_tensors(key).repeat())

    ds = keys.flat_map(epoch)
    # flat_map hides the length; Keras' progress bar and `len` want it.
    cardinality = tf.data.INFINITE_CARDINALITY if repeat else num_examples
    return ds.apply(tf.data.experimental.assert_cardinality(cardinality))


def _render(ds: tf.data.Dataset, source: Source, shuffle: bool, with_labels: bool):
    """Batches of positions (and epoch keys) -> rendered images (and labels)."""
    max_index = source.info.num_examples - 1

    def render_batch(positions, keys=None):
        # positions, keys: int64 (B,)
        if shuffle:
            seeds = tf.stack([keys, tf.zeros_like(keys)], axis=-1)  # (B, 2)
            positions = index_shuffle(positions, seeds, max_index=max_index)
        images, labels = source.render(positions)
        return (images, labels) if with_labels else images

    return ds.map(render_batch, num_parallel_calls=AUTOTUNE, deterministic=True)


def _convert(
    ds: tf.data.Dataset, binarize: bool, seed: int, with_labels: bool, repeat: bool
) -> tf.data.Dataset:
    """Float conversion (or dynamic binarization) of batches of uint8 images.

    Args:
        ds: Batches of uint8 images (B, H, W, C), or `(images, labels)`.
        binarize: Draw each pixel from Bernoulli(x / 255), fresh every epoch.
        seed: Seed of the binarization draws.
        with_labels: Whether the elements are `(images, labels)`.
        repeat: Whether `ds` is infinite (then the draws must not depend on
            the iterator).

    Returns:
        The dataset of float32 batches.
    """

    def unpack(element):
        return element if with_labels else (element, None)

    def pack(images, labels):
        return (images, labels) if with_labels else images

    if binarize:
        # A stateful random op inside `map` replays the same draws every
        # epoch. Instead, one int64 key per batch comes from a random dataset
        # that draws new keys for each new iterator (i.e. each epoch), and the
        # draw itself is stateless: same seed -> same sequence of epochs.
        # With `repeat`, the stream is infinite and must not depend on which
        # iterator reads it (a resumed run reads a rebuilt one): keys fixed by
        # the seed.
        keys = tf.data.Dataset.random(
            seed=derive_seed(seed, "binarize"), rerandomize_each_iteration=not repeat
        )

        def convert_binarized(element, key):
            images, labels = unpack(element)
            probs = to_float(images)
            uniform = tf.random.stateless_uniform(
                tf.shape(probs), seed=tf.stack([key, tf.constant(0, tf.int64)])
            )
            # uniform in [0, 1): P(uniform < p) = p; p = 1 -> always 1, p = 0 -> never.
            return pack(tf.cast(uniform < probs, tf.float32), labels)

        return tf.data.Dataset.zip((ds, keys)).map(
            convert_binarized, num_parallel_calls=AUTOTUNE, deterministic=True
        )

    def convert(*element):
        # tf.data passes the (images, labels) of a tuple as two arguments.
        images, labels = unpack(element if with_labels else element[0])
        return pack(to_float(images), labels)

    return ds.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True)


def with_options(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Deterministic element order, so that a seed reproduces a run.

    The shuffle order depends on the order elements reach the shuffle buffer;
    with `deterministic=False` parallel decoding could reorder them and the
    same seed would give a different stream. The cost is a little head-of-line
    blocking in the parallel maps, which prefetching hides.
    """
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)
