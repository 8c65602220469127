"""Tests for keras_vae.networks: for every network, image shape and likelihood,
shapes, the exact size estimate, which inputs each output depends on (every
pixel reaches the code, z reaches every pixel, examples never mix); the crop;
the MLP against NumPy; bounded log-variance; argument errors; precision."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vae import build_decoder, build_encoder, networks
from keras_vae.likelihoods import LIKELIHOODS

NETWORKS = ["mlp", "conv"]
IMAGE_SHAPES = [(28, 28, 1), (32, 32, 3), (64, 64, 1), (64, 64, 3), (20, 28, 1)]
LIKELIHOOD_NAMES = ["bernoulli", "gaussian", "gaussian_learned", "discretized_logistic"]
LATENT_DIM = 3
BATCH = 2


def np_(x):
    return keras.ops.convert_to_numpy(x)


def small(network):
    """Tiny widths; three conv layers so 28 and 20 need a crop (28 -> 32 - 4)."""
    if network == "mlp":
        return {"widths": (16,)}
    return {"widths": (4, 8, 8), "dense_units": 16}


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


HIDDEN_TYPES = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.Conv2DTranspose)


def layer_outputs(*models):
    """Values the Dense and convolution layers output per example, as
    `networks.estimate_size` counts activations."""
    return sum(
        int(np.prod(layer.output.shape[1:]))
        for model in models
        for layer in model.layers
        if isinstance(layer, HIDDEN_TYPES)
    )


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_encoder_output_shapes(image_shape, network):
    keras.utils.set_random_seed(0)
    encoder = build_encoder(image_shape, LATENT_DIM, network, **small(network))
    assert encoder.input_shape == (None, *image_shape)
    images = tf.constant(np.random.default_rng(0).random((BATCH, *image_shape)), tf.float32)
    rng = np.random.default_rng(1)
    with tf.GradientTape() as tape:
        tape.watch(images)
        mean, log_var = encoder(images)
        # A random projection of both heads: a zero gradient at a pixel is
        # then no path from it, not a cancellation.
        projection = tf.reduce_sum(mean * rng.normal(size=(1, LATENT_DIM))) + tf.reduce_sum(
            log_var * rng.normal(size=(1, LATENT_DIM))
        )
    for out in (mean, log_var):
        assert tuple(out.shape) == (BATCH, LATENT_DIM)
        assert dtype_of(out) == "float32"
        assert np.all(np.isfinite(np_(out)))
    # Every pixel of every channel reaches the code (a dropped border, row or
    # channel, e.g. from a wrong padding or reshape, would leave zeros here).
    reach = np.abs(np_(tape.gradient(projection, images))).sum(axis=0)  # (H, W, C)
    assert np.all(reach > 0), np.argwhere(reach == 0)[:5]
    # Examples do not mix: the first image alone gives the same code.
    alone = encoder(images[:1])
    np.testing.assert_allclose(np_(alone[0]), np_(mean)[:1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(alone[1]), np_(log_var)[:1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("likelihood", LIKELIHOOD_NAMES)
@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize("image_shape", IMAGE_SHAPES)
def test_decoder_output_shapes(image_shape, network, likelihood):
    keras.utils.set_random_seed(0)
    decoder = build_decoder(
        image_shape, LATENT_DIM, network, likelihood=likelihood, **small(network)
    )
    height, width, channels = image_shape
    num_params = LIKELIHOODS[likelihood].num_params
    expected = (BATCH, height, width, num_params * channels)
    assert decoder.output_shape == (None, *expected[1:])
    z = np.random.default_rng(0).normal(size=(BATCH, LATENT_DIM)).astype("float32")
    out = decoder(z)
    assert dtype_of(out) == "float32"
    params = np_(out)
    assert params.shape == expected
    assert np.all(np.isfinite(params))
    # The memory check's arithmetic is this pair's exact size: every weight,
    # and every Dense / convolution output per example (before the crop).
    encoder = build_encoder(image_shape, LATENT_DIM, network, **small(network))
    sizes = networks.estimate_size(
        image_shape, LATENT_DIM, network, likelihood, small(network)["widths"],
        small(network).get("dense_units", networks.DEFAULT_DENSE_UNITS),
    )  # fmt: skip
    assert sizes == (encoder.count_params() + decoder.count_params(),
                     layer_outputs(encoder, decoder))  # fmt: skip
    # Every output the network computes moves with z (a constant border or
    # channel, e.g. one cropped from the wrong side, would not); a learned
    # scale's channels do not, by design (one weight per channel or image).
    moved = sum(
        np.abs(np_(decoder(z + 0.5 * np.eye(LATENT_DIM, dtype="float32")[d])) - params)
        for d in range(LATENT_DIM)
    ).sum(axis=0)  # (H, W, num_params * C)
    computed = channels if LIKELIHOODS[likelihood].learns_scale else num_params * channels
    assert np.all(moved[..., :computed] > 0), np.argwhere(moved[..., :computed] == 0)[:5]
    assert np.all(moved[..., computed:] == 0)
    # Examples do not mix.
    np.testing.assert_allclose(np_(decoder(z[:1])), params[:1], rtol=1e-5, atol=1e-6)


def test_conv_decoder_crops_when_needed():
    # Three stride-2 layers: 28 -> ceil(28 / 8) * 8 = 32, crop 4 (2 each side);
    # 20 -> 24, crop 4. 64 -> 64, no crop.
    crops = {
        shape: [
            layer.cropping
            for layer in build_decoder(shape, 2, "conv", widths=(4, 8, 8), dense_units=8).layers
            if isinstance(layer, keras.layers.Cropping2D)
        ]
        for shape in [(28, 28, 1), (20, 28, 1), (64, 64, 1)]
    }
    assert crops[(28, 28, 1)] == [((2, 2), (2, 2))]
    assert crops[(20, 28, 1)] == [((2, 2), (2, 2))]
    assert crops[(64, 64, 1)] == []


@pytest.mark.parametrize(
    "shape, padded, top_left",
    [
        # ceil(H / 8) * 8 with three stride-2 layers; the crop is split with
        # the odd pixel at the bottom / right: 28 -> 32 (2, 2); 20 -> 24
        # (2, 2); 27 -> 32 (2, 3); 29 -> 32 (1, 2).
        ((28, 28, 1), (32, 32, 1), (2, 2)),
        ((20, 28, 1), (24, 32, 1), (2, 2)),
        ((27, 29, 2), (32, 32, 2), (2, 1)),
    ],
)
def test_conv_decoder_is_the_padded_decoder_cropped(shape, padded, top_left):
    # The decoder of a size that needs a crop is the decoder of the padded
    # size (same weights: the grid before the transposed convolutions is the
    # same) cut to the image: a crop from the wrong side, a resize or a pad
    # would give other values at the same shape.
    kwargs = dict(widths=(4, 8, 8), dense_units=8, likelihood="gaussian_learned")
    keras.utils.set_random_seed(0)
    decoder = build_decoder(shape, 2, "conv", **kwargs)
    full = build_decoder(padded, 2, "conv", **kwargs)
    full.set_weights(decoder.get_weights())
    z = np.random.default_rng(0).normal(size=(3, 2)).astype("float32")
    top, left = top_left
    expected = np_(full(z))[:, top : top + shape[0], left : left + shape[1]]
    np.testing.assert_allclose(np_(decoder(z)), expected, rtol=1e-6, atol=1e-6)


def test_mlp_networks_against_numpy():
    # The MLP's forward pass by hand from its own weights (float64): hidden
    # ReLU layers, linear heads, log_var = SoftClip(raw) = -10 + 20 *
    # sigmoid(raw / 5), and the decoder's flat output read as (H, W, params)
    # in channel-last order, then log(sigma) appended. Catches an activation
    # on a head, a missing one in between, or a transposed reshape.
    keras.utils.set_random_seed(0)
    shape, widths = (5, 4, 2), (8, 6)
    encoder = build_encoder(shape, LATENT_DIM, "mlp", widths=widths)
    decoder = build_decoder(shape, LATENT_DIM, "mlp", likelihood="gaussian_learned", widths=widths)
    rng = np.random.default_rng(0)
    for layer in encoder.layers + decoder.layers:  # non-zero biases too
        if isinstance(layer, keras.layers.Dense):
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    decoder.get_layer("log_sigma").log_scale.assign([-0.5])
    x = rng.random((BATCH, *shape))
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731

    def dense(layer, h):
        kernel, bias = (np.asarray(w, np.float64) for w in layer.get_weights())
        return h @ kernel + bias

    hidden = [layer for layer in encoder.layers if isinstance(layer, keras.layers.Dense)][:2]
    h = x.reshape(BATCH, -1)
    for layer in hidden:
        h = relu(dense(layer, h))
    mean = dense(encoder.get_layer("mean"), h)
    log_var = -10.0 + 20.0 / (1.0 + np.exp(-dense(encoder.get_layer("raw_log_var"), h) / 5.0))
    got_mean, got_log_var = encoder(x.astype("float32"))
    np.testing.assert_allclose(np_(got_mean), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np_(got_log_var), log_var, rtol=1e-5, atol=1e-5)

    hidden = [layer for layer in decoder.layers if isinstance(layer, keras.layers.Dense)][:2]
    h = mean
    for layer in hidden:
        h = relu(dense(layer, h))
    loc = dense(decoder.get_layer("params"), h).reshape(BATCH, *shape)  # (B, H, W, C)
    # log(sigma) = -6 + softplus(-0.5 + 6), the same at every pixel.
    log_sigma = np.full_like(loc, -6.0 + np.log1p(np.exp(5.5)))
    expected = np.concatenate([loc, log_sigma], axis=-1)
    np.testing.assert_allclose(np_(decoder(mean.astype("float32"))), expected, rtol=1e-5, atol=1e-5)


def test_default_conv_widths_golden():
    # Halve until the smaller side is <= 7: 28 -> 14 -> 7 (2 layers);
    # 32 -> 16 -> 8 -> 4 (3); 64 -> ... -> 4 (4); 20 -> 10 -> 5 (2); 7 -> 4 (1).
    # Widths 32, 32, 64, 64, 128, ... doubling every second layer.
    assert networks.default_conv_widths((28, 28, 1)) == (32, 32)
    assert networks.default_conv_widths((32, 32, 3)) == (32, 32, 64)
    assert networks.default_conv_widths((64, 64, 3)) == (32, 32, 64, 64)
    assert networks.default_conv_widths((20, 28, 1)) == (32, 32)
    assert networks.default_conv_widths((7, 7, 1)) == (32,)
    assert networks.default_conv_widths((256, 256, 3)) == (32, 32, 64, 64, 128, 128)


@pytest.mark.parametrize("network", NETWORKS)
def test_default_widths_round_trip_shapes(network):
    encoder = build_encoder((32, 32, 3), 4, network)
    decoder = build_decoder((32, 32, 3), 4, network, likelihood="discretized_logistic")
    mean, log_var = encoder(np.zeros((BATCH, 32, 32, 3), "float32"))
    assert tuple(mean.shape) == tuple(log_var.shape) == (BATCH, 4)
    assert tuple(decoder(mean).shape) == (BATCH, 32, 32, 6)


@pytest.mark.parametrize("network", NETWORKS)
def test_log_var_bounded_for_huge_inputs(network):
    # Make the raw log-variance enormous on purpose: log-variance head kernel
    # +1 for the first half of the units and -1 for the rest, inputs +-1e4.
    # The SoftClip keeps log_var in [-10, 10] (float32 saturates the sigmoid,
    # so the bounds themselves are reached), exp(log_var) stays finite.
    keras.utils.set_random_seed(0)
    encoder = build_encoder((16, 16, 1), 4, network, **small(network))
    head = encoder.get_layer("raw_log_var")
    kernel = np.ones(head.kernel.shape, "float32")
    kernel[:, 2:] = -1.0
    head.kernel.assign(kernel)
    for scale in (1e4, -1e4):
        images = np.full((BATCH, 16, 16, 1), scale, "float32")
        _, log_var = encoder(images)
        log_var = np_(log_var)
        assert np.all(np.isfinite(log_var)) and np.all(np.isfinite(np.exp(log_var)))
        assert log_var.min() >= -10.0 and log_var.max() <= 10.0
    # Not vacuous: the last call hit both bounds (to float32 precision).
    assert log_var.max() > 9.99 and log_var.min() < -9.99


@pytest.mark.parametrize("network", NETWORKS)
def test_decoder_outputs_raw_parameters(network):
    # Logits, not a squashed image: with the output bias at 3 the Bernoulli
    # decoder returns values ~3, which a sigmoid/clip would have kept <= 1.
    decoder = build_decoder((16, 16, 1), 2, network, **small(network))
    head = decoder.get_layer("params")
    head.bias.assign(np.full(head.bias.shape, 3.0, "float32"))
    params = np_(decoder(np.zeros((1, 2), "float32")))
    np.testing.assert_allclose(params, 3.0, atol=1e-6)  # z = 0, relu(0) = 0: only the bias


@pytest.mark.parametrize("per_channel,size", [(False, 1), (True, 3)])
def test_gaussian_learned_decoder_layout(per_channel, size):
    decoder = build_decoder(
        (8, 8, 3),
        2,
        "mlp",
        likelihood="gaussian_learned",
        per_channel_scale=per_channel,
        widths=(8,),
    )
    layer = decoder.get_layer("log_sigma")
    assert tuple(layer.log_scale.shape) == (size,)
    params = np_(decoder(np.random.default_rng(0).normal(size=(2, 2)).astype("float32")))
    assert params.shape == (2, 8, 8, 6)
    # Channels 3..5 are log(sigma), initial -6 + softplus(0 + 6) = 0.0024757,
    # the same at every pixel (float32 rounding of -6 + 6.0025: 2.4e-7).
    np.testing.assert_allclose(params[..., 3:], 0.0024757, atol=3e-7)


# ---------------------------------------------------------------------------
# Argument errors

BAD_ARGUMENTS = [
    ({"latent_dim": 0}, "latent_dim"),
    ({"latent_dim": -2}, "latent_dim"),
    ({"latent_dim": 2.0}, "latent_dim"),
    ({"network": "resnet"}, "network"),
    ({"image_shape": (28, 28)}, "image_shape"),
    ({"image_shape": (28, 28, 0)}, "image_shape"),
    ({"image_shape": (28, -28, 1)}, "image_shape"),
    ({"image_shape": (28.0, 28, 1)}, "image_shape"),
    ({"widths": ()}, "widths"),
    ({"widths": (8, 0)}, "widths"),
]


@pytest.mark.parametrize("builder", [build_encoder, build_decoder])
@pytest.mark.parametrize("override,name", BAD_ARGUMENTS)
def test_bad_arguments_raise(builder, override, name):
    kwargs = {"image_shape": (28, 28, 1), "latent_dim": 2, "network": "conv"}
    kwargs.update(override)
    with pytest.raises(ValueError, match="Expected") as info:
        builder(**kwargs)
    # The message names the argument and the received value.
    assert f"{name}=" in str(info.value)


def test_unknown_likelihood_raises():
    with pytest.raises(ValueError, match="Expected a likelihood"):
        build_decoder((28, 28, 1), 2, "mlp", likelihood="poisson")


# ---------------------------------------------------------------------------
# Precision


@pytest.mark.parametrize("network", NETWORKS)
def test_mixed_precision_heads_are_float32(network, dtype_policy):
    dtype_policy("mixed_float16")
    encoder = build_encoder((16, 16, 3), 4, network, **small(network))
    decoder = build_decoder(
        (16, 16, 3), 4, network, likelihood="gaussian_learned", **small(network)
    )
    hidden = [
        layer
        for layer in encoder.layers + decoder.layers
        if isinstance(layer, HIDDEN_TYPES) and layer.name not in ("mean", "raw_log_var", "params")
    ]
    assert hidden and all(layer.compute_dtype == "float16" for layer in hidden)
    mean, log_var = encoder(np.random.default_rng(0).random((BATCH, 16, 16, 3)))
    assert dtype_of(mean) == dtype_of(log_var) == "float32"
    params = decoder(mean)
    assert dtype_of(params) == "float32" and tuple(params.shape) == (BATCH, 16, 16, 6)
    assert np.all(np.isfinite(np_(params)))
    for name in ("mean", "raw_log_var", "log_var"):
        assert encoder.get_layer(name).compute_dtype == "float32"
    assert decoder.get_layer("params").compute_dtype == "float32"
    assert decoder.get_layer("log_sigma").compute_dtype == "float32"


def test_float64_policy_heads_are_float64(dtype_policy):
    # Under a float64 policy nothing is rounded to float32 (gradient checks).
    dtype_policy("float64", floatx="float64")
    encoder = build_encoder((8, 8, 1), 2, "conv", widths=(4,), dense_units=8)
    decoder = build_decoder((8, 8, 1), 2, "conv", widths=(4,), dense_units=8)
    mean, log_var = encoder(np.zeros((1, 8, 8, 1)))
    assert dtype_of(mean) == dtype_of(log_var) == "float64"
    assert dtype_of(decoder(mean)) == "float64"
