"""Tests for keras_vae.models.vae: the objective and its units, beta schedules and
free bits, gradients (float64 numerical check), tiny-overfit runs, logging
keys, `.keras` round trips, mixed precision and the inference API."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special

import keras_vae
from keras_vae.models.schedules import beta_at
from keras_vae.models.vae import VAE

TRACKERS = {"loss", "reconstruction", "kl", "elbo", "beta", "skipped_steps"}


def np_(x):
    return keras.ops.convert_to_numpy(x)


def shape_images(n=64, size=28, seed=0):
    """`n` binary images of four shapes (square, disc, horizontal and vertical
    bar) at random positions and sizes: (n, size, size, 1) float32 in {0, 1}."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.zeros((n, size, size, 1), "float32")
    for i in range(n):
        r = int(rng.integers(size // 7, size // 3.5))
        cy, cx = rng.integers(r, size - r, 2)
        kind = i % 4
        if kind == 0:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif kind == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        elif kind == 2:
            mask = (abs(yy - cy) <= 2) & (abs(xx - cx) <= r + 3)
        else:
            mask = (abs(xx - cx) <= 2) & (abs(yy - cy) <= r + 3)
        images[i, ..., 0] = mask
    return images


def make_vae(
    network="mlp",
    likelihood="bernoulli",
    image_shape=(16, 16, 1),
    latent_dim=4,
    seed=0,
    activation="relu",
    **vae_kwargs,
):
    """A tiny VAE; initial weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    size = image_shape[0]
    if network == "mlp":
        widths = {"widths": (64, 32) if size >= 28 else (32,)}
    else:
        widths = (
            {"widths": (16, 32), "dense_units": 64}
            if size >= 28
            else {"widths": (8, 16), "dense_units": 32}
        )
    encoder = keras_vae.build_encoder(
        image_shape, latent_dim, network, activation=activation, **widths
    )
    decoder = keras_vae.build_decoder(
        image_shape,
        latent_dim,
        network,
        likelihood=likelihood,
        activation=activation,
        **widths,
    )
    vae_kwargs.setdefault("seed", seed)
    return VAE(encoder, decoder, likelihood=likelihood, **vae_kwargs)


def np_kl_per_dim(mean, log_var):
    mean, log_var = np.float64(mean), np.float64(log_var)
    return -0.5 * log_var + 0.5 * (np.exp(log_var) + mean**2) - 0.5


# ---------------------------------------------------------------------------
# Beta schedules


class RecordBatches(keras.callbacks.Callback):
    """Records the logged beta and the model's kl_step after each train batch."""

    def __init__(self):
        super().__init__()
        self.betas, self.steps, self.losses = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.betas.append(float(logs["beta"]))
        self.losses.append(float(logs["loss"]))
        self.steps.append(int(np_(self.model.kl_step)))


@pytest.mark.parametrize(
    "schedule_kwargs",
    [
        {"beta_schedule": "linear", "warmup_steps": 10},
        {"beta_schedule": "cyclical", "cycle_steps": 4, "cycle_ratio": 0.5},
    ],
)
def test_logged_beta_follows_schedule_during_fit(schedule_kwargs):
    # 48 images, batch 8: 6 steps per epoch, 3 epochs = 18 train steps. The beta
    # used (and logged) at step i is beta_at(i); kl_step is i + 1 afterwards.
    vae = make_vae(beta=2.0, **schedule_kwargs)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    record = RecordBatches()
    x = shape_images(48, 16)
    history = vae.fit(x, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=[record])
    kwargs = {k: v for k, v in schedule_kwargs.items() if k != "beta_schedule"}
    expected = [
        float(np_(beta_at(i, 2.0, schedule_kwargs["beta_schedule"], **kwargs))) for i in range(18)
    ]
    if schedule_kwargs["beta_schedule"] == "linear":
        # 2 * min(1, i / 10): 0, 0.2, ..., 1.8, then 2.
        np.testing.assert_allclose(expected, [min(2.0, 0.2 * i) for i in range(18)], rtol=1e-6)
    else:
        # 2 * min(1, (i mod 4) / 2): 0, 1, 2, 2, 0, 1, 2, 2, ...
        np.testing.assert_allclose(expected, [2.0 * min(1, (i % 4) / 2) for i in range(18)])
    np.testing.assert_allclose(record.betas, expected, rtol=1e-6, atol=1e-7)
    assert record.steps == list(range(1, 19))
    assert int(np_(vae.kl_step)) == 18
    # The epoch log keeps the last step's beta (beta is state, not a mean).
    np.testing.assert_allclose(history.history["beta"], [expected[5], expected[11], expected[17]])


# ---------------------------------------------------------------------------
# The objective: units, reduction, free bits


def test_objective_is_batch_mean_in_nats():
    # loss = mean_batch(-log p(x|z)) + beta * mean_batch(sum_d KL_d), each log p
    # summed over pixels (nats per example), here checked from scratch in NumPy.
    vae = make_vae()
    x = shape_images(8, 16)
    eps = np.random.default_rng(0).standard_normal((8, 4)).astype("float32")
    terms = vae.compute_terms(x, eps=eps)
    mean, log_var = np_(terms["mean"]), np_(terms["log_var"])
    np.testing.assert_allclose(np_(terms["z"]), mean + np.exp(0.5 * log_var) * eps, rtol=1e-6)
    logits = np_(terms["params"]).astype("float64")
    log_px = (x * special.log_expit(logits) + (1 - x) * special.log_expit(-logits)).sum((1, 2, 3))
    assert terms["log_px"].shape == (8,)
    np.testing.assert_allclose(np_(terms["log_px"]), log_px, rtol=1e-5)
    kl = np_kl_per_dim(mean, log_var)
    np.testing.assert_allclose(np_(terms["kl_per_dim"]), kl, rtol=1e-5, atol=1e-7)
    loss, logs = vae.objective(terms, 0.7)
    np.testing.assert_allclose(np_(loss), np.mean(-log_px) + 0.7 * np.mean(kl.sum(-1)), rtol=1e-5)
    np.testing.assert_allclose(np_(logs["reconstruction"]), np.mean(-log_px), rtol=1e-5)
    np.testing.assert_allclose(np_(logs["kl"]), np.mean(kl.sum(-1)), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np_(logs["elbo"]), np.mean(log_px - kl.sum(-1)), rtol=1e-5)
    # An untrained Bernoulli decoder has logits ~0: about 256 * log 2 = 177 nats.
    assert 150 < float(np_(logs["reconstruction"])) < 210


def test_free_bits_objective():
    # With free bits lambda: loss = reconstruction + beta * sum_d max(lambda,
    # mean_batch KL_d) (Kingma et al. 2016: the floor applies to the batch mean
    # of each dimension, not to each example). The mean head's bias shifts the
    # posterior means by (0, 0.5, 1, 2); seen batch KL_d = (0.50, 0.17, 0.53,
    # 1.54), so lambda = 0.3 clamps one dimension, while single examples fall on
    # both sides of lambda in several dimensions.
    vae = make_vae(free_bits=0.3)
    head = vae.encoder.get_layer("mean")
    head.bias.assign(np.array([0.0, 0.5, 1.0, 2.0], "float32"))
    x = shape_images(16, 16)
    eps = np.random.default_rng(1).standard_normal((16, 4)).astype("float32")
    terms = vae.compute_terms(x, eps=eps)
    kl_per_dim = np_(terms["kl_per_dim"]).astype("float64")
    batch_kl = kl_per_dim.mean(0)
    assert (batch_kl < 0.3).any() and (batch_kl > 0.3).any(), batch_kl
    # Not vacuous: flooring each example first would give a different value.
    per_example_floor = np.maximum(0.3, kl_per_dim).mean(0).sum()
    assert abs(per_example_floor - np.maximum(0.3, batch_kl).sum()) > 0.05
    reconstruction = -np_(terms["log_px"]).astype("float64").mean()
    loss, logs = vae.objective(terms, 0.8)
    expected = reconstruction + 0.8 * np.maximum(0.3, batch_kl).sum()
    np.testing.assert_allclose(np_(loss), expected, rtol=1e-5)
    # The logged KL is the plain KL, without the free-bits floor.
    np.testing.assert_allclose(np_(logs["kl"]), kl_per_dim.sum(1).mean(), rtol=1e-5)
    # Without free bits the same terms give the plain objective (different value).
    plain = make_vae()
    plain_loss, _ = plain.objective(terms, 0.8)
    np.testing.assert_allclose(np_(plain_loss), reconstruction + 0.8 * batch_kl.sum(), rtol=1e-5)
    assert abs(float(np_(plain_loss)) - float(np_(loss))) > 0.1
    # Given the global batch's mean (train_step all-reduces it across replicas;
    # here that of another batch, 0.4 nats higher per dimension) the clamp acts
    # on it, not on this batch's: sum_d max(0.3, batch_kl_d + 0.4).
    global_mean = (batch_kl + 0.4).astype("float32")
    loss, _ = vae.objective({**terms, "kl_batch_mean": global_mean}, 0.8)
    expected = reconstruction + 0.8 * np.maximum(0.3, batch_kl + 0.4).sum()
    np.testing.assert_allclose(np_(loss), expected, rtol=1e-5)


# ---------------------------------------------------------------------------
# Numerical gradient check (float64)


def _float64_vae(dtype_policy, network, likelihood):
    # floatx too: keras.Input takes floatx, so a float32 input layer would round
    # images and z to float32 under a float64 policy alone. tanh instead of relu
    # keeps the loss smooth, so central differences are not spoilt by kinks.
    dtype_policy("float64", floatx="float64")
    vae = make_vae(
        network,
        likelihood,
        image_shape=(8, 8, 1),
        latent_dim=2,
        activation="tanh",
        gaussian_sigma=0.3,
    )
    x = tf.constant(np.random.default_rng(0).random((2, 8, 8, 1)), tf.float64)
    eps = tf.constant(np.random.default_rng(1).standard_normal((2, 2)), tf.float64)
    return vae, x, eps


# Tolerance: with delta = 1e-4 in float64, central differences have truncation
# error ~delta^2 * f''' ~ 1e-8 * O(10) and round-off ~1e-16 * |loss| / delta ~
# 1e-10; gradients are O(0.1-50). 1e-6 is far below any real mistake (seen
# 1e-9) and far above float64 noise; in float32 the same check is off by ~1e-3.
GRADIENT_ATOL = 1e-6


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_gradient_check_wrt_images(network, dtype_policy):
    vae, x, eps = _float64_vae(dtype_policy, network, "gaussian")

    def loss_fn(images):
        loss, _ = vae.objective(vae.compute_terms(images, eps=eps), 1.0)
        return loss

    assert loss_fn(x).dtype == tf.float64
    theoretical, numerical = tf.test.compute_gradient(loss_fn, [x], delta=1e-4)
    assert theoretical[0].shape == (1, 128)
    assert np.abs(theoretical[0]).max() > 0.1  # a real gradient, not zeros
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=0, atol=GRADIENT_ATOL)


@pytest.mark.parametrize(
    "model_name,layer_name,weight_name",
    [
        ("encoder", "raw_log_var", "kernel"),
        ("encoder", "mean", "kernel"),
        ("decoder", "params", "kernel"),
        ("decoder", "log_sigma", "log_scale"),
    ],
)
def test_gradient_check_wrt_weights(model_name, layer_name, weight_name, dtype_policy):
    # The weight is substituted through a StatelessScope, so the model's own
    # compute_terms + objective run with the perturbed value.
    vae, x, eps = _float64_vae(dtype_policy, "conv", "gaussian_learned")
    weight = getattr(getattr(vae, model_name).get_layer(layer_name), weight_name)

    def loss_fn(value):
        with keras.StatelessScope(state_mapping=[(weight, value)]):
            loss, _ = vae.objective(vae.compute_terms(x, eps=eps), 1.0)
        return loss

    value = tf.convert_to_tensor(np_(weight))
    theoretical, numerical = tf.test.compute_gradient(loss_fn, [value], delta=1e-4)
    assert np.abs(theoretical[0]).max() > 1e-3
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=0, atol=GRADIENT_ATOL)


@pytest.mark.parametrize(
    "likelihood", ["bernoulli", "gaussian", "gaussian_learned", "discretized_logistic"]
)
def test_float64_model_trains(likelihood, dtype_policy):
    # A float64 model's loss is float64 for every likelihood, and the float32
    # beta of train_step meets the float64 KL without a dtype clash.
    dtype_policy("float64", floatx="float64")
    vae = make_vae(likelihood=likelihood, beta_schedule="linear", warmup_steps=4)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = (np.round(shape_images(16, 16) * 200 + 20) / 255).astype("float64")
    loss, _ = vae.objective(vae.compute_terms(x[:4]), vae.current_beta())
    assert loss.dtype == tf.float64
    history = vae.fit(x, batch_size=8, epochs=1, verbose=0)
    assert int(np_(vae.kl_step)) == 2
    assert np.isfinite(history.history["loss"][0])


# ---------------------------------------------------------------------------
# Tiny overfit


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_tiny_overfit(network, likelihood):
    # 64 fixed 28x28 shape images, 200 Adam steps (batch 16, 50 epochs): the
    # ELBO loss, evaluated on the same images with the model's fixed seed, must
    # fall by at least half. Starting points: Bernoulli logits ~0 give 784 log 2
    # = 543 nats; the Gaussian (sigma 0.1) starts with mean ~0 on 14% white
    # pixels: ~50 * 108 - 784 * 1.38 = 4.3e3 nats (a Gaussian loss can go below
    # 0: -784 * 1.38 nats at a perfect fit). Seen after training: Bernoulli
    # mlp 157, conv 132 nats (71%, 76% less); Gaussian mlp 418, conv -180 nats
    # (91%, 104% less). Reduction is relative to |before|.
    x = shape_images(64, 28)
    vae = make_vae(network, likelihood, image_shape=(28, 28, 1), latent_dim=4)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)["loss"]
    # The 200 steps as one epoch of the 4 batches repeated: the same batches in
    # the same order as 50 epochs of `fit(x, batch_size=16, shuffle=False)`,
    # without fit's per-epoch work (~3 of 9 s). Measured: the same `after` to
    # the bit for 3 of the 4 cases, conv-gaussian's 5e-4 nats apart (-179.6034
    # vs -179.6029). The epoch's mean loss is finite iff every step's is.
    batches = tf.data.Dataset.from_tensor_slices(x).batch(16).repeat()
    history = vae.fit(batches, steps_per_epoch=200, epochs=1, shuffle=False, verbose=0)
    after = vae.evaluate(x, batch_size=64, verbose=0, return_dict=True)["loss"]
    assert int(np_(vae.kl_step)) == 200
    assert np.all(np.isfinite(history.history["loss"]))
    reduction = (before - after) / abs(before)
    assert reduction >= 0.5, (before, after)


# ---------------------------------------------------------------------------
# Logs and evaluation


def test_fit_logs_validation_metrics_with_tracker_names():
    vae = make_vae()
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = shape_images(32, 16)
    history = vae.fit(x, batch_size=8, epochs=2, validation_data=(x[:16],), verbose=0)
    names = {metric.name for metric in vae.metrics}
    assert names == TRACKERS
    assert set(history.history) == names | {f"val_{name}" for name in names}
    for key in ("val_elbo", "val_loss", "val_kl", "val_reconstruction"):
        assert len(history.history[key]) == 2 and np.all(np.isfinite(history.history[key]))
    # beta = 1, no free bits: elbo = -(reconstruction + kl) = -loss, per epoch.
    np.testing.assert_allclose(
        history.history["val_elbo"], -np.array(history.history["val_loss"]), rtol=1e-5
    )
    np.testing.assert_allclose(
        np.array(history.history["val_reconstruction"]) + history.history["val_kl"],
        history.history["val_loss"],
        rtol=1e-5,
    )
    results = vae.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    assert set(results) == names


def test_evaluate_averages_batches():
    # Epoch logs are the mean over batches of each batch's value, not the last
    # batch (the keras.io example's tracker/key mismatch). Posterior noise off,
    # so each batch's loss can be recomputed with eps = 0. Gaussian likelihood
    # and batches of blank, shape, inverted-shape and white images, so the four
    # batch losses are far apart (a white pixel costs ~0.5 / 0.1^2 = 50 nats).
    vae = make_vae(likelihood="gaussian")
    vae.sampling.deterministic = True
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    shapes = shape_images(16, 16)
    x = np.concatenate([np.zeros_like(shapes), shapes, 1 - shapes, np.ones_like(shapes)])
    results = vae.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    per_batch = []
    for start in range(0, 64, 16):
        terms = vae.compute_terms(x[start : start + 16], eps=np.zeros((16, 4), "float32"))
        per_batch.append(float(np_(vae.objective(terms, 1.0)[0])))
    assert np.std(per_batch) > 1000.0  # batches differ, so "last batch" would be caught
    np.testing.assert_allclose(results["loss"], np.mean(per_batch), rtol=1e-5)


# ---------------------------------------------------------------------------
# .keras round trip


@pytest.mark.parametrize(
    "network,likelihood", [("conv", "bernoulli"), ("mlp", "gaussian_learned")]
)
def test_keras_file_round_trip(network, likelihood, tmp_path):
    config = {
        "beta": 0.5,
        "beta_schedule": "linear",
        "warmup_steps": 10,
        "free_bits": 0.05,
        "gaussian_sigma": 0.2,
        "seed": 3,
    }
    vae = make_vae(network, likelihood, **config)
    # A large learning rate so the learned log-sigma moves well away from 0.
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = shape_images(32, 16)
    vae.fit(x, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "vae.keras")
    vae.save(path)
    loaded = keras.models.load_model(path)

    assert isinstance(loaded, VAE)
    for key, value in config.items():
        assert getattr(loaded, key) == value, key
    assert loaded.likelihood == likelihood
    assert loaded.get_config()["seed"] == 3
    assert int(np_(loaded.kl_step)) == int(np_(vae.kl_step)) == 4
    np.testing.assert_allclose(np_(loaded.current_beta()), 0.5 * 4 / 10, rtol=1e-6)
    for original, restored in zip(vae.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(np_(original), np_(restored), err_msg=original.path)
    if likelihood == "gaussian_learned":
        log_scale = np_(loaded.decoder.get_layer("log_sigma").log_scale)
        np.testing.assert_array_equal(log_scale, np_(vae.decoder.get_layer("log_sigma").log_scale))
        assert abs(log_scale[0]) > 1e-3  # trained, not the initial 0

    # Deterministic outputs are identical.
    for a, b in zip(vae.encode(x), loaded.encode(x), strict=True):
        np.testing.assert_array_equal(np_(a), np_(b))
    z = np.random.default_rng(0).standard_normal((5, 4)).astype("float32")
    np.testing.assert_array_equal(np_(vae.decode(z)), np_(loaded.decode(z)))
    np.testing.assert_array_equal(np_(vae.reconstruct(x)), np_(loaded.reconstruct(x)))
    np.testing.assert_array_equal(np_(vae(x)), np_(loaded(x)))
    eps = np.random.default_rng(1).standard_normal((32, 4)).astype("float32")
    np.testing.assert_array_equal(
        np_(vae.compute_terms(x, eps=eps)["log_px"]),
        np_(loaded.compute_terms(x, eps=eps)["log_px"]),
    )
    np.testing.assert_array_equal(np_(vae.sample(3, seed=5)), np_(loaded.sample(3, seed=5)))

    # The loaded model continues training, optimizer state included.
    assert int(np_(loaded.optimizer.iterations)) == int(np_(vae.optimizer.iterations)) == 4
    for original, restored in zip(vae.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np_(original), np_(restored), err_msg=original.path)
    history = loaded.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert int(np_(loaded.kl_step)) == 8
    assert int(np_(loaded.optimizer.iterations)) == 8


# ---------------------------------------------------------------------------
# Mixed precision


def test_mixed_float16_matches_float32(dtype_policy):
    # Same initial weights (copied), same data order, same seeds: 20 Adam steps
    # (64 images, batch 16, 5 epochs). Final epoch losses within 5% (seen: 437.80
    # mixed vs 437.79 float32, 0.003% apart).
    #
    # The loss scale starts at 2^8 rather than Keras' default 2^15: this loss is
    # in nats per example (~540), and at 2^15..2^11 the float16 gradients of the
    # wide dense layer overflow, so dynamic scaling skips steps while it halves
    # its way down (seen: 5 of the first 20 steps skipped, final loss 506 vs 438,
    # 16% apart -- a lag of 5 steps, not a precision error). Starting low, no
    # step is skipped and the comparison measures float16 numerics only; the
    # default wrapping is checked in the next test.
    x = shape_images(64, 28)
    reference = make_vae("conv", "bernoulli", image_shape=(28, 28, 1))
    dtype_policy("mixed_float16")
    mixed = make_vae("conv", "bernoulli", image_shape=(28, 28, 1))
    mixed.encoder.set_weights(reference.encoder.get_weights())
    mixed.decoder.set_weights(reference.decoder.get_weights())
    assert mixed.encoder.layers[1].compute_dtype == "float16"
    reference.compile(optimizer=keras.optimizers.Adam(1e-3))
    mixed.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.Adam(1e-3), initial_scale=2.0**8
        )
    )
    results = {}
    for name, vae in (("float32", reference), ("mixed", mixed)):
        history = vae.fit(x, batch_size=16, epochs=5, shuffle=False, verbose=0)
        assert int(np_(vae.kl_step)) == 20
        assert np.all(np.isfinite(history.history["loss"]))
        results[name] = history.history["loss"][-1]
    assert isinstance(mixed.optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(np_(mixed.optimizer.iterations)) == 20  # no step skipped
    assert abs(results["mixed"] - results["float32"]) <= 0.05 * abs(results["float32"]), results
    assert results["float32"] < 0.9 * 543  # both runs really trained
    assert np.all(np.isfinite(np_(mixed.reconstruct(x[:4]))))


def test_mixed_float16_train_step_scales_the_loss(dtype_policy):
    # One SGD step from the same weights, batch and posterior noise: the mixed
    # model's update equals the float32 update. SGD, unlike Adam, is not
    # invariant to the gradient's scale, so a train_step that skipped
    # `optimizer.scale_loss` (while apply() still divides by the scale, 2^8)
    # would move the weights 256 times less. Tolerance 2% on the size of the
    # update and cosine > 0.999 (float16 forward/backward: ~0.1% relative).
    x = shape_images(16, 28)
    reference = make_vae("conv", "bernoulli", image_shape=(28, 28, 1))
    dtype_policy("mixed_float16")
    mixed = make_vae("conv", "bernoulli", image_shape=(28, 28, 1))
    mixed.encoder.set_weights(reference.encoder.get_weights())
    mixed.decoder.set_weights(reference.decoder.get_weights())
    reference.compile(optimizer=keras.optimizers.SGD(1e-4))
    mixed.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(1e-4), initial_scale=2.0**8
        )
    )
    for vae in (reference, mixed):
        before = [np_(w) for w in vae.trainable_weights]
        vae.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
        vae.update = np.concatenate(
            [(np_(w) - b).ravel() for w, b in zip(vae.trainable_weights, before, strict=True)]
        )
    assert int(np_(mixed.optimizer.iterations)) == 1  # the step was applied
    a, b = reference.update, mixed.update
    assert np.linalg.norm(a) > 0
    np.testing.assert_allclose(np.linalg.norm(b), np.linalg.norm(a), rtol=0.02)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.999


def test_mixed_float16_compile_wraps_optimizer(dtype_policy):
    # compile() wraps a plain optimizer in a LossScaleOptimizer by itself under
    # mixed_float16 (UPSTREAM_NOTES); train_step scales the loss, apply()
    # unscales and skips non-finite steps: 20 steps stay finite and the model
    # learns, though a few of the first steps are skipped (see above).
    dtype_policy("mixed_float16")
    vae = make_vae("conv", "bernoulli", image_shape=(28, 28, 1))
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(vae.optimizer, keras.optimizers.LossScaleOptimizer)
    x = shape_images(64, 28)
    history = vae.fit(x, batch_size=16, epochs=5, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 10.0
    applied = int(np_(vae.optimizer.iterations))
    assert 10 <= applied <= 20, applied  # seen: 15 applied, 5 skipped
    assert int(np_(vae.kl_step)) == 20  # the schedule counts every step
    for weight in vae.trainable_weights:
        assert weight.dtype == "float32" and np.all(np.isfinite(np_(weight))), weight.path


# ---------------------------------------------------------------------------
# Inference API


@pytest.fixture(scope="module")
def api_vae():
    return make_vae("conv", "bernoulli")


def test_encode_decode_shapes_and_ranges(api_vae):
    vae = api_vae
    x = shape_images(6, 16)
    assert vae.latent_dim == 4 and vae.image_shape == (16, 16, 1)
    mean, log_var = vae.encode(x)
    assert tuple(mean.shape) == tuple(log_var.shape) == (6, 4)
    assert np.all(np.abs(np_(log_var)) <= 10.0)
    images = np_(vae.decode(mean))
    assert images.shape == (6, 16, 16, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    reconstruction = np_(vae.reconstruct(x))
    # Deterministic: decode of the posterior mean, and the same as `call`.
    np.testing.assert_allclose(reconstruction, images, rtol=1e-6)
    np.testing.assert_allclose(np_(vae(x)), reconstruction, rtol=1e-6)
    noisy = np_(vae.reconstruct(x, sample_latent=True))
    assert noisy.shape == (6, 16, 16, 1) and not np.allclose(noisy, reconstruction)
    assert not np.allclose(np_(vae(x, training=True)), reconstruction)


def test_sample_temperature_and_seed(api_vae):
    vae = api_vae
    samples = np_(vae.sample(5))
    assert samples.shape == (5, 16, 16, 1)
    assert samples.min() >= 0.0 and samples.max() <= 1.0
    # Temperature 0: every sample is decode(0).
    np.testing.assert_allclose(
        np_(vae.sample(3, temperature=0.0)), np_(vae.decode(np.zeros((3, 4), "float32"))), rtol=1e-6
    )
    # A seed reproduces the draw; no seed gives a new one each call.
    np.testing.assert_array_equal(np_(vae.sample(4, seed=3)), np_(vae.sample(4, seed=3)))
    assert not np.allclose(np_(vae.sample(4)), np_(vae.sample(4)))
    # Temperature scales z: sample(t, seed) = decode(t * N(0, I) drawn with seed).
    z = 0.5 * np_(keras.random.normal((4, 4), seed=3))
    np.testing.assert_allclose(
        np_(vae.sample(4, temperature=0.5, seed=3)), np_(vae.decode(z)), rtol=1e-6
    )


def test_elbo_shape_and_sign(api_vae):
    vae = api_vae
    x = shape_images(6, 16)
    elbo = np_(vae.elbo(x))
    assert elbo.shape == (6,) and np.all(np.isfinite(elbo))
    # Binary pixels: log p(x|z) <= 0 and KL >= 0, so the ELBO is negative; an
    # untrained decoder (logits ~0) is near -256 log 2 = -177 nats.
    assert np.all(elbo < 0) and np.all(elbo > -300)
    assert np_(vae.elbo(x, num_samples=3)).shape == (6,)


def test_uint8_images_are_scaled(api_vae):
    vae = api_vae
    pixels = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1)).astype("uint8")
    as_float = pixels.astype("float32") / np.float32(255)
    for a, b in zip(vae.encode(pixels), vae.encode(as_float), strict=True):
        np.testing.assert_allclose(np_(a), np_(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np_(vae(pixels)), np_(vae(as_float)), rtol=1e-6, atol=1e-7)
    eps = np.zeros((3, 4), "float32")
    np.testing.assert_allclose(
        np_(vae.compute_terms(pixels, eps=eps)["log_px"]),
        np_(vae.compute_terms(as_float, eps=eps)["log_px"]),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "decoder_likelihood,vae_likelihood",
    [("bernoulli", "gaussian_learned"), ("discretized_logistic", "bernoulli")],
)
def test_decoder_for_another_likelihood_raises(decoder_likelihood, vae_likelihood):
    encoder = keras_vae.build_encoder((16, 16, 1), 2, "mlp", widths=(8,))
    decoder = keras_vae.build_decoder(
        (16, 16, 1), 2, "mlp", likelihood=decoder_likelihood, widths=(8,)
    )
    with pytest.raises(ValueError, match="Expected a decoder with") as info:
        VAE(encoder, decoder, likelihood=vae_likelihood)
    assert f"likelihood={vae_likelihood!r}" in str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": -1.0},
        {"beta_schedule": "exponential"},
        {"beta_schedule": "cyclical", "cycle_steps": 0},
        {"cycle_ratio": 0.0},
        {"free_bits": -0.5},
        {"warmup_steps": -1},
    ],
)
def test_bad_vae_arguments_raise(kwargs):
    encoder = keras_vae.build_encoder((16, 16, 1), 2, "mlp", widths=(8,))
    decoder = keras_vae.build_decoder((16, 16, 1), 2, "mlp", widths=(8,))
    with pytest.raises(ValueError, match="Expected"):
        VAE(encoder, decoder, **kwargs)


def test_kl_term_vanishes_at_the_prior():
    # With q(z|x) = N(0, I) (zero heads) the KL term and its contribution vanish
    # exactly: loss == reconstruction for any beta.
    vae = make_vae()
    for name in ("mean", "raw_log_var"):
        head = vae.encoder.get_layer(name)
        head.kernel.assign(np.zeros(head.kernel.shape, "float32"))
        head.bias.assign(np.zeros(head.bias.shape, "float32"))
    terms = vae.compute_terms(shape_images(4, 16))
    assert np.all(np_(terms["kl_per_dim"]) == 0.0)
    loss, logs = vae.objective(terms, 5.0)
    assert float(np_(loss)) == float(np_(logs["reconstruction"]))
    assert math.isfinite(float(np_(loss)))
