"""Tests of keras_vae.data.pipeline: the shared tail (shuffle, binarization, cache).

The tail is exercised through `data.load` on small Frey faces files, whose
frames carry their own index as pixel values.
"""

import os

import numpy as np
import tensorflow as tf
from data_helpers import images_of, write_frey

from keras_vae import data
from keras_vae.data import pipeline


def test_index_shuffle_batched_seeds_match_the_public_function():
    index = tf.range(100, dtype=tf.int64)
    public = tf.random.experimental.index_shuffle(
        index, seed=tf.constant([7, 3], tf.int64), max_index=tf.constant(99, tf.int64)
    )
    batched = pipeline.index_shuffle(index, tf.constant([[7, 3]] * 100, tf.int64), 99)
    np.testing.assert_array_equal(batched.numpy(), public.numpy())
    assert sorted(batched.numpy()) == list(range(100))


def test_shuffle_of_cached_pipelines_is_seeded_and_new_each_epoch(tmp_path):
    frames = np.arange(200)[:, None, None] * np.ones((1, 28, 20), np.int64)  # frame i == i
    write_frey(tmp_path, frames)

    def epoch(ds):
        return np.round(images_of(ds)[:, 0, 0, 0] * 255).astype(int)

    ds, _ = data.load("frey_faces", "train", batch_size=32, seed=5, data_dir=str(tmp_path))
    first, second = epoch(ds), epoch(ds)
    np.testing.assert_array_equal(np.sort(first), np.arange(170))
    np.testing.assert_array_equal(np.sort(second), np.arange(170))
    assert np.mean(first != second) > 0.9
    again, _ = data.load("frey_faces", "train", batch_size=32, seed=5, data_dir=str(tmp_path))
    np.testing.assert_array_equal(epoch(again), first)
    np.testing.assert_array_equal(epoch(again), second)
    other, _ = data.load("frey_faces", "train", batch_size=32, seed=6, data_dir=str(tmp_path))
    assert np.mean(epoch(other) != first) > 0.9


def test_dynamic_binarization(tmp_path):
    gray = 191  # p = 191 / 255 = 0.749
    write_frey(tmp_path, np.full((200, 28, 20), gray, np.uint8))
    ds, _ = data.load(
        "frey_faces",
        "train",
        batch_size=64,
        binarize=True,
        shuffle=False,
        seed=1,
        data_dir=str(tmp_path),
    )
    first, second = images_of(ds), images_of(ds)
    assert first.shape == (170, 28, 20, 1) and first.dtype == np.float32
    assert set(np.unique(first)) == {0.0, 1.0}
    # 170 * 560 = 95,200 Bernoulli(0.749) draws: std of the mean 0.0014; 0.01 is 7 std.
    assert abs(first.mean() - gray / 255) < 0.01
    assert abs(second.mean() - gray / 255) < 0.01
    # A fresh draw every epoch (the same image gives ~37.6% differing pixels)...
    assert 0.3 < np.mean(first != second) < 0.45
    # ...and the same seed replays the same draws; another seed does not.
    again, _ = data.load(
        "frey_faces",
        "train",
        batch_size=64,
        binarize=True,
        shuffle=False,
        seed=1,
        data_dir=str(tmp_path),
    )
    np.testing.assert_array_equal(images_of(again), first)
    np.testing.assert_array_equal(images_of(again), second)
    other, _ = data.load(
        "frey_faces",
        "train",
        batch_size=64,
        binarize=True,
        shuffle=False,
        seed=2,
        data_dir=str(tmp_path),
    )
    assert np.mean(images_of(other) != first) > 0.3


def test_cache_file_prefix(tmp_path):
    write_frey(tmp_path, np.arange(200)[:, None, None] * np.ones((1, 28, 20), np.int64))
    prefix = str(tmp_path / "cache" / "run1-")
    ds, _ = data.load(
        "frey_faces",
        "validation",
        batch_size=4,
        shuffle=False,
        data_dir=str(tmp_path),
        cache=prefix,
    )
    first = images_of(ds)
    assert any(
        f.startswith("run1-frey_faces-validation-28x20x1") for f in os.listdir(tmp_path / "cache")
    )
    np.testing.assert_array_equal(images_of(ds), first)
    uncached, _ = data.load(
        "frey_faces", "validation", batch_size=4, shuffle=False, data_dir=str(tmp_path), cache=False
    )
    np.testing.assert_array_equal(images_of(uncached), first)


def test_tail_of_a_hand_made_stream_source():
    # Ten 2x2x1 uint8 images with value 10 * i, labels i: the tail drops the
    # remainder, converts to k/255, keeps or drops the labels, and shuffles
    # each pass anew (seeded) without losing or repeating an example.
    examples = tf.data.Dataset.from_tensor_slices(
        (
            np.arange(0, 100, 10, dtype=np.uint8)[:, None, None, None]
            * np.ones((1, 2, 2, 1), np.uint8),
            {"digit": np.arange(10, dtype=np.int64)},
        )
    )
    info = pipeline.DatasetInfo("toy", "train", (2, 2, 1), 10, ("digit",), binary=False)
    source = pipeline.Source(examples=examples, info=info)
    common = dict(batch_size=4, seed=0, repeat=False, binarize=False, cache=True)
    ds = pipeline.tail(source, shuffle=False, drop_remainder=True, with_labels=True, **common)
    elements = list(ds.as_numpy_iterator())
    assert [images.shape for images, _ in elements] == [(4, 2, 2, 1), (4, 2, 2, 1)]
    images = np.concatenate([images for images, _ in elements])
    np.testing.assert_array_equal(
        images[:, 0, 0, 0], np.float32(np.arange(0, 80, 10)) / np.float32(255)
    )
    np.testing.assert_array_equal(
        np.concatenate([labels["digit"] for _, labels in elements]), np.arange(8)
    )
    shuffled = pipeline.tail(
        source, shuffle=True, drop_remainder=False, with_labels=False, **common
    )
    assert shuffled.element_spec == tf.TensorSpec((None, 2, 2, 1), tf.float32)
    first, second = (np.round(images_of(shuffled)[:, 0, 0, 0] * 25.5).astype(int) for _ in range(2))
    np.testing.assert_array_equal(np.sort(first), np.arange(10))
    np.testing.assert_array_equal(np.sort(second), np.arange(10))
    assert not np.array_equal(first, second)
