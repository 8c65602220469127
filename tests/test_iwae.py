"""Tests for keras_vae.models.iwae: K = 1 is the VAE, the bound against NumPy and
against the exact log p(x) of probabilistic PCA, training, `.keras` round
trips, the train.py / evaluate.py / SavedModel path, MirroredStrategy and
mixed precision."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp
from script_helpers import quick_evaluate_in_process, train_in_process
from test_evaluation import SIGMA, ppca_data, ppca_elbo_gap, ppca_log_px, ppca_vae
from test_training import TINY
from test_vae import shape_images

import keras_vae
from keras_vae import config as config_lib
from keras_vae import evaluation, models
from keras_vae.models import IWAE, VAE
from keras_vae.training import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SHAPE = (8, 8, 1)
LATENT = 2


def np_(x):
    return keras.ops.convert_to_numpy(x)


def networks(seed=0):
    """A tiny mlp encoder and decoder (8x8 images, one hidden layer of 16, z in R^2)."""
    keras.utils.set_random_seed(seed)
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, LATENT, "mlp", widths=(16,))
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, LATENT, "mlp", widths=(16,))
    return encoder, decoder


def make_iwae(k=5, seed=0, **kwargs):
    return IWAE(*networks(seed), k=k, seed=seed, **kwargs)


def images(n=32, seed=0):
    return shape_images(n, 8, seed=seed)


def noise(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def loss_and_grads(model, x, eps):
    with tf.GradientTape() as tape:
        loss, logs = model.objective(model.compute_terms(x, training=True, eps=eps), 1.0)
    return loss, logs, tape.gradient(loss, model.trainable_weights)


# ---------------------------------------------------------------------------
# The objective


def test_k1_is_exactly_the_vae():
    # One set of networks in both models: the same weights by construction.
    encoder, decoder = networks()
    iwae = IWAE(encoder, decoder, k=1, seed=0)
    vae = VAE(encoder, decoder, seed=0)
    x, eps = images(16), noise((16, LATENT))
    iwae_loss, iwae_logs, iwae_grads = loss_and_grads(iwae, x, eps)
    vae_loss, vae_logs, vae_grads = loss_and_grads(vae, x, eps)
    # An untrained Bernoulli decoder: about 64 * log 2 = 44 nats.
    assert 30 < float(vae_loss) < 60
    np.testing.assert_allclose(np_(iwae_loss), np_(vae_loss), rtol=1e-6)
    for key in ("reconstruction", "kl", "elbo"):
        np.testing.assert_allclose(np_(iwae_logs[key]), np_(vae_logs[key]), rtol=1e-6)
    # Kernel and bias of the encoder's hidden, mean and log-variance layers
    # and of the decoder's two: all ten get a gradient.
    assert len(iwae_grads) == len(vae_grads) == 10
    assert all(g is not None and np.abs(np_(g)).max() > 0 for g in iwae_grads)
    for a, b in zip(iwae_grads, vae_grads, strict=True):
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-5, atol=1e-6)
    # eps as (K=1, batch, latent_dim) is the same draw.
    again, _ = iwae.objective(iwae.compute_terms(x, eps=eps[None]), 1.0)
    np.testing.assert_allclose(np_(again), np_(vae_loss), rtol=1e-6)
    # The logged L_1 = log w_1 uses the sampled KL: the same expectation as
    # the ELBO, another value.
    log_w = np_(iwae.log_weights(x, 1, eps=eps[None]))
    np.testing.assert_allclose(np_(iwae_logs["iwae_bound"]), log_w.mean(), rtol=1e-5)


def test_bound_is_the_logmeanexp_of_log_weights():
    model = make_iwae(k=5)
    vae = VAE(model.encoder, model.decoder, seed=0)
    x, eps = images(16), noise((5, 16, LATENT))
    terms = model.compute_terms(x, eps=eps)
    loss, logs = model.objective(terms, 1.0)
    # L_K = logsumexp_k(log w_k) - log K per example, then the batch mean, in
    # float64 from the base class's own `log_weights` with the same noise.
    log_w = np_(model.log_weights(x, 5, eps=eps)).astype(np.float64)
    assert log_w.shape == (16, 5)
    expected = np.mean(logsumexp(log_w, axis=1) - math.log(5))
    np.testing.assert_allclose(np_(terms["log_w"]), log_w, rtol=1e-6)
    np.testing.assert_allclose(np_(logs["iwae_bound"]), expected, rtol=1e-6)
    np.testing.assert_allclose(np_(loss), -expected, rtol=1e-6)
    # The bound is above the mean log-weight (Jensen), here by 0.62 nats.
    assert float(np_(logs["iwae_bound"])) > log_w.mean() + 1e-3
    # reconstruction / kl / elbo are the VAE's terms of the first code.
    _, vae_logs = vae.objective(vae.compute_terms(x, eps=eps[0]), 1.0)
    for key in ("reconstruction", "kl", "elbo"):
        np.testing.assert_allclose(np_(logs[key]), np_(vae_logs[key]), rtol=1e-6)
    # Without eps: k fresh draws, float32; a deterministic sampler gives z = mean K times.
    assert model.compute_terms(x)["log_w"].shape == (16, 5)
    assert keras.backend.standardize_dtype(model.compute_terms(x)["log_w"].dtype) == "float32"
    model.sampling.deterministic = True
    log_w = np_(model.compute_terms(x)["log_w"])
    np.testing.assert_array_equal(log_w, np.repeat(log_w[:, :1], 5, axis=1))


def test_gradient_check_float64(dtype_policy):
    # The K = 4 bound's gradient with respect to the images and to the
    # encoder's log-variance kernel (which also enters log q(z_k|x)) against
    # central differences, in float64 (the bound stays float64 under a float64
    # policy). tanh keeps it smooth; the tolerance is tests/test_vae.py's
    # (seen: 1.5e-9 and 6e-9, gradients up to 7.7 and 2.6).
    dtype_policy("float64", floatx="float64")
    keras.utils.set_random_seed(0)
    kwargs = dict(widths=(16,), activation="tanh")
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, LATENT, "mlp", **kwargs)
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, LATENT, "mlp", likelihood="gaussian", **kwargs)
    model = IWAE(encoder, decoder, k=4, likelihood="gaussian", gaussian_sigma=0.3, seed=0)
    x = tf.constant(np.random.default_rng(0).random((2, *IMAGE_SHAPE)), tf.float64)
    eps = tf.constant(np.random.default_rng(1).standard_normal((4, 2, LATENT)), tf.float64)
    kernel = encoder.get_layer("raw_log_var").kernel  # (16, 2)

    def loss_of_images(images):
        return model.objective(model.compute_terms(images, eps=eps), 1.0)[0]

    def loss_of_kernel(value):
        with keras.StatelessScope(state_mapping=[(kernel, value)]):
            return model.objective(model.compute_terms(x, eps=eps), 1.0)[0]

    assert loss_of_images(x).dtype == tf.float64
    for fn, arg in ((loss_of_images, x), (loss_of_kernel, tf.identity(kernel.value))):
        theoretical, numerical = tf.test.compute_gradient(fn, [arg], delta=1e-4)
        assert np.abs(theoretical[0]).max() > 0.1  # a real gradient, not zeros
        np.testing.assert_allclose(theoretical[0], numerical[0], rtol=0, atol=1e-6)


def test_elbo_evaluation_sees_the_vae_terms():
    # evaluation.elbo_terms passes eps of shape (batch, latent_dim): one code
    # per image, so the ELBO of an IWAE is computed as a VAE's, at no K-fold cost.
    model = make_iwae(k=5)
    vae = VAE(model.encoder, model.decoder, seed=0)
    x = images(8)
    ours = evaluation.elbo_terms(model, x, num_samples=3, seed=0)
    theirs = evaluation.elbo_terms(vae, x, num_samples=3, seed=0)
    for key in ("elbo", "reconstruction", "kl"):
        np.testing.assert_allclose(np_(ours[key]), np_(theirs[key]), rtol=1e-6)


def test_bounds_ordered_and_below_the_exact_log_px():
    # Probabilistic PCA as a VAE (tests/test_evaluation.py): log p(x) is exact.
    # Its posterior is perturbed (means +0.2, variances x e), so the bounds
    # are strict. E[L_K] per K is the mean of R = 20 independent batch means
    # of L_K over 64 examples. Seen: L_1 = -1.30, L_5 = 0.12, L_50 = 0.378
    # (standard errors 0.097, 0.024, 0.005) and log p(x) = 0.405: the gaps,
    # 1.42 and 0.26 nats, are 14 and 11 standard errors (5 asked), and L_50
    # is 0.027 nats (5 standard errors) below log p(x).
    base = ppca_vae(mean_shift=0.2, log_var_shift=1.0)
    model = IWAE(
        base.encoder, base.decoder, likelihood="gaussian", gaussian_sigma=SIGMA, k=5, seed=0
    )
    x = ppca_data(64)
    log_px = float(np.mean(ppca_log_px(x)))
    rng = np.random.default_rng(0)
    means, errors = {}, {}
    for k in (1, 5, 50):
        bounds = []
        for _ in range(20):
            eps = rng.standard_normal((k, 64, 3)).astype("float32")
            _, logs = model.objective(model.compute_terms(x, eps=eps), 1.0)
            bounds.append(float(np_(logs["iwae_bound"])))
        means[k], errors[k] = np.mean(bounds), np.std(bounds, ddof=1) / math.sqrt(len(bounds))
    assert means[5] - means[1] > 5 * math.hypot(errors[1], errors[5]), (means, errors)
    assert means[50] - means[5] > 5 * math.hypot(errors[5], errors[50]), (means, errors)
    # The gap to log p(x) shrinks with K (0.03 nats at K = 50) but stays a bound.
    assert means[50] <= log_px + 3 * errors[50], (means, log_px)
    assert log_px - means[50] < 0.1
    # L_1 is the ELBO in expectation, log p(x) - 1.8174 here (`ppca_elbo_gap`:
    # KL(q(z|x) || p(z|x)) in closed form), i.e. -1.412 against -1.30 seen
    # (1.2 SE); L_50 sits 1.79 nats above it, and an L_50 equal to the ELBO
    # fails the 1.6 margin.
    elbo = log_px - ppca_elbo_gap(mean_shift=0.2, log_var_shift=1.0)
    assert abs(means[1] - elbo) < 5 * errors[1], (means, errors, elbo)
    assert means[50] - elbo > 1.6, (means, elbo)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "Expected `k` to be an integer >= 1. Received: k=0"),
        ({"k": 2.5}, "Received: k=2.5"),
        ({"k": True}, "Received: k=True"),
        ({"beta": 4.0}, "Expected beta=1 for the IWAE"),
        ({"beta_schedule": "linear", "warmup_steps": 10}, "beta_schedule='constant'"),
        ({"free_bits": 0.5}, "Expected free_bits=0 for the IWAE"),
    ],
)
def test_refuses_what_does_not_apply(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IWAE(*networks(), **kwargs)


def test_config_sets_k():
    config = config_lib.resolve(
        "shapes", model="iwae", iwae_k=7, network="mlp", widths=(16,), latent_dim=LATENT
    )
    assert models.get("iwae") is IWAE
    assert IWAE.config_options(config) == {"k": 7}
    model = plan.build_model(config, IMAGE_SHAPE, steps_per_epoch=10)
    assert type(model) is IWAE and model.k == 7


# ---------------------------------------------------------------------------
# Training, saving, the command line


def test_loss_drops_in_50_steps_and_logs_the_bound():
    model = make_iwae(k=5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, eps = images(64), noise((5, 64, LATENT))
    before, _ = model.objective(model.compute_terms(x, eps=eps), 1.0)
    history = model.fit(x, batch_size=16, epochs=13, shuffle=False, verbose=0)  # 52 steps
    after, _ = model.objective(model.compute_terms(x, eps=eps), 1.0)
    # -L_5 on the same noise before and after; seen: 44.7 -> 28.2 nats.
    assert float(after) < float(before) - 10, (float(before), float(after))
    assert {"loss", "reconstruction", "kl", "elbo", "iwae_bound"} <= set(history.history)
    assert [m.name for m in model.metrics][-1] == "iwae_bound"
    # loss = -L_K in every step, so also in the epoch means.
    np.testing.assert_allclose(
        history.history["loss"], -np.array(history.history["iwae_bound"]), rtol=1e-6
    )
    assert history.history["beta"] == [1.0] * 13
    assert int(model.skipped_steps.numpy()) == 0


def test_keras_round_trip(tmp_path):
    model = make_iwae(k=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is IWAE and loaded.k == 3 and loaded.get_config()["k"] == 3
    assert int(loaded.kl_step.numpy()) == 2
    np.testing.assert_array_equal(np_(loaded.reconstruct(x)), np_(model.reconstruct(x)))
    eps = noise((3, 16, LATENT))
    for a, b in zip(model.encode(x), loaded.encode(x), strict=True):
        np.testing.assert_array_equal(np_(a), np_(b))
    np.testing.assert_array_equal(
        np_(loaded.log_weights(x, 3, eps=eps)), np_(model.log_weights(x, 3, eps=eps))
    )
    loss, logs = model.objective(model.compute_terms(x, eps=eps), 1.0)
    loaded_loss, loaded_logs = loaded.objective(loaded.compute_terms(x, eps=eps), 1.0)
    assert float(loaded_loss) == float(loss)
    assert float(loaded_logs["iwae_bound"]) == float(logs["iwae_bound"])
    # It keeps training (the compiled optimizer came back too).
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])


def _scalar_tags(folder):
    tags = set()
    for name in os.listdir(folder):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(folder, name)):
                tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_train_py_evaluate_py_and_export(tmp_path):
    # train.py's and evaluate.py's work in this process, from the same flags
    # (script_helpers: train.py's own flag definitions and parsing, so
    # --iwae_k=3 still goes through them): this test is about the iwae run,
    # the files it leaves and their evaluation; the scripts' exit codes and
    # lines are tested on the other models (test_training, test_report).
    workdir = str(tmp_path / "run")
    train_in_process(workdir, "--model=iwae", "--iwae_k=3", *TINY)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["iwae_k"] == 3
    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)
    assert len(history["iwae_bound"]) == len(history["val_iwae_bound"]) == 2
    np.testing.assert_allclose(history["loss"], -np.array(history["iwae_bound"]), rtol=1e-5)
    for sub in ("train", "validation"):
        tags = _scalar_tags(os.path.join(workdir, "tensorboard", sub))
        assert {"epoch_loss", "epoch_elbo", "epoch_iwae_bound"} <= tags, (sub, tags)

    quick_evaluate_in_process(workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["iwae_samples"] == 10 and np.isfinite(results["iwae_nll"])

    served = tf.saved_model.load(os.path.join(workdir, "export"))  # plain TensorFlow
    x = shape_images(4, 64)
    out = served.reconstruct(tf.constant(x))["images"].numpy()
    assert out.shape == (4, 64, 64, 1) and np.all((out >= 0) & (out <= 1))


# ---------------------------------------------------------------------------
# Distribution and precision

# MirroredStrategy: tests/test_distribute.py runs one step of every model on 2 CPUs.


def _twenty_steps():
    model = make_iwae(k=5, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images(64), batch_size=16, epochs=5, shuffle=False, verbose=0)
    return history.history["loss"], model


def test_mixed_bfloat16_20_steps_finite(dtype_policy):
    reference, _ = _twenty_steps()
    dtype_policy("mixed_bfloat16")
    losses, model = _twenty_steps()
    assert model.encoder.layers[2].compute_dtype == "bfloat16"  # the hidden Dense
    assert np.all(np.isfinite(losses)) and int(model.skipped_steps.numpy()) == 0
    # The bound in float32 all the same.
    terms = model.compute_terms(images(8))
    _, logs = model.objective(terms, 1.0)
    assert keras.backend.standardize_dtype(terms["log_w"].dtype) == "float32"
    assert keras.backend.standardize_dtype(logs["iwae_bound"].dtype) == "float32"
    # Seen: the last loss 1.2e-5 (relative) from float32's.
    np.testing.assert_allclose(losses[-1], reference[-1], rtol=0.02)
