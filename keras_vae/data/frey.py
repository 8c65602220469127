"""`frey_faces`: Brendan Frey's face video frames, as in Kingma & Welling (2014).

1,965 grayscale frames of 28 x 20 pixels, distributed as `frey_rawface.mat`
(https://cs.nyu.edu/~roweis/data/frey_rawface.mat, 1 MB) holding `ff`, a
(560, 1965) uint8 array: one column per frame, each column the frame's rows
(28 of 20 pixels) one after the other. The file is looked for as
`DATA_DIR/frey_rawface.mat` and `DATA_DIR/frey_faces/frey_rawface.mat`, with
DATA_DIR the `data_dir` argument, else `$TFDS_DATA_DIR`, else
`~/tensorflow_datasets`.

The frames come from one video, so neighbours are near duplicates; a random
split would leak them from train into test. The split is by contiguous
blocks: the first 85% of the frames are `train`, the next 5% `validation`
(n // 20 frames) and the last 10% `test` (n // 10; 1671 / 98 / 196 frames).

The whole file is read into memory (1 MB); it is the one dataset small enough.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from keras_vae.config import DataError
from keras_vae.data import image_ops, pipeline

FILENAME = "frey_rawface.mat"
URL = "https://cs.nyu.edu/~roweis/data/frey_rawface.mat"
HEIGHT, WIDTH = 28, 20


def default_data_dir() -> str:
    """Where TFDS keeps data by default: `$TFDS_DATA_DIR` or ~/tensorflow_datasets."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def candidate_paths(data_dir: str | None) -> list[str]:
    """The places `frey_rawface.mat` is looked for, in order."""
    root = os.path.expanduser(data_dir) if data_dir else default_data_dir()
    return [os.path.join(root, FILENAME), os.path.join(root, "frey_faces", FILENAME)]


def load_frames(data_dir: str | None) -> np.ndarray:
    """All frames from the .mat file.

    Args:
        data_dir: Where to look (see the module docstring).

    Returns:
        uint8 array (n, 28, 20, 1).

    Raises:
        DatasetNotFoundError: No file in any of the candidate places.
        DataError: The file is not a readable .mat with an `ff` of 560 rows.
    """
    candidates = candidate_paths(data_dir)
    path = next((candidate for candidate in candidates if os.path.isfile(candidate)), None)
    if path is None:
        raise pipeline.DatasetNotFoundError(
            f"frey_faces: {FILENAME} not found; looked for {' and '.join(candidates)}. "
            f"Download it from {URL} and put it at {candidates[0]} "
            "(or pass --data_dir=DIR with the file in DIR)."
        )
    try:
        import scipy.io
    except ImportError as error:
        raise DataError(f"Reading {path} needs scipy: pip install scipy ({error}).") from None
    try:
        frames = scipy.io.loadmat(path)["ff"]
    except Exception as error:  # Truncated file, not a .mat, no `ff`: one message.
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        raise DataError(
            f"Cannot read {path} as the Frey faces .mat file ({reason}). "
            f"Download it again from {URL}."
        ) from None
    if frames.ndim != 2 or frames.shape[0] != HEIGHT * WIDTH:
        raise DataError(
            f"Expected `ff` in {path} to have shape (560, n) (28 x 20 pixels per column). "
            f"Received: shape={frames.shape}"
        )
    # Column j is frame j, its 560 values row after row.
    return np.ascontiguousarray(frames.T.reshape(-1, HEIGHT, WIDTH, 1).astype(np.uint8))


def split_range(split: str, count: int) -> tuple[int, int]:
    """[start, stop) of a split's frames among `count` frames."""
    num_test = count // 10
    num_validation = count // 20
    num_train = count - num_validation - num_test
    return {
        "train": (0, num_train),
        "validation": (num_train, num_train + num_validation),
        "test": (num_train + num_validation, count),
    }[split]


def make_source(
    split: str, *, image_size: int | None = None, data_dir: str | None = None
) -> pipeline.Source:
    """Frey faces as a stream of uint8 frames; see `keras_vae.data.load`.

    `image_size=None` keeps the native 28 x 20; an int takes the central
    20 x 20 square and resizes it (antialiased) to image_size x image_size.

    Returns:
        The `Source`: `(image, {})` in frame order (there are no labels).

    Raises:
        DatasetNotFoundError: No `frey_rawface.mat` in the places looked at.
        DataError: The file is unreadable, or the split is empty.
    """
    frames = load_frames(data_dir)
    start, stop = split_range(split, len(frames))
    if stop <= start:
        raise DataError(
            f"frey_faces: the {split} split of {len(frames)} frames is empty; "
            f"expected the full file of 1965 frames from {URL}."
        )
    shape = (image_size, image_size, 1) if image_size else (HEIGHT, WIDTH, 1)
    info = pipeline.DatasetInfo(
        name="frey_faces",
        split=split,
        image_shape=shape,
        num_examples=stop - start,
        label_names=(),
        binary=False,
    )

    def prepare(image):
        if image_size:
            image = image_ops.resize_to_uint8(
                image_ops.center_square_crop(image), image_size, image_size
            )
        return tf.ensure_shape(image, shape), {}

    ds = tf.data.Dataset.from_tensor_slices(frames[start:stop])
    ds = ds.map(prepare, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
    return pipeline.Source(examples=ds, info=info)
