"""The per-example maths of the evaluation: units, dequantization, the IWAE and ELBO bounds.

Re-exported by `keras_vae.evaluation`: use them from there. Every bound is
per example, `(batch,)` float32 nats (`keras.ops`, eagerly, but for the IWAE
bound's chunks: one compiled graph each, `keras_vae.compiled.graph`); the
reduction over a data set happens in `evaluation.evaluate_model`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_vae import compiled

LN2 = math.log(2.0)
# Why the results of a model with `bounds_likelihood = False` have no ELBO,
# IWAE NLL or bits/dim (results.json `note`, the tables, train.py's summary).
NO_BOUND_NOTE = (
    "No ELBO, IWAE NLL or bits/dim: this model (bounds_likelihood=False, e.g. the "
    "deterministic autoencoder) defines no density p(x) - its code is a point, not a "
    "posterior q(z|x) trained against a prior p(z) - so its reconstruction error "
    "-log p(x|z), z = the encoder's mean, is not a bound on -log p(x) and is not comparable "
    "with a VAE's -ELBO or NLL. It is given in nats per image and per pixel dimension."
)
# Likelihoods that are densities on [0, 1] pixels, not probabilities of 8-bit
# values: their log p(x) can be positive and their "bits/dim" negative.
DENSITY_LIKELIHOODS = ("gaussian", "gaussian_learned")
PIXEL_LEVELS = 256  # 8-bit data: pixel k in 0..255 is the value k / 255
# Why a density's bits/dim differ from nats / (D ln 2) (results.json
# `bits_per_dim_note`, the table, train.py's summary).
DEQUANTIZED_NOTE = (
    "bits/dim of 8-bit data, comparable with published numbers: the Gaussian is a density "
    "on [0, 1] pixels, so it is scored on uniformly dequantized test images x + u/255, "
    "u ~ U(-1/2, 1/2) per pixel, and bits/dim = (NLL + D ln 255) / (D ln 2), an upper bound "
    "on the NLL of the 8-bit pixels (Theis et al. 2016); nats are of the density on [0, 1]."
)


# ---------------------------------------------------------------------------
# Units.


def bits_per_dim(nats, image_shape):
    """Converts nats per example to bits per dimension.

    bits/dim = nats / (H * W * C * ln 2) (DESIGN.md section 4). A negative
    log-likelihood (-ELBO or the IWAE NLL) gives the usual positive number.

    Args:
        nats: float or array of nats per example.
        image_shape: `(H, W, C)`.

    Returns:
        The same type as `nats`.
    """
    return nats / (math.prod(image_shape) * LN2)


def dequantized_bits_per_dim(nats, image_shape):
    """Bits per dimension of 8-bit data from the NLL of a density on [0, 1] pixels.

    bits/dim = (nats + D ln 255) / (D ln 2) = `bits_per_dim(nats)` + log2(255),
    D = H * W * C, with `nats` the -ELBO or IWAE NLL of images dequantized
    by `dequantized`. The derivation (Theis, van den Oord & Bethge, "A note
    on the evaluation of generative models", ICLR 2016, section 3.1): pixel
    k is the value x_k = k / 255, whose bin B_k = x_k + [-1/2, 1/2)^D / 255
    has volume 255^-D. A density p on [0, 1]-scaled pixels defines the 8-bit
    model P(k) = integral of p over B_k (the mass outside the bins is lost,
    which only raises -log P). With x' = x_k + u / 255, u ~ U(-1/2, 1/2)^D,
    whose density is 255^D on B_k:

        P(k)      = 255^-D E_u[p(x')]
        -log P(k) = D ln 255 - log E_u[p(x')]
                 <= D ln 255 - E_u[log p(x')]          (Jensen)
                 <= D ln 255 + E_u[-ELBO(x')]           (and the IWAE NLL)

    so the NLL of the 8-bit pixels is at most the dequantized NLL plus
    D ln 255 nats: the change of variables from [0, 1] units (bins 1/255
    wide) to pixel units (bins 1 wide) costs ln 255 per dimension, with
    that sign. Data scaled as (k + u) / 256 (Dinh et al. 2017, Ho et al.
    2019) get D ln 256 instead: the term is the log of the scaling, and ours
    is 255. Check: the uniform density on the 256 bins, height (255/256)^D on
    [-1/510, 1 + 1/510]^D, has NLL D ln(256/255) nats, and
    (ln(256/255) + ln 255) / ln 2 = log2(256) = 8 bits/dim, as for the
    uniform distribution over 256 values.

    Args:
        nats: float or array, NLL in nats per example of dequantized images
            under a density on [0, 1]-scaled pixels.
        image_shape: `(H, W, C)`.

    Returns:
        The same type as `nats`.
    """
    return bits_per_dim(nats, image_shape) + math.log2(PIXEL_LEVELS - 1)


# ---------------------------------------------------------------------------
# Helpers.


def _as_images(images):
    """float32 images in [0, 1]; uint8 is divided by 255 (as `VAE` does)."""
    images = ops.convert_to_tensor(images)
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, "float32") / 255.0
    return images


def _given(labels):
    """`labels=` only for a conditional model's labels: other variants are called as before."""
    return {} if labels is None else {"labels": labels}


def dequantized(images, seed=None):
    """8-bit images `(batch, H, W, C)` (uint8, or floats k / 255) spread over their
    pixel bins: float32 x + u / 255, u ~ U(-1/2, 1/2) per pixel (Theis et al.
    2016; see `dequantized_bits_per_dim`). `seed`: int, None or a
    `keras.random.SeedGenerator`. Raises ValueError off the grid k / 255."""
    x = _as_images(images)
    levels = ops.convert_to_numpy(x).astype(np.float64) * (PIXEL_LEVELS - 1)
    off = np.abs(levels - np.round(levels)) > 1e-3
    if np.any(off):
        raise ValueError(
            "Expected 8-bit images (values k / 255) to dequantize. Received: a value "
            f"{float(levels[off][0]):.4f} / 255"
        )
    u = keras.random.uniform(ops.shape(x), minval=-0.5, maxval=0.5, seed=_seed_generator(seed))
    return ops.cast(x, "float32") + u / float(PIXEL_LEVELS - 1)


def _head(x, y, n):
    """The first `n` examples of images `x` and labels `y` (None or a structure)."""
    if y is None:
        return x[:n], None
    return x[:n], keras.tree.map_structure(lambda t: t[:n], y)


def _seed_generator(seed):
    """A `keras.random.SeedGenerator` from an int, None or a generator."""
    if isinstance(seed, keras.random.SeedGenerator):
        return seed
    return keras.random.SeedGenerator(seed)


def _fold(running_max, running_sum, values):
    """One chunk `values` `(S, batch)` folded into the running log-sum-exp state.

    State per example: the largest value so far m and s = sum_k exp(a_k - m).
    A new chunk with maximum m' rescales s by exp(m - max(m, m')). The empty
    state is m = -inf, s = 0 (then s * exp(m - m') = 0 exactly). Returns the
    new `(m, s)`, each `(batch,)`.
    """
    new_max = ops.maximum(running_max, ops.max(values, axis=0))  # (B,)
    new_sum = running_sum * ops.exp(running_max - new_max) + ops.sum(
        ops.exp(values - new_max), axis=0
    )
    return new_max, new_sum


class _LogMeanExp:
    """Running log((1/K) sum_k exp(a_k)) over chunks of a_k, numerically stable
    (`_fold`). Memory is O(batch), whatever the number of chunks."""

    def __init__(self):
        self.max = None  # (batch,)
        self.sum = None  # (batch,)
        self.count = 0

    def update(self, values):
        """Adds `values` of shape `(S, batch)`."""
        if self.max is None:
            batch = ops.shape(values)[1:]
            self.max = ops.full(batch, -np.inf, values.dtype)
            self.sum = ops.zeros(batch, values.dtype)
        self.max, self.sum = _fold(self.max, self.sum, values)
        self.count += int(ops.shape(values)[0])

    def result(self):
        """`(batch,)` log of the mean of exp over everything added."""
        return self.max + ops.log(self.sum) - math.log(self.count)


def _chunk_given_posterior(model, x, mean, log_var, eps, running_max, running_sum, labels):
    """`VAE.log_weights`' maths after its encoder call, folded into the state:
    `eps` `(S, B, D)` -> `_fold` of log w `(S, B)` (`VAE._importance_terms`)."""
    log_w, *_ = model._importance_terms(x, mean, log_var, eps, labels=labels)
    return _fold(running_max, running_sum, log_w)


def _chunk_of_log_weights(model, x, eps, running_max, running_sum, labels):
    """A variant's own `log_weights` (another posterior or prior, e.g. the IAF)
    on the noise `eps` `(S, B, D)`, folded into the state."""
    log_w = model.log_weights(x, ops.shape(eps)[0], eps=eps, **_given(labels))  # (B, S)
    return _fold(running_max, running_sum, ops.transpose(log_w))


# One trace per model (an argument: part of the trace key) and generalized
# shape, kept for the process.
_CHUNK_GIVEN_POSTERIOR = compiled.graph(_chunk_given_posterior)
_CHUNK_OF_LOG_WEIGHTS = compiled.graph(_chunk_of_log_weights)


def _encodes_once(model):
    """Whether `model` uses `VAE.log_weights` (the Gaussian posterior of
    `encode`, the standard normal prior): then the bound encodes each batch
    once and only the chunks' decoding repeats."""
    from keras_vae.models.vae import VAE  # evaluation -> models (downward)

    return isinstance(model, VAE) and type(model).log_weights is VAE.log_weights


# ---------------------------------------------------------------------------
# Likelihood bounds.


def iwae_log_likelihood(model, images, num_samples=1000, chunk_size=100, seed=None, labels=None):
    """Importance-weighted estimate of log p(x) (a conditional model's log p(x|y)), per example.

    The IWAE bound (Burda et al. 2015, eq. 8) with K = `num_samples`:

        L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

    with E[L_1] = ELBO <= E[L_K] <= E[L_{K+1}] <= log p(x), and L_K -> log p(x)
    as K -> infinity (their Theorem 1). The K samples are drawn `chunk_size` at
    a time; each chunk is one compiled graph (`compiled.graph`, traced once for
    the full chunks) that runs the decoder once on `batch * chunk` codes,
    scores the images broadcast against them (`VAE._importance_terms`) and
    folds the log-weights into a `(batch,)` running logsumexp (`_fold`). So
    memory is O(batch * chunk_size) (decoder activations), whatever K. With
    `VAE.log_weights` (the Gaussian posterior) the encoder runs once per
    batch; a variant with its own `log_weights` (the IAF) has it compiled
    per chunk. The noise is what `model.log_weights(x, chunk, seed=seed)`
    draws chunk after chunk, so results equal the eager loop's.

    Args:
        model: a `VAE`.
        images: `(batch, H, W, C)` float in [0, 1], or uint8.
        num_samples: K >= 1.
        chunk_size: samples per decoder call, >= 1.
        seed: int, None or a `keras.random.SeedGenerator` (passing one
            generator to successive calls gives fresh noise every call).
        labels: a conditional model's labels of `images`; else None.

    Returns:
        `(batch,)` float32 estimate of log p(x) in nats (negate for the NLL).

    Reference:
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
        ICLR 2016 (arXiv 2015), eq. (8).
    """
    if int(num_samples) < 1:
        raise ValueError(f"Expected `num_samples` >= 1. Received: num_samples={num_samples!r}")
    if int(chunk_size) < 1:
        raise ValueError(f"Expected `chunk_size` >= 1. Received: chunk_size={chunk_size!r}")
    generator = _seed_generator(seed)
    x = _as_images(images)
    if labels is not None:
        labels = keras.tree.map_structure(ops.convert_to_tensor, labels)
    once = _encodes_once(model)
    if once:
        # `VAE.log_weights` encodes every call: here once per batch.
        mean, log_var = (ops.cast(t, "float32") for t in model.encode(x, **_given(labels)))
        batch = ops.shape(mean)[0]
    else:
        batch = ops.shape(x)[0]
    state = (ops.full((batch,), -np.inf, "float32"), ops.zeros((batch,), "float32"))
    for start in range(0, int(num_samples), int(chunk_size)):
        num = min(int(chunk_size), int(num_samples) - start)
        # The noise `log_weights(x, num, seed=generator)` would draw, drawn
        # here so that it stays outside the compiled graph: the same numbers,
        # and one trace whatever the generator.
        eps = keras.random.normal((num, batch, model.latent_dim), seed=generator)  # (S, B, D)
        if once:
            state = _CHUNK_GIVEN_POSTERIOR(model, x, mean, log_var, eps, *state, labels)
        else:
            state = _CHUNK_OF_LOG_WEIGHTS(model, x, eps, *state, labels)
    running_max, running_sum = state
    return running_max + ops.log(running_sum) - math.log(int(num_samples))


def elbo_terms(model, images, num_samples=1, seed=None, labels=None):
    """The ELBO and its two terms, per example.

    ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || N(0, I))
    (Kingma & Welling 2014, eq. 10): the expectation is a Monte Carlo average
    over `num_samples` reparameterized draws (`VAE.compute_terms`, one
    draw per call); the KL is analytic (their appendix B), as in
    `VAE.objective`.

    Args:
        model: a `VAE`.
        images: `(batch, H, W, C)` float in [0, 1], or uint8.
        num_samples: draws of z per example.
        seed: int, None or a `keras.random.SeedGenerator`.
        labels: a conditional model's labels of `images`; else None.

    Returns:
        dict of float32 tensors: `elbo`, `reconstruction` (= -E_q log p(x|z),
        positive like the training log) and `kl`, each `(batch,)`;
        `kl_per_dim`, `mean` and `log_var`, each `(batch, latent_dim)`.
    """
    if int(num_samples) < 1:
        raise ValueError(f"Expected `num_samples` >= 1. Received: num_samples={num_samples!r}")
    if not model.bounds_likelihood:  # e.g. the autoencoder: its terms have no KL
        raise ValueError(f"{type(model).__name__} has no ELBO. {NO_BOUND_NOTE}")
    generator = _seed_generator(seed)
    x = _as_images(images)
    shape = (ops.shape(x)[0], model.latent_dim)
    log_px = 0.0
    for _ in range(int(num_samples)):
        eps = keras.random.normal(shape, seed=generator)  # (B, D)
        terms = model.compute_terms(x, training=False, eps=eps, **_given(labels))
        log_px = log_px + ops.cast(terms["log_px"], "float32") / int(num_samples)  # (B,)
    # The model's own KL (analytic for the Gaussian posterior, the same for
    # every draw), its posterior parameters.
    kl_per_dim = ops.cast(terms["kl_per_dim"], "float32")  # (B, D)
    kl = ops.sum(kl_per_dim, axis=-1)
    mean, log_var = (ops.cast(terms[k], "float32") for k in ("mean", "log_var"))
    return {
        "elbo": log_px - kl,
        "reconstruction": -log_px,
        "kl": kl,
        "kl_per_dim": kl_per_dim,
        "mean": mean,
        "log_var": log_var,
    }


def reconstruction_terms(model, images, labels=None):
    """-log p(x|z) at z = the encoder's mean, `(batch,)` nats, and the codes `mean`
    `(batch, latent_dim)`, float32: the whole loss of a model with a
    deterministic code; for a VAE the reconstruction of the posterior mean
    (eps = 0), not the ELBO's expectation over q."""
    x = _as_images(images)
    eps = ops.zeros((ops.shape(x)[0], model.latent_dim))  # z = mean
    terms = model.compute_terms(x, training=False, eps=eps, **_given(labels))
    return {
        "reconstruction": -ops.cast(terms["log_px"], "float32"),
        "mean": ops.cast(terms["mean"], "float32"),
    }
