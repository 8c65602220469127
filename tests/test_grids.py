"""Tests for keras_vae.grids: tiling images into one picture (pure NumPy)."""

import numpy as np
import pytest

from keras_vae import grids

# Phi^-1 of the manifold quantiles, from scipy.stats.norm.ppf (scipy 1.17):
# Phi^-1(0.05) = -1.6448536269514729, Phi^-1(0.275) = -0.5977601260424784.
PPF_005 = -1.6448536269514729
PPF_0275 = -0.5977601260424784


def _orthonormal_pair(dim, seed=0):
    """Two orthogonal unit vectors in R^dim (columns of a random orthogonal matrix)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, 2)))
    return q[:, 0], q[:, 1]


# ----------------------------------------------------------------------------
# lerp / slerp / interpolate


@pytest.mark.parametrize(
    "n, rows, cols, pad, expected_shape",
    [
        # Cells are 4 x 5 x 3; separators between cells only (no border):
        # (rows * 4 + (rows - 1) * pad, cols * 5 + (cols - 1) * pad, 3).
        (7, None, None, 1, (3 * 4 + 2, 3 * 5 + 2, 3)),  # 3 x 3, two empty cells
        (5, None, 5, 1, (4, 5 * 5 + 4, 3)),  # one row
        (5, None, None, 1, (2 * 4 + 1, 3 * 5 + 2, 3)),  # ceil(sqrt 5) = 3 cols, 2 rows
        (1, None, None, 1, (4, 5, 3)),  # a single cell has no separator
        (13, None, None, 1, (4 * 4 + 3, 4 * 5 + 3, 3)),  # 4 x 4
        (13, 2, None, 2, (2 * 4 + 2, 7 * 5 + 6 * 2, 3)),  # rows given: cols = ceil(13/2) = 7
        (7, None, 2, 0, (4 * 4, 2 * 5, 3)),  # cols given: rows = 4; no separators
        (7, 3, 4, 3, (3 * 4 + 2 * 3, 4 * 5 + 3 * 3, 3)),  # both given, 5 empty cells
        (4, None, None, 1, (2 * 4 + 1, 2 * 5 + 1, 3)),  # perfect square
    ],
)
def test_tile_shape(n, rows, cols, pad, expected_shape):
    images = np.zeros((n, 4, 5, 3), dtype=np.float32)
    assert grids.tile(images, rows=rows, cols=cols, pad=pad).shape == expected_shape
    assert grids.grid_shape(n, rows, cols) == (
        (expected_shape[0] + pad) // (4 + pad),
        (expected_shape[1] + pad) // (5 + pad),
    )


def test_tile_places_each_image_in_its_cell_and_pads_the_rest():
    n, height, width, pad = 7, 3, 4, 2
    # Image i is the constant (i + 1) / 10, distinct from the pad value 1.0.
    images = np.stack([np.full((height, width, 1), (i + 1) / 10, np.float32) for i in range(n)])
    grid = grids.tile(images, cols=3, pad=pad, pad_value=1.0)  # 3 x 3 cells
    assert grid.shape == (3 * height + 2 * pad, 3 * width + 2 * pad, 1)
    assert grid.dtype == np.float32
    covered = np.zeros(grid.shape[:2], dtype=bool)
    for i in range(9):
        top, left = (i // 3) * (height + pad), (i % 3) * (width + pad)
        cell = grid[top : top + height, left : left + width, 0]
        expected = (i + 1) / 10 if i < n else 1.0  # cells 7 and 8 are empty
        np.testing.assert_array_equal(cell, np.full((height, width), expected, np.float32))
        covered[top : top + height, left : left + width] = True
    # Everything outside the cells is separator, with the pad value.
    np.testing.assert_array_equal(grid[~covered, 0], np.ones((~covered).sum(), np.float32))
    # Separator pixels: full rows 2 * pad * 16 + columns 2 * pad * 13, minus overlaps 4 * pad^2.
    assert (~covered).sum() == 2 * pad * grid.shape[1] + 2 * pad * grid.shape[0] - 4 * pad**2


def test_tile_keeps_orientation_of_each_image():
    # Non-symmetric content (H != W, distinct pixel values) catches transposes and flips.
    images = np.arange(2 * 2 * 3 * 2, dtype=np.float64).reshape(2, 2, 3, 2) / 100
    grid = grids.tile(images, rows=1, pad=1, pad_value=0.5)
    assert grid.shape == (2, 2 * 3 + 1, 2)
    np.testing.assert_array_equal(grid[:, 0:3], images[0])
    np.testing.assert_array_equal(grid[:, 3], np.full((2, 2), 0.5))
    np.testing.assert_array_equal(grid[:, 4:7], images[1])


def test_tile_uint8_scales_pad_value():
    images = np.full((2, 2, 2, 3), 7, dtype=np.uint8)
    grid = grids.tile(images, pad=1, pad_value=0.5)
    assert grid.dtype == np.uint8
    # floor(255 * 0.5 + 0.5) = 128.
    np.testing.assert_array_equal(grid[:, 2], np.full((2, 3), 128, np.uint8))
    assert grids.tile(images, pad=1)[0, 2, 0] == 255  # default pad_value 1.0 -> white


@pytest.mark.parametrize(
    "images, kwargs, match",
    [
        (np.zeros((3, 4, 5)), {}, r"Expected `images` .* Received: images.shape=\(3, 4, 5\)"),
        (np.zeros((0, 4, 5, 1)), {}, r"Expected at least one image. Received: n=0"),
        (np.zeros((7, 4, 5, 1)), {"rows": 2, "cols": 3}, r"Expected rows .* rows=2, cols=3"),
        (np.zeros((7, 4, 5, 1)), {"rows": 0}, r"Expected `rows` .* Received: rows=0"),
        (np.zeros((7, 4, 5, 1)), {"pad": -1}, r"Expected `pad` .* Received: pad=-1"),
        (np.zeros((7, 4, 5, 1), np.int32), {}, r"Expected .* images.dtype=int32"),
        (np.zeros((7, 4, 5, 1), np.uint8), {"pad_value": 255}, r"Received: pad_value=255"),
    ],
)
def test_tile_rejects_bad_inputs(images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        grids.tile(images, **kwargs)


def test_tile_rows_lays_rows_out_as_given():
    num_rows, per_row, height, width = 3, 4, 2, 3
    # Cell (r, k) is the constant r + k / 10.
    rows = [
        np.stack([np.full((height, width, 1), r + k / 10) for k in range(per_row)])
        for r in range(num_rows)
    ]
    grid = grids.tile_rows(rows, pad=1, pad_value=-1.0)
    assert grid.shape == (3 * 2 + 2, 4 * 3 + 3, 1)
    for r in range(num_rows):
        for k in range(per_row):
            top, left = r * (height + 1), k * (width + 1)
            np.testing.assert_array_equal(
                grid[top : top + height, left : left + width, 0], np.full((2, 3), r + k / 10)
            )
    # The same from a (R, K, H, W, C) array.
    np.testing.assert_array_equal(grids.tile_rows(np.stack(rows), pad=1, pad_value=-1.0), grid)
    with pytest.raises(ValueError, match=r"Expected .* Received: row shapes"):
        grids.tile_rows([rows[0], rows[1][:3]])
    with pytest.raises(ValueError, match=r"Expected .* Received: rows_of_images.shape=\(2, 3\)"):
        grids.tile_rows(np.zeros((2, 3)))


def test_to_uint8_rounding_and_clipping():
    x = np.array(
        [
            0.0,
            1.0,
            -0.5,  # clipped to 0
            1.5,  # clipped to 255
            (0.5 - 1e-6) / 255,  # just below half a level -> 0
            0.5 / 255,  # exactly half a level -> 1 (halves round up)
            (0.5 + 1e-6) / 255,  # just above -> 1
            0.5,  # 127.5 -> 128
            (254.5 - 1e-6) / 255,  # -> 254
            np.inf,  # clipped to 255
            -np.inf,  # clipped to 0
        ]
    )
    np.testing.assert_array_equal(
        grids.to_uint8(x), np.array([0, 255, 0, 255, 0, 1, 1, 128, 254, 255, 0], np.uint8)
    )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_to_uint8_round_trips_8bit_levels(dtype):
    levels = np.arange(256)
    out = grids.to_uint8((levels / 255).astype(dtype))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, levels.astype(np.uint8))


def test_to_uint8_passes_uint8_through_and_rejects_nan_and_ints():
    images = np.array([[0, 17, 255]], dtype=np.uint8)
    out = grids.to_uint8(images)
    np.testing.assert_array_equal(out, images)
    assert out is not images
    with pytest.raises(ValueError, match=r"Expected images without NaN"):
        grids.to_uint8(np.array([0.2, np.nan]))
    with pytest.raises(ValueError, match=r"Received: images.dtype=int64"):
        grids.to_uint8(np.array([1, 2], dtype=np.int64))


# ----------------------------------------------------------------------------
# manifold


