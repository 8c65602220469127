"""Tests for keras_vae.grids: interpolation, traversal, manifold, tiling (pure NumPy)."""

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


def test_lerp_endpoints_midpoint_and_dtype():
    rng = np.random.default_rng(1)
    z0 = rng.normal(size=6).astype(np.float32)
    z1 = rng.normal(size=6).astype(np.float32)
    path = grids.lerp(z0, z1, 5)
    assert path.shape == (5, 6)
    assert path.dtype == np.float32
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    # t = 0.5 at index 2 of linspace(0, 1, 5).
    np.testing.assert_allclose(path[2], (z0 + z1) / 2, atol=1e-6)
    # Evenly spaced: consecutive differences all equal (z1 - z0) / 4.
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((z1 - z0) / 4, (4, 1)), atol=1e-6)


def test_lerp_integer_codes_become_float64():
    path = grids.lerp([0, 0], [4, 8], 3)
    assert path.dtype == np.float64
    np.testing.assert_array_equal(path, [[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]])


@pytest.mark.parametrize(
    "z0, z1, steps, match",
    [
        (np.zeros(3), np.zeros(4), 5, r"Expected .* Received: z0.shape=\(3,\), z1.shape=\(4,\)"),
        (np.zeros((2, 3)), np.zeros((2, 3)), 5, r"Expected .* Received: z0.shape=\(2, 3\)"),
        (np.zeros(0), np.zeros(0), 5, r"Expected .* Received: z0.shape=\(0,\)"),
        (np.zeros(3), np.ones(3), 1, r"Expected `steps` .* Received: steps=1"),
        (np.zeros(3), np.ones(3), 2.5, r"Expected `steps` .* Received: steps=2.5"),
    ],
)
@pytest.mark.parametrize("function", [grids.lerp, grids.slerp])
def test_interpolation_rejects_bad_inputs(function, z0, z1, steps, match):
    with pytest.raises(ValueError, match=match):
        function(z0, z1, steps)


def test_slerp_endpoints_exact_for_generic_codes():
    rng = np.random.default_rng(2)
    z0, z1 = rng.normal(size=16), rng.normal(size=16)
    path = grids.slerp(z0, z1, 7)
    assert path.shape == (7, 16)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)


def test_slerp_orthogonal_unit_vectors_stay_on_the_great_circle():
    a, b = _orthonormal_pair(8)
    path = grids.slerp(a, b, 9)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.ones(9), atol=1e-6)
    # Midpoint of a quarter circle: sin(pi/4) (a + b) / sin(pi/2) = (a + b) / sqrt(2).
    np.testing.assert_allclose(path[4], (a + b) / np.sqrt(2.0), atol=1e-6)
    # Constant angular speed: 8 equal steps of (pi/2) / 8 between neighbours.
    cosines = np.sum(path[:-1] * path[1:], axis=1)
    np.testing.assert_allclose(cosines, np.full(8, np.cos(np.pi / 16)), atol=1e-6)
    # Stays in span(a, b): the coefficient on a is cos(t pi/2).
    np.testing.assert_allclose(path @ a, np.cos(np.linspace(0, np.pi / 2, 9)), atol=1e-6)


def test_slerp_scaled_codes_match_white_formula():
    # Non-unit codes at 60 degrees: z(t) = [sin((1-t)w) z0 + sin(t w) z1] / sin(w), w = pi/3.
    z0 = np.array([2.0, 0.0])
    z1 = np.array([0.5, 0.5 * np.sqrt(3.0)])  # norm 1, angle pi/3 to z0
    path = grids.slerp(z0, z1, 3)
    w = np.pi / 3
    expected_mid = (np.sin(w / 2) * z0 + np.sin(w / 2) * z1) / np.sin(w)
    np.testing.assert_allclose(path[1], expected_mid, atol=1e-12)


def test_slerp_identical_zero_and_antiparallel_codes_fall_back_to_lerp():
    z = np.array([0.3, -1.2, 2.0], dtype=np.float32)
    same = grids.slerp(z, z, 5)
    assert not np.isnan(same).any()
    np.testing.assert_array_equal(same, np.tile(z, (5, 1)))
    # Antiparallel: the great circle is not unique; lerp passes through the origin.
    opposite = grids.slerp(z, -z, 3)
    assert not np.isnan(opposite).any()
    np.testing.assert_allclose(opposite[1], np.zeros(3), atol=1e-7)
    # A zero code has no direction: lerp.
    from_zero = grids.slerp(np.zeros(3), np.array([2.0, 4.0, 6.0]), 3)
    np.testing.assert_array_equal(from_zero[1], [1.0, 2.0, 3.0])
    # Nearly parallel (angle 1e-9): no blow-up, within 1e-9 of lerp.
    near = np.array([1.0, 1e-9, 0.0])
    np.testing.assert_allclose(
        grids.slerp(np.array([1.0, 0.0, 0.0]), near, 4),
        grids.lerp(np.array([1.0, 0.0, 0.0]), near, 4),
        atol=1e-9,
    )


def test_interpolate_dispatches_and_rejects_unknown_method():
    a, b = _orthonormal_pair(4, seed=3)
    np.testing.assert_array_equal(grids.interpolate(a, b, 5), grids.lerp(a, b, 5))
    np.testing.assert_array_equal(grids.interpolate(a, b, 5, method="slerp"), grids.slerp(a, b, 5))
    with pytest.raises(ValueError, match=r"Expected `method` .* Received: method='cubic'"):
        grids.interpolate(a, b, 5, method="cubic")


# ----------------------------------------------------------------------------
# traversal


def test_traversal_values_default():
    values = grids.traversal_values()
    # linspace(-3, 3, 9): step 0.75, the prior mean 0 in the middle.
    np.testing.assert_allclose(values, np.arange(-3.0, 3.01, 0.75), atol=1e-12)
    assert values[4] == 0.0
    with pytest.raises(ValueError, match=r"Expected low < high. Received: low=1.0, high=1.0"):
        grids.traversal_values(1.0, 1.0)


def test_traversal_rows_change_exactly_one_coordinate():
    z = np.random.default_rng(4).normal(size=10).astype(np.float32)
    z_before = z.copy()
    dims = [3, 0, 9, 3]
    values = np.linspace(-3.0, 3.0, 7)
    codes = grids.traversal(z, dims, values)
    assert codes.shape == (4, 7, 10)
    assert codes.dtype == np.float32
    for r, d in enumerate(dims):
        others = np.delete(codes[r], d, axis=1)  # (7, 9)
        # Every other coordinate is bitwise the base code's.
        assert np.array_equal(others, np.tile(np.delete(z, d), (7, 1)))
        np.testing.assert_array_equal(codes[r, :, d], values.astype(np.float32))
    assert np.array_equal(z, z_before)  # the base code is not modified


@pytest.mark.parametrize(
    "z, dims, values, match",
    [
        (np.zeros(4), [4], np.zeros(3), r"Expected `dims` .* \[0, 4\). Received: dims=\[4\]"),
        (np.zeros(4), [-1], np.zeros(3), r"Expected `dims` .* Received: dims=\[-1\]"),
        (np.zeros(4), [], np.zeros(3), r"Expected `dims` .* Received: dims=\[\]"),
        (np.zeros(4), [0.5], np.zeros(3), r"Expected `dims` .* Received: dims=\[0.5\]"),
        (np.zeros((2, 4)), [0], np.zeros(3), r"Expected `z` .* Received: z.shape=\(2, 4\)"),
        (np.zeros(4), [0], np.zeros((3, 1)), r"Expected `values` .* Received: values.shape"),
    ],
)
def test_traversal_rejects_bad_inputs(z, dims, values, match):
    with pytest.raises(ValueError, match=match):
        grids.traversal(z, dims, values)


# ----------------------------------------------------------------------------
# tile / tile_rows / to_uint8


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


def test_manifold_axis_quantiles():
    axis = grids.manifold_axis(5)
    # linspace(0.05, 0.95, 5) = [0.05, 0.275, 0.5, 0.725, 0.95] through Phi^-1.
    np.testing.assert_allclose(
        axis, [PPF_005, PPF_0275, 0.0, -PPF_0275, -PPF_005], rtol=0, atol=1e-12
    )
    assert axis[2] == 0.0  # symmetric quantiles: the prior mean exactly
    np.testing.assert_array_equal(axis, -axis[::-1])
    # Asymmetric range: Phi^-1(0.5) = 0 and Phi^-1(0.95) = -Phi^-1(0.05).
    np.testing.assert_allclose(grids.manifold_axis(2, 0.5, 0.95), [0.0, -PPF_005], atol=1e-12)


def test_manifold_grid_row_major_with_z2_decreasing_down_the_rows():
    n = 5
    codes = grids.manifold_grid(n)
    assert codes.shape == (n * n, 2)
    axis = grids.manifold_axis(n)
    # Corners: top-left (low z1, high z2) ... bottom-right (high z1, low z2).
    np.testing.assert_allclose(codes[0], [PPF_005, -PPF_005], atol=1e-12)
    np.testing.assert_allclose(codes[n - 1], [-PPF_005, -PPF_005], atol=1e-12)
    np.testing.assert_allclose(codes[n * (n - 1)], [PPF_005, PPF_005], atol=1e-12)
    np.testing.assert_allclose(codes[-1], [-PPF_005, PPF_005], atol=1e-12)
    # codes[i * n + j] = (axis[j], axis[n - 1 - i]).
    cells = codes.reshape(n, n, 2)
    np.testing.assert_array_equal(cells[:, :, 0], np.tile(axis, (n, 1)))
    np.testing.assert_array_equal(cells[:, :, 1], np.tile(axis[::-1, None], (1, n)))
    np.testing.assert_array_equal(codes[n * 2 + 2], [0.0, 0.0])  # the centre is the prior mean


@pytest.mark.parametrize(
    "n, low_q, high_q, match",
    [
        (1, 0.05, 0.95, r"Expected `n` .* Received: n=1"),
        (5, 0.0, 0.95, r"Expected 0 < low_q < high_q < 1. Received: low_q=0.0, high_q=0.95"),
        (5, 0.05, 1.0, r"Received: low_q=0.05, high_q=1.0"),
        (5, 0.6, 0.4, r"Received: low_q=0.6, high_q=0.4"),
    ],
)
def test_manifold_rejects_bad_arguments(n, low_q, high_q, match):
    with pytest.raises(ValueError, match=match):
        grids.manifold_grid(n, low_q, high_q)


# ----------------------------------------------------------------------------
# order_by_kl / principal_directions / attribute_vector


def test_order_by_kl_descending_and_stable_for_ties():
    kl = np.array([0.1, 2.0, 0.0, 2.0, 0.5, 0.1])
    # 2.0 (dims 1, 3 in index order), 0.5 (4), 0.1 (0, 5), 0.0 (2).
    np.testing.assert_array_equal(grids.order_by_kl(kl), [1, 3, 4, 0, 5, 2])
    np.testing.assert_array_equal(grids.order_by_kl(np.full(6, 0.3)), np.arange(6))
    with pytest.raises(ValueError, match=r"Expected `kl_per_dim` to be a 1-D .*shape=\(2, 3\)"):
        grids.order_by_kl(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"without NaN"):
        grids.order_by_kl([0.1, np.nan])


def test_principal_directions_recover_a_stretched_axis():
    rng = np.random.default_rng(5)
    axis = np.array([1.0, -2.0, 0.0, 0.5, 1.0])
    axis /= np.linalg.norm(axis)
    # Std 5 along `axis`, 0.1 isotropic noise, offset mean (centring must remove it).
    means = 5.0 * rng.normal(size=(400, 1)) * axis + 0.1 * rng.normal(size=(400, 5)) + 3.0
    directions = grids.principal_directions(means, 3)
    assert directions.shape == (3, 5)
    assert abs(directions[0] @ axis) > 0.99
    np.testing.assert_allclose(directions @ directions.T, np.eye(3), atol=1e-10)
    # Sign convention: the largest-magnitude component of each direction is positive.
    pivots = np.argmax(np.abs(directions), axis=1)
    assert np.all(directions[np.arange(3), pivots] > 0)
    # Here the largest |component| of `axis` is the -2, so the result is -axis.
    assert directions[0] @ axis < -0.99


def test_principal_directions_golden_and_sign_invariant():
    # Spread 2 along x, 1 along y: principal axes (1, 0) then (0, 1), signs fixed positive.
    means = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    expected = np.eye(2)
    np.testing.assert_allclose(grids.principal_directions(means, 2), expected, atol=1e-12)
    np.testing.assert_allclose(grids.principal_directions(-means, 2), expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"Expected `k` .* \[1, 2\]. Received: k=3"):
        grids.principal_directions(means, 3)
    with pytest.raises(ValueError, match=r"Expected at least 2 codes. Received: means.shape"):
        grids.principal_directions(means[:1], 1)


def test_attribute_vector_golden():
    means = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [20.0, 10.0]])
    mask = np.array([True, True, False, False])
    # mean with = (2, 3), mean without = (15, 5): (2 - 15, 3 - 5) = (-13, -2).
    np.testing.assert_array_equal(grids.attribute_vector(means, mask), [-13.0, -2.0])
    with pytest.raises(ValueError, match=r"Expected both groups non-empty .* 4 True of 4"):
        grids.attribute_vector(means, np.ones(4, bool))
    with pytest.raises(ValueError, match=r"Expected both groups .* Received: 0 True of 4"):
        grids.attribute_vector(means, np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"Expected `mask` .* mask.dtype=int64"):
        grids.attribute_vector(means, np.array([1, 1, 0, 0]))
    with pytest.raises(ValueError, match=r"Expected `mask` .* Received: mask.shape=\(3,\)"):
        grids.attribute_vector(means, mask[:3])
