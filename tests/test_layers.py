"""Tests for keras_vae.layers: Sampling (reparameterization), SoftClip, LearnedScale."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae.layers import LearnedScale, Sampling, SoftClip


def np_(x):
    return keras.ops.convert_to_numpy(x)


def softplus(x):
    return np.logaddexp(0.0, x)


# ---------------------------------------------------------------------------
# Sampling

MEAN = np.array([1.0, -3.0, 0.5, 0.0], "float32")
LOG_VAR = np.array([-2.0, 0.0, 1.5, -9.0], "float32")


def _inputs(n):
    return np.tile(MEAN, (n, 1)), np.tile(LOG_VAR, (n, 1))


def test_sampling_moments():
    # z - mean ~ N(0, exp(log_var)) per dimension. With n = 200k draws the
    # sample mean has standard error sigma / sqrt(n) and the sample standard
    # deviation sigma / sqrt(2 n) (normal data); tolerance 5 standard errors
    # (a correct layer fails with probability ~6e-7 per check).
    n = 200_000
    mean, log_var = _inputs(n)
    z = np_(Sampling(seed=0)([mean, log_var]))
    assert z.shape == (n, 4) and z.dtype == np.float32
    z = z.astype("float64")
    sigma = np.exp(0.5 * LOG_VAR.astype("float64"))
    noise = z - MEAN
    assert np.all(np.abs(noise.mean(0)) < 5 * sigma / math.sqrt(n)), noise.mean(0)
    assert np.all(np.abs(noise.std(0) - sigma) < 5 * sigma / math.sqrt(2 * n)), noise.std(0)
    # Independent dimensions: correlations have standard error 1 / sqrt(n).
    corr = np.corrcoef(noise.T)[np.triu_indices(4, 1)]
    assert np.all(np.abs(corr) < 5 / math.sqrt(n)), corr


def test_sampling_output_shape_and_dtype():
    layer = Sampling(seed=0)
    z = layer([np.zeros((3, 5), "float32"), np.zeros((3, 5), "float32")])
    assert tuple(z.shape) == (3, 5)
    assert keras.backend.standardize_dtype(z.dtype) == "float32"
    assert layer.compute_output_shape(((None, 5), (None, 5))) == (None, 5)


def test_sampling_successive_calls_differ():
    layer = Sampling(seed=0)
    mean, log_var = _inputs(1000)
    first, second = np_(layer([mean, log_var])), np_(layer([mean, log_var]))
    # Continuous draws: no coordinate should repeat.
    assert np.mean(first == second) == 0.0


def test_sampling_fixed_seed_reproduces():
    mean, log_var = _inputs(500)
    a, b, other = Sampling(seed=7), Sampling(seed=7), Sampling(seed=8)
    first_a, first_b = np_(a([mean, log_var])), np_(b([mean, log_var]))
    np.testing.assert_array_equal(first_a, first_b)
    # The streams stay in step, and move on.
    second_a, second_b = np_(a([mean, log_var])), np_(b([mean, log_var]))
    np.testing.assert_array_equal(second_a, second_b)
    assert np.mean(second_a == first_a) == 0.0
    assert np.mean(np_(other([mean, log_var])) == first_a) == 0.0


def test_sampling_unknown_batch_size_in_tf_function():
    layer = Sampling(seed=3)
    spec = tf.TensorSpec([None, 4], tf.float32)

    @tf.function(input_signature=[spec, spec])
    def draw(mean, log_var):
        return layer([mean, log_var])

    assert draw.get_concrete_function().structured_outputs.shape.as_list() == [None, 4]
    z5 = np_(draw(*_inputs(5)))
    z7 = np_(draw(*_inputs(7)))
    assert z5.shape == (5, 4) and z7.shape == (7, 4)
    # The layer's SeedGenerator state advances inside the traced function too.
    assert np.mean(z7[:5] == z5) == 0.0
    # Dimension 3 has sigma = exp(-4.5) = 0.011: draws stay near the mean 0.
    assert np.all(np.isfinite(z7)) and np.abs(z7[:, 3]).max() < 10 * math.exp(-4.5)


def test_sampling_gradients_are_the_reparameterization():
    # z = mean + exp(0.5 log_var) eps: dz/dmean = 1, dz/dlog_var = 0.5 (z - mean).
    mean = tf.constant(np.tile(MEAN, (64, 1)))
    log_var = tf.constant(np.tile(LOG_VAR, (64, 1)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([mean, log_var])
        z = Sampling(seed=1)([mean, log_var])
        total = tf.reduce_sum(z)
    grad_mean, grad_log_var = tape.gradient(total, [mean, log_var])
    np.testing.assert_array_equal(np_(grad_mean), np.ones((64, 4)))
    np.testing.assert_allclose(np_(grad_log_var), 0.5 * (np_(z) - np_(mean)), rtol=1e-5, atol=1e-7)


def test_sampling_gradients_reach_encoder_weights():
    # A loss that depends on z only must train both encoder heads (mean and
    # log-variance) and the layers below them.
    keras.utils.set_random_seed(0)
    encoder = keras_vae.build_encoder((16, 16, 1), 3, "conv", widths=(4, 8), dense_units=16)
    sampling = Sampling(seed=0)
    images = np.random.default_rng(0).random((8, 16, 16, 1)).astype("float32")
    with tf.GradientTape() as tape:
        mean, log_var = encoder(images)
        z = sampling([mean, log_var])
        loss = tf.reduce_sum(tf.square(z - 1.0))
    kernels = [w for w in encoder.trainable_weights if "kernel" in w.path]
    grads = tape.gradient(loss, kernels)
    assert len(kernels) == 5  # 2 convs, dense, mean head, log-variance head
    for weight, grad in zip(kernels, grads, strict=True):
        assert grad is not None, weight.path
        assert np.abs(np_(grad)).max() > 0.0, weight.path
        assert np.all(np.isfinite(np_(grad))), weight.path
    head = {w.path.split("/")[0]: g for w, g in zip(kernels, grads, strict=True)}
    assert np.abs(np_(head["raw_log_var"])).max() > 0.0 and np.abs(np_(head["mean"])).max() > 0.0


def test_sampling_deterministic_mode_returns_mean():
    mean, log_var = _inputs(10)
    np.testing.assert_array_equal(np_(Sampling(deterministic=True)([mean, log_var])), mean)
    np.testing.assert_array_equal(np_(Sampling(seed=0)([mean, log_var], deterministic=True)), mean)
    # The per-call argument overrides the constructor's.
    noisy = np_(Sampling(seed=0, deterministic=True)([mean, log_var], deterministic=False))
    assert np.mean(noisy == mean) < 0.01


def test_sampling_get_config_round_trip():
    layer = Sampling(seed=5, deterministic=False, name="posterior")
    config = layer.get_config()
    assert config["seed"] == 5 and config["deterministic"] is False
    assert config["name"] == "posterior"
    clone = Sampling.from_config(config)
    assert clone.seed == 5 and clone.name == "posterior"
    mean, log_var = _inputs(20)
    np.testing.assert_array_equal(np_(clone([mean, log_var])), np_(layer([mean, log_var])))
    # Through the registered serializer as well (what .keras files use).
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, Sampling) and restored.seed == 5
    det = Sampling.from_config(Sampling(deterministic=True).get_config())
    np.testing.assert_array_equal(np_(det([mean, log_var])), mean)


@pytest.mark.parametrize("seed", ["0", 1.5, True])
def test_sampling_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="Expected `seed`"):
        Sampling(seed=seed)


def test_sampling_float16_inputs():
    # UPSTREAM_NOTES: under a mixed policy the layer gets float16 inputs and must
    # draw eps in float16. n = 50k; tolerance 5 SE (std: sigma / sqrt(2n) =
    # 0.32%; mean: sigma / sqrt(n)) plus 0.2% of sigma for rounding z to float16
    # (relative spacing 2^-10; the rounding error is < 0.1% of sigma here).
    n = 50_000
    mean, log_var = (a.astype("float16") for a in _inputs(n))
    layer = Sampling(seed=0, dtype="mixed_float16")
    assert layer.compute_dtype == "float16"
    z = layer([mean, log_var])
    assert keras.backend.standardize_dtype(z.dtype) == "float16"
    noise = np_(z).astype("float64") - mean.astype("float64")
    assert np.all(np.isfinite(noise))
    sigma = np.exp(0.5 * LOG_VAR.astype("float64"))
    assert np.all(np.abs(noise.std(0) / sigma - 1) < 5 / math.sqrt(2 * n) + 0.002), noise.std(0)
    assert np.all(np.abs(noise.mean(0)) < 5 * sigma / math.sqrt(n) + 0.002 * sigma)
    # A float32 layer casts float16 inputs up and returns float32.
    z32 = Sampling(seed=0)([mean, log_var])
    assert keras.backend.standardize_dtype(z32.dtype) == "float32"


def test_sampling_under_global_mixed_policy(dtype_policy):
    dtype_policy("mixed_float16")
    layer = Sampling(seed=0)
    mean = keras.ops.zeros((4, 3), "float16")
    z = layer([mean, keras.ops.zeros((4, 3), "float16")])
    assert keras.backend.standardize_dtype(z.dtype) == "float16"
    assert np.all(np.isfinite(np_(z))) and np.abs(np_(z)).max() > 0.0


# ---------------------------------------------------------------------------
# SoftClip


def test_soft_clip_golden_values():
    # y = low + (high - low) * sigmoid(4 (x - mid) / (high - low)), here (-10, 10):
    # y(0) = 0; y(5) = -10 + 20 sigmoid(1) = 4.6211716; y(-5) = -4.6211716;
    # y(+-1e6) = +-10 (sigmoid saturates in float32).
    x = np.array([0.0, 5.0, -5.0, 1e6, -1e6, 1e30], "float32")
    y = np_(SoftClip()(x))
    s1 = 1.0 / (1.0 + math.exp(-1.0))
    np.testing.assert_allclose(y, [0.0, 20 * s1 - 10, 10 - 20 * s1, 10.0, -10.0, 10.0], atol=1e-6)


def test_soft_clip_is_bounded_monotone_and_identity_at_mid():
    layer = SoftClip(-6.0, 2.0)
    x = tf.constant(np.linspace(-1e4, 1e4, 20001), tf.float32)
    mid = tf.constant([-2.0])
    with tf.GradientTape() as tape:
        tape.watch(mid)
        y_mid = layer(mid)
    # Value mid and slope 1 at the middle of the range: 8 * sigmoid'(0) * 4 / 8 = 1.
    np.testing.assert_allclose(np_(y_mid), [-2.0], atol=1e-6)
    np.testing.assert_allclose(np_(tape.gradient(y_mid, mid)), [1.0], rtol=1e-6)
    y = np_(layer(x))
    assert y.min() >= -6.0 and y.max() <= 2.0
    assert y.min() == -6.0 and y.max() == 2.0  # reached at +-1e4
    assert np.all(np.diff(y) >= 0.0)


@pytest.mark.parametrize("low,high", [(1.0, 1.0), (2.0, -2.0)])
def test_soft_clip_rejects_empty_range(low, high):
    with pytest.raises(ValueError, match="Expected `high` > `low`"):
        SoftClip(low, high)


def test_soft_clip_get_config_round_trip():
    layer = SoftClip(-3.0, 7.0)
    config = layer.get_config()
    assert (config["low"], config["high"]) == (-3.0, 7.0)
    clone = SoftClip.from_config(config)
    x = np.linspace(-20, 20, 41).astype("float32")
    np.testing.assert_array_equal(np_(clone(x)), np_(layer(x)))


# ---------------------------------------------------------------------------
# LearnedScale


def test_learned_scale_shared():
    # One log-sigma for all pixels; the raw weight v starts at 0 and is read as
    # min + softplus(v - min) = -6 + log(1 + e^6) = 0.0024757. Float32 computes
    # it as (-6) + 6.0024757, whose rounding (ulp(6) = 4.8e-7) allows 2.4e-7.
    layer = LearnedScale()
    x = np.random.default_rng(0).random((2, 5, 4, 3)).astype("float32")
    y = np_(layer(x))
    assert y.shape == (2, 5, 4, 6)
    assert layer.compute_output_shape((None, 5, 4, 3)) == (None, 5, 4, 6)
    assert tuple(layer.log_scale.shape) == (1,)
    np.testing.assert_array_equal(y[..., :3], x)
    np.testing.assert_allclose(y[..., 3:], -6 + math.log1p(math.exp(6.0)), rtol=0, atol=2.5e-7)
    np.testing.assert_allclose(y[..., 3:], 0.0024757, atol=3e-7)


def test_learned_scale_per_channel_values_and_lower_bound():
    layer = LearnedScale(per_channel=True)
    x = np.zeros((2, 3, 3, 3), "float32")
    layer(x)
    assert tuple(layer.log_scale.shape) == (3,)
    raw = np.array([-1.0, 2.0, -30.0], "float32")
    layer.log_scale.assign(raw)
    y = np_(layer(x))[..., 3:]
    # -6 + softplus(5) = -0.9932847, -6 + softplus(8) = 2.0003354,
    # -6 + softplus(-24) = -6 + 3.8e-11: never below the bound -6.
    expected = -6.0 + softplus(raw.astype("float64") + 6.0)
    np.testing.assert_allclose(y, np.broadcast_to(expected, y.shape), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(expected[:2], [-0.9932847, 2.0003354], rtol=1e-6)
    assert y.min() >= -6.0


def test_learned_scale_gradient():
    # d/dv sum(min + softplus(v - min)) over 2*3*3*2 entries = 36 * sigmoid(v - min);
    # v = 0, min = -6: 36 * sigmoid(6) = 35.911.
    layer = LearnedScale()
    x = np.zeros((2, 3, 3, 2), "float32")
    layer(x)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(layer(x)[..., 2:])
    grad = np_(tape.gradient(total, layer.log_scale.value))
    np.testing.assert_allclose(grad, [36.0 / (1.0 + math.exp(-6.0))], rtol=1e-6)


def test_learned_scale_get_config_round_trip():
    layer = LearnedScale(per_channel=True, initial_value=-1.0, min_value=-4.0)
    config = layer.get_config()
    assert config["per_channel"] is True
    assert (config["initial_value"], config["min_value"]) == (-1.0, -4.0)
    clone = LearnedScale.from_config(config)
    x = np.ones((1, 2, 2, 2), "float32")
    np.testing.assert_allclose(np_(clone(x)), np_(layer(x)))
    # -4 + softplus(-1 + 4) = -0.9514143.
    np.testing.assert_allclose(np_(clone(x))[..., 2:], -4 + softplus(3.0), rtol=1e-6)
