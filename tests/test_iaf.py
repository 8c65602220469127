"""Tests for keras_vae.models.iaf: the MADE masks and the flow's Jacobian, T = 0
is the VAE, log q(z_T|x) by change of variables, the central code, training,
saving, the train.py / evaluate.py / SavedModel path, MirroredStrategy and
mixed precision."""

import json
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from script_helpers import quick_evaluate_in_process, train_in_process
from test_training import TINY
from test_vae import shape_images

import keras_vae
from keras_vae import config as config_lib
from keras_vae import models
from keras_vae.models import IAF, VAE
from keras_vae.models.iaf import IAFFlow, made_masks
from keras_vae.training import plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SHAPE = (8, 8, 1)
LATENT = 3


def np_(x):
    return keras.ops.convert_to_numpy(x)


def networks(seed=0, latent=LATENT):
    """A tiny mlp encoder and decoder (8x8 images, one hidden layer of 16)."""
    keras.utils.set_random_seed(seed)
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, latent, "mlp", widths=(16,))
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, latent, "mlp", widths=(16,))
    return encoder, decoder


def make_iaf(steps=2, units=16, seed=0, **kwargs):
    return IAF(*networks(seed), flow_steps=steps, flow_units=units, seed=seed, **kwargs)


def images(n=32, seed=0):
    return shape_images(n, 8, seed=seed)


def noise(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def randomise(flow, seed=0):
    """Random biases too, so every sigma_t and m_t differs (not only the kernels')."""
    rng = np.random.default_rng(seed)
    for weights in flow.step_weights:
        for key in ("b_h", "b_m", "b_s"):
            weights[key].assign(rng.normal(0.0, 1.0, weights[key].shape).astype("float32"))


def jacobian(fn, z0):
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z = fn(z0)
    return np_(tape.batch_jacobian(z, z0)).astype(np.float64)  # (B, D, D): dz_i / dz0_j


# ---------------------------------------------------------------------------
# The flow


@pytest.mark.parametrize("latent, units", [(4, 16), (1, 4), (2, 3)])
def test_made_masks_connect_only_earlier_dimensions(latent, units):
    for reverse in (False, True):
        mask_in, mask_out = made_masks(latent, units, reverse)
        paths = mask_in @ mask_out  # (D, D): paths from input j to output i
        order = np.arange(latent)[::-1] if reverse else np.arange(latent)
        rank = np.argsort(order)
        allowed = rank[:, None] < rank[None, :]  # input j before output i in the order
        assert np.all(paths[~allowed] == 0)
        if latent > 1:
            assert np.all(paths[allowed] > 0)  # and all earlier ones are reachable


def test_jacobian_is_triangular_and_its_log_det_is_the_sum_of_log_sigma():
    d = 4
    flow = IAFFlow(d, steps=3, units=16, dtype="float32")
    randomise(flow)
    rng = np.random.default_rng(0)
    z0 = tf.constant(rng.standard_normal((8, d)).astype("float32"))
    context = tf.constant(rng.standard_normal((8, 2 * d)).astype("float32"))
    log_sigmas, z = [], z0
    for t in range(3):
        jac = jacobian(lambda v, t=t: flow.step(v, context, t)[0], z)
        _, log_sigma = flow.step(z, context, t)
        log_sigmas.append(np_(log_sigma))
        # Lower triangular in the step's order: 1..D on even steps, D..1 on odd.
        strict = np.triu(np.ones((d, d), bool), 1)
        assert np.all(jac[:, strict if t % 2 == 0 else strict.T] == 0)
        np.testing.assert_allclose(
            np.diagonal(jac, axis1=1, axis2=2), np.exp(log_sigmas[-1]), rtol=1e-5
        )
        assert np.abs(jac[:, ~np.eye(d, dtype=bool)]).max() > 1e-3  # not merely diagonal
        z = flow.step(z, context, t)[0]
    z_t, total = flow(z0, context)
    np.testing.assert_allclose(np_(z_t), np_(z), rtol=1e-6)
    np.testing.assert_allclose(np_(total), np.sum(log_sigmas, axis=0), rtol=1e-6, atol=1e-6)
    # The whole flow's log |det dz_T / dz_0| (not triangular: the order
    # reverses) is sum_t sum_d log sigma_t,d. Seen: 1e-6 nats off (log-dets near -10).
    _, log_det = np.linalg.slogdet(jacobian(lambda v: flow(v, context)[0], z0))
    expected = np.sum(np_(total), axis=-1)
    assert np.abs(expected).min() > 0.5
    np.testing.assert_allclose(log_det, expected, rtol=0, atol=1e-5)


def test_log_q_is_the_change_of_variables_density():
    model = make_iaf(steps=2)
    randomise(model.flow)
    x, eps = images(8), noise((8, LATENT))
    mean, log_var = (np_(t).astype(np.float64) for t in model.encoder(x))
    z, log_q = model.posterior(mean, log_var, eps)
    # log q(z_T|x) = log N(z_0; mean, diag(exp(log_var))) - log |det dz_T / dz_0|.
    z0 = mean + np.exp(0.5 * log_var) * eps
    context = tf.constant(np.concatenate([mean, log_var], -1), tf.float32)
    jac = jacobian(lambda v: model.flow(v, context)[0], tf.constant(z0, tf.float32))
    log_n = -0.5 * np.sum(np.log(2 * np.pi) + log_var + (z0 - mean) ** 2 / np.exp(log_var), -1)
    expected = log_n - np.linalg.slogdet(jac)[1]
    np.testing.assert_allclose(np_(keras.ops.sum(log_q, -1)), expected, rtol=0, atol=1e-4)
    # compute_terms and log_weights agree with it and with each other.
    terms = model.compute_terms(x, eps=eps)
    np.testing.assert_allclose(np_(terms["log_qz"]), expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(np_(terms["z"]), np_(z), rtol=1e-6)
    log_pz = -0.5 * np.sum(np.log(2 * np.pi) + np_(z).astype(np.float64) ** 2, -1)
    np.testing.assert_allclose(
        np_(keras.ops.sum(terms["kl_per_dim"], -1)), expected - log_pz, rtol=0, atol=1e-4
    )
    log_w = np_(model.log_weights(x, 1, eps=eps[None]))[:, 0]
    np.testing.assert_allclose(log_w, np_(terms["log_px"]) + log_pz - expected, atol=1e-4)


def test_zero_steps_is_the_vae():
    # One set of networks: the same weights by construction.
    encoder, decoder = networks()
    iaf = IAF(encoder, decoder, flow_steps=0, seed=0)
    vae = VAE(encoder, decoder, seed=0)
    x, eps = images(16), noise((16, LATENT))
    terms, vae_terms = iaf.compute_terms(x, eps=eps), vae.compute_terms(x, eps=eps)
    np.testing.assert_array_equal(np_(terms["z"]), np_(vae_terms["z"]))
    loss, logs = iaf.objective(terms, 1.0)
    _, vae_logs = vae.objective(vae_terms, 1.0)
    np.testing.assert_allclose(np_(logs["reconstruction"]), np_(vae_logs["reconstruction"]), 1e-6)
    # The loss is the VAE's with the sampled KL, i.e. -mean_x log w for the same eps ...
    vae_log_w = np_(vae.log_weights(x, 1, eps=eps[None]))
    np.testing.assert_allclose(np_(loss), -vae_log_w.mean(), rtol=1e-5)
    np.testing.assert_allclose(
        np_(iaf.log_weights(x, 4, eps=noise((4, 16, LATENT)))),
        np_(vae.log_weights(x, 4, eps=noise((4, 16, LATENT)))),
        rtol=1e-5,
    )
    # ... whose mean over eps is the closed-form KL (20000 draws: 2% here).
    many = noise((20000, LATENT), seed=2)
    xs = np.repeat(np_(x)[:1], 20000, axis=0)
    sampled = np_(iaf.compute_terms(xs, eps=many)["kl_per_dim"]).mean(0)
    np.testing.assert_allclose(sampled, np_(vae_terms["kl_per_dim"])[0], rtol=0.05, atol=0.02)
    np.testing.assert_array_equal(np_(iaf.encode(x)[0]), np_(vae.encode(x)[0]))


def test_central_code_is_what_consumers_decode():
    model = make_iaf(steps=2)
    randomise(model.flow)
    x = images(8)
    code, log_var = model.encode(x)
    mean, base_log_var = model.encoder(x)
    np.testing.assert_array_equal(np_(log_var), np_(base_log_var))
    np.testing.assert_allclose(np_(code), np_(model.posterior(mean, log_var, np.zeros((8, 3)))[0]))
    assert np.abs(np_(code) - np_(mean)).max() > 0.1  # the flow moves the code
    np.testing.assert_array_equal(np_(model.reconstruct(x)), np_(model.decode(code)))
    np.testing.assert_array_equal(np_(model(x)), np_(model.decode(code)))
    np.testing.assert_array_equal(np_(model.compute_terms(x, eps=np.zeros((8, 3)))["z"]), np_(code))
    assert not np.allclose(np_(model.reconstruct(x, sample_latent=True)), np_(model(x)))
    assert model.sample(5).shape == (5, *IMAGE_SHAPE)


def test_flow_weights_are_trained_and_saved(tmp_path):
    model = make_iaf(steps=2, units=8)
    # Encoder 6 and decoder 4 weights, then 7 per step.
    assert len(model.trainable_weights) == 10 + 2 * 7
    x = images(8)
    with tf.GradientTape() as tape:
        loss, _ = model.objective(model.compute_terms(x, training=True), 1.0)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.abs(np_(g)).max() > 0 for g in grads)
    path = str(tmp_path / "backup.weights.h5")
    model.save_weights(path)
    other = make_iaf(steps=2, units=8, seed=5)
    other.load_weights(path)
    for a, b in zip(model.weights, other.weights, strict=True):
        np.testing.assert_array_equal(np_(a), np_(b))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"flow_steps": -1}, "Expected `flow_steps` to be an integer >= 0"),
        ({"flow_steps": 1.5}, "Received: flow_steps=1.5"),
        ({"flow_units": 0}, "Expected `flow_units` to be an integer >= 1"),
        ({"flow_units": True}, "Received: flow_units=True"),
    ],
)
def test_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IAF(*networks(), **kwargs)


def test_config_options_and_build_model():
    given = types.SimpleNamespace(iaf_steps=3, iaf_units=8)
    assert IAF.config_options(given) == {"flow_steps": 3, "flow_units": 8}
    config = config_lib.resolve(
        "shapes", model="iaf", network="mlp", widths=(16,), latent_dim=2, iaf_steps=3
    )
    assert (config.iaf_steps, config.iaf_units) == (3, 64)  # --iaf_steps, --iaf_units
    assert models.get("iaf") is IAF
    model = plan.build_model(config, IMAGE_SHAPE, steps_per_epoch=10)
    assert type(model) is IAF and (model.flow_steps, model.flow_units) == (3, 64)


# ---------------------------------------------------------------------------
# Training, saving, the command line


def test_loss_drops_in_50_steps():
    model = make_iaf(steps=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x, eps = images(64), noise((64, LATENT))
    before, _ = model.objective(model.compute_terms(x, eps=eps), 1.0)
    history = model.fit(x, batch_size=16, epochs=13, shuffle=False, verbose=0)  # 52 steps
    after, _ = model.objective(model.compute_terms(x, eps=eps), 1.0)
    # -ELBO on the same noise before and after; seen: 45.4 -> 35.6 nats.
    assert float(after) < float(before) - 5, (float(before), float(after))
    assert {"loss", "reconstruction", "kl", "elbo"} <= set(history.history)
    assert int(model.skipped_steps.numpy()) == 0


def test_keras_round_trip(tmp_path):
    model = make_iaf(steps=3, units=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is IAF and (loaded.flow_steps, loaded.flow_units) == (3, 8)
    assert int(loaded.kl_step.numpy()) == 2
    np.testing.assert_array_equal(np_(loaded.reconstruct(x)), np_(model.reconstruct(x)))
    for a, b in zip(model.encode(x), loaded.encode(x), strict=True):
        np.testing.assert_array_equal(np_(a), np_(b))
    eps = noise((3, 16, LATENT))
    np.testing.assert_array_equal(
        np_(loaded.log_weights(x, 3, eps=eps)), np_(model.log_weights(x, 3, eps=eps))
    )
    loss, _ = model.objective(model.compute_terms(x, eps=eps[0]), 1.0)
    loaded_loss, _ = loaded.objective(loaded.compute_terms(x, eps=eps[0]), 1.0)
    assert float(loaded_loss) == float(loss)
    assert np.isfinite(loaded.fit(x, batch_size=8, epochs=1, verbose=0).history["loss"][0])


@pytest.mark.slow
def test_train_py_evaluate_py_and_export(tmp_path):
    # train.py's and evaluate.py's work in this process, from the same flags
    # (script_helpers): this test is about the iaf run, the files it leaves and
    # their evaluation; the scripts' exit codes and lines are tested on the
    # other models (tests/test_training.py, test_report.py, test_runs.py).
    workdir = str(tmp_path / "run")
    train_in_process(workdir, "--model=iaf", *TINY)
    # evaluate.py checks model.keras against config.json by the networks'
    # weight count (VAE.network_parameters): the flow's own weights apart.
    quick_evaluate_in_process(workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert np.isfinite(results["iwae_nll"]) and np.isfinite(results["elbo"])
    # The 10-sample bound is tighter than the ELBO.
    assert results["iwae_nll"] <= -results["elbo"], results

    served = tf.saved_model.load(os.path.join(workdir, "export"))  # plain TensorFlow
    x = shape_images(4, 64)
    out = served.reconstruct(tf.constant(x))["images"].numpy()
    assert out.shape == (4, 64, 64, 1) and np.all((out >= 0) & (out <= 1))
    loaded = keras.models.load_model(os.path.join(workdir, "model.keras"))
    np.testing.assert_allclose(out, np_(loaded.reconstruct(x)), atol=1e-5)
    print(json.dumps({k: results[k] for k in ("elbo", "iwae_nll")}))


# ---------------------------------------------------------------------------
# Distribution and precision

# MirroredStrategy: tests/test_distribute.py runs one step of every model on 2 CPUs.


def _twenty_steps():
    model = make_iaf(steps=2, seed=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(images(64), batch_size=16, epochs=5, shuffle=False, verbose=0)
    return history.history["loss"], model


def test_mixed_bfloat16_20_steps_finite(dtype_policy):
    reference, _ = _twenty_steps()
    dtype_policy("mixed_bfloat16")
    losses, model = _twenty_steps()
    assert model.encoder.layers[2].compute_dtype == "bfloat16"  # the hidden Dense
    assert model.flow.compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in model.flow.weights)
    assert np.all(np.isfinite(losses)) and int(model.skipped_steps.numpy()) == 0
    terms = model.compute_terms(images(8))
    assert keras.backend.standardize_dtype(terms["kl_per_dim"].dtype) == "float32"
    assert keras.backend.standardize_dtype(terms["z"].dtype) == "float32"
    np.testing.assert_allclose(losses[-1], reference[-1], rtol=0.02)
