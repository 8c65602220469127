"""Encoder and decoder builders: fully connected (`mlp`) and convolutional (`conv`).

Both return functional `keras.Model`s:
- encoder: images `(batch, H, W, C)` float in [0, 1] -> `[mean, log_var]`,
  each `(batch, latent_dim)` float32, log_var softly bounded;
- decoder: `z (batch, latent_dim)` -> the likelihood's parameters
  `(batch, H, W, num_params * C)` float32 (logits, mean, log-scale), never a
  squashed image.

Under a mixed precision policy the hidden layers run in float16/bfloat16 and
the output heads in float32 (DESIGN.md section 4, "Precision").
"""

from __future__ import annotations

import math

import keras

from keras_vae import likelihoods as likelihoods_lib
from keras_vae.layers import LearnedScale, SoftClip

NETWORKS = ("mlp", "conv")

# Conv layers use 4x4 kernels with stride 2 (Higgins et al. 2017, Burgess et
# al. 2018); the MLP default follows Kingma & Welling's 500-unit layers, deeper.
DEFAULT_MLP_WIDTHS = (512, 256)
DEFAULT_DENSE_UNITS = 256
LOG_VAR_BOUNDS = (-10.0, 10.0)


def _head_dtype():
    """float32 heads (exact under mixed precision), float64 under a float64 policy."""
    return "float64" if keras.config.dtype_policy().compute_dtype == "float64" else "float32"


def _check_image_shape(image_shape):
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(
            "Expected `image_shape` to be (height, width, channels) of positive ints. "
            f"Received: image_shape={image_shape!r}"
        )
    return shape


def _check_common(network, latent_dim):
    if network not in NETWORKS:
        raise ValueError(
            f"Expected `network` in {NETWORKS}. Received: network={network!r}"
        )
    if not isinstance(latent_dim, int) or latent_dim <= 0:
        raise ValueError(
            f"Expected `latent_dim` to be a positive int. Received: latent_dim={latent_dim!r}"
        )


def default_conv_widths(image_shape):
    """Channel widths of the stride-2 convolutions for an image size.

    Halves the resolution until the smaller side is at most 7 (28 -> 14 -> 7;
    32 -> 16 -> 8 -> 4; 64 -> 32 -> 16 -> 8 -> 4), widths 32, 32, 64, 64,
    128, ... doubling every second layer, at most 256.
    """
    height, width, _ = _check_image_shape(image_shape)
    size, widths = min(height, width), []
    while size > 7 or not widths:
        widths.append(min(256, 32 * 2 ** (len(widths) // 2)))
        size = math.ceil(size / 2)
    return tuple(widths)


def _widths(network, image_shape, widths):
    if widths is None:
        widths = DEFAULT_MLP_WIDTHS if network == "mlp" else default_conv_widths(image_shape)
    widths = tuple(widths)
    if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
        raise ValueError(
            "Expected `widths` to be a non-empty sequence of positive ints. "
            f"Received: widths={widths!r}"
        )
    return widths


def _decoder_layout(image_shape, latent_dim, network, likelihood, widths):
    """Checked `(image_shape, widths, out_channels, learns_scale)` of a decoder.

    `out_channels` is what the last layer outputs: the likelihood's
    parameters per channel, except under a learned scale, where the network
    gives the mean and a `LearnedScale` layer adds log sigma.
    """
    image_shape = _check_image_shape(image_shape)
    _check_common(network, latent_dim)
    widths = _widths(network, image_shape, widths)
    lik = likelihoods_lib.get(likelihood) if isinstance(likelihood, str) else likelihood
    out_channels = image_shape[-1] * (1 if lik.learns_scale else lik.num_params)
    return image_shape, widths, out_channels, lik.learns_scale


def build_encoder(
    image_shape,
    latent_dim,
    network="conv",
    widths=None,
    dense_units=DEFAULT_DENSE_UNITS,
    activation="relu",
    condition_size=0,
    name="encoder",
):
    """Builds q(z|x): images -> `[mean, log_var]`.

    Args:
        image_shape: `(H, W, C)`.
        latent_dim: int, size of z.
        network: `"mlp"` (dense layers of `widths` units) or `"conv"`
            (a stride-2 4x4 convolution per entry of `widths`, then a dense
            layer of `dense_units`).
        widths: layer sizes; `None` picks `DEFAULT_MLP_WIDTHS` or
            `default_conv_widths(image_shape)`.
        dense_units: width of the conv encoder's dense layer.
        activation: hidden activation.
        condition_size: 0, or the size K of a condition vector (a conditional
            VAE's one-hot class or multi-hot attributes): the model then takes
            `[images, condition]`, `condition` `(batch, K)` float, concatenated
            to the flattened image features (mlp: the pixels; conv: the last
            convolution's output) before the first dense layer.
        name: model name.

    Returns:
        A `keras.Model` with outputs `[mean, log_var]`, each
        `(batch, latent_dim)` float32; log_var in `LOG_VAR_BOUNDS`.
    """
    image_shape = _check_image_shape(image_shape)
    _check_common(network, latent_dim)
    widths = _widths(network, image_shape, widths)
    _check_condition_size(condition_size)
    images = keras.Input(shape=image_shape, name="images")
    inputs, h = _with_condition(images, condition_size)
    if network == "mlp":
        h = _join(keras.layers.Flatten()(images), h)
        for units in widths:
            h = keras.layers.Dense(units, activation=activation)(h)
    else:
        features = images
        for filters in widths:
            features = keras.layers.Conv2D(
                filters, 4, strides=2, padding="same", activation=activation
            )(features)
        h = _join(keras.layers.Flatten()(features), h)
        h = keras.layers.Dense(dense_units, activation=activation)(h)
    # Heads in float32 so log_var and the KL are exact under mixed precision.
    head_dtype = _head_dtype()
    mean = keras.layers.Dense(latent_dim, dtype=head_dtype, name="mean")(h)
    raw_log_var = keras.layers.Dense(latent_dim, dtype=head_dtype, name="raw_log_var")(h)
    log_var = SoftClip(*LOG_VAR_BOUNDS, dtype=head_dtype, name="log_var")(raw_log_var)
    return keras.Model(inputs, [mean, log_var], name=name)


def build_decoder(
    image_shape,
    latent_dim,
    network="conv",
    likelihood="bernoulli",
    widths=None,
    dense_units=DEFAULT_DENSE_UNITS,
    activation="relu",
    per_channel_scale=False,
    condition_size=0,
    name="decoder",
):
    """Builds p(x|z): z -> the likelihood's parameters.

    The conv decoder mirrors the encoder: dense layers up to a
    `ceil(H / 2^n) x ceil(W / 2^n)` grid, `n = len(widths)` stride-2
    transposed convolutions, and a crop when H or W is not a multiple of 2^n
    (e.g. 28 = 32 - 4 with three layers).

    Args:
        image_shape: `(H, W, C)` of the images to model.
        latent_dim: int, size of z.
        network: `"mlp"` or `"conv"`.
        likelihood: a name from `keras_vae.likelihoods.LIKELIHOODS`; sets the
            number of output parameters per channel.
        widths: the encoder's widths (the decoder uses them in reverse).
        dense_units: width of the conv decoder's first dense layer.
        activation: hidden activation.
        per_channel_scale: `gaussian_learned` only: one learned sigma per
            channel instead of one shared.
        condition_size: 0, or the size K of a condition vector: the model
            then takes `[z, condition]`, concatenated before the first layer.
        name: model name.

    Returns:
        A `keras.Model` mapping `(batch, latent_dim)` to float32 parameters
        `(batch, H, W, num_params * C)`.
    """
    image_shape, widths, out_channels, learned_scale = _decoder_layout(
        image_shape, latent_dim, network, likelihood, widths
    )
    height, width, channels = image_shape

    head_dtype = _head_dtype()
    _check_condition_size(condition_size)
    z = keras.Input(shape=(latent_dim,), name="z")
    inputs, condition = _with_condition(z, condition_size)
    code = _join(z, condition)
    if network == "mlp":
        h = code
        for units in reversed(widths):
            h = keras.layers.Dense(units, activation=activation)(h)
        h = keras.layers.Dense(height * width * out_channels, dtype=head_dtype, name="params")(h)
        params = keras.layers.Reshape((height, width, out_channels), dtype=head_dtype)(h)
    else:
        scale = 2 ** len(widths)
        base_h, base_w = math.ceil(height / scale), math.ceil(width / scale)
        h = keras.layers.Dense(dense_units, activation=activation)(code)
        h = keras.layers.Dense(base_h * base_w * widths[-1], activation=activation)(h)
        h = keras.layers.Reshape((base_h, base_w, widths[-1]))(h)
        for filters in reversed(widths[:-1]):
            h = keras.layers.Conv2DTranspose(
                filters, 4, strides=2, padding="same", activation=activation
            )(h)
        params = keras.layers.Conv2DTranspose(
            out_channels, 4, strides=2, padding="same", dtype=head_dtype, name="params"
        )(h)
        crop_h, crop_w = base_h * scale - height, base_w * scale - width
        if crop_h or crop_w:
            params = keras.layers.Cropping2D(
                ((crop_h // 2, crop_h - crop_h // 2), (crop_w // 2, crop_w - crop_w // 2)),
                dtype=head_dtype,
            )(params)
    if learned_scale:
        params = LearnedScale(per_channel=per_channel_scale, dtype=head_dtype, name="log_sigma")(
            params
        )
    return keras.Model(inputs, params, name=name)


def _check_condition_size(condition_size):
    valid = isinstance(condition_size, int) and not isinstance(condition_size, bool)
    if not valid or condition_size < 0:
        raise ValueError(
            f"Expected `condition_size` an int >= 0. Received: condition_size={condition_size!r}"
        )


def _with_condition(first, condition_size):
    """`(inputs, condition)`: `first` alone and None, or `[first, condition]`
    and the `(batch, condition_size)` condition input."""
    if not condition_size:
        return first, None
    condition = keras.Input(shape=(condition_size,), name="condition")
    return [first, condition], condition


def _join(features, condition):
    """`features` with the condition vector appended (a conditional network)."""
    if condition is None:
        return features
    return keras.layers.Concatenate(name="with_condition")([features, condition])


def build_networks(config, image_shape, condition_size=0):
    """`(encoder, decoder)` for a run's settings (conditional with `condition_size` > 0).

    Args:
        config: a `keras_vae.config.Config` (or anything with its `latent_dim`,
            `network`, `widths`, `dense_units`, `likelihood` and
            `per_channel_scale`).
        image_shape: `(H, W, C)` of the data.
    """
    common = dict(
        image_shape=image_shape,
        latent_dim=config.latent_dim,
        network=config.network,
        widths=config.widths,
        dense_units=config.dense_units,
        condition_size=condition_size,
    )
    encoder = build_encoder(**common)
    decoder = build_decoder(
        **common, likelihood=config.likelihood, per_channel_scale=config.per_channel_scale
    )
    return encoder, decoder


def estimate_size(
    image_shape,
    latent_dim,
    network="conv",
    likelihood="bernoulli",
    widths=None,
    dense_units=DEFAULT_DENSE_UNITS,
    per_channel_scale=False,
    condition_size=0,
):
    """Parameters and activations of `build_encoder` + `build_decoder`, by arithmetic.

    Lets a run refuse a model that would not fit in memory before building
    it (building allocates every weight). Mirrors the builders above layer
    by layer; a test checks `parameters` against `count_params()`.

    Returns:
        `(parameters, activations)`: the exact number of weights of both
        networks, and the number of values the layers output for one
        example (forward pass; a backward pass keeps about as many again).
    """
    image_shape, widths, out_channels, learned_scale = _decoder_layout(
        image_shape, latent_dim, network, likelihood, widths
    )
    height, width, channels = image_shape
    params = activations = 0

    def dense(fan_in, units):
        nonlocal params, activations
        params += fan_in * units + units
        activations += units
        return units

    # Encoder.
    if network == "mlp":
        features = height * width * channels + condition_size
        for units in widths:
            features = dense(features, units)
    else:
        h, w, c = height, width, channels
        for filters in widths:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
            params += 16 * c * filters + filters  # 4x4 kernels
            activations += h * w * filters
            c = filters
        features = dense(h * w * c + condition_size, dense_units)
    dense(features, latent_dim)  # mean
    dense(features, latent_dim)  # log_var
    # Decoder.
    if network == "mlp":
        features = latent_dim + condition_size
        for units in reversed(widths):
            features = dense(features, units)
        dense(features, height * width * out_channels)
    else:
        scale = 2 ** len(widths)
        h, w = math.ceil(height / scale), math.ceil(width / scale)
        c = widths[-1]
        dense(dense(latent_dim + condition_size, dense_units), h * w * c)
        for filters in [*reversed(widths[:-1]), out_channels]:
            h, w = 2 * h, 2 * w
            params += 16 * c * filters + filters
            activations += h * w * filters
            c = filters
    if learned_scale:
        params += channels if per_channel_scale else 1
    return params, activations
