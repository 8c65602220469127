"""Tests for keras_vae.latent_grids: the recipes TensorBoard and figures share."""

import numpy as np

from keras_vae import latent_grids


def test_choose_pairs():
    np.testing.assert_array_equal(latent_grids.choose_pairs(7, 4), [[0, 1], [2, 3], [4, 5]])
    # Each image joins the next unused one of another label.
    np.testing.assert_array_equal(
        latent_grids.choose_pairs(6, 3, labels=[0, 0, 1, 1, 0, 2]), [[0, 2], [1, 3], [4, 5]]
    )
    # One label only: consecutive pairs.
    np.testing.assert_array_equal(latent_grids.choose_pairs(4, 2, labels=[5] * 4), [[0, 1], [2, 3]])


def test_active_units_threshold():
    # Posterior means of 3 images: dim 0 varies (var 2/3), dim 1 barely
    # (var 0.0002 / 3), ddof=0 as evaluation.active_units.
    means = np.array([[-1.0, 0.0], [0.0, 0.01], [1.0, 0.02]])
    count, variances = latent_grids.active_units(means)
    np.testing.assert_allclose(variances, [2 / 3, 2e-4 / 3])
    assert count == 1
