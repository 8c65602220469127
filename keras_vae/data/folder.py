"""`folder:PATH`: a directory tree of image files as a dataset.

Every `.jpg`, `.jpeg`, `.png` and `.bmp` file under PATH (recursively, any
case of the extension) is one example; labels are not read. Images are
decoded by TensorFlow as RGB (grayscale replicated, alpha dropped, 16-bit PNG
reduced to 8 bits), center-cropped to a square of the short side and resized
(antialiased) to `image_size` (64 by default). For a manually downloaded
CelebA (`img_align_celeba/`, 218 x 178) that is the central 178 x 178 square,
a wider view than the 148 x 148 crop of the `celeb_a` TFDS recipe.

Split: the SHA-256 of the file's path relative to PATH (with `/`
separators, Unicode NFC) puts it in one of 100 buckets: 0-89 `train`, 90-94
`validation`, 95-99 `test`. The split of a file depends on its name only: it
is the same on every machine, for any listing order, and adding files never
moves the existing ones.

Unreadable files: before building the pipeline, every file of the requested
split is decoded once with the same decoder the pipeline uses (about 0.3 ms
for a CelebA JPEG), so that `num_examples` is exact and a corrupt file cannot
stop training halfway through an epoch. Files that fail are skipped and named
in one warning; with `strict=True` the first one raises `DataError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import unicodedata

import numpy as np
import tensorflow as tf
from absl import logging

from keras_vae.config import DataError, UsageError
from keras_vae.data import image_ops, pipeline

PREFIX = "folder:"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_IMAGE_SIZE = 64
# Buckets (of 100) per split, in order.
SPLIT_BUCKETS = {"train": range(0, 90), "validation": range(90, 95), "test": range(95, 100)}
# Unreadable files named in the warning before "and N more".
MAX_NAMED_FILES = 10


def split_of(relative_path: str) -> str:
    """The split a file belongs to, from its path relative to the folder.

    Args:
        relative_path: e.g. `"img_align_celeba/000001.jpg"`; `os.sep` and `/`
            are equivalent.

    Returns:
        `"train"`, `"validation"` or `"test"`.
    """
    key = unicodedata.normalize("NFC", relative_path.replace(os.sep, "/"))
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 100
    for split, buckets in SPLIT_BUCKETS.items():
        if bucket in buckets:
            return split
    raise AssertionError(bucket)  # unreachable: the buckets cover 0..99


def list_images(root: str) -> list[str]:
    """Sorted relative paths (with `/`) of the image files under `root`."""
    found = []
    visited = set()  # real paths: a symlinked directory is followed once (no cycles)
    for directory, subdirectories, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(directory)
        if real in visited:
            subdirectories.clear()
            continue
        visited.add(real)
        subdirectories.sort()
        for filename in filenames:
            if filename.lower().endswith(IMAGE_EXTENSIONS):
                relative = os.path.relpath(os.path.join(directory, filename), root)
                found.append(relative.replace(os.sep, "/"))
    return sorted(found)


def decode(path: tf.Tensor) -> tf.Tensor:
    """Reads and decodes one image file to uint8 RGB, (H, W, 3).

    `decode_image` sniffs the format from the bytes (a PNG named .jpg is
    fine); `channels=3` replicates gray, drops alpha and expands palettes,
    and `dtype=uint8` maps 16-bit PNGs to 8 bits (v >> 8).
    """
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, dtype=tf.uint8, expand_animations=False
    )
    return tf.ensure_shape(image, (None, None, 3))


def _decode_error(path: str) -> str:
    """Why `decode` fails on `path`, as one short line."""
    try:
        decode(tf.constant(path))
    except (tf.errors.OpError, ValueError) as error:
        message = getattr(error, "message", str(error))
        message = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", message)  # TF's op-location noise
        return " ".join(message.split()) or type(error).__name__
    return "it could not be read earlier"  # e.g. a file that was being written


def scan(root: str, relative_paths: list[str], strict: bool) -> np.ndarray:
    """Which files decode, checked in parallel with the pipeline's decoder.

    Args:
        root: The folder.
        relative_paths: Files to check, relative to `root`.
        strict: Raise at the first file that does not decode.

    Returns:
        bool array, one per file: True if it decodes.

    Raises:
        DataError: `strict` and a file does not decode.
    """
    count = len(relative_paths)
    paths = [os.path.join(root, relative) for relative in relative_paths]
    ds = tf.data.Dataset.from_tensor_slices((tf.range(count, dtype=tf.int64), paths))
    # The output depends on the decoded image, so the decode cannot be pruned.
    ds = ds.map(
        lambda index, path: (index, tf.shape(decode(path))[0]),
        num_parallel_calls=pipeline.AUTOTUNE,
        deterministic=True,
    )
    # Files that fail drop out; in order, the survivors' indices show which.
    ds = ds.ignore_errors().batch(1024)

    def fail(index):
        raise DataError(
            f"Cannot read image file {paths[index]} ({_decode_error(paths[index])}). "
            "Remove the file, or drop --strict_data to skip unreadable files with a warning."
        )

    readable = np.zeros(count, bool)
    expected = 0  # the next index if every file so far decoded
    for indices, _ in ds.as_numpy_iterator():
        if strict and indices[-1] != expected + len(indices) - 1:
            gaps = np.flatnonzero(indices != np.arange(expected, expected + len(indices)))
            fail(expected + int(gaps[0]))
        readable[indices] = True
        expected = int(indices[-1]) + 1
    if strict and expected < count:
        fail(expected)
    return readable


def make_source(
    name: str,
    split: str,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    strict: bool = False,
    order_seed: int | None = None,
) -> pipeline.Source:
    """A folder of images as a stream of uint8 images; see `keras_vae.data.load`.

    Args:
        name: `"folder:PATH"`.
        split: `"train"`, `"validation"` or `"test"`.
        image_size: Output side; None for 64.
        channels: 1 (gray) or 3 (RGB); None for 3.
        strict: Raise at the first unreadable file instead of skipping it.
        order_seed: None reads the files in name order; a seed (the run's
            seed, when the caller shuffles) reads them in a seeded permutation.

    Returns:
        The `Source`: `(image, {})` (folders have no labels).

    Raises:
        UsageError: `channels` is not 1 or 3.
        DataError: The folder does not exist, holds no image file, none in
            this split, or none that decodes; or (`strict`) an unreadable file.
    """
    path = name[len(PREFIX) :]
    channels = 3 if channels is None else channels
    if channels not in (1, 3):
        raise UsageError(
            f"Expected channels to be 1 or 3 for {name}. Received: channels={channels}"
        )
    root = os.path.abspath(os.path.expanduser(path))
    expected = f"a folder of {'/'.join(ext[1:] for ext in IMAGE_EXTENSIONS)} images"
    if not path or not os.path.isdir(root):
        what = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise DataError(f"Image folder {root} {what}: expected {expected} (searched recursively).")
    files = list_images(root)
    if not files:
        raise DataError(
            f"Image folder {root} holds no image file: expected {expected} (searched recursively)."
        )
    split_files = [relative for relative in files if split_of(relative) == split]
    if not split_files:
        share = len(SPLIT_BUCKETS[split])
        raise DataError(
            f"Image folder {root} has {len(files)} image files but none in the {split} split "
            f"(~{share}% of the files, chosen by a hash of the name): add more images."
        )

    start = time.monotonic()
    readable = scan(root, split_files, strict)
    logging.info(
        "Checked %d image files of the %s split of %s in %.1f s.",
        len(split_files),
        split,
        root,
        time.monotonic() - start,
    )
    unreadable = [relative for relative, ok in zip(split_files, readable, strict=True) if not ok]
    if unreadable:
        named = ", ".join(unreadable[:MAX_NAMED_FILES])
        more = len(unreadable) - MAX_NAMED_FILES
        named += f" and {more} more" if more > 0 else ""
        logging.warning(
            "Skipped %d unreadable image file(s) of %d in the %s split of %s: %s. "
            "Remove or replace them (--strict_data stops at the first one).",
            len(unreadable),
            len(split_files),
            split,
            root,
            named,
        )
    good = [os.path.join(root, r) for r, ok in zip(split_files, readable, strict=True) if ok]
    if not good:
        raise DataError(
            f"Image folder {root} has no readable image in the {split} split: all "
            f"{len(split_files)} files failed to decode; expected {expected}."
        )

    size = image_size or DEFAULT_IMAGE_SIZE
    info = pipeline.DatasetInfo(
        name=name,
        split=split,
        image_shape=(size, size, channels),
        num_examples=len(good),
        label_names=(),
        binary=False,
    )

    def prepare(path):
        image = image_ops.center_square_crop(decode(path))  # uint8 (s, s, 3)
        if channels == 1:
            image = image_ops.rgb_to_gray(image)  # float32 (s, s, 1)
        return tf.ensure_shape(image_ops.resize_to_uint8(image, size, size), info.image_shape), {}

    if order_seed is not None:
        # The files are listed by name (CelebA: by number); the shuffle buffer
        # of the tail only mixes ~256 MB of images, so start from a seeded
        # permutation. With the cache, every epoch then reshuffles the buffer
        # on top of it.
        order = np.random.default_rng(pipeline.derive_seed(order_seed, "folder/files"))
        good = [good[i] for i in order.permutation(len(good))]
    ds = tf.data.Dataset.from_tensor_slices(good)
    ds = ds.map(prepare, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
    return pipeline.Source(examples=ds, info=info)
