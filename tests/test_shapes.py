"""Tests of keras_vae.data.shapes: the dSprites renderer, its fixed splits and its stream."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vae import data
from keras_vae.data import shapes


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
