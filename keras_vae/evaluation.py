"""Evaluation metrics: ELBO, importance-weighted log-likelihood, bits/dim,
active units and KL per dimension (disentanglement: `keras_vae.disentanglement`);
for a model that bounds no likelihood (`bounds_likelihood = False`, the
deterministic autoencoder) the reconstruction and the codes instead, with a
`note` saying why (`NO_BOUND_NOTE`). A conditional model (`conditional`, the
cvae) is evaluated on `(images, labels)` batches and bounds log p(x|y)
(`CONDITIONAL_NOTE`).

    from keras_vae import evaluation
    results = evaluation.evaluate_model(vae, test_ds, iwae_samples=1000)
    evaluation.write_results("runs/x/results.json", results)
    print(evaluation.format_table(results))

Units (DESIGN.md section 4): nats per example, summed over pixels and latent
dimensions, averaged over examples; bits/dim = nats / (H * W * C * ln 2).

The maths uses `keras.ops` / `keras.random` only (DESIGN.md, "Backend
boundary"), eagerly: no `tf.function`. The decoder call on `batch * chunk`
latent codes dominates the cost, so eager dispatch adds little.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from absl import logging
from keras import ops

from keras_vae import files
from keras_vae import likelihoods as likelihoods_lib
from keras_vae.latent_grids import active_units  # noqa: F401  (public here too)

LN2 = math.log(2.0)
# Burda et al. 2015, section 5.2: a unit is active when Cov_x(E_q[z_u]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01
# Why the results of a model with `bounds_likelihood = False` have no ELBO,
# IWAE NLL or bits/dim (results.json `note`, the tables, train.py's summary).
NO_BOUND_NOTE = (
    "No ELBO, IWAE NLL or bits/dim: this model (bounds_likelihood=False, e.g. the "
    "deterministic autoencoder) defines no density p(x) - its code is a point, not a "
    "posterior q(z|x) trained against a prior p(z) - so its reconstruction error "
    "-log p(x|z), z = the encoder's mean, is not a bound on -log p(x) and is not comparable "
    "with a VAE's -ELBO or NLL. It is given in nats per image and per pixel dimension."
)
# Why a conditional model's numbers are not those of an unconditional one
# (results.json `note`, the tables).
CONDITIONAL_NOTE = (
    "Conditional model: ELBO, IWAE NLL and bits/dim bound the conditional log-likelihood "
    "log p(x|y) given each image's label y (the condition), not log p(x): comparable between "
    "runs conditioned on the same label, not with an unconditional model's."
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


def _seed_generator(seed):
    """A `keras.random.SeedGenerator` from an int, None or a generator."""
    if isinstance(seed, keras.random.SeedGenerator):
        return seed
    return keras.random.SeedGenerator(seed)


class _LogMeanExp:
    """Running log((1/K) sum_k exp(a_k)) over chunks of a_k, numerically stable.

    State per example: the largest value so far m and s = sum_k exp(a_k - m).
    A new chunk with maximum m' rescales s by exp(m - max(m, m')). Memory is
    O(batch), whatever the number of chunks.
    """

    def __init__(self):
        self.max = None  # (batch,)
        self.sum = None  # (batch,)
        self.count = 0

    def update(self, values):
        """Adds `values` of shape `(S, batch)`."""
        chunk_max = ops.max(values, axis=0)  # (B,)
        if self.max is None:
            new_max = chunk_max
            self.sum = ops.sum(ops.exp(values - new_max), axis=0)
        else:
            new_max = ops.maximum(self.max, chunk_max)
            self.sum = self.sum * ops.exp(self.max - new_max) + ops.sum(
                ops.exp(values - new_max), axis=0
            )
        self.max = new_max
        self.count += int(ops.shape(values)[0])

    def result(self):
        """`(batch,)` log of the mean of exp over everything added."""
        return self.max + ops.log(self.sum) - math.log(self.count)


# ---------------------------------------------------------------------------
# Likelihood bounds.


def iwae_log_likelihood(model, images, num_samples=1000, chunk_size=100, seed=None, labels=None):
    """Importance-weighted estimate of log p(x) (a conditional model's log p(x|y)), per example.

    The IWAE bound (Burda et al. 2015, eq. 8) with K = `num_samples`:

        L_K(x) = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

    with E[L_1] = ELBO <= E[L_K] <= E[L_{K+1}] <= log p(x), and L_K -> log p(x)
    as K -> infinity (their Theorem 1). The K samples are drawn `chunk_size` at
    a time; each chunk tiles the images to `(batch * chunk, H, W, C)`, runs
    the decoder once and folds its log-weights into a running logsumexp. So
    memory is O(batch * chunk_size) (images, decoder activations), whatever K.
    The encoder runs once per batch.

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
    log_mean_exp = _LogMeanExp()
    for start in range(0, int(num_samples), int(chunk_size)):
        num = min(int(chunk_size), int(num_samples) - start)
        # `VAE.log_weights` (a variant's own posterior or prior included).
        log_w = model.log_weights(x, num, seed=generator, **_given(labels))  # (B, S)
        log_mean_exp.update(ops.transpose(log_w))
    return log_mean_exp.result()


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


# ---------------------------------------------------------------------------
# Latent space usage.


def _batches(dataset, model, max_batches=None):
    """Yields `(images, labels)` of the batches of `dataset` (images, or tuples
    whose first element is the images), at most `max_batches` of them; the
    labels (the second element) for a conditional `model`, else None."""
    cardinality = getattr(dataset, "cardinality", None)
    if max_batches is None and cardinality is not None and int(cardinality()) == -1:
        raise ValueError(
            "The dataset is infinite (`repeat()`): pass `max_batches` or a finite dataset."
        )
    for i, batch in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            return
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        if model.conditional and y is None:
            raise ValueError(
                f"{type(model).__name__} is conditional: it needs (images, labels) batches, the "
                "labels it is conditioned on. Received: images only"
            )
        yield x, (y if model.conditional else None)


def kl_per_dimension(model, dataset, max_batches=None):
    """Average KL(q(z_d|x) || N(0, 1)) of each latent dimension over a data set.

    Args:
        model: a `VAE`.
        dataset: iterable of image batches, or of `(images, labels)` tuples
            (a `tf.data.Dataset` as `data.load` returns; a conditional
            model's labels as `data.load_for_config(..., with_condition=True)`).
        max_batches: stop after this many batches (None: all).

    Returns:
        `(latent_dim,)` float64 array, nats; sums to the mean KL.
    """
    total, count = None, 0
    for x, y in _batches(dataset, model, max_batches):
        mean, log_var = (ops.cast(t, "float32") for t in model.encode(_as_images(x), **_given(y)))
        kl = ops.convert_to_numpy(likelihoods_lib.gaussian_kl_per_dim(mean, log_var))
        total = kl.sum(axis=0, dtype=np.float64) + (0.0 if total is None else total)
        count += kl.shape[0]
    if count == 0:
        raise ValueError("The dataset is empty: no batch to evaluate.")
    return total / count


# ---------------------------------------------------------------------------
# The whole evaluation.

# Decoder output values (batch * chunk * H * W * C) per IWAE decoder call when
# `evaluate_model` chooses the chunk: 4M floats, 16 MB of output; a conv
# decoder's widest activation is a few times larger.
IWAE_PIXEL_BUDGET = 2**22


def _auto_chunk(batch, image_shape, num_samples):
    per_sample = max(1, batch * math.prod(image_shape))
    return int(max(1, min(num_samples, IWAE_PIXEL_BUDGET // per_sample)))


def evaluate_model(
    model,
    dataset,
    *,
    iwae_samples=1000,
    iwae_chunk=None,
    elbo_samples=1,
    max_batches=None,
    seed=0,
    progress=True,
):
    """ELBO, IWAE log-likelihood, bits/dim, KL per dimension and active units.

    Streams over `dataset` once; per batch, the ELBO (with `elbo_samples`
    draws) and the IWAE bound (`iwae_samples` draws in chunks of
    `iwae_chunk`) in nats, and the posterior means for the active units.
    A model with `bounds_likelihood = False` (the deterministic autoencoder)
    gets its reconstruction and codes instead (`reconstruction_terms`).

    Args:
        model: a `VAE`.
        dataset: iterable of image batches or `(images, labels)` tuples, e.g.
            a `tf.data.Dataset` from `keras_vae.data.load`; finite, or limit
            it with `max_batches`. A conditional model (`model.conditional`)
            needs `(images, labels)` with its labels (`data.load_for_config(...,
            with_condition=True)`): every bound is then on log p(x|y).
        iwae_samples: K of the IWAE bound; 0 skips it.
        iwae_chunk: samples per decoder call (memory O(batch * iwae_chunk)).
            None picks the largest chunk whose decoder output stays within
            `IWAE_PIXEL_BUDGET` values (e.g. 16 for batches of 64 images of
            64x64x1, 83 for 28x28x1), capped at `iwae_samples`.
        elbo_samples: Monte Carlo draws of the ELBO's expectation.
        max_batches: evaluate at most this many batches (None: all).
        seed: seed of the posterior draws (a reproducible evaluation).
        progress: show a `keras.utils.Progbar`.

    Returns:
        dict: `num_examples`; `elbo`, `reconstruction`, `kl` (mean nats per
        example), `elbo_bits_per_dim` (of -ELBO) and `elbo_samples`; `iwae_nll` (mean -L_K,
        nats), `iwae_bits_per_dim` and `iwae_samples` unless skipped;
        `kl_per_dim` (list, nats); `active_units`, `active_unit_threshold`
        and `latent_variances` (list, variance of each posterior mean);
        `latent_dim`, `image_shape`. Without a likelihood bound, no ELBO,
        IWAE, KL or bits/dim but `reconstruction_per_dim` (nats per pixel),
        `bounds_likelihood` (False), `note` (`NO_BOUND_NOTE`) and
        `latent_means` (with `latent_variances`: the codes against N(0, I)).
        A conditional model's results add `conditional` (True) and `note`
        (`CONDITIONAL_NOTE`).
    """
    image_shape = tuple(int(d) for d in model.image_shape)
    bounded = model.bounds_likelihood
    iwae_samples = iwae_samples if bounded else 0
    generator = _seed_generator(seed)
    target = max_batches
    if target is None:
        try:
            target = len(dataset)
        except TypeError:  # unknown or infinite cardinality
            target = None
    shown = ("elbo", "iwae_nll") if bounded else ("reconstruction",)
    # Running means, shown as given (not averaged again by the bar).
    progbar = (
        keras.utils.Progbar(target, unit_name="batch", stateful_metrics=shown) if progress else None
    )

    sums = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0, "iwae": 0.0}
    kl_per_dim = 0.0
    means = []
    count = 0
    for step, (x, y) in enumerate(_batches(dataset, model, max_batches)):
        if bounded:
            terms = elbo_terms(model, x, num_samples=elbo_samples, seed=generator, labels=y)
            keys = ("elbo", "reconstruction", "kl")
            kl_per_dim = kl_per_dim + np.sum(
                ops.convert_to_numpy(terms["kl_per_dim"]), axis=0, dtype=np.float64
            )
        else:
            terms = reconstruction_terms(model, x, labels=y)
            keys = ("reconstruction",)
        for key in keys:
            sums[key] += float(np.sum(ops.convert_to_numpy(terms[key]), dtype=np.float64))
        means.append(ops.convert_to_numpy(terms["mean"]))
        if iwae_samples:
            chunk = iwae_chunk or _auto_chunk(int(ops.shape(x)[0]), image_shape, iwae_samples)
            log_px = iwae_log_likelihood(
                model, x, num_samples=iwae_samples, chunk_size=chunk, seed=generator, labels=y
            )
            sums["iwae"] += float(np.sum(ops.convert_to_numpy(log_px), dtype=np.float64))
        count += means[-1].shape[0]
        if progbar is not None:
            values = [(shown[0], sums[shown[0]] / count)]
            if iwae_samples:
                values.append(("iwae_nll", -sums["iwae"] / count))
            # Finalizes by itself at step == target.
            progbar.update(step + 1, values=values)
    if count == 0:
        raise ValueError("The dataset is empty: no batch to evaluate.")
    if progbar is not None and (target is None or step + 1 < target):
        progbar.update(step + 1, finalize=True)

    codes = np.concatenate(means, axis=0)
    num_active, variances = active_units(codes) if count >= 2 else (0, np.zeros(model.latent_dim))
    results = {"num_examples": int(count), "reconstruction": sums["reconstruction"] / count}
    if bounded:
        elbo = sums["elbo"] / count
        results.update(elbo=elbo, kl=sums["kl"] / count, elbo_samples=int(elbo_samples))
        results["elbo_bits_per_dim"] = bits_per_dim(-elbo, image_shape)
        results["kl_per_dim"] = [float(v) for v in kl_per_dim / count]
        if iwae_samples:
            nll = -sums["iwae"] / count
            results.update(iwae_nll=nll, iwae_samples=int(iwae_samples))
            results["iwae_bits_per_dim"] = bits_per_dim(nll, image_shape)
    else:
        results.update(bounds_likelihood=False, note=NO_BOUND_NOTE)
        results["reconstruction_per_dim"] = results["reconstruction"] / math.prod(image_shape)
        results["latent_means"] = [float(v) for v in codes.mean(axis=0, dtype=np.float64)]
    if model.conditional:
        results.update(conditional=True, note=CONDITIONAL_NOTE)
    results.update(
        active_units=int(num_active),
        active_unit_threshold=ACTIVE_UNIT_THRESHOLD,
        latent_variances=[float(v) for v in variances],
        latent_dim=int(model.latent_dim),
        image_shape=list(image_shape),
    )
    if bounded:
        summary = f"ELBO {elbo:.3f} nats ({results['elbo_bits_per_dim']:.4f} bits/dim)"
        if iwae_samples:
            summary += f", IWAE NLL (K={iwae_samples}) {results['iwae_nll']:.3f} nats"
        summary += ", bounds on log p(x|y)" if model.conditional else ""
    else:
        summary = f"reconstruction {results['reconstruction']:.3f} nats"
    logging.info("Evaluated %d examples: %s.", count, summary)
    return results


# ---------------------------------------------------------------------------
# Output.


def write_results(path, results):
    """Writes `results` as strict, indented JSON to `path`, atomically (temp file +
    rename); a non-finite value is written as null."""
    files.write_json(path, results, sort_keys=True)


_ROWS = (
    # key, label, unit, format
    ("num_examples", "examples", "", "{:d}"),
    ("elbo", "ELBO (<= log p(x))", "nats", "{:.3f}"),
    ("reconstruction", "reconstruction (-E log p(x|z))", "nats", "{:.3f}"),
    ("reconstruction_per_dim", "reconstruction per dimension", "nats/dim", "{:.5f}"),
    ("kl", "KL(q(z|x) || p(z))", "nats", "{:.3f}"),
    ("elbo_bits_per_dim", "-ELBO", "bits/dim", "{:.4f}"),
    ("iwae_nll", "IWAE NLL (-log p(x))", "nats", "{:.3f}"),
    ("iwae_bits_per_dim", "IWAE NLL", "bits/dim", "{:.4f}"),
    ("iwae_samples", "IWAE samples K", "", "{:d}"),
    ("conditioned_on", "conditioned on (y)", "", "{}"),
    ("active_units", "active units (Cov > 0.01)", "", "{:d}"),
    ("latent_dim", "latent dimensions", "", "{:d}"),
)


# A conditional model's labels (`evaluate_model`'s `conditional`): its
# densities are given y, the label.
_CONDITIONAL_LABELS = (("p(x)", "p(x|y)"), ("p(x|z)", "p(x|z,y)"), ("q(z|x)", "q(z|x,y)"))


def format_table(results, extra_rows=()):
    """A readable two-column table of `results` (as `evaluate_model` returns, plus
    `extra_rows` (key, label, unit, format), e.g. `disentanglement.TABLE_ROWS`)
    for stdout; a conditional model's rows say log p(x|y) where others say log p(x)."""
    lines = []
    for key, label, unit, fmt in _ROWS + tuple(extra_rows):
        if key in results and results[key] is not None:
            value = fmt.format(results[key])
            for plain, given_y in _CONDITIONAL_LABELS if results.get("conditional") else ():
                label = label.replace(plain, given_y)
            lines.append((f"{label}" + (f" [{unit}]" if unit else ""), value))
    if "kl_per_dim" in results:
        lines.append(
            ("KL per dimension [nats]", " ".join(f"{v:.2f}" for v in results["kl_per_dim"]))
        )
    if "latent_variances" in results:
        lines.append(
            ("Var(E_q[z]) per dimension", " ".join(f"{v:.3f}" for v in results["latent_variances"]))
        )
    if "latent_means" in results:
        lines.append(("E[z] per dimension", " ".join(f"{v:.3f}" for v in results["latent_means"])))
    width = max(len(label) for label, _ in lines)
    table = "\n".join(f"{label:<{width}}  {value}" for label, value in lines)
    if results.get("note"):
        table += f"\nnote: {results['note']}"
    return table
