"""The disentanglement metrics of a model trained on `shapes`, on fresh factor draws.

Factor combinations are drawn uniformly (each factor index independently, as
disentanglement_lib's `sample_factors`), rendered with
`keras_vae.data.shapes.render` at the model's image size and encoded to
posterior means (`model.encode`, the public API). One draw of train and test
points serves MIG, SAP and DCI (`scores_on_shapes`); the FactorVAE score
draws its own batches (`factor_vae_score`).

A conditional model (`model.conditional`, the cvae) is conditioned on one
factor, `condition`: its images are encoded with that factor's sampled value
as their label, and that factor is left out of every score. The label
already gives it, so the code is free not to hold it (and a code that holds
none of it would score 0 for it); the scores of a cvae conditioned on
`shape` thus measure how its code disentangles the other four factors, and
are not comparable with an unconditional model's over all five.
"""

from __future__ import annotations

import time

import numpy as np
from absl import logging

from keras_vae.data import shapes as shapes_lib
from keras_vae.disentanglement import factor_vae as factor_vae_lib
from keras_vae.disentanglement import metrics
from keras_vae.latent_grids import encode_means

# disentanglement_lib's `num_train` of every metric (its `num_test` and
# FactorVAE `num_eval` are half of it).
REFERENCE_POINTS = 10_000
# evaluate.py's FactorVAE training votes (evaluation votes: half), or fewer
# with fewer points: 64 images each, 1,000 votes took 2.4 min for a conv
# encoder on 2 busy cores, so the reference's 10,000 would take ~24 min.
# Fewer votes make the score noisier (standard error <= 0.022 on 500
# evaluation votes), not biased.
EVALUATE_FACTOR_VAE_VOTES = 1_000

# evaluate.py's table rows: key, label, unit, format (as evaluation.format_table).
TABLE_ROWS = (
    ("mig", "MIG (Chen et al. 2018)", "", "{:.4f}"),
    ("sap", "SAP (Kumar et al. 2018)", "", "{:.4f}"),
    ("dci_disentanglement", "DCI disentanglement", "", "{:.4f}"),
    ("dci_completeness", "DCI completeness", "", "{:.4f}"),
    ("dci_informativeness", "DCI informativeness (test accuracy)", "", "{:.4f}"),
    ("factor_vae_score", "FactorVAE score (Kim & Mnih 2018)", "", "{:.4f}"),
)


def evaluate_on_shapes(
    model, num_points=REFERENCE_POINTS, factor_vae_votes=None, seed=0, condition=None
):
    """Every metric of a model on shapes, as evaluate.py computes them.

    `scores_on_shapes` on `num_points` train and `num_points // 2` test
    points (disentanglement_lib: 10,000 and 5,000), then `factor_vae_score`
    on `num_points` variance points and `factor_vae_votes` training votes,
    half as many evaluation votes (default: `EVALUATE_FACTOR_VAE_VOTES` or
    `num_points` if fewer, where disentanglement_lib casts 10,000 and 5,000).

    Time on 2 CPU cores shared with training runs (load 6-8), for a trained
    conv beta-VAE with 10 latent dimensions: MIG 0.1 s, SAP 1.5 s, DCI 14 min
    (its gradient-boosted trees; ~3 min on 1,000-2,000 points, where the
    per-tree overhead dominates), the FactorVAE score ~2.5 min with 1,000
    votes. Fewer points are not only noisier for DCI but lower: that run's
    DCI disentanglement was 0.071, 0.084, 0.106 and 0.118 on 1,000, 2,000,
    5,000 and 10,000 train points (MIG 0.086-0.089 and SAP 0.044-0.053 on
    all), so the default keeps the reference's 10,000.

    Returns:
        dict: `scores_on_shapes`' and `factor_vae_score`'s keys, plus
        `mig_points` (MIG's points), `mig_factors` (the scored factor names),
        `disentanglement_samples` (every count used) and, when a count is below
        the reference's, `disentanglement_note`.
    """
    num_points = int(num_points)
    if factor_vae_votes is None:
        factor_vae_votes = min(EVALUATE_FACTOR_VAE_VOTES, num_points)
    votes = int(factor_vae_votes)
    samples = {
        "num_train": num_points,
        "num_test": max(1, num_points // 2),
        "num_bins": 20,
        "factor_vae_num_train": votes,
        "factor_vae_num_eval": max(1, votes // 2),
        "factor_vae_num_variance_estimate": num_points,
        "factor_vae_batch_size": 64,
    }
    start = time.perf_counter()
    results = scores_on_shapes(
        model, samples["num_train"], samples["num_test"], seed=seed, condition=condition
    )
    logging.info("MIG, SAP, DCI: %.1f s", time.perf_counter() - start)
    start = time.perf_counter()
    logging.info(
        "FactorVAE score: %d + %d votes of 64 images.",
        samples["factor_vae_num_train"],
        samples["factor_vae_num_eval"],
    )
    results.update(
        factor_vae_score(
            model,
            num_train=samples["factor_vae_num_train"],
            num_eval=samples["factor_vae_num_eval"],
            num_variance_estimate=samples["factor_vae_num_variance_estimate"],
            seed=seed,
            condition=condition,
        )
    )
    logging.info("FactorVAE score: %.1f s", time.perf_counter() - start)
    results.update(
        mig_points=num_points,
        mig_factors=scored_factor_names(condition),
        disentanglement_samples=samples,
    )
    notes = []
    if num_points < REFERENCE_POINTS:
        notes.append(
            f"MIG, SAP and DCI on {num_points:,} train and {samples['num_test']:,} test points "
            f"where disentanglement_lib uses {REFERENCE_POINTS:,} and {REFERENCE_POINTS // 2:,}: "
            "noisier, and DCI lower (its trees see fewer points)"
        )
    if votes < REFERENCE_POINTS:
        notes.append(
            f"FactorVAE score from {votes:,} training and {samples['factor_vae_num_eval']:,} "
            f"evaluation votes where disentanglement_lib casts {REFERENCE_POINTS:,} and "
            f"{REFERENCE_POINTS // 2:,}: noisier (standard error <= "
            f"{0.5 / samples['factor_vae_num_eval'] ** 0.5:.3f}), not biased"
        )
    if notes:
        results["disentanglement_note"] = "; ".join(notes) + "."
    return results


def sample_factors(num_points, rng):
    """`(num_points, 5)` int64 factor indices, each uniform over its
    `shapes_lib.FACTOR_SIZES` values, from the `np.random.Generator` `rng`."""
    return rng.integers(0, shapes_lib.FACTOR_SIZES, size=(num_points, len(shapes_lib.FACTOR_SIZES)))


def encode_factors(model, factors, *, condition=None, batch_size=256):
    """Posterior means of the shapes images of `factors`.

    Args:
        model: a `VAE` of square single-channel images.
        factors: `(N, 5)` int factor indices (`FACTOR_NAMES` order).
        condition: a conditional model's factor (its label); else None.
        batch_size: images rendered and encoded at a time.

    Returns:
        `(N, latent_dim)` float32 codes.
    """
    size = _image_size(model)
    label_axis = shapes_lib.FACTOR_NAMES.index(condition) if model.conditional else None
    means = []
    for start in range(0, len(factors), batch_size):  # rendered a batch at a time
        batch = factors[start : start + batch_size]  # (b, 5)
        # The label: the sampled value of the conditioned factor.
        labels = None if label_axis is None else batch[:, label_axis]
        means.append(encode_means(model, shapes_lib.render(batch, size), labels, batch_size))
    return np.concatenate(means, axis=0)


def scores_on_shapes(
    model,
    num_train=10_000,
    num_test=5_000,
    seed=0,
    batch_size=256,
    num_bins=20,
    condition=None,
):
    """MIG, SAP and DCI (`metrics.scores`) of a model on `shapes`.

    Draws `num_train` then `num_test` factor combinations (disentanglement_lib:
    10,000 and 5,000), encodes them and scores the codes against the factor
    indices of the scored factors (`scored_factor_names`). MIG uses the train
    points only, so `scores_on_shapes(m, num_train=n, seed=s)["mig"] ==
    compute_mig_on_shapes(m, num_points=n, seed=s)`.

    Runtime is DCI's gradient-boosted trees' (`metrics.dci_importance`:
    12-14 min at the defaults on 2 busy CPU cores).

    Args:
        model: a `VAE` of square single-channel images (`shapes`).
        num_train, num_test: points drawn (the train ones first).
        seed: seed of the factor draws and of the classifiers.
        batch_size: images rendered and encoded at a time.
        num_bins: MIG's histogram bins per code dimension.
        condition: a conditional model's factor, one of
            `keras_vae.data.shapes.FACTOR_NAMES` (`Config.condition`); else None.

    Returns:
        `metrics.scores`' dict.
    """
    scored = _scored_factors(model, condition)
    rng = np.random.default_rng(seed)
    factors = np.concatenate([sample_factors(num_train, rng), sample_factors(num_test, rng)])
    codes = encode_factors(model, factors, condition=condition, batch_size=batch_size)
    sizes = [shapes_lib.FACTOR_SIZES[j] for j in scored]
    return metrics.scores(
        codes, factors[:, scored], sizes, seed, num_train=num_train, num_bins=num_bins
    )


def compute_mig_on_shapes(
    model, num_points=10_000, seed=0, batch_size=256, num_bins=20, condition=None
):
    """MIG only (`metrics.mutual_information_gap`) of a model on `shapes`.

    The draw of `scores_on_shapes`' train points; see there for the args.

    Returns:
        float MIG in [0, 1].
    """
    scored = _scored_factors(model, condition)
    factors = sample_factors(num_points, np.random.default_rng(seed))
    codes = encode_factors(model, factors, condition=condition, batch_size=batch_size)
    return metrics.mutual_information_gap(codes, factors[:, scored], num_bins)


def factor_vae_score(
    model,
    *,
    num_train=10_000,
    num_eval=5_000,
    num_variance_estimate=10_000,
    batch_size=64,
    prune_threshold=0.05,
    seed=0,
    condition=None,
):
    """The FactorVAE score (Kim & Mnih 2018) of a model on `shapes`.

    `factor_vae.factor_vae_score_of` with shapes images rendered and
    encoded for every batch; the defaults are disentanglement_lib's. Each
    vote encodes `batch_size` images: the defaults encode 15,000 x 64 =
    960,000 images, ~24 min for a conv encoder on 2 busy CPU cores (1,000
    training and 500 evaluation votes took 2.4 min).

    Args:
        model: a `VAE` of square single-channel images (`shapes`).
        num_train, num_eval, num_variance_estimate, batch_size,
        prune_threshold, seed: as `factor_vae.factor_vae_score_of`.
        condition: a conditional model's factor (its label), never fixed by
            a vote; else None.

    Returns:
        dict: `factor_vae_score`, `factor_vae_train_accuracy`,
        `factor_vae_active_dims`.
    """
    scored = _scored_factors(model, condition)

    def representation(factors):
        return encode_factors(model, factors, condition=condition, batch_size=1024)

    return factor_vae_lib.factor_vae_score_of(
        representation,
        shapes_lib.FACTOR_SIZES,
        num_train=num_train,
        num_eval=num_eval,
        num_variance_estimate=num_variance_estimate,
        batch_size=batch_size,
        prune_threshold=prune_threshold,
        scored=scored,
        seed=seed,
        votes_per_call=max(1, 1024 // batch_size),
    )


def scored_factor_names(condition=None):
    """The shapes factors the metrics score: all of `FACTOR_NAMES` but the
    one a conditional model is conditioned on."""
    return [name for name in shapes_lib.FACTOR_NAMES if name != condition]


def _image_size(model):
    height, width, channels = model.image_shape
    if height != width or channels != 1:
        raise ValueError(
            "Expected a model of square single-channel images for `shapes`. "
            f"Received: image_shape={model.image_shape}"
        )
    return height


def _scored_factors(model, condition):
    """Indices into `FACTOR_NAMES` of the factors scored: all, or all but a
    conditional model's `condition` (see the module docstring)."""
    _image_size(model)
    names = shapes_lib.FACTOR_NAMES
    if not model.conditional:
        return list(range(len(names)))
    if condition not in names:
        raise ValueError(
            f"Expected `condition`, the shapes factor {type(model).__name__} is conditioned on, "
            f"one of {names}. Received: condition={condition!r}"
        )
    size, multi_hot = shapes_lib.FACTOR_SIZES[names.index(condition)], model.multi_hot
    if multi_hot or model.condition_size != size:
        raise ValueError(
            f"Expected a model conditioned on the {size} classes of {condition!r}. Received: "
            f"condition_size={model.condition_size}, multi_hot={multi_hot}"
        )
    return [names.index(name) for name in scored_factor_names(condition)]
