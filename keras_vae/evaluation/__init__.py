"""Evaluation metrics: ELBO, importance-weighted log-likelihood, bits/dim,
active units and KL per dimension (disentanglement: `keras_vae.disentanglement`);
for a model that bounds no likelihood (`bounds_likelihood = False`, the
deterministic autoencoder) the reconstruction and the codes instead, with a
`note` saying why (`NO_BOUND_NOTE`). A conditional model (`conditional`, the
cvae) is evaluated on `(images, labels)` batches and bounds log p(x|y)
(`CONDITIONAL_NOTE`).

    from keras_vae import evaluation, report
    results = evaluation.evaluate_model(vae, test_ds, iwae_samples=100, iwae_examples=1000)
    evaluation.write_results("runs/x/results.json", results)
    print(report.format_table(results))

Units (DESIGN.md section 4): nats per example, summed over pixels and latent
dimensions, averaged over examples; bits/dim = nats / (H * W * C * ln 2).
A density on [0, 1] pixels (`DENSITY_LIKELIHOODS`) of 8-bit data is scored
on dequantized images instead, and its bits/dim are those of 8-bit data
(`dequantized`, `dequantized_bits_per_dim`).

The maths uses `keras.ops` / `keras.random` only (DESIGN.md, "Backend
boundary"), eagerly but for the IWAE bound's chunks, each one compiled graph
(`keras_vae.compiled.graph`): eager dispatch of their ops cost half of the
bound's time (`benchmarks/iwae_eval.py`). Two files:
this one (a pass over a data set, `evaluate_model`, and its results) and
`bounds` (per-example maths: units, dequantization, IWAE, ELBO).
"""

from __future__ import annotations

import math

import keras
import numpy as np
from absl import logging
from keras import ops

from keras_vae import files
from keras_vae import likelihoods as likelihoods_lib
from keras_vae.evaluation.bounds import (  # noqa: F401  (public here)
    DENSITY_LIKELIHOODS,
    DEQUANTIZED_NOTE,
    LN2,
    NO_BOUND_NOTE,
    PIXEL_LEVELS,
    _as_images,
    _given,
    _head,
    _LogMeanExp,
    _seed_generator,
    bits_per_dim,
    dequantized,
    dequantized_bits_per_dim,
    elbo_terms,
    iwae_log_likelihood,
    reconstruction_terms,
)
from keras_vae.latent_grids import active_units  # noqa: F401  (public here too)

# Burda et al. 2015, section 5.2: a unit is active when Cov_x(E_q[z_u]) > 0.01.
ACTIVE_UNIT_THRESHOLD = 0.01
# Why a conditional model's numbers are not those of an unconditional one
# (results.json `note`, the tables).
CONDITIONAL_NOTE = (
    "Conditional model: ELBO, IWAE NLL and bits/dim bound the conditional log-likelihood "
    "log p(x|y) given each image's label y (the condition), not log p(x): comparable between "
    "runs conditioned on the same label, not with an unconditional model's."
)


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
    max_examples=None,
    iwae_examples=None,
    dequantize=False,
    seed=0,
    progress=True,
):
    """ELBO, IWAE log-likelihood, bits/dim, KL per dimension and active units.

    Streams over `dataset` once; per batch, the ELBO (`elbo_samples` draws),
    the posterior means (active units) and, on the first `iwae_examples`
    examples, the IWAE bound (`iwae_samples` draws, `iwae_chunk` per decoder
    call). A model with `bounds_likelihood = False` (the autoencoder) gets
    its reconstruction and codes instead (`reconstruction_terms`).

    Args:
        model: a `VAE`.
        dataset: finite iterable (or limited by `max_batches`) of image
            batches or `(images, labels)`, e.g. `keras_vae.data.load`'s. A
            conditional model (`model.conditional`) needs its labels
            (`data.load_for_config(..., with_condition=True)`): every bound
            is then on log p(x|y).
        iwae_samples: K of the IWAE bound; 0 skips it.
        iwae_chunk: samples per decoder call (memory O(batch * iwae_chunk));
            None: `_auto_chunk` (decoder output within `IWAE_PIXEL_BUDGET`).
        elbo_samples: Monte Carlo draws of the ELBO's expectation.
        max_batches, max_examples: evaluate at most this many batches, and
            examples (the first ones; a last batch is cut). None: all.
        iwae_examples: the IWAE bound on the first this many examples only
            (it costs K decoder passes per example). None: all.
        dequantize: score 8-bit images dequantized (`dequantized`), with the
            bits/dim of 8-bit data (`dequantized_bits_per_dim`): for a density
            on [0, 1] pixels (`DENSITY_LIKELIHOODS`).
        seed: seed of the draws (a reproducible evaluation).
        progress: show a `keras.utils.Progbar`.

    Returns:
        dict: `num_examples`; `elbo`, `reconstruction`, `kl` (mean nats per
        example), `elbo_bits_per_dim` (of -ELBO), `elbo_samples`; unless
        skipped, `iwae_nll` (mean -L_K), `iwae_bits_per_dim`, `iwae_samples`,
        `iwae_num_examples` and `iwae_elbo` (the ELBO of those examples);
        `kl_per_dim`; `active_units`, `active_unit_threshold`,
        `latent_variances` (of each posterior mean); `latent_dim`,
        `image_shape`. `dequantize` adds `dequantized` and
        `bits_per_dim_note` (`DEQUANTIZED_NOTE`). Without a likelihood bound:
        no ELBO, IWAE, KL or bits/dim but `reconstruction_per_dim`,
        `bounds_likelihood` (False), `note` (`NO_BOUND_NOTE`), `latent_means`.
        A conditional model adds `conditional` and `note` (`CONDITIONAL_NOTE`).
    """
    image_shape = tuple(int(d) for d in model.image_shape)
    bounded = model.bounds_likelihood
    iwae_samples = iwae_samples if bounded else 0
    dequantize = dequantize and bounded  # no bits/dim without a bound (the autoencoder)
    generator = _seed_generator(seed)
    shown = ("elbo", "iwae_nll") if bounded else ("reconstruction",)
    progbar = phase_end = None
    offset = 0  # batches before the current bar's first

    sums = {"elbo": 0.0, "reconstruction": 0.0, "kl": 0.0, "iwae": 0.0, "iwae_elbo": 0.0}
    kl_per_dim = 0.0
    means = []
    count = iwae_count = 0
    for step, (x, y) in enumerate(_batches(dataset, model, max_batches)):
        if max_examples is not None:  # the last batch may be cut
            x, y = _head(x, y, max_examples - count)
        if progress and (progbar is None or step == phase_end):
            # One bar for the batches with the IWAE bound, one for the (much
            # quicker) rest, so that each ETA holds; targets from the first
            # batch's size.
            if progbar is None:
                size = int(ops.shape(x)[0])
                total = _target_batches(dataset, max_batches, max_examples, size)
                phase_end = None if iwae_examples is None else -(-iwae_examples // size)
                if not iwae_samples or phase_end is None or total is None or phase_end >= total:
                    phase_end = None
                target = phase_end or total
            else:
                target, offset, phase_end = total - step, step, None
            # Running means, shown as given (not averaged again by the bar).
            progbar = keras.utils.Progbar(target, unit_name="batch", stateful_metrics=shown)
        if dequantize:
            x = dequantized(x, generator)
        if bounded:
            terms = elbo_terms(model, x, num_samples=elbo_samples, seed=generator, labels=y)
            keys = ("elbo", "reconstruction", "kl")
            kl_per_dim = kl_per_dim + np.sum(
                ops.convert_to_numpy(terms["kl_per_dim"]), axis=0, dtype=np.float64
            )
        else:
            terms = reconstruction_terms(model, x, labels=y)
            keys = ("reconstruction",)
        values = {key: ops.convert_to_numpy(terms[key]).astype(np.float64) for key in keys}
        for key in keys:
            sums[key] += float(np.sum(values[key]))
        means.append(ops.convert_to_numpy(terms["mean"]))
        take = 0 if not iwae_samples else int(ops.shape(x)[0])
        if iwae_examples is not None:
            take = max(0, min(take, iwae_examples - iwae_count))
        if take:
            x_iwae, y_iwae = _head(x, y, take)
            chunk = iwae_chunk or _auto_chunk(take, image_shape, iwae_samples)
            log_px = iwae_log_likelihood(
                model, x_iwae, iwae_samples, chunk_size=chunk, seed=generator, labels=y_iwae
            )
            sums["iwae"] += float(np.sum(ops.convert_to_numpy(log_px), dtype=np.float64))
            sums["iwae_elbo"] += float(np.sum(values["elbo"][:take]))
            iwae_count += take
        count += means[-1].shape[0]
        if progbar is not None:
            bar = [(shown[0], sums[shown[0]] / count)]
            if iwae_count:
                bar.append(("iwae_nll", -sums["iwae"] / iwae_count))
            # Finalizes by itself at its target.
            progbar.update(step + 1 - offset, values=bar)
        if max_examples is not None and count >= max_examples:
            break
    if count == 0:
        raise ValueError("The dataset is empty: no batch to evaluate.")
    if progbar is not None and (progbar.target is None or step + 1 - offset < progbar.target):
        progbar.update(step + 1 - offset, finalize=True)

    codes = np.concatenate(means, axis=0)
    num_active, variances = active_units(codes) if count >= 2 else (0, np.zeros(model.latent_dim))
    results = {"num_examples": int(count), "reconstruction": sums["reconstruction"] / count}
    to_bits = dequantized_bits_per_dim if dequantize else bits_per_dim
    if bounded:
        elbo = sums["elbo"] / count
        results.update(elbo=elbo, kl=sums["kl"] / count, elbo_samples=int(elbo_samples))
        results["elbo_bits_per_dim"] = to_bits(-elbo, image_shape)
        results["kl_per_dim"] = [float(v) for v in kl_per_dim / count]
        if iwae_count:
            nll = -sums["iwae"] / iwae_count
            results.update(iwae_nll=nll, iwae_samples=int(iwae_samples))
            results["iwae_bits_per_dim"] = to_bits(nll, image_shape)
            results["iwae_num_examples"] = int(iwae_count)
            results["iwae_elbo"] = sums["iwae_elbo"] / iwae_count
        if dequantize:
            results.update(dequantized=True, bits_per_dim_note=DEQUANTIZED_NOTE)
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
        if iwae_count:
            summary += (
                f", IWAE NLL (K={iwae_samples}, {iwae_count} examples) "
                f"{results['iwae_nll']:.3f} nats"
            )
        summary += ", bounds on log p(x|y)" if model.conditional else ""
    else:
        summary = f"reconstruction {results['reconstruction']:.3f} nats"
    logging.info("Evaluated %d examples: %s.", count, summary)
    return results


def _target_batches(dataset, max_batches, max_examples, batch_size):
    """The number of batches `evaluate_model` takes, or None if unknown."""
    targets = [max_batches, None if max_examples is None else -(-max_examples // batch_size)]
    try:
        targets.append(len(dataset))
    except TypeError:  # unknown or infinite cardinality
        pass
    return min((t for t in targets if t is not None), default=None)


def summarize_test(logs, image_shape, *, bounds_likelihood=True, dequantized=False):
    """train.py's test numbers from the mean logs of Keras' `evaluate` (or the
    distributed loop's): `elbo`, `reconstruction`, `kl`, `bits_per_dim` (of
    8-bit data, with `dequantized` and `bits_per_dim_note`, when the images
    were dequantized: `dequantized_bits_per_dim`); without a likelihood bound
    `reconstruction`, `reconstruction_per_dim` and `note` (`NO_BOUND_NOTE`)."""
    reconstruction = float(logs["reconstruction"])
    if not bounds_likelihood:  # e.g. the autoencoder: its logs are the reconstruction only
        per_dim = reconstruction / math.prod(image_shape)
        return {"reconstruction": reconstruction, "reconstruction_per_dim": per_dim,
                "note": NO_BOUND_NOTE}  # fmt: skip
    elbo = float(logs["elbo"])
    to_bits = dequantized_bits_per_dim if dequantized else bits_per_dim
    results = {"elbo": elbo, "reconstruction": reconstruction, "kl": float(logs["kl"]),
               "bits_per_dim": to_bits(-elbo, image_shape)}  # fmt: skip
    if dequantized:
        results.update(dequantized=True, bits_per_dim_note=DEQUANTIZED_NOTE)
    return results


# ---------------------------------------------------------------------------
# Output.


def write_results(path, results):
    """Writes `results` as strict, indented JSON to `path`, atomically (temp file +
    rename); a non-finite value is written as null."""
    files.write_json(path, results, sort_keys=True)


def __getattr__(name):
    # `format_table` moved to `keras_vae.report` (the table is the report's);
    # this keeps `evaluation.format_table` working for older callers.
    if name == "format_table":
        from keras_vae.report.tables import format_table

        return format_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
