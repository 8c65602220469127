"""evaluate.py's protocols (how much it evaluates) and its plan (what, and how long).

    protocol = resolve_protocol("standard", iwae_samples=1000)   # a flag overrides
    plan = make_plan(model, config, test_ds, num_test, protocol)  # times one batch
    print(describe(plan))                                        # before the long work

**The standard protocol** (the default) fits 10 minutes on 2 CPU cores for
every preset: the ELBO, KL, bits/dim and active units on the first 10,000
test images (MNIST's and CIFAR-10's whole test split; dSprites-style 10,000
on shapes), the IWAE bound with K = 100 on the first 1,000 of them, and on
shapes MIG, SAP and DCI on 2,000 points (disentanglement_lib's `num_train`;
test points: half) and the FactorVAE score from 500 training votes. Why
these numbers (measured here, on a trained default shapes run, 2 idle cores):

- the IWAE costs K decoder passes per image, 0.45 ms per image and sample
  for the shapes conv net (1.3-1.9 ms for 64x64x3 CelebA): K = 100 on
  10,000 images would take 7.5 min alone. On 1,000 images it takes 45 s
  (CelebA 2-3 min). Per-image NLLs spread by ~27 nats, so 1,000 images give a
  standard error of ~0.85 nats (less for the difference of two runs on the
  same images); the K that would fit 10,000 images, 25, is 1.6 nats looser
  than K = 1000 where K = 100 is 0.8 (measured on 128 test images: NLL
  66.82, 66.03, 65.20 at K = 25, 100, 1000);
- DCI's gradient-boosted trees take ~65 s at 2,000 points and ~5.5 min at
  the reference's 10,000 (13 min on busy cores); 2,000 is what the README's
  disentanglement sweep used (DCI reads lower on fewer points: see README);
- the FactorVAE score's 500 votes (250 evaluation votes: standard error
  <= 0.032) take ~16 s; votes add noise, not bias.

**The paper protocol** (`--protocol=paper`) is the published one: the whole
test split, K = 5000 (Burda et al. 2015), disentanglement_lib's 10,000
points and 10,000 FactorVAE votes. Hours on a CPU: the plan says how many.
"""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import numpy as np

from keras_vae import evaluation
from keras_vae.config import UsageError


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How much of the test split and how many samples evaluate.py uses.

    Attributes:
        name: "standard" or "paper".
        test_images: the first this many test images get the ELBO, KL,
            bits/dim and active units (None: the whole split).
        iwae_images: the first this many of those get the IWAE bound
            (None: all of them).
        iwae_samples: K of the IWAE bound (Burda et al. 2015).
        disentanglement_points: disentanglement_lib's `num_train` (shapes):
            MIG's points, SAP's and DCI's train points (test points: half),
            the FactorVAE score's variance points.
        factor_vae_votes: the FactorVAE score's training votes (evaluation
            votes: half), 64 images each.
    """

    name: str
    test_images: int | None
    iwae_images: int | None
    iwae_samples: int
    disentanglement_points: int
    factor_vae_votes: int


STANDARD = Protocol("standard", 10_000, 1_000, 100, 2_000, 500)
PAPER = Protocol("paper", None, None, 5_000, 10_000, 10_000)
PROTOCOLS = {p.name: p for p in (STANDARD, PAPER)}


def resolve_protocol(name="standard", **overrides):
    """The protocol `name` with the flags given explicitly (not None) in
    `overrides` (`test_images`, `iwae_images`, `iwae_samples`,
    `disentanglement_points`, `factor_vae_votes`, and `max_batches`, the
    older batch limit of both image counts).

    Returns:
        dict, the results' `protocol` entry: `name`, the `Protocol` fields,
        `max_batches` and `overrides` (the names of the flags that changed
        it, sorted).

    Raises:
        UsageError: an unknown protocol name.
    """
    if name not in PROTOCOLS:
        raise UsageError(
            f"--protocol must be one of {', '.join(PROTOCOLS)}. Received: {name!r}."
        )
    entry = dataclasses.asdict(PROTOCOLS[name])
    entry["max_batches"] = None
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(given) - set(entry)
    if unknown:
        raise TypeError(f"Unknown protocol settings: {sorted(unknown)}")
    entry.update(given)
    if entry["test_images"] is not None and entry["iwae_images"] is not None:
        entry["iwae_images"] = min(entry["iwae_images"], entry["test_images"])
    entry["overrides"] = sorted(given)
    return entry


def dequantizes(config):
    """Whether a run's images are scored dequantized, with 8-bit bits/dim: a
    density on [0, 1] pixels (`evaluation.DENSITY_LIKELIHOODS`) of image data,
    which is 8-bit for every dataset (`evaluation.dequantized` checks)."""
    return config.likelihood in evaluation.DENSITY_LIKELIHOODS and not getattr(
        config, "is_sequence", False
    )


def image_counts(protocol, num_test, batch_size):
    """`(test images, IWAE images)` the protocol evaluates of a split of
    `num_test` images in batches of `batch_size`."""
    limit = num_test
    if protocol["max_batches"] is not None:
        limit = min(limit, protocol["max_batches"] * batch_size)
    test = limit if protocol["test_images"] is None else min(limit, protocol["test_images"])
    iwae = test if protocol["iwae_images"] is None else min(test, protocol["iwae_images"])
    return test, (iwae if protocol["iwae_samples"] else 0)


# ---------------------------------------------------------------------------
# The plan and its estimate.

# DCI: gradient-boosted trees, 100 stages of one depth-3 tree per class
# (`disentanglement.metrics.dci_importance`); the estimate times a stage on
# up to CALIBRATION_POINTS random codes with 32 classes and scales it by the
# stages, the classes of the scored factors and the points.
DCI_STAGES, CALIBRATION_POINTS, CALIBRATION_CLASSES = 100, 2000, 32
ELBO_TIMING_BATCHES = 3  # test batches whose ELBO is timed (after a warm-up pass)
# Figures and the Projector beyond their encoder and decoder calls
# (matplotlib, PNG encoding), seconds on 2 busy cores.
FIGURES_OVERHEAD, PROJECTOR_OVERHEAD = 5.0, 1.0
PROJECTOR_IMAGES = 1024  # callbacks.projector.NUM_IMAGES


def _timed(fn, repeats=1):
    """Seconds of the last of `repeats` calls of `fn`, after one warm-up call."""
    fn()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    return seconds


def _first_batches(model, test_ds, count):
    """The first `count` batches: `[(images, labels or None)]`."""
    out = []
    for batch in test_ds.take(count):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)
        out.append((x, y if model.conditional else None))
    return out


def make_plan(
    model, config, test_ds, num_test, protocol, *, disentanglement=True, figures=True,
    figure_examples=5000, dequantize=False,
):  # fmt: skip
    """What evaluate.py will compute, with an estimate of each part's seconds.

    Times, after a warm-up each, the ELBO of the first 3 test batches and
    one IWAE decoder chunk on the first (a few seconds); on shapes, the
    rendering and encoding of 256 factor draws and a DCI tree's boosting
    stage. The rest is scaled from those: an IWAE batch is ceil(K / chunk)
    chunks, DCI's trees grow with their stages, classes and points.

    Args:
        model: the run's model; config: its `Config`; test_ds: its batched
            test split; num_test: the split's size.
        protocol: `resolve_protocol`'s dict.
        disentanglement: the disentanglement metrics are asked for (they are
            computed on shapes with latent_dim >= 2 only).
        figures, figure_examples: evaluate.py's figures.
        dequantize: the images are dequantized (`evaluation.dequantized`).

    Returns:
        dict: `protocol`, `num_test`, `batch_size`, `test_images`,
        `iwae_images`, `disentanglement` (bool), `figures`, `seconds` (per
        part: `elbo`, `iwae`, `disentanglement`, `tensorboard_and_figures`),
        `total_seconds`, `iwae_batch_seconds`.
    """
    batches = _first_batches(model, test_ds, ELBO_TIMING_BATCHES)
    x, y = batches[0]
    batch = int(x.shape[0])
    test_images, iwae_images = image_counts(protocol, num_test, batch)
    seed = keras.random.SeedGenerator(0)

    def elbo_pass():  # the evaluation's per-batch work without the IWAE, data included
        for x, y in batches:
            x = evaluation.dequantized(x, seed) if dequantize else x
            if model.bounds_likelihood:
                terms = evaluation.elbo_terms(model, x, seed=seed, labels=y)
            else:
                terms = evaluation.reconstruction_terms(model, x, labels=y)
            keras.ops.convert_to_numpy(terms["mean"])

    elbo_batch = _timed(elbo_pass) / len(batches)
    seconds = {"elbo": elbo_batch * test_images / batch, "iwae": 0.0}
    iwae_batch = 0.0
    if iwae_images and model.bounds_likelihood:
        k = protocol["iwae_samples"]
        chunk = evaluation._auto_chunk(batch, model.image_shape, k)
        one_chunk = _timed(
            lambda: evaluation.iwae_log_likelihood(model, x, chunk, chunk, seed=seed, labels=y)
        )
        # ceil(K / chunk) decoder calls (the last one smaller) per batch.
        iwae_batch = one_chunk * math.ceil(k / chunk)
        seconds["iwae"] = iwae_batch * iwae_images / batch
    scored = disentanglement and config.dataset == "shapes" and model.latent_dim >= 2
    seconds["disentanglement"] = _disentanglement_seconds(model, config, protocol) if scored else 0
    # Encoding (about half an ELBO batch) for the Projector and the figures'
    # codes, decoding a few batches of grids.
    encode_batch = 0.5 * elbo_batch
    extra = PROJECTOR_OVERHEAD + encode_batch * math.ceil(PROJECTOR_IMAGES / batch)
    if figures:
        examples = min(figure_examples, test_images)
        extra += FIGURES_OVERHEAD + encode_batch * math.ceil(examples / batch) + 10 * elbo_batch
    seconds["tensorboard_and_figures"] = extra
    return {
        "protocol": protocol,
        "num_test": int(num_test),
        "batch_size": batch,
        "test_images": int(test_images),
        "iwae_images": int(iwae_images) if model.bounds_likelihood else 0,
        "disentanglement": bool(scored),
        "figures": bool(figures),
        "seconds": seconds,
        "total_seconds": float(sum(seconds.values())),
        "iwae_batch_seconds": iwae_batch,
        "sequences": bool(getattr(model, "is_sequence", False)),
    }


def _disentanglement_seconds(model, config, protocol):
    """Seconds of `disentanglement.evaluate_on_shapes` at the protocol's counts."""
    from sklearn import ensemble

    from keras_vae import disentanglement as dis
    from keras_vae.data import shapes

    condition = config.condition if model.conditional else None
    rng = np.random.default_rng(0)
    factors = dis.sample_factors(256, rng)
    per_image = _timed(lambda: dis.encode_factors(model, factors, condition=condition)) / 256
    points, votes = protocol["disentanglement_points"], protocol["factor_vae_votes"]
    # Encoded: MIG/SAP/DCI's train and test points; the FactorVAE score's
    # variance points and 64 images per training and evaluation vote.
    images = points + points // 2 + points + 64 * (votes + votes // 2)
    # DCI's trees: one boosting stage's time, from fits of 1 and 3 stages on
    # random codes, times the stages, the classes and the points.
    n = min(points, CALIBRATION_POINTS)
    codes = rng.normal(size=(n, model.latent_dim))
    labels = rng.integers(0, CALIBRATION_CLASSES, n)

    def fit(stages):
        gbt = ensemble.GradientBoostingClassifier(n_estimators=stages, random_state=0)
        start = time.perf_counter()
        gbt.fit(codes, labels)
        return time.perf_counter() - start

    one, three = fit(1), fit(3)
    stage = max((three - one) / 2, one / 3)
    names = dis.scored_factor_names(condition)
    classes = sum(shapes.FACTOR_SIZES[shapes.FACTOR_NAMES.index(f)] for f in names)
    # Sorting makes a tree's cost grow a little faster than its points.
    growth = (points / n) * max(1.0, math.log(points) / math.log(n))
    trees = stage * DCI_STAGES * (classes / CALIBRATION_CLASSES) * growth
    return per_image * images + trees


def _duration(seconds):
    """`40 s`, `3.5 min`, `46 h`: two significant figures at most."""
    if seconds < 90:
        return f"{max(1, round(seconds)):.0f} s" if seconds < 10 else f"{round(seconds, -1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 36_000 else f"{seconds / 3600:.0f} h"


def _first(n, of):
    """`the first 1,000 of the 10,000`, or `all 10,000`."""
    return f"all {n:,}" if n >= of else f"the first {n:,} of the {of:,}"


def describe(plan):
    """The plan as evaluate.py prints it before it starts (a few lines)."""
    protocol, batch = plan["protocol"], plan["batch_size"]
    batches = math.ceil(plan["test_images"] / batch)
    name = protocol["name"]
    flags = ", ".join(f"--{flag}" for flag in protocol["overrides"])
    changed = f", changed by {flags}" if flags else ""
    other = {
        "standard": "--protocol=paper for the published one",
        "paper": "the default --protocol=standard takes minutes",
    }.get(name, "")
    what, unit = ("sequences", "per token") if plan.get("sequences") else ("images", "bits/dim")
    lines = [
        f"Evaluation plan: the {name} protocol{changed} ({other}).",
        f"  ELBO, KL, {unit}, active units: {_first(plan['test_images'], plan['num_test'])} "
        f"test {what} ({batches:,} batch{'es' if batches > 1 else ''} of {batch}).",
    ]
    if plan["iwae_images"]:
        some = plan["iwae_images"] < plan["test_images"]
        which = f"the first {plan['iwae_images']:,} of them" if some else "all of them"
        lines.append(
            f"  IWAE NLL: K = {protocol['iwae_samples']:,} importance samples on {which} "
            f"({plan['iwae_batch_seconds']:.1f} s per batch of {batch}, timed now)."
        )
    if plan["disentanglement"]:
        points, votes = protocol["disentanglement_points"], protocol["factor_vae_votes"]
        lines.append(
            f"  Disentanglement (shapes): MIG, SAP, DCI on {points:,} + {points // 2:,} points; "
            f"the FactorVAE score from {votes:,} + {votes // 2:,} votes."
        )
    lines.append(
        "  Then: TensorBoard's Projector (test codes) and HParams metrics"
        + (", the figures." if plan["figures"] else ".")
    )
    seconds = plan["seconds"]
    last = "TensorBoard and figures" if plan["figures"] else "TensorBoard"
    parts = [
        (seconds["elbo"], "ELBO"),
        (seconds["iwae"], "IWAE"),
        (seconds["disentanglement"], "disentanglement"),
        (seconds["tensorboard_and_figures"], last),
    ]
    detail = ", ".join(f"{label} {_duration(s)}" for s, label in parts if s > 0)
    lines.append(f"Estimated time: about {_duration(plan['total_seconds'])} ({detail}).")
    return "\n".join(lines)
