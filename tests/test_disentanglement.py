"""Tests for keras_vae.disentanglement: MIG against hand-computed values and
disentanglement_lib's definitions."""

import math

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import disentanglement
from keras_vae.disentanglement import discrete_mutual_information
from keras_vae.models import VAE


def test_discrete_mutual_information_by_hand():
    a = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    # I(a; a) = H(a) = log 4 for 4 equally frequent values.
    assert discrete_mutual_information(a, a) == pytest.approx(math.log(4))
    # b = a // 2 is a function of a: I(a; b) = H(b) = log 2.
    assert discrete_mutual_information(a, a // 2) == pytest.approx(math.log(2))
    # c = a mod 2 and b: every (b, c) pair once each twice -> independent, I = 0.
    assert discrete_mutual_information(a // 2, a % 2) == pytest.approx(0.0, abs=1e-12)
    # Labels need not be 0..n-1.
    assert discrete_mutual_information(a * 10 - 7, a) == pytest.approx(math.log(4))


def test_histogram_discretize_matches_disentanglement_lib():
    values = np.array([[0.0], [0.049], [0.05], [0.5], [0.999], [1.0]])
    # 20 equal bins over [0, 1], index = digitize against the 20 lower edges:
    # 0.05 starts bin 2; the maximum falls into the last bin, 20.
    np.testing.assert_array_equal(
        disentanglement.histogram_discretize(values, 20)[:, 0], [1, 1, 2, 11, 20, 20]
    )


def _factors(n, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def test_mig_is_high_for_copied_factors_and_low_for_noise():
    # Factors with <= 20 values: 20 equal-width bins keep them all distinct.
    factors = _factors(10_000, (3, 6, 10, 16))
    rng = np.random.default_rng(1)
    codes = factors + 1e-3 * rng.normal(size=factors.shape)
    # Plus an uninformative code dimension.
    codes = np.concatenate([codes, rng.normal(size=(10_000, 1))], axis=1)
    mig = disentanglement.mutual_information_gap(codes, factors)
    # Each factor: top MI = H(factor), second ~ the plug-in bias
    # (bins - 1)(values - 1) / 2N ~ 0.01 nats. Seen: 0.99.
    assert mig > 0.9
    noise = rng.normal(size=(10_000, 5))
    assert disentanglement.mutual_information_gap(noise, factors) < 0.05
    # A code that mixes two factors informs both weakly: MIG drops.
    mixed = np.stack([factors[:, 2] + factors[:, 3], factors[:, 2] - factors[:, 3]], axis=1)
    assert disentanglement.mutual_information_gap(mixed, factors[:, 2:]) < 0.5


def test_mig_skips_a_constant_factor_and_validates():
    factors = _factors(2000, (4, 1))  # second factor has a single value
    codes = np.concatenate(
        [factors[:, :1] + 0.0, np.random.default_rng(0).normal(size=(2000, 1))], axis=1
    )
    assert disentanglement.mutual_information_gap(codes, factors) > 0.9
    with pytest.raises(ValueError, match="constant"):
        disentanglement.mutual_information_gap(codes, factors[:, 1:])
    with pytest.raises(ValueError, match="num_codes >= 2"):
        disentanglement.mutual_information_gap(codes[:, :1], factors)
    with pytest.raises(ValueError, match="same N"):
        disentanglement.mutual_information_gap(codes[:10], factors)


def test_compute_mig_on_shapes_runs_on_a_small_model():

    keras.utils.set_random_seed(0)
    encoder = keras_vae.build_encoder((16, 16, 1), 3, network="mlp", widths=(16,))
    decoder = keras_vae.build_decoder((16, 16, 1), 3, network="mlp", widths=(16,))
    model = VAE(encoder, decoder)
    mig = disentanglement.compute_mig_on_shapes(model, num_points=600, seed=0, batch_size=256)
    assert 0.0 <= mig <= 1.0
    # The factor draw is seeded: the same seed gives the same number.
    assert disentanglement.compute_mig_on_shapes(model, num_points=600, seed=0) == mig
