"""Tests for keras_vae.baselines: the PCA baseline, scored through the likelihood registry."""

import math

import numpy as np
import pytest

from keras_vae import baselines, likelihoods


@pytest.mark.parametrize("num_train", [40, 400])  # N < P (Gram) and N > P (covariance)
def test_pca_baseline_is_exact_in_a_subspace(num_train):
    # Images that lie exactly in a 3-D affine subspace of R^P:
    # x = 0.5 + 0.1 * c @ B with orthonormal B (3, P) and |c| <= 1, so every
    # pixel is within 0.5 +- 0.1 * sqrt(3) (inside (0, 1), no Bernoulli clipping).
    rng = np.random.default_rng(0)
    side, k = 10, 3
    pixels = side * side
    basis = np.linalg.qr(rng.standard_normal((pixels, k)))[0].T  # (k, P), orthonormal rows

    def images(n):
        codes = rng.uniform(-1.0, 1.0, (n, k))
        return (0.5 + 0.1 * codes @ basis).reshape(n, side, side, 1)

    train, test = images(num_train), images(50)
    sigma = 0.1
    out = baselines.pca_baseline(train, test, [1, 2, 3, 5], "gaussian", gaussian_sigma=sigma)
    assert out["components_used"] == [1, 2, 3, 5]
    # Exact at k = 3 (and beyond): squared error ~ 0, and the Gaussian NLL is its
    # normaliser alone, P * (log(2 pi) / 2 + log sigma) per image.
    assert out["sse"][2] < 1e-20 and out["sse"][3] < 1e-20
    golden = pixels * (0.5 * math.log(2 * math.pi) + math.log(sigma))  # = -138.365 nats
    assert out["nll"][2] == pytest.approx(golden, abs=1e-6)
    # Fewer components than the subspace: a real error, shrinking with k.
    assert out["sse"][0] > out["sse"][1] > 1e-3
    # Bernoulli: an exact reconstruction leaves the entropy of the grey levels,
    # -sum x log x + (1 - x) log(1 - x) per image.
    bern = baselines.pca_baseline(train, test, [3], "bernoulli")
    x = test.reshape(50, -1)
    entropy = -np.sum(x * np.log(x) + (1 - x) * np.log1p(-x), axis=1).mean()
    assert bern["nll"][0] == pytest.approx(entropy, rel=1e-6)
    # gaussian_learned: the fitted sigma of an exact fit hits the floor
    # (mean squared residual 1e-12 -> log sigma = log(1e-6)).
    learned = baselines.pca_baseline(train, test, [3], "gaussian_learned")
    assert learned["log_scale"][0] == pytest.approx(0.5 * math.log(1e-12))
    # discretized_logistic: an exact fit wants the sharpest logistic, the
    # smallest log-scale the likelihood allows (the first of the search grid).
    logistic = baselines.pca_baseline(train, test, [3], "discretized_logistic")
    assert logistic["log_scale"][0] == pytest.approx(-7.0 - math.log(2.0))
    assert math.isfinite(logistic["nll"][0])


def test_pca_fit_components_are_orthonormal_by_variance():
    # Data whose first three coordinates are orthogonal, centred columns with
    # sums of squares 9, 4, 1 (times N) and the rest 0: the covariance is exactly
    # diag(9, 4, 1, 0, 0, 0), so the components are the first three axes, in
    # that order, up to sign.
    rng = np.random.default_rng(1)
    columns = rng.standard_normal((500, 3))
    q, _ = np.linalg.qr(columns - columns.mean(axis=0))  # (500, 3), orthonormal, centred
    x = np.zeros((500, 6))
    x[:, :3] = q * np.sqrt(500) * [3.0, 2.0, 1.0]
    mean, components = baselines.pca_fit(x, 5)
    assert components.shape == (5, 6) and mean.shape == (6,)
    np.testing.assert_allclose(components @ components.T, np.eye(5), atol=1e-9)
    np.testing.assert_allclose(np.abs(components[:3, :3]), np.eye(3), atol=1e-9)
    # At most min(N - 1, P) components exist.
    assert baselines.pca_fit(x[:4], 10)[1].shape == (3, 6)


def test_scored_by_the_likelihood_objects():
    """Each score is the registry likelihood's -log_prob of the decoder output
    that stands for the reconstruction: logits for bernoulli, the mean for
    gaussian, [mean, fitted log-scale] for the two likelihoods with a scale."""
    rng = np.random.default_rng(2)
    train = np.round(rng.uniform(0.2, 0.8, (30, 4, 4, 2)) * 255) / 255
    test = np.round(rng.uniform(0.2, 0.8, (10, 4, 4, 2)) * 255) / 255
    mean, components = baselines.pca_fit(train.reshape(30, -1), 2)
    recon = baselines.pca_reconstruct(test.reshape(10, -1), mean, components, 2).reshape(test.shape)

    def nll(name, params):
        lik = likelihoods.get(name, sigma=0.1)
        return -np.asarray(lik.log_prob(test, params), dtype=np.float64).mean()

    p = np.clip(recon, baselines.BERNOULLI_CLIP, 1 - baselines.BERNOULLI_CLIP)
    out = baselines.pca_baseline(train, test, [2], "bernoulli")
    assert out["nll"][0] == pytest.approx(nll("bernoulli", np.log(p) - np.log1p(-p)), rel=1e-12)
    out = baselines.pca_baseline(train, test, [2], "gaussian", gaussian_sigma=0.1)
    assert out["log_scale"] == [None]
    # Up to float32 rounding of log(0.1) in Gaussian.log_prob (the baseline keeps float64).
    assert out["nll"][0] == pytest.approx(nll("gaussian", recon), rel=1e-6)
    for name in ("gaussian_learned", "discretized_logistic"):
        out = baselines.pca_baseline(train, test, [2], name)
        params = np.concatenate([recon, np.full_like(recon, out["log_scale"][0])], axis=-1)
        assert out["nll"][0] == pytest.approx(nll(name, params), rel=1e-6), name


def test_unknown_likelihoods_raise():
    train, test = np.full((4, 2, 2, 1), 0.5), np.full((2, 2, 2, 1), 0.5)
    with pytest.raises(ValueError) as info:
        baselines.pca_baseline(train, test, [1], "poisson")
    assert str(info.value) == (
        "Expected a likelihood in ['bernoulli', 'categorical', 'discretized_logistic', "
        "'gaussian', 'gaussian_learned']. Received: likelihood='poisson'"
    )

    class Poisson(likelihoods.Likelihood):
        name = "poisson"

    # A likelihood object without a PCA rule is refused, not scored as another one.
    with pytest.raises(ValueError, match="Expected a likelihood with a PCA baseline"):
        baselines.pca_baseline(train, test, [1], Poisson())
