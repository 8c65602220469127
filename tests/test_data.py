"""Tests of keras_vae.data: shapes renderer and splits, TFDS (mocked), folders, Frey.

TFDS datasets run through the real loader under `tfds.testing.mock_data`,
which replaces only the file reading (random or planted examples); no network.
"""

import logging
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_vae import data
from keras_vae.config import DataError, UsageError, UserError
from keras_vae.data import folder, shapes

# ---------------------------------------------------------------------------
# Helpers


def batches(ds):
    """All elements of one pass over `ds`, as NumPy."""
    return list(ds.as_numpy_iterator())


def images_of(ds):
    """One pass over a dataset of image batches, concatenated: (N, H, W, C)."""
    return np.concatenate(batches(ds))


def assert_k_over_255(x):
    """Every value is exactly float32(k) / 255 for an integer k in [0, 255]."""
    k = np.round(x * 255.0)
    assert k.min() >= 0 and k.max() <= 255
    np.testing.assert_array_equal(x, k.astype(np.float32) / np.float32(255.0))


def render(factors):
    return shapes.render(np.asarray(factors)).numpy()


def centroid(image):
    """(row, column) centre of mass of a binary (H, W, 1) image."""
    rows, cols = np.nonzero(image[..., 0])
    return rows.mean(), cols.mean()


# Factor index tuples: (shape, scale, orientation, pos_x, pos_y).
SQUARE, ELLIPSE, HEART = 0, 1, 2

# ---------------------------------------------------------------------------
# shapes: factors and index decomposition


def test_shapes_factor_sizes_and_index_decomposition():
    assert shapes.FACTOR_NAMES == ("shape", "scale", "orientation", "pos_x", "pos_y")
    assert shapes.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert shapes.NUM_IMAGES == 3 * 6 * 40 * 32 * 32 == 737_280
    np.testing.assert_allclose(shapes.SCALES, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert shapes.ORIENTATIONS[0] == 0.0 and shapes.ORIENTATIONS[-1] < 2 * np.pi
    np.testing.assert_allclose(np.diff(shapes.ORIENTATIONS), 2 * np.pi / 40)

    index = np.arange(shapes.NUM_IMAGES)
    factors = shapes.index_to_factors(index).numpy()
    assert factors.shape == (737_280, 5)
    # Every value of every factor is reachable, each equally often.
    for axis, size in enumerate(shapes.FACTOR_SIZES):
        values, counts = np.unique(factors[:, axis], return_counts=True)
        np.testing.assert_array_equal(values, np.arange(size))
        assert set(counts) == {737_280 // size}
    np.testing.assert_array_equal(shapes.factors_to_index(factors).numpy(), index)
    # Mixed radix, pos_y fastest: 1 -> pos_y 1; 32 -> pos_x 1; 1024 -> orientation 1;
    # 40960 -> scale 1; 245760 -> shape 1.
    golden = {
        1: [0, 0, 0, 0, 1],
        32: [0, 0, 0, 1, 0],
        1024: [0, 0, 1, 0, 0],
        40_960: [0, 1, 0, 0, 0],
        245_760: [1, 0, 0, 0, 0],
        737_279: [2, 5, 39, 31, 31],
    }
    for i, expected in golden.items():
        np.testing.assert_array_equal(factors[i], expected)


def test_shapes_render_is_binary_64x64x1_and_deterministic():
    factors = shapes.index_to_factors([0, 12_345, 400_000, 737_279]).numpy()
    first, second = render(factors), render(factors)
    assert first.shape == (4, 64, 64, 1) and first.dtype == np.float32
    assert set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_array_equal(first, second)
    # Rank-agnostic: one factor tuple renders the same as inside a batch.
    np.testing.assert_array_equal(render(factors[1]), first[1])
    assert shapes.render(factors, image_size=32).shape == (4, 32, 32, 1)


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_shapes_position_moves_the_centroid(shape):
    # The centre moves 0.6 * 64 / 31 = 1.24 px per step over 38.4 px.
    along_x = render([[shape, 5, 3, x, 10] for x in range(32)])
    along_y = render([[shape, 5, 3, 10, y] for y in range(32)])
    cols = np.array([centroid(image)[1] for image in along_x])
    rows = np.array([centroid(image)[0] for image in along_y])
    assert np.all(np.diff(cols) > 0), "pos_x up -> centroid moves right"
    assert np.all(np.diff(rows) > 0), "pos_y up -> centroid moves down (row index grows)"
    assert abs((cols[-1] - cols[0]) - 38.4) < 1.5
    assert abs((rows[-1] - rows[0]) - 38.4) < 1.5
    # Moving along x leaves the row of the centroid where it was, and vice versa.
    assert np.ptp([centroid(image)[0] for image in along_x]) < 1.0
    assert np.ptp([centroid(image)[1] for image in along_y]) < 1.0


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_shapes_scale_grows_the_pixel_count(shape):
    counts = render([[shape, s, 7, 16, 16] for s in range(6)]).sum(axis=(1, 2, 3))
    assert np.all(np.diff(counts) > 0)
    # Area ~ scale^2: scale 1 vs 0.5 is 4x, up to rasterization.
    assert 3.4 < counts[-1] / counts[0] < 4.7
    # At scale 1 the square is (2 * 0.135 * 64)^2 = 299 px; all shapes are comparable.
    assert 200 < counts[-1] < 340


def test_shapes_orientation():
    def image(shape, orientation):
        return render([[shape, 5, orientation, 16, 16]])[0]

    def differing(a, b):
        return int(np.sum(a != b))

    # A 9-degree turn changes the square's image...
    assert differing(image(SQUARE, 0), image(SQUARE, 1)) > 20
    # ...the square turned by 45 degrees is a diamond: the top row of its
    # bounding box holds a single corner region, not a full edge.
    top = np.nonzero(image(SQUARE, 5)[..., 0].any(axis=1))[0][0]
    assert image(SQUARE, 5)[top, :, 0].sum() <= 3
    # The unturned square's top row is a full edge.
    top0 = np.nonzero(image(SQUARE, 0)[..., 0].any(axis=1))[0][0]
    assert image(SQUARE, 0)[top0, :, 0].sum() >= 15
    # The ellipse turned by its symmetry angle (pi, 20 steps) keeps its pixel
    # count (up to a few boundary pixels) and nearly all its pixels...
    ellipse_0, ellipse_pi, ellipse_half_pi = (
        image(ELLIPSE, 0),
        image(ELLIPSE, 20),
        image(ELLIPSE, 10),
    )
    assert abs(ellipse_0.sum() - ellipse_pi.sum()) <= 4
    assert differing(ellipse_0, ellipse_pi) <= 8
    # ...while a quarter turn (not a symmetry) moves many pixels, same area.
    assert differing(ellipse_0, ellipse_half_pi) > 60
    assert abs(ellipse_0.sum() - ellipse_half_pi.sum()) <= 6
    # The heart has no rotational symmetry: a half turn moves many pixels.
    assert differing(image(HEART, 0), image(HEART, 20)) > 60


def test_shapes_heart_looks_like_a_heart():
    heart = render([[HEART, 5, 0, 16, 16]])[0, ..., 0]  # orientation 0: lobes up
    rows = np.nonzero(heart.any(axis=1))[0]
    widths = heart[rows].sum(axis=1)

    def runs(row):
        return int(np.sum(np.diff(np.concatenate([[0], row, [0]])) == 1))

    # Two lobes: the top two rows hold two separate runs of pixels (the notch
    # is 0.236 curve units deep, 2 px at scale 1), then the lobes merge.
    assert [runs(heart[row]) for row in rows[:4]] == [2, 2, 1, 1]
    # A pointed bottom: the last row is narrow, the widest row is near the top.
    assert widths[-1] <= 3 and widths.max() >= 15
    assert np.argmax(widths) < len(rows) / 2
    # Left-right mirror symmetric at orientation 0 (up to the pixel grid).
    cols = np.nonzero(heart.any(axis=0))[0]
    box = heart[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert np.sum(box != box[:, ::-1]) <= 0.05 * box.sum()


def test_shapes_the_three_shapes_differ():
    square, ellipse, heart = render([[s, 5, 3, 16, 16] for s in range(3)])
    for a, b in [(square, ellipse), (square, heart), (ellipse, heart)]:
        assert np.sum(a != b) > 40


def test_shapes_sprites_stay_inside_the_frame():
    factors = [
        [shape, 5, orientation, x, y]
        for shape in range(3)
        for orientation in range(40)
        for x in (0, 31)
        for y in (0, 31)
    ]
    images = render(factors)[..., 0]
    border = np.concatenate(
        [images[:, 0, :], images[:, -1, :], images[:, :, 0], images[:, :, -1]], axis=1
    )
    assert border.sum() == 0
    assert images.sum(axis=(1, 2)).min() > 150
    smallest = render([[shape, 0, 0, 16, 16] for shape in range(3)])
    assert smallest.sum(axis=(1, 2, 3)).min() > 40


# ---------------------------------------------------------------------------
# shapes: splits and the pipeline

GOLDEN_FIRST_INDICES = {
    "train": [58650, 125975, 181818, 253759, 435033],
    "validation": [86446, 55346, 691169, 715290, 464559],
    "test": [578308, 643732, 717094, 113154, 42932],
}


def test_shapes_splits_are_fixed_and_disjoint():
    assert shapes.SPLIT_SIZES == {"train": 626_688, "validation": 36_864, "test": 73_728}
    assert sum(shapes.SPLIT_SIZES.values()) == shapes.NUM_IMAGES
    # Pinned: the split must be the same on every machine and TF version.
    for split, golden in GOLDEN_FIRST_INDICES.items():
        np.testing.assert_array_equal(shapes.split_to_index(split, np.arange(5)).numpy(), golden)
    members = {
        split: shapes.split_to_index(split, np.arange(size)).numpy()
        for split, size in shapes.SPLIT_SIZES.items()
    }
    every = np.concatenate(list(members.values()))
    # Disjoint and complete: together a permutation of all 737,280 indices.
    np.testing.assert_array_equal(np.sort(every), np.arange(shapes.NUM_IMAGES))
    # The held-out splits cover every factor value (a sample, not a block).
    test_factors = shapes.index_to_factors(members["test"]).numpy()
    for axis, size in enumerate(shapes.FACTOR_SIZES):
        assert len(np.unique(test_factors[:, axis])) == size


def test_index_shuffle_batched_seeds_match_the_public_function():
    index = tf.range(100, dtype=tf.int64)
    public = tf.random.experimental.index_shuffle(
        index, seed=tf.constant([7, 3], tf.int64), max_index=tf.constant(99, tf.int64)
    )
    batched = shapes._index_shuffle(index, tf.constant([[7, 3]] * 100, tf.int64), 99)
    np.testing.assert_array_equal(batched.numpy(), public.numpy())
    assert sorted(batched.numpy()) == list(range(100))


def test_shapes_load_unshuffled_follows_the_split_order():
    ds, info = data.load("shapes", "test", batch_size=5, shuffle=False, with_labels=True)
    assert info == data.DatasetInfo(
        name="shapes",
        split="test",
        image_shape=(64, 64, 1),
        num_examples=73_728,
        label_names=shapes.FACTOR_NAMES,
        binary=True,
    )
    assert ds.cardinality().numpy() == 73_728 // 5 + 1
    images, labels = next(iter(ds))
    factors = np.stack([labels[name].numpy() for name in shapes.FACTOR_NAMES], axis=-1)
    assert labels["shape"].dtype == tf.int64 and labels["shape"].shape == (5,)
    np.testing.assert_array_equal(
        shapes.factors_to_index(factors).numpy(), GOLDEN_FIRST_INDICES["test"]
    )
    np.testing.assert_array_equal(images.numpy(), render(factors))


def _epoch_indices(ds):
    """Dataset indices of one pass over a shapes dataset with labels."""
    return np.concatenate(
        [
            shapes.factors_to_index(np.stack([labels[n] for n in shapes.FACTOR_NAMES], -1)).numpy()
            for _, labels in ds.as_numpy_iterator()
        ]
    )


def test_shapes_epochs_are_reshuffled_and_seeded():
    split_members = np.sort(shapes.split_to_index("validation", np.arange(36_864)).numpy())
    ds, _ = data.load("shapes", "validation", batch_size=4096, seed=3, with_labels=True)
    epoch_1, epoch_2 = _epoch_indices(ds), _epoch_indices(ds)
    # Each epoch visits every example of the split exactly once...
    np.testing.assert_array_equal(np.sort(epoch_1), split_members)
    np.testing.assert_array_equal(np.sort(epoch_2), split_members)
    # ...in a new order (two equal random orders of 36,864: impossible).
    assert np.mean(epoch_1 != epoch_2) > 0.99
    # A new dataset with the same seed replays the same epochs.
    again, _ = data.load("shapes", "validation", batch_size=4096, seed=3, with_labels=True)
    np.testing.assert_array_equal(_epoch_indices(again), epoch_1)
    np.testing.assert_array_equal(_epoch_indices(again), epoch_2)
    other, _ = data.load("shapes", "validation", batch_size=4096, seed=4, with_labels=True)
    assert np.mean(_epoch_indices(other) != epoch_1) > 0.99


def test_shapes_repeat_runs_across_epochs_with_new_orders():
    ds, _ = data.load(
        "shapes", "validation", batch_size=4096, seed=0, repeat=True, with_labels=True
    )
    assert ds.cardinality().numpy() == tf.data.INFINITE_CARDINALITY
    two_epochs = _epoch_indices(ds.take(18))  # 36,864 / 4096 = 9 batches per epoch
    first, second = two_epochs[:36_864], two_epochs[36_864:]
    np.testing.assert_array_equal(np.sort(first), np.sort(second))
    assert np.mean(first != second) > 0.99
    images = next(iter(data.load("shapes", "train", batch_size=8, binarize=True)[0]))
    assert images.shape == (8, 64, 64, 1) and set(np.unique(images)) <= {0.0, 1.0}


# ---------------------------------------------------------------------------
# TFDS datasets, mocked


def test_mnist_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        ds, info = data.load(
            "mnist", "train", batch_size=5, shuffle=False, with_labels=True, data_dir=str(tmp_path)
        )
        raw_ds = tfds.load("mnist", split="train[:55000]", data_dir=str(tmp_path))
        raw = batches(raw_ds.batch(12))[0]
        elements = batches(ds)
    assert info == data.DatasetInfo(
        name="mnist",
        split="train",
        image_shape=(28, 28, 1),
        num_examples=12,
        label_names=("label",),
        binary=False,
    )
    assert [images.shape for images, _ in elements] == [
        (5, 28, 28, 1),
        (5, 28, 28, 1),
        (2, 28, 28, 1),
    ]
    images = np.concatenate([images for images, _ in elements])
    labels = np.concatenate([labels["label"] for _, labels in elements])
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert_k_over_255(images)
    # Native size: the pixels are the stored bytes / 255, in the stored order.
    np.testing.assert_array_equal(np.round(images * 255).astype(np.uint8), raw["image"])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, raw["label"])


def test_tfds_validation_is_carved_out_of_train():
    from keras_vae.data import tfds_sources

    assert tfds_sources.tfds_split("mnist", "train") == "train[:55000]"
    assert tfds_sources.tfds_split("mnist", "validation") == "train[55000:]"
    assert tfds_sources.tfds_split("cifar10", "validation") == "train[45000:]"
    assert tfds_sources.tfds_split("svhn_cropped", "train") == "train[:68257]"
    assert tfds_sources.tfds_split("mnist", "test") == "test"
    assert tfds_sources.tfds_split("celeb_a", "validation") == "validation"


def test_cifar10_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        ds, info = data.load(
            "cifar10", "validation", batch_size=4, with_labels=True, data_dir=str(tmp_path)
        )
        elements = batches(ds)
        resized, resized_info = data.load(
            "cifar10", "test", batch_size=6, image_size=16, data_dir=str(tmp_path)
        )
        small = images_of(resized)
    assert info.image_shape == (32, 32, 3) and info.num_examples == 6
    images = np.concatenate([images for images, _ in elements])
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    assert_k_over_255(images)
    labels = np.concatenate([labels["label"] for _, labels in elements])
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 10
    assert resized_info.image_shape == (16, 16, 3) and small.shape == (6, 16, 16, 3)
    assert_k_over_255(small)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("mnist", (28, 28, 1)),
        ("fashion_mnist", (28, 28, 1)),
        ("cifar10", (32, 32, 3)),
        ("svhn_cropped", (32, 32, 3)),
        ("celeb_a", (64, 64, 3)),
    ],
)
def test_every_tfds_dataset_binarized_with_labels(tmp_path, name, shape):
    with tfds.testing.mock_data(num_examples=3):
        ds, info = data.load(
            name, "test", batch_size=3, binarize=True, with_labels=True, data_dir=str(tmp_path)
        )
        ((images, labels),) = batches(ds)
    assert info.image_shape == shape and images.shape == (3, *shape)
    assert images.dtype == np.float32 and set(np.unique(images)) == {0.0, 1.0}
    assert set(labels) == set(info.label_names) and len(labels) == (40 if name == "celeb_a" else 1)
    for values in labels.values():
        assert values.dtype == np.int64 and values.shape == (3,)


def _planted_celeb_a(num_examples):
    """`_as_dataset` replacement: 218x178 faces, 200 + i inside the crop window, 0 outside."""

    def as_dataset(self, *args, **kwargs):
        def example(i):
            image = np.zeros((218, 178, 3), np.uint8)
            image[35:183, 15:163] = 200 + i  # rows 35..182, columns 15..162
            attributes = {
                name: bool((i + k) % 2)
                for k, name in enumerate(self.info.features["attributes"].keys())
            }
            return {"image": image, "attributes": attributes}

        examples = [example(i) for i in range(num_examples)]
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": np.stack([e["image"] for e in examples]),
                "attributes": {
                    k: [e["attributes"][k] for e in examples] for k in examples[0]["attributes"]
                },
            }
        )

    return as_dataset


def test_celeb_a_crop_148_and_resize_64_planted(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_planted_celeb_a(3)):
        ds, info = data.load(
            "celeb_a",
            "train",
            batch_size=3,
            shuffle=False,
            with_labels=True,
            data_dir=str(tmp_path),
        )
        images, labels = batches(ds)[0]
    assert info.image_shape == (64, 64, 3) and info.num_examples == 3
    # The crop is exactly the planted window: an off-by-one row or column of
    # zeros would darken the border pixels of the 64x64 result.
    for i in range(3):
        np.testing.assert_array_equal(images[i], np.float32(200 + i) / np.float32(255))
    assert len(info.label_names) == 40 and "Smiling" in info.label_names
    assert set(labels) == set(info.label_names)
    smiling = info.label_names.index("Smiling")
    np.testing.assert_array_equal(labels["Smiling"], [(i + smiling) % 2 for i in range(3)])
    assert labels["Smiling"].dtype == np.int64


def test_celeb_a_matches_tf_image_ops_on_the_raw_mock_image(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        ds, info = data.load(
            "celeb_a", "validation", batch_size=4, shuffle=False, data_dir=str(tmp_path)
        )
        images = batches(ds)[0]
        raw = batches(tfds.load("celeb_a", split="validation", data_dir=str(tmp_path)).batch(4))[0]
    assert raw["image"].shape == (4, 218, 178, 3)
    crop = raw["image"][:, 35:183, 15:163].astype(np.float32)  # (218 - 148) / 2, (178 - 148) / 2
    expected = tf.image.resize(crop, (64, 64), antialias=True).numpy()
    expected = np.round(np.clip(expected, 0, 255)).astype(np.float32) / np.float32(255)
    assert images.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(images, expected)
    assert_k_over_255(images)


def test_missing_tfds_dataset_message(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("celeb_a", "train", batch_size=8, data_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert "TFDS dataset 'celeb_a' is not in data_dir " + str(tmp_path) in message
    assert "downloading is off" in message
    assert f"`tfds build celeb_a --data_dir={tmp_path}`" in message
    assert "--datasets=celeb_a" in message
    assert "rerun train.py with --download" in message
    assert "--dataset=folder:PATH" in message
    assert isinstance(caught.value, DataError) and isinstance(caught.value, UserError)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise ConnectionError("no route\nto host")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("mnist", "train", batch_size=8, data_dir=str(tmp_path), download=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"Downloading TFDS dataset 'mnist' into data_dir {tmp_path} failed "
        "(ConnectionError: no route to host)."
    )
    assert "--dataset=folder:PATH" in message


def test_bad_arguments_are_usage_errors():
    with pytest.raises(
        UsageError,
        match="Unknown dataset 'imagenet'. Expected one of: shapes, "
        "mnist, fashion_mnist, cifar10, svhn_cropped, celeb_a, frey_faces, or "
        "folder:PATH.",
    ):
        data.load("imagenet", "train", batch_size=8)
    with pytest.raises(UsageError, match="Received: split='valid'"):
        data.load("shapes", "valid", batch_size=8)
    with pytest.raises(UsageError, match="Received: batch_size=0"):
        data.load("shapes", "train", batch_size=0)
    with pytest.raises(UsageError, match="channels"):
        data.load("mnist", "train", batch_size=8, channels=1)
    assert UsageError.exit_code == 2
    assert set(data.DATASETS) == {
        "shapes",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "celeb_a",
        "svhn_cropped",
        "frey_faces",
    }


# ---------------------------------------------------------------------------
# Frey faces and binarization


def _write_frey(directory, frames):
    """frames (n, 28, 20) uint8 -> `ff` (560, n), one frame per column."""
    import scipy.io

    os.makedirs(directory, exist_ok=True)
    ff = np.asarray(frames, np.uint8).reshape(len(frames), 560).T
    scipy.io.savemat(os.path.join(directory, "frey_rawface.mat"), {"ff": ff})


def test_frey_faces_from_a_small_mat(tmp_path):
    frames = np.arange(200)[:, None, None] * np.ones((1, 28, 20), np.int64)
    frames[0] = (np.arange(560) % 256).reshape(28, 20)  # frame 0: row-major ramp
    _write_frey(tmp_path / "frey_faces", frames)  # the second place looked at
    ds, info = data.load(
        "frey_faces", "train", batch_size=64, shuffle=False, data_dir=str(tmp_path)
    )
    assert info == data.DatasetInfo(
        name="frey_faces",
        split="train",
        image_shape=(28, 20, 1),
        num_examples=170,
        label_names=(),
        binary=False,
    )
    images = images_of(ds)
    assert images.shape == (170, 28, 20, 1)
    assert_k_over_255(images)
    pixels = np.round(images * 255).astype(int)
    # Frame 0 keeps its layout: pixel (r, c) is value r * 20 + c (mod 256).
    np.testing.assert_array_equal(pixels[0, ..., 0], (np.arange(560) % 256).reshape(28, 20))
    # Contiguous split of 200 frames: train 0..169, validation 170..179, test 180..199.
    np.testing.assert_array_equal(pixels[1:, 0, 0, 0], np.arange(1, 170))
    for split, first, count in [("validation", 170, 10), ("test", 180, 20)]:
        split_ds, split_info = data.load(
            "frey_faces", split, batch_size=64, shuffle=False, data_dir=str(tmp_path)
        )
        values = np.round(images_of(split_ds)[:, 0, 0, 0] * 255).astype(int)
        assert split_info.num_examples == count
        np.testing.assert_array_equal(values, np.arange(first, first + count))
    resized, resized_info = data.load(
        "frey_faces", "test", batch_size=64, image_size=32, data_dir=str(tmp_path)
    )
    assert resized_info.image_shape == (32, 32, 1)
    assert images_of(resized).shape == (20, 32, 32, 1)


def test_frey_faces_missing_file_message(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("frey_faces", "train", batch_size=8, data_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "frey_rawface.mat") in message
    assert str(tmp_path / "frey_faces" / "frey_rawface.mat") in message
    assert "https://cs.nyu.edu/~roweis/data/frey_rawface.mat" in message


def test_shuffle_of_cached_pipelines_is_seeded_and_new_each_epoch(tmp_path):
    frames = np.arange(200)[:, None, None] * np.ones((1, 28, 20), np.int64)  # frame i == i
    _write_frey(tmp_path, frames)

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
    _write_frey(tmp_path, np.full((200, 28, 20), gray, np.uint8))
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
    _write_frey(tmp_path, np.arange(200)[:, None, None] * np.ones((1, 28, 20), np.int64))
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


# ---------------------------------------------------------------------------
# Image folders


def _name_in(split, stem, extension):
    """A file name (stem + counter + extension) that the hash puts in `split`."""
    for k in range(1000):
        name = f"{stem}{k}{extension}"
        if folder.split_of(name) == split:
            return name
    raise AssertionError("unreachable")


# Planted files with constant colours, all in the train split.
SPECIAL = {
    "gray": (_name_in("train", "a/gray", ".png"), (77, 77, 77)),
    "rgba": (_name_in("train", "a/b/rgba", ".png"), (10, 20, 30)),
    "png16": (_name_in("train", "c/deep", ".png"), (156, 156, 156)),  # 40000 >> 8
    "bmp": (_name_in("train", "c/bitmap", ".bmp"), (200, 100, 50)),
    "upper": (_name_in("train", "a/upper", ".PNG"), (5, 250, 5)),
    "wide": (_name_in("train", "wide", ".png"), (120, 60, 30)),  # 64 x 96, sides differ
}
CORRUPT = sorted(
    _name_in("train", f"bad{i}_", ext)
    for i, ext in enumerate([".jpg", ".png", ".jpeg", ".bmp"] * 3)
)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """~100 files in nested folders: plain RGB PNG/JPEG, planted formats, 12 corrupt ones."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    plain = []
    for i in range(90):
        name = f"{['', 'a/', 'a/b/'][i % 3]}img_{i:03d}{'.jpg' if i % 10 == 0 else '.png'}"
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / name)
        plain.append(name)
    for directory in ("a/b", "c"):
        os.makedirs(root / directory, exist_ok=True)
    Image.fromarray(np.full((64, 64), 77, np.uint8)).save(root / SPECIAL["gray"][0])
    Image.fromarray(np.full((64, 64, 4), (10, 20, 30, 128), np.uint8)).save(
        root / SPECIAL["rgba"][0]
    )
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(root / SPECIAL["png16"][0])
    assert Image.open(root / SPECIAL["png16"][0]).mode.startswith("I;16")
    Image.fromarray(np.full((64, 64, 3), (200, 100, 50), np.uint8)).save(root / SPECIAL["bmp"][0])
    Image.fromarray(np.full((64, 64, 3), (5, 250, 5), np.uint8)).save(
        root / SPECIAL["upper"][0], format="PNG"
    )
    wide = np.zeros((64, 96, 3), np.uint8)
    wide[:, 16:80] = (120, 60, 30)  # the central 64 x 64 square
    Image.fromarray(wide).save(root / SPECIAL["wide"][0])
    # Unreadable: garbage, empty, truncated JPEG / PNG (valid headers).
    jpeg = (root / plain[0]).read_bytes()
    png = (root / plain[1]).read_bytes()
    payloads = [b"not an image", b"", jpeg[: len(jpeg) // 2], png[: len(png) // 2]]
    for i, name in enumerate(CORRUPT):
        (root / name).write_bytes(payloads[i % 4])
    (root / "notes.txt").write_text("not an image and not listed")
    good = plain + [name for name, _ in SPECIAL.values()]
    return root, good


def test_folder_counts_formats_and_one_warning(image_folder, caplog):
    root, good = image_folder
    expected_counts = {s: sum(folder.split_of(n) == s for n in good) for s in data.SPLITS}
    assert min(expected_counts.values()) > 0
    with caplog.at_level(logging.WARNING):
        ds, info = data.load(f"folder:{root}", "train", batch_size=16, shuffle=False)
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith(
        f"Skipped 12 unreadable image file(s) of {expected_counts['train'] + 12}"
    )
    assert ", ".join(CORRUPT[:10]) + " and 2 more" in message
    assert info.num_examples == expected_counts["train"]
    assert info.image_shape == (64, 64, 3) and info.label_names == ()
    images = images_of(ds)
    assert images.shape == (expected_counts["train"], 64, 64, 3)
    assert_k_over_255(images)
    # Every planted file is found as a constant image of its expected colour:
    # gray replicated, alpha dropped, 16 -> 8 bits, BMP, .PNG, center crop.
    for _, colour in SPECIAL.values():
        target = np.float32(colour) / np.float32(255)
        assert np.any(np.all(images == target, axis=(1, 2, 3))), colour
    total = info.num_examples
    for split in ("validation", "test"):
        split_ds, split_info = data.load(f"folder:{root}", split, batch_size=16)
        assert split_info.num_examples == expected_counts[split]
        assert len(images_of(split_ds)) == expected_counts[split]
        total += split_info.num_examples
    assert total == len(good) == 96


def test_folder_gray_channel_and_labels(image_folder):
    root, _ = image_folder
    ds, info = data.load(
        f"folder:{root}",
        "train",
        batch_size=128,
        channels=1,
        image_size=32,
        shuffle=False,
        with_labels=True,
    )
    ((images, labels),) = batches(ds)
    assert info.image_shape == (32, 32, 1) and images.shape[1:] == (32, 32, 1)
    assert labels == {}
    assert np.any(np.all(images == np.float32(77) / np.float32(255), axis=(1, 2, 3)))
    with pytest.raises(UsageError, match="Received: channels=2"):
        data.load(f"folder:{root}", "train", batch_size=8, channels=2)


def test_folder_strict_names_the_first_unreadable_file(image_folder):
    root, _ = image_folder
    with pytest.raises(DataError) as caught:
        data.load(f"folder:{root}", "train", batch_size=8, strict=True)
    message = str(caught.value)
    assert message.startswith(f"Cannot read image file {os.path.join(root, CORRUPT[0])} (")
    assert "Remove the file, or drop --strict_data" in message and "\n" not in message
    # The clean splits load under strict.
    assert data.load(f"folder:{root}", "test", batch_size=8, strict=True)[1].num_examples > 0


def test_folder_missing_empty_and_unreadable(tmp_path):
    with pytest.raises(DataError, match="does not exist: expected a folder of jpg/jpeg/png/bmp"):
        data.load(f"folder:{tmp_path / 'nowhere'}", "train", batch_size=8)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as caught:
        data.load(f"folder:{empty}", "train", batch_size=8)
    assert str(caught.value) == (
        f"Image folder {empty} holds no image file: expected a folder of jpg/jpeg/png/bmp "
        "images (searched recursively)."
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    name = _name_in("train", "x", ".jpg")
    (broken / name).write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match="no readable image in the train split"):
        data.load(f"folder:{broken}", "train", batch_size=8)
    with pytest.raises(DataError, match="none in the test split"):
        data.load(f"folder:{broken}", "test", batch_size=8)


def test_folder_split_is_a_stable_hash_of_the_name():
    # Golden: the split must not change between machines or releases.
    assert [folder.split_of(f"img_align_celeba/{i:06d}.jpg") for i in (1, 11, 13, 23, 33)] == [
        "train",
        "validation",
        "test",
        "validation",
        "test",
    ]
    assert folder.split_of("a/b/c.png") == folder.split_of(os.path.join("a", "b", "c.png"))
    names = [f"dir{i % 7}/face_{i}.jpg" for i in range(20_000)]
    splits = np.array([folder.split_of(name) for name in names])
    # 20,000 names: std of a 5% share is 0.15%; 1% is 6.5 std.
    assert abs(np.mean(splits == "train") - 0.90) < 0.01
    assert abs(np.mean(splits == "validation") - 0.05) < 0.01
    assert abs(np.mean(splits == "test") - 0.05) < 0.01


def test_folder_splits_are_disjoint_and_independent_of_listing(image_folder):
    root, good = image_folder
    listed = folder.list_images(str(root))
    assert listed == sorted(listed) and "notes.txt" not in listed
    assert set(good) | set(CORRUPT) == set(listed)
    shuffled = list(reversed(listed))
    by_split = {s: {n for n in shuffled if folder.split_of(n) == s} for s in data.SPLITS}
    assert sum(map(len, by_split.values())) == len(listed)
    assert not (by_split["train"] & by_split["validation"])
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["validation"] & by_split["test"])
