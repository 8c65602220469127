"""Tests for keras_vae.walks: interpolation, traversal, manifold, latent directions (NumPy)."""

import numpy as np
import pytest

from keras_vae import walks

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
    path = walks.lerp(z0, z1, 5)
    assert path.shape == (5, 6)
    assert path.dtype == np.float32
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    # t = 0.5 at index 2 of linspace(0, 1, 5).
    np.testing.assert_allclose(path[2], (z0 + z1) / 2, atol=1e-6)
    # Evenly spaced: consecutive differences all equal (z1 - z0) / 4.
    np.testing.assert_allclose(np.diff(path, axis=0), np.tile((z1 - z0) / 4, (4, 1)), atol=1e-6)


def test_lerp_integer_codes_become_float64():
    path = walks.lerp([0, 0], [4, 8], 3)
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
@pytest.mark.parametrize("function", [walks.lerp, walks.slerp])
def test_interpolation_rejects_bad_inputs(function, z0, z1, steps, match):
    with pytest.raises(ValueError, match=match):
        function(z0, z1, steps)


def test_slerp_endpoints_exact_for_generic_codes():
    rng = np.random.default_rng(2)
    z0, z1 = rng.normal(size=16), rng.normal(size=16)
    path = walks.slerp(z0, z1, 7)
    assert path.shape == (7, 16)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)


def test_slerp_orthogonal_unit_vectors_stay_on_the_great_circle():
    a, b = _orthonormal_pair(8)
    path = walks.slerp(a, b, 9)
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
    path = walks.slerp(z0, z1, 3)
    w = np.pi / 3
    expected_mid = (np.sin(w / 2) * z0 + np.sin(w / 2) * z1) / np.sin(w)
    np.testing.assert_allclose(path[1], expected_mid, atol=1e-12)


def test_slerp_identical_zero_and_antiparallel_codes_fall_back_to_lerp():
    z = np.array([0.3, -1.2, 2.0], dtype=np.float32)
    same = walks.slerp(z, z, 5)
    assert not np.isnan(same).any()
    np.testing.assert_array_equal(same, np.tile(z, (5, 1)))
    # Antiparallel: the great circle is not unique; lerp passes through the origin.
    opposite = walks.slerp(z, -z, 3)
    assert not np.isnan(opposite).any()
    np.testing.assert_allclose(opposite[1], np.zeros(3), atol=1e-7)
    # A zero code has no direction: lerp.
    from_zero = walks.slerp(np.zeros(3), np.array([2.0, 4.0, 6.0]), 3)
    np.testing.assert_array_equal(from_zero[1], [1.0, 2.0, 3.0])
    # Nearly parallel (angle 1e-9): no blow-up, within 1e-9 of lerp.
    near = np.array([1.0, 1e-9, 0.0])
    np.testing.assert_allclose(
        walks.slerp(np.array([1.0, 0.0, 0.0]), near, 4),
        walks.lerp(np.array([1.0, 0.0, 0.0]), near, 4),
        atol=1e-9,
    )


def test_interpolate_dispatches_and_rejects_unknown_method():
    a, b = _orthonormal_pair(4, seed=3)
    np.testing.assert_array_equal(walks.interpolate(a, b, 5), walks.lerp(a, b, 5))
    np.testing.assert_array_equal(walks.interpolate(a, b, 5, method="slerp"), walks.slerp(a, b, 5))
    with pytest.raises(ValueError, match=r"Expected `method` .* Received: method='cubic'"):
        walks.interpolate(a, b, 5, method="cubic")


# ----------------------------------------------------------------------------
# traversal


def test_traversal_values_default():
    values = walks.traversal_values()
    # linspace(-3, 3, 9): step 0.75, the prior mean 0 in the middle.
    np.testing.assert_allclose(values, np.arange(-3.0, 3.01, 0.75), atol=1e-12)
    assert values[4] == 0.0
    with pytest.raises(ValueError, match=r"Expected low < high. Received: low=1.0, high=1.0"):
        walks.traversal_values(1.0, 1.0)


def test_traversal_rows_change_exactly_one_coordinate():
    z = np.random.default_rng(4).normal(size=10).astype(np.float32)
    z_before = z.copy()
    dims = [3, 0, 9, 3]
    values = np.linspace(-3.0, 3.0, 7)
    codes = walks.traversal(z, dims, values)
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
        walks.traversal(z, dims, values)


# ----------------------------------------------------------------------------
# tile / tile_rows / to_uint8


def test_manifold_axis_quantiles():
    axis = walks.manifold_axis(5)
    # linspace(0.05, 0.95, 5) = [0.05, 0.275, 0.5, 0.725, 0.95] through Phi^-1.
    np.testing.assert_allclose(
        axis, [PPF_005, PPF_0275, 0.0, -PPF_0275, -PPF_005], rtol=0, atol=1e-12
    )
    assert axis[2] == 0.0  # symmetric quantiles: the prior mean exactly
    np.testing.assert_array_equal(axis, -axis[::-1])
    # Asymmetric range: Phi^-1(0.5) = 0 and Phi^-1(0.95) = -Phi^-1(0.05).
    np.testing.assert_allclose(walks.manifold_axis(2, 0.5, 0.95), [0.0, -PPF_005], atol=1e-12)


def test_manifold_grid_row_major_with_z2_decreasing_down_the_rows():
    n = 5
    codes = walks.manifold_grid(n)
    assert codes.shape == (n * n, 2)
    axis = walks.manifold_axis(n)
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
        walks.manifold_grid(n, low_q, high_q)


# ----------------------------------------------------------------------------
# order_by_kl / principal_directions / attribute_vector


def test_order_by_kl_descending_and_stable_for_ties():
    kl = np.array([0.1, 2.0, 0.0, 2.0, 0.5, 0.1])
    # 2.0 (dims 1, 3 in index order), 0.5 (4), 0.1 (0, 5), 0.0 (2).
    np.testing.assert_array_equal(walks.order_by_kl(kl), [1, 3, 4, 0, 5, 2])
    np.testing.assert_array_equal(walks.order_by_kl(np.full(6, 0.3)), np.arange(6))
    with pytest.raises(ValueError, match=r"Expected `kl_per_dim` to be a 1-D .*shape=\(2, 3\)"):
        walks.order_by_kl(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"without NaN"):
        walks.order_by_kl([0.1, np.nan])


def test_principal_directions_recover_a_stretched_axis():
    rng = np.random.default_rng(5)
    axis = np.array([1.0, -2.0, 0.0, 0.5, 1.0])
    axis /= np.linalg.norm(axis)
    # Std 5 along `axis`, 0.1 isotropic noise, offset mean (centring must remove it).
    means = 5.0 * rng.normal(size=(400, 1)) * axis + 0.1 * rng.normal(size=(400, 5)) + 3.0
    directions = walks.principal_directions(means, 3)
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
    np.testing.assert_allclose(walks.principal_directions(means, 2), expected, atol=1e-12)
    np.testing.assert_allclose(walks.principal_directions(-means, 2), expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"Expected `k` .* \[1, 2\]. Received: k=3"):
        walks.principal_directions(means, 3)
    with pytest.raises(ValueError, match=r"Expected at least 2 codes. Received: means.shape"):
        walks.principal_directions(means[:1], 1)


def test_attribute_vector_golden():
    means = np.array([[1.0, 2.0], [3.0, 4.0], [10.0, 0.0], [20.0, 10.0]])
    mask = np.array([True, True, False, False])
    # mean with = (2, 3), mean without = (15, 5): (2 - 15, 3 - 5) = (-13, -2).
    np.testing.assert_array_equal(walks.attribute_vector(means, mask), [-13.0, -2.0])
    with pytest.raises(ValueError, match=r"Expected both groups non-empty .* 4 True of 4"):
        walks.attribute_vector(means, np.ones(4, bool))
    with pytest.raises(ValueError, match=r"Expected both groups .* Received: 0 True of 4"):
        walks.attribute_vector(means, np.zeros(4, bool))
    with pytest.raises(ValueError, match=r"Expected `mask` .* mask.dtype=int64"):
        walks.attribute_vector(means, np.array([1, 1, 0, 0]))
    with pytest.raises(ValueError, match=r"Expected `mask` .* Received: mask.shape=\(3,\)"):
        walks.attribute_vector(means, mask[:3])
