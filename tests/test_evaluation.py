"""Tests for keras_vae.evaluation: IWAE and ELBO against the closed-form
log-likelihood of probabilistic PCA, chunked streaming, bits/dim,
active units, KL per dimension and the results files (MIG:
tests/test_disentanglement.py; test subsets and the 8-bit bits/dim of a
dequantized density: tests/test_protocol.py)."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats
from scipy.special import logsumexp

from keras_vae import evaluation, report
from keras_vae.models import VAE

# -- Probabilistic PCA written as a VAE ---------------------------------------
#
# Decoder x = W z + b, likelihood N(x; W z + b, sigma^2 I), prior z ~ N(0, I):
#     p(x) = N(x; b, W W^T + sigma^2 I)                       (Tipping & Bishop 1999)
# and the exact posterior, with M = W^T W + sigma^2 I:
#     q*(z|x) = N(M^-1 W^T (x - b), sigma^2 M^-1).
# W has orthogonal columns, so M and the posterior covariance are diagonal and
# a mean-field encoder can represent q* exactly. The third column of W is 0:
# that latent dimension is collapsed (posterior = prior, KL = 0, inactive).

IMAGE_SHAPE = (4, 4, 1)  # D = 16 pixels
PIXELS = 16
LATENT = 3
SIGMA = 0.2  # the model's `gaussian_sigma`
COLUMN_NORMS = (1.0, 0.6, 0.0)


def ppca_params(seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(PIXELS, LATENT)))  # orthonormal columns
    w = q * np.array(COLUMN_NORMS)  # (D, L)
    b = 0.5 + 0.05 * rng.normal(size=PIXELS)  # (D,)
    return w, b


def ppca_data(n, seed=1):
    w, b = ppca_params()
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, LATENT))
    x = z @ w.T + b + SIGMA * rng.normal(size=(n, PIXELS))
    return x.reshape((n, *IMAGE_SHAPE)).astype("float32")


def ppca_log_px(x):
    """Exact log p(x), float64, (n,)."""
    w, b = ppca_params()
    cov = w @ w.T + SIGMA**2 * np.eye(PIXELS)
    return stats.multivariate_normal.logpdf(x.reshape(len(x), -1).astype(np.float64), b, cov)


def ppca_vae(mean_shift=0.0, log_var_shift=0.0):
    """The PPCA VAE, with the exact posterior or a perturbed one.

    mean_shift is added to the exact posterior means, log_var_shift to the
    exact posterior log-variances (widening them when > 0).
    """
    w, b = ppca_params()
    m = np.diag(w.T @ w) + SIGMA**2  # diagonal of M, (L,)
    kernel = w / m  # (D, L): mean = (x - b) @ W M^-1
    inputs = keras.Input(IMAGE_SHAPE)
    h = keras.layers.Flatten()(inputs)
    mean_layer = keras.layers.Dense(LATENT, name="mean")
    log_var_layer = keras.layers.Dense(LATENT, name="log_var")
    encoder = keras.Model(inputs, [mean_layer(h), log_var_layer(h)], name="encoder")
    mean_layer.set_weights([kernel, mean_shift - b @ kernel])
    log_var_layer.set_weights([np.zeros((PIXELS, LATENT)), np.log(SIGMA**2 / m) + log_var_shift])
    z = keras.Input((LATENT,))
    dense = keras.layers.Dense(PIXELS, name="linear")
    decoder = keras.Model(z, keras.layers.Reshape(IMAGE_SHAPE)(dense(z)), name="decoder")
    dense.set_weights([w.T, b])
    return VAE(encoder, decoder, likelihood="gaussian", gaussian_sigma=SIGMA, seed=0)


def ppca_elbo_gap(mean_shift=0.0, log_var_shift=0.0):
    """log p(x) - ELBO of `ppca_vae(mean_shift, log_var_shift)`, the same for every x.

    ELBO = log p(x) - KL(q(z|x) || p(z|x)), and q is the exact posterior
    N(mu, S) moved to N(mu + delta, e^s S), S_d = sigma^2 / M_d, so per dimension
    KL = (e^s - 1 - s + delta^2 / S_d) / 2. For delta = 0.2, s = 1:
    S = (0.03846, 0.1, 1), KL = 0.8791 + 0.5591 + 0.3791 = 1.8174 nats.
    """
    w, _ = ppca_params()
    posterior_var = SIGMA**2 / (np.diag(w.T @ w) + SIGMA**2)  # S, (L,)
    s = log_var_shift
    return float(np.sum(0.5 * (math.exp(s) - 1 - s + mean_shift**2 / posterior_var)))


@pytest.fixture(scope="module")
def data():
    x = ppca_data(64)
    return x, ppca_log_px(x)


def np_(x):
    return keras.ops.convert_to_numpy(x)


def test_exact_posterior_makes_the_bounds_tight(data):
    x, log_px = data
    model = ppca_vae()
    # With q = the true posterior, log w = log p(x|z) + log p(z) - log q(z|x)
    # = log p(x) for every z: zero variance, so L_K = log p(x) exactly for any
    # K, here K = 1 (the one-sample ELBO with a sampled KL) and K = 20 in
    # uneven chunks of 7, 7, 6. Only float32 rounding remains (seen: 5e-6).
    for num_samples, chunk in ((1, 1), (20, 7)):
        iwae = np_(evaluation.iwae_log_likelihood(model, x, num_samples, chunk, seed=0))
        np.testing.assert_allclose(iwae, log_px, atol=1e-4)
    # The ELBO with the analytic KL is tight in expectation only: its Monte
    # Carlo term E_q log p(x|z) has variance. 1000 draws: the mean over the
    # 64 examples is within 0.02 nats (seen: -0.002), each within 0.3 (0.07).
    elbo = np_(evaluation.elbo_terms(model, x, num_samples=1000, seed=0)["elbo"])
    assert abs(np.mean(elbo - log_px)) < 0.02
    np.testing.assert_allclose(elbo, log_px, atol=0.3)


def test_bounds_are_ordered_and_iwae_approaches_log_px(data):
    x, log_px = data
    # Posterior means shifted by 0.2 (1 and 0.6 posterior standard deviations
    # of the two active dimensions) and variances widened by e.
    model = ppca_vae(mean_shift=0.2, log_var_shift=1.0)
    elbo = np_(evaluation.elbo_terms(model, x, num_samples=100, seed=1)["elbo"])
    # E[L_10] estimated from 20 independent L_10 per example (x tiled 20 times):
    # one L_10 is heavy-tailed (standard error of its mean over 64 examples
    # ~0.05), the average of 20 has ~0.012.
    repeats = 20
    iwae10 = (
        np_(evaluation.iwae_log_likelihood(model, np.tile(x, (repeats, 1, 1, 1)), 10, seed=2))
        .reshape(repeats, -1)
        .mean(axis=0)
    )
    iwae1000 = np_(evaluation.iwae_log_likelihood(model, x, num_samples=1000, seed=3))
    means = {
        name: float(np.mean(v))
        for name, v in (
            ("elbo", elbo),
            ("iwae10", iwae10),
            ("iwae1000", iwae1000),
            ("log_px", log_px),
        )
    }
    print("PPCA mean nats over 64 examples:", means)
    # Seen: ELBO -1.443, IWAE10 0.277, IWAE1000 0.406, log p(x) 0.405. Gaps
    # in SE units: ELBO -> IWAE10 >> 10, IWAE10 -> IWAE1000 ~7; IWAE1000 is
    # an estimate of a lower bound, so it may exceed log p(x) by its noise
    # (SE ~0.005): tolerance 0.03.
    assert means["elbo"] < means["iwae10"] < means["iwae1000"] <= means["log_px"] + 0.03
    assert means["iwae10"] < means["log_px"] - 0.03
    # The ELBO is log p(x) - 1.8174 exactly (`ppca_elbo_gap`): -1.412 against
    # the -1.443 seen; its 100-draw mean has SE 0.043 (per-draw sd 3.2 nats per
    # example, measured), so 0.2 is ~5 SE. The IWAE closes most of that gap:
    # IWAE10 - ELBO was 1.67 nats, IWAE1000 - ELBO 1.80; margins of 1.2 and
    # 1.6 fail an IWAE equal to the ELBO.
    gap = ppca_elbo_gap(mean_shift=0.2, log_var_shift=1.0)
    assert gap == pytest.approx(1.8174227, abs=1e-6)
    assert abs(means["elbo"] - (means["log_px"] - gap)) < 0.2
    assert means["iwae10"] - means["elbo"] > 1.2
    assert means["iwae1000"] - means["elbo"] > 1.6
    # Per example, IWAE(K=1000) is within 0.5 nats of log p(x) (seen: 0.1).
    assert np.max(np.abs(iwae1000 - log_px)) < 0.5


def test_streaming_logsumexp_is_exact_for_any_chunking(data):
    x, _ = data
    model = ppca_vae(mean_shift=0.2, log_var_shift=1.0)
    eps = np.random.default_rng(0).normal(size=(1000, len(x), LATENT)).astype("float32")
    log_w = np_(model.log_weights(x, 1000, eps=eps)).T  # (K, B)
    # Golden: logsumexp of all K weights at once, in float64.
    expected = logsumexp(log_w.astype(np.float64), axis=0) - math.log(1000)
    for chunk in (1000, 10, 7, 1):
        running = evaluation._LogMeanExp()
        for start in range(0, 1000, chunk):
            running.update(log_w[start : start + chunk])
        np.testing.assert_allclose(np_(running.result()), expected, atol=1e-4)
    # The weights themselves do not depend on how the samples are grouped into
    # decoder calls: chunk-wise weights equal the all-at-once ones.
    parts = [np_(model.log_weights(x, 10, eps=eps[s : s + 10])).T for s in range(0, 30, 10)]
    np.testing.assert_allclose(np.concatenate(parts), log_w[:30], atol=1e-4)
    # Memory is O(batch * chunk) by construction: a chunk's (S, B, ...) tensors
    # are dropped once folded into the (B,) running max and sum.


def test_iwae_chunk_sizes_agree_statistically(data):
    x, log_px = data
    model = ppca_vae(mean_shift=0.2, log_var_shift=1.0)
    small = np_(evaluation.iwae_log_likelihood(model, x, 1000, chunk_size=10, seed=4))
    large = np_(evaluation.iwae_log_likelihood(model, x, 1000, chunk_size=1000, seed=5))
    # Different noise, the same estimator: each mean has SE ~0.005 nats.
    assert abs(np.mean(small) - np.mean(large)) < 0.03
    # A fixed seed reproduces the estimate.
    again = np_(evaluation.iwae_log_likelihood(model, x, 1000, chunk_size=10, seed=4))
    np.testing.assert_array_equal(small, again)


def test_iwae_rejects_bad_arguments(data):
    x, _ = data
    model = ppca_vae()
    with pytest.raises(ValueError, match="num_samples"):
        evaluation.iwae_log_likelihood(model, x, num_samples=0)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluation.iwae_log_likelihood(model, x, chunk_size=0)


def test_bits_per_dim_by_hand():
    # 1000 nats on 28x28x1: 1000 / (784 * ln 2) = 1000 / 543.42739 = 1.840172.
    assert evaluation.bits_per_dim(1000.0, (28, 28, 1)) == pytest.approx(1.840172246, rel=1e-9)
    # 32x32x3 CIFAR: 3072 dims; 3072 * ln 2 nats is exactly 1 bit/dim.
    assert evaluation.bits_per_dim(3072 * math.log(2), (32, 32, 3)) == pytest.approx(1.0)
    np.testing.assert_allclose(
        evaluation.bits_per_dim(np.array([0.0, 784 * math.log(2)]), (28, 28, 1)), [0.0, 1.0]
    )


def test_active_units_counts_a_collapsed_dimension_as_inactive():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(2000, 4))
    means[:, 1] = 3.0  # constant: fully collapsed
    means[:, 3] = 0.7 + 0.01 * rng.normal(size=2000)  # variance 1e-4 << 0.01
    count, variances = evaluation.active_units(means)
    assert count == 2
    assert variances.shape == (4,)
    assert variances[1] == 0.0 and variances[3] == pytest.approx(1e-4, rel=0.1)
    np.testing.assert_allclose(variances[[0, 2]], 1.0, atol=0.1)
    # The threshold is strict, as A_u = Cov > 0.01.
    assert evaluation.active_units(means, threshold=2.0)[0] == 0
    with pytest.raises(ValueError, match="N >= 2"):
        evaluation.active_units(means[:1])


def test_kl_per_dimension_finds_the_collapsed_ppca_dimension(data):
    x, _ = data
    model = ppca_vae()
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)
    kl = evaluation.kl_per_dimension(model, ds)
    assert kl.shape == (LATENT,)
    # The third column of W is 0: exact posterior = prior, KL exactly 0.
    assert kl[2] == pytest.approx(0.0, abs=1e-6)
    assert kl[0] > kl[1] > 0.5  # the stronger column carries more information
    # It sums to the mean KL of elbo_terms.
    total = np_(evaluation.elbo_terms(model, x)["kl"]).mean()
    assert kl.sum() == pytest.approx(total, rel=1e-5)


def test_evaluate_model_on_a_dataset_with_labels(data, tmp_path):
    x, log_px = data
    model = ppca_vae()
    labels = np.arange(len(x))
    # 50 examples in batches of 16: the last batch has 2.
    ds = tf.data.Dataset.from_tensor_slices((x[:50], labels[:50])).batch(16)
    results = evaluation.evaluate_model(
        model, ds, iwae_samples=50, iwae_chunk=20, elbo_samples=1, progress=True
    )
    assert results["num_examples"] == 50
    # Exact posterior: the IWAE estimate is log p(x), whatever K (see above).
    assert results["iwae_nll"] == pytest.approx(-np.mean(log_px[:50]), abs=1e-3)
    assert results["iwae_samples"] == 50
    assert results["iwae_bits_per_dim"] == pytest.approx(
        results["iwae_nll"] / (16 * math.log(2)), rel=1e-9
    )
    assert results["elbo_bits_per_dim"] == pytest.approx(
        -results["elbo"] / (16 * math.log(2)), rel=1e-9
    )
    assert results["elbo"] == pytest.approx(-results["reconstruction"] - results["kl"], rel=1e-6)
    # One draw per example: the ELBO's mean over 50 has SE 0.14 nats (per-draw
    # sd 0.98, measured over 200 draws), E = log p(x) with the exact posterior.
    assert abs(results["elbo"] - np.mean(log_px[:50])) < 0.7  # 5 SE
    assert results["active_units"] == 2 and results["latent_dim"] == LATENT
    assert results["kl_per_dim"][2] == pytest.approx(0.0, abs=1e-6)
    assert sum(results["kl_per_dim"]) == pytest.approx(results["kl"], rel=1e-5)
    assert results["latent_variances"][2] == pytest.approx(0.0, abs=1e-10)
    assert results["image_shape"] == [4, 4, 1]

    # max_batches limits the pass; iwae_samples=0 skips the IWAE.
    short = evaluation.evaluate_model(model, ds, iwae_samples=0, max_batches=2, progress=False)
    assert short["num_examples"] == 32 and "iwae_nll" not in short

    # results.json: atomic (no temporary file left), valid JSON, same values.
    path = tmp_path / "results.json"
    evaluation.write_results(str(path), results)
    evaluation.write_results(str(path), results)  # overwrites
    assert os.listdir(tmp_path) == ["results.json"]
    with open(path) as f:
        loaded = json.load(f)
    assert loaded["iwae_nll"] == pytest.approx(results["iwae_nll"])
    table = report.format_table(results)
    print(table)
    # Its former home still answers (tests/test_ae.py, test_disentanglement.py).
    assert evaluation.format_table is report.format_table
    assert "ELBO" in table and "IWAE NLL" in table and "bits/dim" in table
    assert f"{results['iwae_bits_per_dim']:.4f}" in table


def test_evaluate_model_iwae_between_the_elbo_and_the_exact_log_px(data):
    # The results' IWAE bound against the results' ELBO, where they differ:
    # the perturbed posterior puts the ELBO 1.8174 nats below log p(x)
    # (`ppca_elbo_gap`) and 50 importance samples close all but ~0.03 of it
    # (tests/test_iwae.py: L_50 = log p(x) - 0.027, SE 0.005 for 20 batches;
    # one batch of 64 has sd ~0.02). ELBO with 20 draws: SE 0.43 / sqrt(20)
    # = 0.095 (per-draw sd 3.2 per example, measured). Expected IWAE - ELBO
    # = 1.79; an IWAE equal to the ELBO fails the 1.2 margin by > 6 SE.
    x, log_px = data
    model = ppca_vae(mean_shift=0.2, log_var_shift=1.0)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)
    results = evaluation.evaluate_model(
        model, ds, iwae_samples=50, iwae_chunk=25, elbo_samples=20, progress=False
    )
    iwae, elbo, exact = -results["iwae_nll"], results["elbo"], float(np.mean(log_px))
    print(f"PPCA, evaluate_model: ELBO {elbo:.3f}, IWAE50 {iwae:.3f}, log p(x) {exact:.3f}")
    gap = ppca_elbo_gap(mean_shift=0.2, log_var_shift=1.0)
    assert abs(elbo - (exact - gap)) < 0.5  # 5 SE
    assert iwae - elbo > 1.2
    # A lower bound: below log p(x) up to its own noise (~0.02), and close.
    assert exact - 0.15 < iwae < exact + 0.05


def test_automatic_iwae_chunk_bounds_the_decoder_output():
    # 2**22 values per decoder call: 64 images of 64x64x1 -> 16 samples per call.
    assert evaluation._auto_chunk(64, (64, 64, 1), 1000) == 16
    assert evaluation._auto_chunk(64, (28, 28, 1), 1000) == 83
    assert evaluation._auto_chunk(16, (4, 4, 1), 50) == 50  # capped at K
    assert evaluation._auto_chunk(4096, (256, 256, 3), 1000) == 1  # at least 1


def test_evaluate_model_refuses_an_infinite_dataset(data):
    x, _ = data
    ds = tf.data.Dataset.from_tensor_slices(x).batch(8).repeat()
    with pytest.raises(ValueError, match="max_batches"):
        evaluation.evaluate_model(ppca_vae(), ds, iwae_samples=0, progress=False)
    results = evaluation.evaluate_model(
        ppca_vae(), ds, iwae_samples=0, max_batches=3, progress=False
    )
    assert results["num_examples"] == 24


# -- A model that bounds no likelihood ----------------------------------------


class _NoBound(VAE):
    """The PPCA VAE flagged like the autoencoder: evaluation must not ask it for bounds."""

    bounds_likelihood = False

    def log_weights(self, *args, **kwargs):
        raise AssertionError("log_weights called on a model that bounds no likelihood")

    def elbo(self, *args, **kwargs):
        raise AssertionError("elbo called on a model that bounds no likelihood")


def test_no_bound_model_gets_reconstruction_at_the_mean_and_a_note(data):
    x, _ = data
    vae = ppca_vae()
    model = _NoBound(vae.encoder, vae.decoder, likelihood="gaussian", gaussian_sigma=SIGMA)
    # By hand: z = the exact posterior mean, x_hat = W z + b, and
    # -log N(x; x_hat, sigma^2 I) = sum_pixels (x - x_hat)^2 / (2 sigma^2) + log(sigma sqrt(2 pi)).
    w, b = ppca_params()
    flat = x.reshape(len(x), -1).astype(np.float64)
    m = np.diag(w.T @ w) + SIGMA**2
    z = (flat - b) @ (w / m)  # (n, L)
    x_hat = z @ w.T + b
    nll = np.sum((flat - x_hat) ** 2 / (2 * SIGMA**2) + math.log(SIGMA * math.sqrt(2 * math.pi)), 1)
    terms = evaluation.reconstruction_terms(model, x)
    np.testing.assert_allclose(np_(terms["reconstruction"]), nll, rtol=1e-4)
    np.testing.assert_allclose(np_(terms["mean"]), z, atol=1e-5)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)
    results = evaluation.evaluate_model(model, ds, iwae_samples=10, progress=False)
    assert results["reconstruction"] == pytest.approx(np.mean(nll), rel=1e-4)
    assert results["reconstruction_per_dim"] == pytest.approx(np.mean(nll) / PIXELS, rel=1e-4)
    assert results["note"] == evaluation.NO_BOUND_NOTE and results["bounds_likelihood"] is False
    assert not {"elbo", "kl", "iwae_nll", "kl_per_dim", "elbo_bits_per_dim"} & set(results)
    # The third PPCA dimension is collapsed: its codes do not vary.
    assert results["active_units"] == 2
    np.testing.assert_allclose(results["latent_means"], z.mean(axis=0), atol=1e-5)
    assert "note: " + evaluation.NO_BOUND_NOTE in report.format_table(results)


# -- A conditional model: bounds on log p(x|y) -------------------------------
#
# Conditional PPCA: x = W z + b + B c(y) + sigma * noise, c(y) the one-hot of
# y in K classes, so p(x|y) = N(x; b + B c(y), W W^T + sigma^2 I) and the
# exact posterior q*(z|x, y) is the PPCA one of x - B c(y). As a `CVAE`
# (encoder [x, c] -> mean, log_var; decoder [z, c] -> x), its IWAE bound is
# log p(x|y) exactly, and only with each image's own label.

CLASSES = 3


def class_offsets(seed=2):
    """B^T, `(K, D)`: each class shifts the images by a different pattern."""
    return np.random.default_rng(seed).normal(size=(CLASSES, PIXELS))


def conditional_ppca_data(n, seed=3):
    """`(x, y)`: n images `(n, 4, 4, 1)` and their classes `(n,)`."""
    w, b = ppca_params()
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    z = rng.normal(size=(n, LATENT))
    x = z @ w.T + b + class_offsets()[y] + SIGMA * rng.normal(size=(n, PIXELS))
    return x.reshape((n, *IMAGE_SHAPE)).astype("float32"), y


def conditional_ppca_log_px(x, y):
    """Exact log p(x|y), float64, (n,)."""
    w, b = ppca_params()
    cov = w @ w.T + SIGMA**2 * np.eye(PIXELS)
    centred = x.reshape(len(x), -1).astype(np.float64) - class_offsets()[y]
    return stats.multivariate_normal.logpdf(centred, b, cov)


def conditional_ppca_vae():
    from keras_vae.models import CVAE

    w, b = ppca_params()
    offsets = class_offsets()  # (K, D)
    m = np.diag(w.T @ w) + SIGMA**2
    kernel = w / m  # (D, L)
    images, condition = keras.Input(IMAGE_SHAPE), keras.Input((CLASSES,))
    flat = keras.layers.Flatten()(images)
    from_x = keras.layers.Dense(LATENT)
    from_c = keras.layers.Dense(LATENT, use_bias=False)
    log_var = keras.layers.Dense(LATENT)
    # mean = (x - b - c B^T) W M^-1
    mean = keras.layers.Add()([from_x(flat), from_c(condition)])
    encoder = keras.Model([images, condition], [mean, log_var(flat)])
    from_x.set_weights([kernel, -b @ kernel])
    from_c.set_weights([-offsets @ kernel])
    log_var.set_weights([np.zeros((PIXELS, LATENT)), np.log(SIGMA**2 / m)])
    z, condition = keras.Input((LATENT,)), keras.Input((CLASSES,))
    linear, shift = keras.layers.Dense(PIXELS), keras.layers.Dense(PIXELS, use_bias=False)
    out = keras.layers.Reshape(IMAGE_SHAPE)(keras.layers.Add()([linear(z), shift(condition)]))
    decoder = keras.Model([z, condition], out)
    linear.set_weights([w.T, b])
    shift.set_weights([offsets])
    return CVAE(
        encoder, decoder, condition_size=CLASSES, likelihood="gaussian", gaussian_sigma=SIGMA,
        seed=0,
    )  # fmt: skip


def test_conditional_model_bounds_log_p_x_given_y_with_its_labels():
    x, y = conditional_ppca_data(40)
    log_px = conditional_ppca_log_px(x, y)
    model = conditional_ppca_vae()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 16 + 16 + 8
    results = evaluation.evaluate_model(model, ds, iwae_samples=5, progress=False)
    # The exact posterior: L_K = log p(x|y) for any K (float32 rounding only).
    assert results["iwae_nll"] == pytest.approx(-np.mean(log_px), abs=1e-3)
    # One draw per example, the exact posterior: SE 0.98 / sqrt(40) = 0.155
    # nats (per-draw sd as for the PPCA above).
    assert abs(results["elbo"] - np.mean(log_px)) < 0.8  # 5 SE
    assert results["conditional"] is True and results["note"] == evaluation.CONDITIONAL_NOTE
    assert results["active_units"] == 2 and results["num_examples"] == 40
    # Other labels: a far worse bound (two classes' offsets differ by ~1.4 per
    # pixel, 7 sigma; seen: NLL 273.6 against -0.64), so the batches' labels
    # were the ones used.
    shuffled = tf.data.Dataset.from_tensor_slices((x, (y + 1) % CLASSES)).batch(16)
    wrong = evaluation.evaluate_model(model, shuffled, iwae_samples=5, progress=False)
    assert wrong["iwae_nll"] > results["iwae_nll"] + 100
    # KL per dimension with the labels: the third dimension is collapsed.
    kl = evaluation.kl_per_dimension(model, ds)
    assert kl[2] == pytest.approx(0.0, abs=1e-6) and kl.sum() == pytest.approx(results["kl"])
    # Images without labels: refused, naming what is missing.
    with pytest.raises(ValueError, match=r"needs \(images, labels\) batches"):
        evaluation.evaluate_model(model, tf.data.Dataset.from_tensor_slices(x).batch(16))
    # The table says what is bounded.
    table = report.format_table({**results, "conditioned_on": "label"})
    assert "ELBO (<= log p(x|y)) [nats]" in table and "IWAE NLL (-log p(x|y))" in table
    assert "KL(q(z|x,y) || p(z))" in table and "conditioned on (y)" in table
    assert "p(x))" not in table and "note: Conditional model" in table
    unconditional = report.format_table({"elbo": -1.0, "iwae_nll": 2.0})
    assert "ELBO (<= log p(x)) [nats]" in unconditional and "p(x|y)" not in unconditional
