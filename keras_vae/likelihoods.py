"""Likelihoods log p(x|z) and the Gaussian KL, as pure `keras.ops` functions.

Conventions (DESIGN.md section 4):
- images `x` are float in [0, 1], NHWC; 8-bit data are exactly k / 255;
- every function returns per-example values in nats, summed over pixels and
  channels (or latent dimensions): shape `(batch,)`. The batch reduction
  happens in one place, the model's loss;
- computation is in float32 whatever the inputs' dtype (mixed precision),
  or in float64 when an input is float64 (float64 models, gradient checks).

The `Likelihood` objects below tie each function to the decoder's output
layout: the decoder returns one tensor of parameters of shape
`(batch, H, W, num_params * C)`, parameter `k` in channels `[k*C:(k+1)*C]`.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vae import compiled

LOG_2PI = math.log(2.0 * math.pi)


def _f32(x):
    return ops.cast(x, "float32")


def _float(*xs):
    """Casts to one float dtype of at least 32 bits: float64 if any input is
    float64, else float32 (16-bit floats are upcast under mixed precision)."""
    xs = [ops.convert_to_tensor(x) for x in xs]
    wide = any(keras.backend.standardize_dtype(x.dtype) == "float64" for x in xs)
    dtype = "float64" if wide else "float32"
    return tuple(ops.cast(x, dtype) for x in xs)


def _sum_per_example(values):
    """Sums all axes but the first: (batch, ...) -> (batch,)."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)


def bernoulli_log_prob(x, logits):
    """Bernoulli log-likelihood from logits, numerically stable.

    log p(x | l) = x * log sigmoid(l) + (1 - x) * log(1 - sigmoid(l))
                 = x * l - softplus(l),
    exact for any real l (no probabilities are formed, so no log(0)). `x` may
    be a grey level in [0, 1] (the usual "continuous Bernoulli-free" use on
    non-binary data); the value is then a cross-entropy, not a normalised
    log-probability.

    Args:
        x: `(batch, ...)` targets in [0, 1].
        logits: `(batch, ...)` same shape, unbounded.

    Returns:
        `(batch,)` log-likelihood in nats.
    """
    x, logits = _float(x, logits)
    return _sum_per_example(x * logits - ops.softplus(logits))


def gaussian_log_prob(x, mean, log_scale):
    """Gaussian log-likelihood with standard deviation exp(log_scale).

    log N(x; mu, sigma^2) = -0.5 * log(2 pi) - log sigma - 0.5 * ((x - mu) / sigma)^2.

    Args:
        x: `(batch, H, W, C)` targets.
        mean: same shape as `x`.
        log_scale: log sigma, broadcastable to `x`: a scalar (fixed sigma),
            a `(C,)` vector (per channel) or a full tensor.

    Returns:
        `(batch,)` log-likelihood in nats.
    """
    x, mean, log_scale = _float(x, mean, log_scale)
    z = (x - mean) * ops.exp(-log_scale)
    return _sum_per_example(-0.5 * LOG_2PI - log_scale - 0.5 * ops.square(z))


def discretized_logistic_log_prob(x, mean, log_scale, num_bins=256):
    """Log-probability of 8-bit pixels under a discretized logistic.

    The logistic(mean, s = exp(log_scale)) is integrated over the bin of each
    pixel: with x = k / (num_bins - 1) and half-width h = 0.5 / (num_bins - 1),
        P(k) = sigmoid((x + h - mean) / s) - sigmoid((x - h - mean) / s)
    except at the edges, where the bin extends to infinity:
        P(0)   = sigmoid((x + h - mean) / s),
        P(255) = 1 - sigmoid((x - h - mean) / s).
    The probabilities of the `num_bins` values sum to 1, so the result is a
    true log-probability and bits/dim computed from it are exact. Where the
    difference of sigmoids underflows (< 1e-5) the density at the bin centre
    times the bin width is used, as in PixelCNN++.

    Args:
        x: `(batch, H, W, C)` pixels k / (num_bins - 1) in [0, 1].
        mean: same shape, location of the logistic (in [0, 1] units).
        log_scale: same shape (or broadcastable), log of the logistic scale.
        num_bins: number of pixel values (256 for 8-bit data).

    Returns:
        `(batch,)` log-probability in nats.

    Reference:
        Salimans, Karpathy, Chen & Kingma, "PixelCNN++", ICLR 2017, eq. (2);
        edge cases as in their `discretized_mix_logistic_loss`.
    """
    x, mean, log_scale = _float(x, mean, log_scale)
    half = 0.5 / (num_bins - 1)
    inv_s = ops.exp(-log_scale)
    centered = x - mean
    plus_in = inv_s * (centered + half)
    min_in = inv_s * (centered - half)
    mid_in = inv_s * centered
    # Bin 0 takes all mass below its upper edge: log sigmoid(plus_in).
    log_cdf_plus = plus_in - ops.softplus(plus_in)
    # The last bin takes all mass above its lower edge: log(1 - sigmoid(min_in)).
    log_one_minus_cdf_min = -ops.softplus(min_in)
    # sigmoid(a) - sigmoid(b) loses precision when both are close to 1; use
    # sigmoid(-b) - sigmoid(-a) (the same value) on the upper half instead.
    upper = mid_in > 0
    a = ops.where(upper, -min_in, plus_in)
    b = ops.where(upper, -plus_in, min_in)
    cdf_delta = ops.sigmoid(a) - ops.sigmoid(b)
    # log density of the logistic at the bin centre, times the bin width.
    log_pdf_mid = mid_in - log_scale - 2.0 * ops.softplus(mid_in) + math.log(2.0 * half)
    log_prob_inner = ops.where(
        cdf_delta > 1e-5, ops.log(ops.maximum(cdf_delta, 1e-12)), log_pdf_mid
    )
    log_prob = ops.where(
        x < half,
        log_cdf_plus,
        ops.where(x > 1.0 - half, log_one_minus_cdf_min, log_prob_inner),
    )
    return _sum_per_example(log_prob)


def categorical_log_prob(x, logits, pad_id=0):
    """Categorical log-likelihood of token sequences, padding masked out.

    log p(x | l) = sum_t [x_t != pad] * (l_{t, x_t} - logsumexp_v l_{t, v}),
    the teacher-forced sequence likelihood of Bowman et al. 2016 (eq. 1 with
    the decoder's softmax), computed from logits (a log-softmax, never a
    log of probabilities). Positions after the end token hold `pad_id` and
    add nothing; the end token itself is scored.

    Args:
        x: `(batch, T)` int token ids.
        logits: `(batch, T, V)` unnormalised log-probabilities.
        pad_id: the padding id.

    Returns:
        `(batch,)` log-likelihood in nats.
    """
    (logits,) = _float(logits)
    x = ops.cast(x, "int32")
    log_probs = logits - ops.logsumexp(logits, axis=-1, keepdims=True)  # (B, T, V)
    picked = ops.take_along_axis(log_probs, ops.expand_dims(x, -1), axis=-1)[..., 0]  # (B, T)
    mask = ops.cast(ops.not_equal(x, pad_id), picked.dtype)
    return ops.sum(picked * mask, axis=-1)


def gaussian_kl_per_dim(mean, log_var):
    """KL(N(mean, exp(log_var)) || N(0, 1)) for each latent dimension.

    KL = 0.5 * (exp(log_var) + mean^2 - 1 - log_var)  (Kingma & Welling 2014,
    appendix B, with the sign of the ELBO term flipped). Exactly 0 at (0, 0).

    Args:
        mean: `(batch, latent_dim)`.
        log_var: `(batch, latent_dim)`.

    Returns:
        `(batch, latent_dim)` KL in nats.
    """
    mean, log_var = _float(mean, log_var)
    return 0.5 * (ops.exp(log_var) + ops.square(mean) - 1.0 - log_var)


def gaussian_kl(mean, log_var):
    """`gaussian_kl_per_dim` summed over latent dimensions: `(batch,)` nats."""
    return ops.sum(gaussian_kl_per_dim(mean, log_var), axis=-1)


def gaussian_log_density(z, mean, log_var):
    """log N(z; mean, diag(exp(log_var))) summed over the last axis.

    Args:
        z, mean, log_var: `(..., latent_dim)`, broadcastable.

    Returns:
        `(...)` log-density in nats.
    """
    z, mean, log_var = _float(z, mean, log_var)
    return -0.5 * ops.sum(
        LOG_2PI + log_var + ops.square(z - mean) * ops.exp(-log_var), axis=-1
    )


def standard_normal_log_density(z):
    """log N(z; 0, I) summed over the last axis: `(...)` nats."""
    (z,) = _float(z)
    return -0.5 * ops.sum(LOG_2PI + ops.square(z), axis=-1)


# ---------------------------------------------------------------------------
# Likelihood objects: decoder layout + log_prob + mean/sample at the edge.


class Likelihood:
    """A family p(x | params) and how the decoder's output encodes `params`.

    Attributes:
        name: the public name (`bernoulli`, `gaussian`, ...).
        num_params: parameters per image channel in the decoder's output.
        options: the settings its constructor takes (`get` passes these
            and drops the others, so callers need no switch on the name).
        learns_scale: whether the scale is a learned parameter of its own
            (a `LearnedScale` layer) rather than a decoder output or fixed.
    """

    name = ""
    num_params = 1
    options = ()
    learns_scale = False

    def split(self, params):
        """(batch, H, W, num_params * C) -> list of num_params (batch, H, W, C)."""
        if self.num_params == 1:
            return [params]
        return ops.split(params, self.num_params, axis=-1)

    def log_prob(self, x, params):
        """`(batch,)` log p(x | params) in nats."""
        raise NotImplementedError

    def mean(self, params):
        """The image the decoder stands for, float32 in [0, 1]."""
        raise NotImplementedError

    def sample(self, params, seed=None):
        """A draw x ~ p(x | params), float32 in [0, 1]."""
        raise NotImplementedError

    def get_config(self):
        return {}


class Bernoulli(Likelihood):
    """Bernoulli pixels; the decoder outputs logits."""

    name = "bernoulli"

    def log_prob(self, x, params):
        return bernoulli_log_prob(x, params)

    def mean(self, params):
        return ops.sigmoid(_f32(params))

    def sample(self, params, seed=None):
        p = self.mean(params)
        return ops.cast(keras.random.uniform(ops.shape(p), seed=seed) < p, "float32")


class Gaussian(Likelihood):
    """Gaussian pixels with a fixed standard deviation; the decoder outputs the mean.

    Args:
        sigma: the fixed standard deviation (in [0, 1] pixel units).
    """

    name = "gaussian"
    options = ("sigma",)

    def __init__(self, sigma=0.1):
        if not sigma > 0:
            raise ValueError(f"Expected `sigma` > 0. Received: sigma={sigma!r}")
        self.sigma = float(sigma)

    def log_prob(self, x, params):
        return gaussian_log_prob(x, params, math.log(self.sigma))

    def mean(self, params):
        return ops.clip(_f32(params), 0.0, 1.0)

    def sample(self, params, seed=None):
        mean = _f32(params)
        noise = keras.random.normal(ops.shape(mean), seed=seed)
        return ops.clip(mean + self.sigma * noise, 0.0, 1.0)

    def get_config(self):
        return {"sigma": self.sigma}


class GaussianLearned(Likelihood):
    """Gaussian pixels with a learned log-sigma (sigma-VAE).

    The decoder outputs `[mean, log_sigma]`; `log_sigma` comes from a
    `keras_vae.layers.LearnedScale` layer (shared or per channel).
    """

    name = "gaussian_learned"
    num_params = 2
    learns_scale = True

    def log_prob(self, x, params):
        mean, log_scale = self.split(params)
        return gaussian_log_prob(x, mean, log_scale)

    def mean(self, params):
        return ops.clip(_f32(self.split(params)[0]), 0.0, 1.0)

    def sample(self, params, seed=None):
        mean, log_scale = (_f32(p) for p in self.split(params))
        noise = keras.random.normal(ops.shape(mean), seed=seed)
        return ops.clip(mean + ops.exp(log_scale) * noise, 0.0, 1.0)


# PixelCNN++'s floor of the logistic log-scale, -7 on [-1, 1] data, in [0, 1] units.
MIN_LOG_SCALE = -7.0 - math.log(2.0)


class DiscretizedLogistic(Likelihood):
    """8-bit pixels under a discretized logistic; the decoder outputs `[mean, log_scale]`.

    The raw log-scale is bounded below at `min_log_scale` (PixelCNN++ uses -7
    on [-1, 1] data, i.e. -7 - log 2 on [0, 1] data).
    """

    name = "discretized_logistic"
    num_params = 2

    def __init__(self, num_bins=256, min_log_scale=MIN_LOG_SCALE):
        self.num_bins = int(num_bins)
        self.min_log_scale = float(min_log_scale)

    def _params(self, params):
        mean, log_scale = (_f32(p) for p in self.split(params))
        return mean, ops.maximum(log_scale, self.min_log_scale)

    def log_prob(self, x, params):
        return _discretized_logistic(x, params, self.num_bins, self.min_log_scale)

    def mean(self, params):
        # The location, snapped to the pixel grid like the data.
        mean, _ = self._params(params)
        levels = self.num_bins - 1
        return ops.round(ops.clip(mean, 0.0, 1.0) * levels) / levels

    def sample(self, params, seed=None):
        mean, log_scale = self._params(params)
        u = keras.random.uniform(ops.shape(mean), minval=1e-5, maxval=1.0 - 1e-5, seed=seed)
        x = mean + ops.exp(log_scale) * (ops.log(u) - ops.log(1.0 - u))
        levels = self.num_bins - 1
        return ops.round(ops.clip(x, 0.0, 1.0) * levels) / levels

    def get_config(self):
        return {"num_bins": self.num_bins, "min_log_scale": self.min_log_scale}


# Compiled in a step, the discretized logistic's 30-odd element-wise ops over a
# 64x64x3 batch take a third of their time (~40% of a celeb_a step on 2
# cores before; `benchmarks/profile_step.py`).
@compiled.xla_when_traced
def _discretized_logistic(x, params, num_bins, min_log_scale):
    """`DiscretizedLogistic(num_bins, min_log_scale).log_prob`, as one function."""
    mean, log_scale = DiscretizedLogistic(num_bins, min_log_scale)._params(params)
    return discretized_logistic_log_prob(x, mean, log_scale, num_bins)


class Categorical(Likelihood):
    """Token sequences under a per-position softmax; the decoder outputs logits
    `(batch, T, V)` over the vocabulary, and padding (id 0) is not scored.

    `mean` is the most likely token at each position (under teacher forcing:
    the decoder saw the true prefix); a free-running sequence comes from the
    sequence model's greedy `decode`.
    """

    name = "categorical"
    num_params = 1

    def log_prob(self, x, params):
        return categorical_log_prob(x, params)

    def mean(self, params):
        return ops.cast(ops.argmax(params, axis=-1), "int32")

    def sample(self, params, seed=None):
        (logits,) = _float(params)
        flat = ops.reshape(logits, (-1, ops.shape(logits)[-1]))
        draws = keras.random.categorical(flat, 1, seed=seed)
        return ops.cast(ops.reshape(draws, ops.shape(logits)[:-1]), "int32")


LIKELIHOODS = {
    cls.name: cls
    for cls in (Bernoulli, Gaussian, GaussianLearned, DiscretizedLogistic, Categorical)
}


def get(name, **settings):
    """Returns the `Likelihood` called `name`, built with the `settings` it takes.

    `settings` may hold every likelihood's options (e.g. `sigma`); each
    likelihood takes those in its `options` and ignores the rest, so a
    caller passes the run's settings without a switch on the name.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if isinstance(name, Likelihood):
        return name
    if name not in LIKELIHOODS:
        raise ValueError(
            f"Expected a likelihood in {sorted(LIKELIHOODS)}. Received: likelihood={name!r}"
        )
    cls = LIKELIHOODS[name]
    return cls(**{k: v for k, v in settings.items() if k in cls.options})
