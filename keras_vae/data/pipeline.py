"""The pipeline tail every dataset shares, the dataset description and seeds.

Every source (tfds, image folders, Frey faces) hands over a `tf.data.Dataset`
of single `uint8` images, shape (H, W, C), already decoded, cropped and
resized, optionally paired with a dict of int64 labels. `batch_and_finish`
then applies the one pipeline shape of this package:

    cache (uint8) -> seeded shuffle (reshuffled each epoch) -> repeat ->
    batch -> float conversion / dynamic binarization -> prefetch

The procedural `shapes` source renders whole batches itself and joins at
`finish`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import tensorflow as tf

from keras_vae.config import DataError

AUTOTUNE = tf.data.AUTOTUNE

# The shuffle buffer holds decoded uint8 images: a full shuffle for MNIST or
# CIFAR-10 (47 MB / 138 MB), 21,845 images of 64x64x3 for CelebA.
SHUFFLE_BUFFER_BYTES = 256 * 2**20


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
    """

    name: str
    split: str
    image_shape: tuple[int, int, int]
    num_examples: int
    label_names: tuple[str, ...]
    binary: bool


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


def shuffle_buffer_size(num_examples: int, image_shape: tuple[int, int, int]) -> int:
    """Examples in the shuffle buffer: all of them if they fit the byte budget."""
    image_bytes = image_shape[0] * image_shape[1] * image_shape[2]
    return max(1, min(num_examples, SHUFFLE_BUFFER_BYTES // image_bytes))


def cache_filename(prefix: str, name: str, split: str, image_shape, with_labels: bool) -> str:
    """The file `Dataset.cache` writes for `cache=prefix`: one per variant.

    A tf.data cache file silently replays whatever was written first, so the
    dataset, split, image shape and label choice are part of the name.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    height, width, channels = image_shape
    suffix = "-labels" if with_labels else ""
    filename = f"{prefix}{slug}-{split}-{height}x{width}x{channels}{suffix}"
    directory = os.path.dirname(filename)
    if directory:
        tf.io.gfile.makedirs(directory)
    return filename


def to_float(images: tf.Tensor) -> tf.Tensor:
    """uint8 -> float32 in [0, 1], exactly k/255 (an IEEE division, not x * (1/255))."""
    return tf.cast(images, tf.float32) / 255.0


def batch_and_finish(
    ds: tf.data.Dataset,
    *,
    info: DatasetInfo,
    batch_size: int,
    shuffle: bool,
    seed: int,
    repeat: bool,
    drop_remainder: bool,
    binarize: bool,
    with_labels: bool,
    cache: bool | str,
) -> tf.data.Dataset:
    """Caches, shuffles, batches and converts a dataset of single uint8 images.

    Args:
        ds: Elements `image` (uint8, shape `info.image_shape`) when
            `with_labels` is False, else `(image, labels)` with `labels` a dict
            of int64 scalars.
        info: The description of `ds`; gives the image shape and size.
        batch_size: Examples per batch.
        shuffle: Shuffle with a seeded buffer, in a new order every epoch.
        seed: Seed of the shuffle order and of the binarization draws.
        repeat: Repeat forever (training with `steps_per_epoch`).
        drop_remainder: Drop the last, smaller batch of each pass.
        binarize: Replace each pixel x by a fresh Bernoulli(x) draw per epoch.
        with_labels: Whether `ds` carries labels (and the result keeps them).
        cache: True for an in-memory cache, a str for a cache file prefix,
            False for none.

    Returns:
        A dataset of float32 batches (B, H, W, C) in [0, 1], or `(images,
        labels)` with labels of shape (B,).
    """
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
        # Reshuffled each pass from a seed generator that belongs to this
        # dataset object: a new object (not a new iterator) replays the same
        # stream, which is how a resumed run continues it exactly.
        buffer = shuffle_buffer_size(info.num_examples, info.image_shape)
        ds = ds.shuffle(buffer, seed=derive_seed(seed, "shuffle"), reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE, deterministic=True
    )
    return finish(ds, binarize=binarize, seed=seed, with_labels=with_labels, repeat=repeat)


def finish(
    ds: tf.data.Dataset, *, binarize: bool, seed: int, with_labels: bool, repeat: bool = False
) -> tf.data.Dataset:
    """Float conversion (and binarization) of uint8 batches, prefetch, options.

    Args:
        ds: Batches of uint8 images (B, H, W, C), or `(images, labels)`.
        binarize: Draw each pixel from Bernoulli(x / 255), fresh every epoch.
        seed: Seed of the binarization draws.
        with_labels: Whether the elements are `(images, labels)`.

    Returns:
        The dataset of float32 batches, prefetched.
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
        # iterator reads it (see batch_and_finish): keys fixed by the seed.
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

        ds = tf.data.Dataset.zip((ds, keys)).map(
            convert_binarized, num_parallel_calls=AUTOTUNE, deterministic=True
        )
    else:

        def convert(*element):
            # tf.data passes the (images, labels) of a tuple as two arguments.
            images, labels = unpack(element if with_labels else element[0])
            return pack(to_float(images), labels)

        ds = ds.map(convert, num_parallel_calls=AUTOTUNE, deterministic=True)
    return with_options(ds.prefetch(AUTOTUNE))


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
