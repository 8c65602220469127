"""Tests for keras_vae.likelihoods: each log-density against an independent
NumPy/SciPy computation in float64, the KL against Monte Carlo, and the
`Likelihood` objects (registry, decoder layout, mean, sample)."""

import math

import keras
import numpy as np
import pytest
from scipy import special, stats

from keras_vae import likelihoods as lk

LEVELS = 255  # 8-bit pixels are k / 255
HALF = 0.5 / LEVELS  # half-width of a pixel bin in [0, 1] units


def np_(x):
    return keras.ops.convert_to_numpy(x)


def grid_pixels(rng, shape):
    """8-bit pixels k / 255 as float32, the form the data pipelines produce."""
    return (rng.integers(0, 256, size=shape) / LEVELS).astype("float32")


# ---------------------------------------------------------------------------
# Gaussian KL


# (mean, log_var) of a one-dimensional q; KL(q || N(0, 1)) from 0.31 to 3.0 nats.
KL_SETTINGS = [(0.5, -1.0), (-1.5, 0.7), (2.0, -3.0), (0.0, 2.0), (1.5, 0.0)]


def test_gaussian_kl_matches_monte_carlo():
    # KL = E_q[log q(z) - log p(z)], estimated from n = 2e6 draws of z ~ q with
    # the module's own log-densities (which are checked against SciPy below).
    # Tolerance: 1% relative, and the test asserts that 1% is at least 5
    # standard errors of the estimate for every setting, so a correct KL fails
    # with probability < 1e-6 whatever the seed.
    n = 2_000_000
    rng = np.random.default_rng(0)
    mean = np.array([[m] for m, _ in KL_SETTINGS])  # (S, 1)
    log_var = np.array([[v] for _, v in KL_SETTINGS])  # (S, 1)
    z = mean + np.exp(0.5 * log_var) * rng.standard_normal((n, len(KL_SETTINGS), 1))
    log_ratio = np_(lk.gaussian_log_density(z, mean, log_var)) - np_(
        lk.standard_normal_log_density(z)
    )  # (n, S)
    mc = log_ratio.mean(axis=0)
    standard_error = log_ratio.std(axis=0) / math.sqrt(n)
    closed = np_(lk.gaussian_kl(mean, log_var))  # (S,)
    assert closed.shape == (len(KL_SETTINGS),)
    assert np.all(0.01 * closed >= 5 * standard_error), (closed, standard_error)
    np.testing.assert_allclose(closed, mc, rtol=0.01)


def test_gaussian_kl_of_standard_normal_is_exactly_zero():
    # q = N(0, 1) = p: 0.5 * (exp(0) + 0 - 1 - 0) = 0 exactly in float32.
    zeros = np.zeros((4, 6), "float32")
    assert np.all(np_(lk.gaussian_kl_per_dim(zeros, zeros)) == 0.0)
    np.testing.assert_array_equal(np_(lk.gaussian_kl(zeros, zeros)), np.zeros(4))


def test_gaussian_kl_per_dim_against_numpy():
    # Independent form: KL(N(m, s^2) || N(0, 1)) = -log s + (s^2 + m^2) / 2 - 1/2.
    rng = np.random.default_rng(1)
    mean = rng.normal(0.0, 2.0, (5, 7)).astype("float32")
    log_var = rng.uniform(-9.0, 9.0, (5, 7)).astype("float32")
    m, s = mean.astype("float64"), np.exp(0.5 * log_var.astype("float64"))
    expected = -np.log(s) + (s**2 + m**2) / 2 - 0.5
    per_dim = np_(lk.gaussian_kl_per_dim(mean, log_var))
    assert per_dim.shape == (5, 7) and per_dim.dtype == np.float32
    np.testing.assert_allclose(per_dim, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(lk.gaussian_kl(mean, log_var)), expected.sum(-1), rtol=1e-5)
    assert np.all(per_dim >= 0.0)


def test_log_densities_against_scipy():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 4))
    mean = rng.normal(size=(6, 4))
    log_var = rng.uniform(-3, 3, size=(6, 4))
    expected_q = stats.norm.logpdf(z, mean, np.exp(0.5 * log_var)).sum(-1)
    expected_p = stats.norm.logpdf(z).sum(-1)
    np.testing.assert_allclose(np_(lk.gaussian_log_density(z, mean, log_var)), expected_q, 1e-10)
    np.testing.assert_allclose(np_(lk.standard_normal_log_density(z)), expected_p, rtol=1e-10)
    # float32 inputs stay float32, to float32 precision.
    z32, m32, v32 = (a.astype("float32") for a in (z, mean, log_var))
    got = np_(lk.gaussian_log_density(z32, m32, v32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected_q, rtol=1e-5)


# ---------------------------------------------------------------------------
# Bernoulli


def np_bernoulli(x, logits):
    """x log p + (1 - x) log(1 - p) in float64, log p = log_expit(l) so that
    log(1 - p) = log_expit(-l) stays finite at l = +-50 (1 - expit(50) == 0)."""
    x, logits = x.astype("float64"), logits.astype("float64")
    values = x * special.log_expit(logits) + (1 - x) * special.log_expit(-logits)
    return values.reshape(len(x), -1).sum(-1)


def test_bernoulli_log_prob_against_numpy():
    rng = np.random.default_rng(3)
    x = (rng.random((4, 5, 6, 2)) < 0.4).astype("float32")
    logits = rng.normal(0.0, 4.0, x.shape).astype("float32")
    got = np_(lk.bernoulli_log_prob(x, logits))
    assert got.shape == (4,) and got.dtype == np.float32
    np.testing.assert_allclose(got, np_bernoulli(x, logits), rtol=1e-5)
    # Grey levels in [0, 1] give the cross-entropy, same formula.
    grey = rng.random(x.shape).astype("float32")
    np.testing.assert_allclose(
        np_(lk.bernoulli_log_prob(grey, logits)), np_bernoulli(grey, logits), rtol=1e-5
    )


def test_bernoulli_log_prob_extreme_logits_exact():
    # One-pixel images. log sigmoid(50) = -log(1 + e^-50) = -1.9e-22 (0 in float32)
    # and log(1 - sigmoid(50)) = -50 - 1.9e-22 (-50 in float32); symmetric at -50.
    x = np.array([1, 0, 1, 0, 1, 0], "float32").reshape(6, 1, 1, 1)
    logits = np.array([50, 50, -50, -50, 0, 0], "float32").reshape(6, 1, 1, 1)
    got = np_(lk.bernoulli_log_prob(x, logits))
    assert np.all(np.isfinite(got))
    expected = [0.0, -50.0, -50.0, 0.0, -math.log(2.0), -math.log(2.0)]
    np.testing.assert_allclose(got, expected, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(got, np_bernoulli(x, logits), rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------------------
# Gaussian


@pytest.mark.parametrize("kind", ["scalar", "per_channel", "full"])
def test_gaussian_log_prob_against_scipy(kind):
    rng = np.random.default_rng(4)
    shape = (3, 4, 5, 2)
    x = rng.random(shape).astype("float32")
    mean = rng.random(shape).astype("float32")
    log_scale = {
        "scalar": np.float32(math.log(0.1)),
        "per_channel": np.array([-2.0, 0.5], "float32"),
        "full": rng.uniform(-3.0, 1.0, shape).astype("float32"),
    }[kind]
    scale = np.broadcast_to(np.exp(log_scale.astype("float64")), shape)
    expected = stats.norm.logpdf(x, mean, scale).reshape(3, -1).sum(-1)
    got = np_(lk.gaussian_log_prob(x, mean, log_scale))
    assert got.shape == (3,) and got.dtype == np.float32
    # float32 sum of 40 terms of size up to ~|500|: relative error ~1e-6.
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gaussian_log_prob_golden_value():
    # x = mean, sigma = 1, 2 pixels: 2 * (-0.5 * log(2 pi)) = -log(2 pi) = -1.8378771.
    x = np.full((1, 1, 2, 1), 0.25, "float32")
    np.testing.assert_allclose(np_(lk.gaussian_log_prob(x, x, 0.0)), [-math.log(2 * math.pi)])


# ---------------------------------------------------------------------------
# Discretized logistic


def np_discretized_logistic_probs(x, mean, log_scale):
    """P(k) from scipy.stats.logistic.cdf in float64, edge bins open-ended."""
    x, mean = x.astype("float64"), mean.astype("float64")
    s = np.exp(np.asarray(log_scale, "float64"))
    upper = stats.logistic.cdf((x + HALF - mean) / s)
    lower = stats.logistic.cdf((x - HALF - mean) / s)
    # Upper half: the same difference from the survival function, exact in float64.
    upper_sf = stats.logistic.sf((x - HALF - mean) / s) - stats.logistic.sf((x + HALF - mean) / s)
    probs = np.where(x > mean, upper_sf, upper - lower)
    probs = np.where(x < HALF, upper, probs)
    return np.where(x > 1 - HALF, stats.logistic.sf((x - HALF - mean) / s), probs)


def test_discretized_logistic_against_scipy():
    # Pixels within 3 scales of the mean, so every bin has probability > 1e-5
    # and the exact CDF difference is used (not the PixelCNN++ density fallback).
    rng = np.random.default_rng(5)
    shape = (4, 6, 6, 3)
    mean = rng.uniform(0.0, 1.0, shape).astype("float32")
    log_scale = rng.uniform(-4.0, -1.0, shape).astype("float32")
    s = np.exp(log_scale)
    x = np.round(np.clip(mean + s * rng.uniform(-3, 3, shape), 0, 1) * LEVELS) / LEVELS
    x = x.astype("float32")
    probs = np_discretized_logistic_probs(x, mean, log_scale)
    assert probs.min() > 1e-5
    # Both edges occur, so the open-ended bins are exercised too.
    assert (x == 0).any() and (x == 1).any()
    expected = np.log(probs).reshape(4, -1).sum(-1)
    got = np_(lk.discretized_logistic_log_prob(x, mean, log_scale))
    assert got.shape == (4,) and got.dtype == np.float32
    # Per pixel, the float32 difference of two sigmoids has absolute error
    # ~1e-7, i.e. a log error <= 1e-7 / P; with P > 1e-3 for most of these
    # bins that is <= 1e-4 (seen: 3e-5), and the float32 sum of 108 values of
    # about -3 adds ~1e-5. 1e-3 nats per example (seen: 2e-4) is still far
    # below a formula mistake (bins twice as wide add ~log 2 = 0.69 per pixel).
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "mean,log_scale",
    [
        (0.5, -3.0),
        (0.0, -5.0),
        (1.0, -5.0),
        (0.001, -7.0 - math.log(2.0)),  # PixelCNN++'s smallest scale, mean near 0
        (0.999, -7.0 - math.log(2.0)),  # ... and near 1
        (0.5, -7.0 - math.log(2.0)),
        (0.3, 0.0),
        (0.02, -2.0),
        (0.98, -4.5),
        (-0.1, -3.0),  # mean outside [0, 1]
        (0.5, 3.0),  # very wide: almost all mass in the two open-ended bins
    ],
)
def test_discretized_logistic_sums_to_one(mean, log_scale):
    # All 256 pixel values as 256 one-pixel images with the same parameters.
    x = (np.arange(256) / LEVELS).astype("float32").reshape(256, 1, 1, 1)
    mean_ = np.full_like(x, mean)
    log_scale_ = np.full_like(x, log_scale)
    log_probs = np_(lk.discretized_logistic_log_prob(x, mean_, log_scale_))
    assert log_probs.shape == (256,)
    assert np.all(np.isfinite(log_probs)) and np.all(log_probs <= 1e-6)
    np.testing.assert_allclose(np.exp(log_probs.astype("float64")).sum(), 1.0, atol=1e-4)


def test_discretized_logistic_edge_bins_are_open_ended():
    # Bin 0 takes all mass below 0.5/255, bin 255 all mass above 1 - 0.5/255:
    # P(0) = F((h - m) / s), P(255) = 1 - F((1 - h - m) / s), F = logistic CDF.
    # With m = 0, s = 0.01 a closed bin would give F(0.196) - F(-0.196) = 0.098
    # instead of F(0.196) = 0.549, so the check separates the two.
    means = np.array([0.0, -0.05, 0.4, 1.0, 1.05, 0.6], "float32")
    log_scales = np.log(np.array([0.01, 0.01, 0.2, 0.01, 0.01, 0.2], "float32"))
    x = np.array([0, 0, 0, 1, 1, 1], "float32")
    got = np.exp(
        np_(
            lk.discretized_logistic_log_prob(
                x.reshape(6, 1, 1, 1), means.reshape(6, 1, 1, 1), log_scales.reshape(6, 1, 1, 1)
            )
        ).astype("float64")
    )
    s = np.exp(log_scales.astype("float64"))
    m = means.astype("float64")
    expected = np.concatenate(
        [stats.logistic.cdf((HALF - m[:3]) / s[:3]), stats.logistic.sf((1 - HALF - m[3:]) / s[3:])]
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[0] > 0.5  # the open-ended value, not the closed bin's 0.098


def test_discretized_logistic_far_tail_uses_bin_density():
    # Where the CDF difference underflows (< 1e-5) the value is the logistic
    # density at the bin centre times the bin width 1/255 (PixelCNN++).
    # m = 0.2, s = e^-5 = 0.0067, pixel 0.6: |x - m| / s = 59, P ~ 1e-26.
    x = np.full((1, 1, 1, 1), 153 / LEVELS, "float32")  # 0.6
    mean = np.full_like(x, 0.2)
    log_scale = np.full_like(x, -5.0)
    got = np_(lk.discretized_logistic_log_prob(x, mean, log_scale))[0]
    s = math.exp(-5.0)
    expected = stats.logistic.logpdf((153 / LEVELS - 0.2) / s) - math.log(s) - math.log(LEVELS)
    assert np.isfinite(got)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ---------------------------------------------------------------------------
# Mixed precision and shapes


def test_float16_inputs_are_computed_in_float32():
    rng = np.random.default_rng(6)
    x = (rng.random((2, 3, 3, 1)) < 0.5).astype("float16")
    logits = rng.normal(0, 8, x.shape).astype("float16")
    got = lk.bernoulli_log_prob(x, logits)
    assert keras.backend.standardize_dtype(got.dtype) == "float32"
    # Same values as float32 inputs (the float16 values are exact in float32).
    np.testing.assert_allclose(
        np_(got), np_bernoulli(x.astype("float32"), logits.astype("float32")), rtol=1e-5
    )
    kl = lk.gaussian_kl(np.ones((2, 3), "float16"), np.full((2, 3), 9.0, "float16"))
    assert keras.backend.standardize_dtype(kl.dtype) == "float32"
    # exp(9) = 8103 is fine in float16 but 3 * 0.5 * (8103 + 1 - 1 - 9) = 12141.
    np.testing.assert_allclose(np_(kl), [1.5 * (math.exp(9.0) - 9.0)] * 2, rtol=1e-6)


# ---------------------------------------------------------------------------
# Likelihood objects


@pytest.mark.parametrize(
    "name,cls,num_params",
    [
        ("bernoulli", lk.Bernoulli, 1),
        ("gaussian", lk.Gaussian, 1),
        ("gaussian_learned", lk.GaussianLearned, 2),
        ("discretized_logistic", lk.DiscretizedLogistic, 2),
    ],
)
def test_get_returns_each_likelihood(name, cls, num_params):
    lik = lk.get(name)
    assert isinstance(lik, cls)
    assert lik.name == name and lik.num_params == num_params
    assert lk.get(lik) is lik


def test_get_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="Expected") as info:
        lk.get("poisson")
    message = str(info.value)
    assert "poisson" in message
    for name in ("bernoulli", "gaussian", "gaussian_learned", "discretized_logistic"):
        assert repr(name) in message


def test_gaussian_rejects_non_positive_sigma():
    with pytest.raises(ValueError, match="Expected `sigma` > 0"):
        lk.get("gaussian", sigma=0.0)
    assert lk.get("gaussian", sigma=0.25).get_config() == {"sigma": 0.25}


def _params(name, rng, shape=(3, 5, 4, 2)):
    """Decoder-like parameters for `name`: (batch, H, W, num_params * C)."""
    batch, height, width, channels = shape
    num_params = lk.get(name).num_params
    params = rng.normal(0.0, 3.0, (batch, height, width, num_params * channels))
    return params.astype("float32")


@pytest.mark.parametrize(
    "name", ["bernoulli", "gaussian", "gaussian_learned", "discretized_logistic"]
)
def test_likelihood_mean_and_sample_shapes_and_ranges(name):
    rng = np.random.default_rng(7)
    params = _params(name, rng)  # wide range: logits / means far outside [0, 1]
    lik = lk.get(name)
    mean = np_(lik.mean(params))
    sample = np_(lik.sample(params, seed=1))
    for image in (mean, sample):
        assert image.shape == (3, 5, 4, 2) and image.dtype == np.float32
        assert image.min() >= 0.0 and image.max() <= 1.0
    if name == "bernoulli":
        assert set(np.unique(sample)) <= {0.0, 1.0}
    if name == "discretized_logistic":
        # On the 8-bit grid k / 255.
        for image in (mean, sample):
            np.testing.assert_allclose(image * LEVELS, np.round(image * LEVELS), atol=1e-4)
    # Same seed, same draw.
    np.testing.assert_array_equal(sample, np_(lik.sample(params, seed=1)))


def test_likelihood_log_prob_uses_the_decoder_layout():
    # Parameter k of channel c sits in channel k * C + c of the decoder output.
    rng = np.random.default_rng(8)
    x = grid_pixels(rng, (3, 5, 4, 2))
    params = _params("gaussian_learned", rng)
    mean, log_scale = params[..., :2], params[..., 2:]
    np.testing.assert_allclose(
        np_(lk.get("gaussian_learned").log_prob(x, params)),
        np_(lk.gaussian_log_prob(x, mean, log_scale)),
        rtol=1e-6,
    )
    # Fixed sigma 0.2: log_scale = log 0.2 everywhere.
    np.testing.assert_allclose(
        np_(lk.get("gaussian", sigma=0.2).log_prob(x, mean)),
        np_(lk.gaussian_log_prob(x, mean, math.log(0.2))),
        rtol=1e-6,
    )
    # Discretized logistic clamps the raw log-scale at -7 - log 2.
    dl = lk.get("discretized_logistic")
    np.testing.assert_allclose(
        np_(dl.log_prob(x, params)),
        np_(lk.discretized_logistic_log_prob(x, mean, np.maximum(log_scale, -7 - math.log(2)))),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        np_(lk.get("bernoulli").log_prob(x, mean)), np_bernoulli(x, mean), rtol=1e-5
    )


def test_bernoulli_sample_frequency():
    # 200k pixels with p = sigmoid(logit) = 0.3: the frequency of ones has
    # standard error sqrt(0.3 * 0.7 / 2e5) = 0.001; tolerance 5 SE = 0.0051.
    logit = math.log(0.3 / 0.7)
    params = np.full((200, 100, 10, 1), logit, "float32")
    frequency = np_(lk.get("bernoulli").sample(params, seed=2)).mean()
    assert abs(frequency - 0.3) < 5 * math.sqrt(0.21 / 200_000)


def test_gaussian_sample_moments():
    # Mean 0.5, sigma 0.1: clipping to [0, 1] is 5 sigma away (P < 6e-7).
    # 200k draws: SE of the mean 0.1 / 447 = 2.2e-4, of the std 0.1 / 632 =
    # 1.6e-4; tolerance 5 SE each.
    n = 200_000
    params = np.full((200, 100, 10, 1), 0.5, "float32")
    draws = np_(lk.get("gaussian", sigma=0.1).sample(params, seed=3)).astype("float64")
    assert abs(draws.mean() - 0.5) < 5 * 0.1 / math.sqrt(n)
    assert abs(draws.std() - 0.1) < 5 * 0.1 / math.sqrt(2 * n)
