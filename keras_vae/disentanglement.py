"""Disentanglement metrics on data with known factors (the built-in shapes).

The Mutual Information Gap (Chen et al. 2018, "Isolating Sources of
Disentanglement in VAEs") as disentanglement_lib computes it (Locatello et
al. 2019): codes discretized into 20 equal-width bins per dimension, the
discrete mutual information with each factor, the gap between the two most
informative dimensions normalised by the factor's entropy. NumPy only, the
way the reference computes it.
"""

from __future__ import annotations

import numpy as np
from absl import logging
from keras import ops

from keras_vae.data import shapes as shapes_lib


def histogram_discretize(values, num_bins=20):
    """Discretizes each column into `num_bins` equal-width bins over its range.

    As disentanglement_lib's `_histogram_discretize` (it works on the
    transposed `(num_codes, N)` array): bin edges from `np.histogram`, bin
    index by `np.digitize` against the lower edges, so values are in
    [1, num_bins].

    Args:
        values: `(N, num_columns)` array.
        num_bins: bins per column.

    Returns:
        `(N, num_columns)` int64 array.
    """
    values = np.asarray(values)
    out = np.zeros(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        edges = np.histogram(values[:, j], num_bins)[1]
        out[:, j] = np.digitize(values[:, j], edges[:-1])
    return out


def discrete_mutual_information(a, b):
    """Mutual information of two discrete variables from their samples, in nats.

    I(a; b) = sum_ij p_ij log(p_ij / (p_i p_j)) with the empirical joint
    p_ij = n_ij / N of the contingency table; the same value as
    `sklearn.metrics.mutual_info_score(a, b)`. I(a; a) is the entropy H(a).

    Args:
        a, b: `(N,)` arrays of labels (any hashable values NumPy can sort).

    Returns:
        float >= 0.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"Expected two non-empty label arrays of one length. Received: {a.shape} and {b.shape}"
        )
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = int(ai.max()) + 1, int(bi.max()) + 1
    # The contingency table n_ij, (na, nb).
    joint = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = joint.sum()
    pi = joint.sum(axis=1, keepdims=True) / n  # (na, 1)
    pj = joint.sum(axis=0, keepdims=True) / n  # (1, nb)
    pij = joint / n
    nz = pij > 0
    return float(max(0.0, np.sum(pij[nz] * np.log(pij[nz] / (pi @ pj)[nz]))))


def mutual_information_matrix(codes, factors, num_bins=20):
    """I(discretized code_i; factor_j) for every pair, in nats.

    Args:
        codes: `(N, num_codes)` continuous representation (posterior means).
        factors: `(N, num_factors)` discrete ground-truth factors.
        num_bins: histogram bins per code dimension.

    Returns:
        `(num_codes, num_factors)` float64 array.
    """
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(
            "Expected `codes` (N, num_codes) and `factors` (N, num_factors) with the same N. "
            f"Received: codes.shape={codes.shape}, factors.shape={factors.shape}"
        )
    discrete = histogram_discretize(codes, num_bins)
    return np.array(
        [
            [
                discrete_mutual_information(discrete[:, i], factors[:, j])
                for j in range(factors.shape[1])
            ]
            for i in range(discrete.shape[1])
        ]
    )


def mutual_information_gap(codes, factors, num_bins=20):
    """Mutual Information Gap of a representation (Chen et al. 2018, eq. 6).

        MIG = 1/K sum_k (I(v_k; z_j(k)) - max_{j != j(k)} I(v_k; z_j)) / H(v_k),

    j(k) = argmax_j I(v_k; z_j), with the disentanglement_lib protocol: each
    code dimension is discretized into `num_bins` equal-width bins over its
    range (`histogram_discretize`) and the mutual information is the discrete
    one of the contingency table (`discrete_mutual_information`).

    A factor that takes a single value over the N points has H(v_k) = 0 and
    is skipped (disentanglement_lib would divide by zero). Note the ceiling
    this protocol puts on factors with more than `num_bins` values: a perfect
    copy of dSprites' 32 positions keeps at most log 20 / log 32 ~ 0.86 of
    their entropy.

    Args:
        codes: `(N, num_codes)`, num_codes >= 2, e.g. posterior means.
        factors: `(N, num_factors)` discrete ground-truth factors.
        num_bins: histogram bins per code dimension (20 in disentanglement_lib).

    Returns:
        float in [0, 1]: higher is more disentangled.

    Reference:
        Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in
        VAEs", NeurIPS 2018; Locatello et al., "Challenging Common Assumptions
        in the Unsupervised Learning of Disentangled Representations", ICML
        2019 (disentanglement_lib, `mig.py`).
    """
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(
            f"Expected `codes` of shape (N, num_codes >= 2). Received: codes.shape={codes.shape}"
        )
    mi = mutual_information_matrix(codes, factors, num_bins)  # (num_codes, num_factors)
    entropy = np.array(
        [discrete_mutual_information(factors[:, j], factors[:, j]) for j in range(mi.shape[1])]
    )
    varying = entropy > 0
    if not np.any(varying):
        raise ValueError("Every factor is constant over the points: MIG is undefined.")
    if not np.all(varying):
        logging.warning(
            "MIG: skipping %d constant factor(s) (zero entropy).", int(np.sum(~varying))
        )
    top = np.sort(mi[:, varying], axis=0)[::-1]  # (num_codes, F'), descending
    return float(np.mean((top[0] - top[1]) / entropy[varying]))


def compute_mig_on_shapes(model, num_points=10_000, seed=0, batch_size=256, num_bins=20):
    """MIG of a model trained on `shapes`, on fresh samples of the factors.

    Draws `num_points` factor combinations uniformly (each factor index
    independently, as disentanglement_lib's `sample_factors`), renders them
    with `keras_vae.data.shapes.render` at the model's image size, encodes
    them to posterior means and scores `mutual_information_gap` against the
    factor indices.

    Args:
        model: a `VAE` with image shape `(S, S, 1)`.
        num_points: samples (10,000 in disentanglement_lib).
        seed: seed of the factor draw.
        batch_size: images rendered and encoded at a time.
        num_bins: histogram bins per code dimension.

    Returns:
        float MIG in [0, 1].
    """
    height, width, channels = model.image_shape
    if height != width or channels != 1:
        raise ValueError(
            "Expected a model of square single-channel images for `shapes`. "
            f"Received: image_shape={model.image_shape}"
        )
    rng = np.random.default_rng(seed)
    factors = np.stack(
        [rng.integers(0, size, num_points) for size in shapes_lib.FACTOR_SIZES], axis=1
    )  # (N, 5)
    means = []
    for start in range(0, num_points, batch_size):
        images = shapes_lib.render(factors[start : start + batch_size], height)  # (b, S, S, 1)
        mean, _ = model.encode(images)
        means.append(np.asarray(ops.convert_to_numpy(mean), np.float32))
    codes = np.concatenate(means, axis=0)  # (N, latent_dim)
    return mutual_information_gap(codes, factors, num_bins)
