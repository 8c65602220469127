"""Latent-space walks, as pure NumPy functions: interpolations between two
codes, per-dimension traversals, the 2-D manifold of Kingma & Welling (2013)
and latent directions (principal axes, attribute vectors). `keras_vae.grids`
tiles the decoded walks into pictures.

Conventions (those of `keras_vae.grids`): NumPy in and out; latent codes are
1-D `(D,)`, walks are `(steps, D)` and grids of codes are flattened row-major
so that `grids.tile(decode(codes), rows=R, cols=K)` draws them in order.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

INTERPOLATION_METHODS = ("linear", "slerp")

# Below this sine of the angle between two codes slerp's great circle is
# ill-defined (parallel or antiparallel vectors) and we fall back to lerp.
_SLERP_MIN_SIN = 1e-6


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise ValueError(f"Expected `steps` to be an integer >= 2. Received: steps={steps!r}")
    return int(steps)


def _check_code_pair(z0, z1) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Validates two latent codes (D,); returns them as float64 and the output dtype."""
    z0, z1 = np.asarray(z0), np.asarray(z1)
    if z0.ndim != 1 or z0.shape != z1.shape or z0.shape[0] == 0:
        raise ValueError(
            "Expected `z0` and `z1` to be 1-D codes of the same non-zero length (D,). "
            f"Received: z0.shape={z0.shape}, z1.shape={z1.shape}"
        )
    # float32 codes stay float32, float64 stay float64, integers become float64.
    dtype = np.result_type(z0.dtype, z1.dtype, np.float32)
    return z0.astype(np.float64), z1.astype(np.float64), dtype


# ----------------------------------------------------------------------------
# Interpolation.


def lerp(z0, z1, steps) -> np.ndarray:
    """Linear interpolation between two codes, endpoints included.

    z(t) = (1 - t) z0 + t z1 for t = linspace(0, 1, steps).

    Args:
        z0: `(D,)` start code.
        z1: `(D,)` end code.
        steps: number of points, >= 2.

    Returns:
        `(steps, D)`; row 0 is exactly `z0`, row `steps - 1` exactly `z1`.
        float32 if both codes are float32, else float64.

    Raises:
        ValueError: codes not 1-D of the same length, or `steps < 2`.
    """
    z0, z1, dtype = _check_code_pair(z0, z1)
    steps = _check_steps(steps)
    return _lerp(z0, z1, steps).astype(dtype)


def _lerp(z0, z1, steps):
    t = np.linspace(0.0, 1.0, steps)[:, None]  # (steps, 1)
    out = (1.0 - t) * z0 + t * z1  # (steps, D)
    out[0], out[-1] = z0, z1
    return out


def slerp(z0, z1, steps) -> np.ndarray:
    """Spherical linear interpolation between two codes, endpoints included.

    z(t) = sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1, with w the angle
    between z0 and z1 (Shoemake 1985; White 2016). For unit vectors the path
    is the great circle arc and every point has unit norm; for other vectors
    the formula is applied as is (White's use for Gaussian codes, which keeps
    the points near the prior's typical shell instead of cutting through the
    low-norm middle as `lerp` does).

    Degenerate cases fall back to `lerp` (no NaN): a zero code, nearly equal
    directions (w ~ 0, where lerp is the limit of slerp) and antiparallel
    codes (w ~ pi, where the great circle is not unique; the lerp path then
    passes through the origin, e.g. z and -z meet at 0).

    Args:
        z0: `(D,)` start code.
        z1: `(D,)` end code.
        steps: number of points, >= 2.

    Returns:
        `(steps, D)`; row 0 is exactly `z0`, row `steps - 1` exactly `z1`.
        float32 if both codes are float32, else float64.

    Raises:
        ValueError: codes not 1-D of the same length, or `steps < 2`.

    Reference:
        Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985.
        White, "Sampling Generative Networks", arXiv:1609.04468, 2016.
    """
    z0, z1, dtype = _check_code_pair(z0, z1)
    steps = _check_steps(steps)
    norm0, norm1 = np.linalg.norm(z0), np.linalg.norm(z1)
    if norm0 == 0.0 or norm1 == 0.0:
        return _lerp(z0, z1, steps).astype(dtype)
    u0, u1 = z0 / norm0, z1 / norm1
    # Kahan's angle formula: accurate near 0 and pi, where arccos(dot) is not.
    omega = 2.0 * np.arctan2(np.linalg.norm(u0 - u1), np.linalg.norm(u0 + u1))
    sin_omega = np.sin(omega)
    if sin_omega < _SLERP_MIN_SIN:
        return _lerp(z0, z1, steps).astype(dtype)
    t = np.linspace(0.0, 1.0, steps)[:, None]  # (steps, 1)
    out = (np.sin((1.0 - t) * omega) * z0 + np.sin(t * omega) * z1) / sin_omega  # (steps, D)
    out[0], out[-1] = z0, z1
    return out.astype(dtype)


def interpolate(z0, z1, steps, method="linear") -> np.ndarray:
    """Interpolates between two codes with `lerp` or `slerp`.

    Args:
        z0: `(D,)` start code.
        z1: `(D,)` end code.
        steps: number of points, >= 2.
        method: `"linear"` or `"slerp"`.

    Returns:
        `(steps, D)`, endpoints exactly `z0` and `z1`.

    Raises:
        ValueError: an unknown method, or bad codes / steps.
    """
    if method == "linear":
        return lerp(z0, z1, steps)
    if method == "slerp":
        return slerp(z0, z1, steps)
    raise ValueError(
        f"Expected `method` to be one of {INTERPOLATION_METHODS}. Received: method={method!r}"
    )


# ----------------------------------------------------------------------------
# Traversals and the 2-D manifold.


def traversal_values(low=-3.0, high=3.0, steps=9) -> np.ndarray:
    """Evenly spaced values for a latent traversal, `linspace(low, high, steps)`.

    The default covers +-3 prior standard deviations with the prior mean (0)
    in the middle column.

    Args:
        low: first value.
        high: last value, > low.
        steps: number of values, >= 2.

    Returns:
        `(steps,)` float64.

    Raises:
        ValueError: `steps < 2` or `low >= high`.
    """
    steps = _check_steps(steps)
    if not low < high:
        raise ValueError(f"Expected low < high. Received: low={low!r}, high={high!r}")
    return np.linspace(low, high, steps)


def traversal(z, dims, values) -> np.ndarray:
    """Codes for a latent traversal: one dimension varied per row.

    Row `r` sets coordinate `dims[r]` to each of `values` in turn; every other
    coordinate stays exactly as in `z`. Decode the `(R * K, D)` reshape and
    `tile(..., rows=R, cols=K)` (or `tile_rows`) to draw the figure.

    Args:
        z: `(D,)` base code (e.g. the posterior mean of one image, or zeros).
        dims: sequence of R latent indices in `[0, D)`; repeats are allowed.
        values: `(K,)` values, e.g. `traversal_values()`.

    Returns:
        `(R, K, D)`, dtype of `z` if floating (else float64); `values` are
        cast to it.

    Raises:
        ValueError: `z` not 1-D, `values` not 1-D or empty, `dims` empty or
            out of range.
    """
    z = np.asarray(z)
    if z.ndim != 1 or z.shape[0] == 0:
        raise ValueError(f"Expected `z` to be a 1-D code (D,). Received: z.shape={z.shape}")
    values = np.asarray(values)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(
            "Expected `values` to be a non-empty 1-D array (K,). "
            f"Received: values.shape={values.shape}"
        )
    dims_array = np.asarray(dims)
    latent_dim = z.shape[0]
    if (
        dims_array.ndim != 1
        or dims_array.shape[0] == 0
        or not np.issubdtype(dims_array.dtype, np.integer)
        or dims_array.min() < 0
        or dims_array.max() >= latent_dim
    ):
        raise ValueError(
            f"Expected `dims` to be a non-empty sequence of integers in [0, {latent_dim}). "
            f"Received: dims={dims!r}"
        )
    dtype = np.result_type(z.dtype, np.float32)
    num_rows, num_values = dims_array.shape[0], values.shape[0]
    out = np.broadcast_to(z.astype(dtype), (num_rows, num_values, latent_dim)).copy()  # (R, K, D)
    out[np.arange(num_rows), :, dims_array] = values.astype(dtype)
    return out


def manifold_axis(n, low_q=0.05, high_q=0.95) -> np.ndarray:
    """Gaussian quantiles along one axis of the 2-D manifold, increasing.

    `Phi^-1(linspace(low_q, high_q, n))`, with Phi the standard normal CDF,
    so equal areas of prior mass lie between neighbours (Kingma & Welling
    2013, Fig. 4). Use as tick values for the manifold figure. When
    `low_q + high_q == 1` the axis is exactly antisymmetric (odd `n`: the
    middle value is exactly 0).

    Args:
        n: number of points, >= 2.
        low_q: lowest quantile, in (0, 1).
        high_q: highest quantile, in (low_q, 1).

    Returns:
        `(n,)` float64, increasing.

    Raises:
        ValueError: `n < 2` or quantiles not `0 < low_q < high_q < 1`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"Expected `n` to be an integer >= 2. Received: n={n!r}")
    if not 0.0 < low_q < high_q < 1.0:
        raise ValueError(
            f"Expected 0 < low_q < high_q < 1. Received: low_q={low_q!r}, high_q={high_q!r}"
        )
    normal = statistics.NormalDist()
    axis = np.array([normal.inv_cdf(q) for q in np.linspace(low_q, high_q, int(n))])  # (n,)
    if math.isclose(low_q + high_q, 1.0, rel_tol=0.0, abs_tol=1e-12):
        # Symmetric quantiles: make the axis exactly antisymmetric (the middle of an
        # odd axis exactly 0, the prior mean) despite linspace round-off.
        axis = 0.5 * (axis - axis[::-1])
    return axis


def manifold_grid(n, low_q=0.05, high_q=0.95) -> np.ndarray:
    """Codes of the 2-D latent manifold figure, laid out like a plot.

    An n x n grid of codes at Gaussian quantiles (see `manifold_axis`),
    flattened row-major: row `i`, column `j` of the figure is
    `codes[i * n + j] = (axis[j], axis[n - 1 - i])`, i.e. z1 increases to the
    right and z2 decreases down the rows (z2 points up, as on a plot). So
    `tile(decode(codes), rows=n, cols=n)` draws the figure directly.

    Args:
        n: points per axis, >= 2.
        low_q: lowest quantile, in (0, 1).
        high_q: highest quantile, in (low_q, 1).

    Returns:
        `(n * n, 2)` float64, columns (z1, z2).

    Raises:
        ValueError: as `manifold_axis`.

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", arXiv:1312.6114,
        2013, Fig. 4.
    """
    axis = manifold_axis(n, low_q, high_q)  # (n,)
    z1, z2 = np.meshgrid(axis, axis[::-1])  # (n, n) each; z2 decreasing down rows
    return np.stack([z1.ravel(), z2.ravel()], axis=-1)  # (n*n, 2)


# ----------------------------------------------------------------------------
# Latent directions.


def order_by_kl(kl_per_dim) -> np.ndarray:
    """Latent indices from most to least informative (descending KL).

    Ties keep their index order (stable sort), so the result is
    deterministic.

    Args:
        kl_per_dim: `(D,)` KL(q(z_d|x) || p(z_d)) averaged over data, nats.

    Returns:
        `(D,)` int64 permutation of `range(D)`.

    Raises:
        ValueError: not 1-D, or NaN values.
    """
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    if kl.ndim != 1:
        raise ValueError(
            f"Expected `kl_per_dim` to be a 1-D array (D,). Received: kl_per_dim.shape={kl.shape}"
        )
    if np.isnan(kl).any():
        raise ValueError(f"Expected `kl_per_dim` without NaN. Received: kl_per_dim={kl}")
    return np.argsort(-kl, kind="stable").astype(np.int64)


def _check_means(means) -> np.ndarray:
    means = np.asarray(means)
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(
            f"Expected `means` to be a 2-D array (N, D) with N, D >= 1. "
            f"Received: means.shape={means.shape}"
        )
    return means.astype(np.float64)


def principal_directions(means, k) -> np.ndarray:
    """Top-k principal axes of a set of latent codes.

    Right singular vectors of the centred codes, ordered by decreasing
    variance, unit norm. A singular vector's sign is arbitrary, so each is
    flipped to make its largest-magnitude component positive (first such
    component on ties): the result is deterministic.

    Args:
        means: `(N, D)` codes, e.g. posterior means of N images, N >= 2.
        k: number of directions, `1 <= k <= min(N, D)`.

    Returns:
        `(k, D)` float64, orthonormal rows.

    Raises:
        ValueError: bad shape, N < 2, or k out of range.
    """
    means = _check_means(means)
    num, latent_dim = means.shape
    if num < 2:
        raise ValueError(f"Expected at least 2 codes. Received: means.shape={means.shape}")
    if (
        isinstance(k, bool)
        or not isinstance(k, (int, np.integer))
        or not 1 <= k <= min(num, latent_dim)
    ):
        raise ValueError(
            f"Expected `k` to be an integer in [1, min(N, D)] = [1, {min(num, latent_dim)}]. "
            f"Received: k={k!r}"
        )
    centred = means - means.mean(axis=0)  # (N, D)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)  # vt: (min(N, D), D)
    directions = vt[:k]  # (k, D)
    pivots = np.argmax(np.abs(directions), axis=1)  # (k,)
    signs = np.sign(directions[np.arange(k), pivots])  # (k,), never 0 for unit rows
    return directions * signs[:, None]


def attribute_vector(means, mask) -> np.ndarray:
    """Attribute direction: mean code with the attribute minus mean without.

    White (2016), "attribute vectors": adding it to a code adds the attribute.

    Args:
        means: `(N, D)` codes.
        mask: `(N,)` bool, True where the image has the attribute.

    Returns:
        `(D,)` float64, `mean(means[mask]) - mean(means[~mask])`.

    Raises:
        ValueError: bad shapes, a non-bool mask, or an empty group.
    """
    means = _check_means(means)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != (means.shape[0],):
        raise ValueError(
            f"Expected `mask` to be a bool array of shape ({means.shape[0]},). "
            f"Received: mask.shape={mask.shape}, mask.dtype={mask.dtype}"
        )
    num_with = int(mask.sum())
    if num_with == 0 or num_with == mask.shape[0]:
        raise ValueError(
            "Expected both groups non-empty (some True and some False in `mask`). "
            f"Received: {num_with} True of {mask.shape[0]}"
        )
    return means[mask].mean(axis=0) - means[~mask].mean(axis=0)


__all__ = [
    "INTERPOLATION_METHODS",
    "attribute_vector",
    "interpolate",
    "lerp",
    "manifold_axis",
    "manifold_grid",
    "order_by_kl",
    "principal_directions",
    "slerp",
    "traversal",
    "traversal_values",
]
