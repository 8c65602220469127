"""Tests for keras_vae.latent_grids: the recipes TensorBoard and figures share."""

import numpy as np
import pytest
from test_evaluation import ppca_data, ppca_vae

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


def test_active_units_exact_counts_on_constructed_codes():
    # Five dimensions of 4 codes with exactly representable variances (ddof=0):
    #   d0 +-1            -> 1          d1 +-0.5 -> 0.25
    #   d2 constant 3     -> 0 (collapsed away from the prior's mean)
    #   d3 +-0.02         -> 0.0004     d4 0.2, 0, -0.2, 0 -> 0.02
    means = np.array(
        [
            [-1.0, -0.5, 3.0, 0.02, 0.2],
            [1.0, 0.5, 3.0, -0.02, 0.0],
            [-1.0, 0.5, 3.0, 0.02, -0.2],
            [1.0, -0.5, 3.0, -0.02, 0.0],
        ]
    )
    count, variances = latent_grids.active_units(means)
    np.testing.assert_allclose(variances, [1.0, 0.25, 0.0, 4e-4, 0.02], rtol=1e-12, atol=0)
    assert count == 3  # d0, d1, d4 above Burda et al.'s 0.01
    # The threshold is strict (A_u: Cov > threshold): d1's 0.25 is not above 0.25.
    assert latent_grids.active_units(means, threshold=0.25)[0] == 1
    assert latent_grids.active_units(means, threshold=0.2499)[0] == 2
    assert latent_grids.active_units(means, threshold=1e-4)[0] == 4
    # A shift of every code changes nothing (a variance); codes scaled by 0.3
    # have variances x 0.09: d0 (0.09) and d1 (0.0225) stay above 0.01, d4
    # (0.0018) drops.
    assert latent_grids.active_units(means + 5.0)[0] == 3
    assert latent_grids.active_units(0.3 * means)[0] == 2
    with pytest.raises(ValueError, match="N >= 2"):
        latent_grids.active_units(means[:1])


def test_latent_statistics_counts_posterior_means_not_samples():
    # PPCA as a VAE (tests/test_evaluation.py): the third latent dimension is
    # collapsed, its posterior mean 0 for every image (variance 0), while a
    # posterior sample would vary with variance 1 and count it as active.
    x = ppca_data(64)
    stats = latent_grids.latent_statistics(ppca_vae(), x)
    assert stats["active_units"] == 2
    assert stats["mean_variance"][2] < 1e-10 and min(stats["mean_variance"][:2]) > 0.3
    # Dimensions by decreasing KL: the stronger column (norm 1) first, the
    # collapsed one (KL 0) last.
    np.testing.assert_array_equal(stats["order"], [0, 1, 2])
    assert stats["kl_per_dim"][2] < 1e-6
