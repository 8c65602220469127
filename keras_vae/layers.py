"""Layers of the VAE: the reparameterization trick and two small helpers."""

from __future__ import annotations

import keras
from keras import ops


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"Expected `seed` to be an int or None. Received: seed={seed!r}")


@keras.saving.register_keras_serializable(package="keras_vae")
class Sampling(keras.layers.Layer):
    """Draws z ~ N(mean, exp(log_var)) with the reparameterization trick.

    z = mean + exp(0.5 * log_var) * eps, eps ~ N(0, I), so gradients reach the
    encoder through `mean` and `log_var`. `eps` comes from a
    `keras.random.SeedGenerator` owned by the layer: a fixed `seed` gives the
    same sequence of draws, and successive calls give different draws. The
    batch size may be unknown when the layer is traced.

    Args:
        seed: int or None. Seed of the layer's `SeedGenerator`.
        deterministic: bool. If True the layer returns `mean` (no noise); used
            for export and tests. Can be overridden per call.
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Input shape:
        A pair `(mean, log_var)` of tensors of the same shape `(batch, latent_dim)`.

    Output shape:
        `(batch, latent_dim)`, the dtype of `mean`.

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014, eq. (10).
    """

    def __init__(self, seed=None, deterministic=False, **kwargs):
        super().__init__(**kwargs)
        _check_seed(seed)
        self.seed = seed
        self.deterministic = bool(deterministic)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, inputs, deterministic=None):
        mean, log_var = inputs
        if deterministic is None:
            deterministic = self.deterministic
        if deterministic:
            return mean
        # Under a mixed policy `mean` is float16: draw eps in the same dtype
        # (keras.random.normal gives float32 by default, and the multiply then
        # fails with "float32 does not match float16"; seen on TF 2.21).
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        config = super().get_config()
        config.update({"seed": self.seed, "deterministic": self.deterministic})
        return config


@keras.saving.register_keras_serializable(package="keras_vae")
class SoftClip(keras.layers.Layer):
    """Bounds a tensor smoothly to (low, high) keeping gradients everywhere.

    y = low + (high - low) * sigmoid(4 * (x - mid) / (high - low)), which is
    the identity to first order around the middle of the range (slope 1 at
    mid). Used on the encoder's log-variance so exp(log_var) can neither
    overflow (float16 max ~65504 = exp(11.1)) nor reach zero.

    Args:
        low: float. Lower bound.
        high: float. Upper bound, > low.
        **kwargs: base layer keyword arguments.

    Input shape:
        Any. Output shape: same as input.
    """

    def __init__(self, low=-10.0, high=10.0, **kwargs):
        super().__init__(**kwargs)
        if not high > low:
            raise ValueError(
                f"Expected `high` > `low`. Received: low={low!r}, high={high!r}"
            )
        self.low = float(low)
        self.high = float(high)
        self.built = True

    def call(self, inputs):
        width = self.high - self.low
        mid = 0.5 * (self.high + self.low)
        return self.low + width * ops.sigmoid(4.0 * (inputs - mid) / width)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"low": self.low, "high": self.high})
        return config


@keras.saving.register_keras_serializable(package="keras_vae")
class LearnedScale(keras.layers.Layer):
    """Appends a learned, input-independent log-scale to the decoder's output.

    The sigma-VAE (Rybkin et al. 2021) learns one shared log(sigma) for all
    pixels; `per_channel=True` learns one per channel. The output stacks the
    input (the Gaussian mean, `C` channels) and the log-scale broadcast to the
    same shape, so the decoder always returns one tensor of parameters.

    The layer learns a raw weight v and outputs the softly bounded
    log(sigma) = min_value + softplus(v - min_value). v starts at
    `initial_value`, so the first log(sigma) is slightly above it: with the
    defaults (v = 0, min -6), -6 + softplus(6) = log(1 + e^-6) = 0.0025
    (sigma = 1.0025), as in the paper's code, which initialises the same raw
    parameter to 0 under the same bound. Starting near sigma = 1, a broad
    likelihood, keeps the first updates' reconstruction gradients (scaled by
    1 / sigma^2) small while sigma then adapts to the data's residuals.

    Args:
        per_channel: bool. One log-scale per channel instead of one in all.
        initial_value: float. Initial raw weight v (not log(sigma) itself; see
            above); 0 as in the paper's code.
        min_value: float. Soft lower bound of log(sigma) (paper code: -6).
        **kwargs: base layer keyword arguments.

    Input shape:
        `(batch, H, W, C)`. Output shape: `(batch, H, W, 2 * C)`:
        `[..., :C]` the input, `[..., C:]` log(sigma).

    Reference:
        Rybkin, Daniilidis & Levine, "Simple and Effective VAE Training with
        Calibrated Decoders", ICML 2021.
    """

    def __init__(self, per_channel=False, initial_value=0.0, min_value=-6.0, **kwargs):
        super().__init__(**kwargs)
        self.per_channel = bool(per_channel)
        self.initial_value = float(initial_value)
        self.min_value = float(min_value)

    def build(self, input_shape):
        size = input_shape[-1] if self.per_channel else 1
        self.log_scale = self.add_weight(
            shape=(size,),
            initializer=keras.initializers.Constant(self.initial_value),
            name="log_scale",
        )

    def call(self, inputs):
        # softplus lower bound: min + softplus(v - min) ~ v well above min.
        log_scale = self.min_value + ops.softplus(
            ops.cast(self.log_scale, inputs.dtype) - self.min_value
        )
        return ops.concatenate([inputs, ops.zeros_like(inputs) + log_scale], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2 * input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "per_channel": self.per_channel,
                "initial_value": self.initial_value,
                "min_value": self.min_value,
            }
        )
        return config

