"""The figures of one run (`write_run_figures`), into `WORKDIR/figures/`.

| file | what |
| --- | --- |
| `reconstructions.png` | rows alternate: test inputs, their reconstructions (*) |
| `samples.png` | prior samples, a block at temperature 1.0 over one at 0.7 (*) |
| `interpolation.png` | test pairs: linear rows over slerp rows (*) |
| `traversal.png`, `traversal_origin.png` | one row per latent dimension by KL (*) |
| `manifold.png` | the 2-D manifold, latent_dim == 2 only (*) |
| `manifold_axes.png` | the same with z1 / z2 ticks at the Gaussian quantiles |
| `latent_scatter.png` | posterior means, top-2 dimensions by KL, coloured by a label (**) |
| `kl_per_dim.png` | KL per latent dimension, sorted; active units marked (not for (**)) |
| `neighbourhood.png` | samples around one test image's code, one row per radius |
| `principal_directions.png` | walks along the top principal axes of the codes |
| `attribute_vector.png` | an attribute vector added to test codes (labelled data only) |
| `samples_per_class.png` | conditional models: the same prior codes decoded as each class |

(*) plain grids, the very pictures of the TensorBoard callback, built by the
same code (`keras_vae.latent_grids.image_grids`) on the first 64 test images:
cells of H x W pixels, 1 white pixel between cells, no outer border, blocks
stacked with `latent_grids.BLOCK_GAP` pixels between them (see `grids.tile`).
The others are matplotlib figures (`keras_vae.plots`, which draws what this
module computes).

(**) A model without a posterior (`bounds_likelihood = False`, the
deterministic autoencoder) has no KL: its dimensions are ranked by the
variance of their codes instead (scatter, traversal rows), and there is no
`kl_per_dim.png`.

A conditional model (`model.conditional`, the cvae) encodes and decodes every
image with its own label (`Config.condition`, from the test split); codes that
belong to no image are decoded as `latent_grids.image_grids` says (prior
samples: the classes in turn; principal directions: the first class,
`class_labels(1)`, as the origin traversal). `samples_per_class.png` shows
one row per class (`latent_grids.class_rows`: every class up to
`MAX_CLASSES`, else evenly spaced ones), named where the data names them.

The model is used through its public methods only (`encode`, `decode`,
`class_labels`).
"""

from __future__ import annotations

import math
import os

import numpy as np
from absl import logging

from keras_vae import data as data_lib
from keras_vae import evaluation, grids, latent_grids, plots, runs, walks
from keras_vae.config import CELEBA_ATTRIBUTES, UsageError, UserError
from keras_vae.data import shapes

# Grids of one run, as the callback's tags -> file names.
GRID_FILES = {
    "images/reconstructions": "reconstructions.png",
    "images/samples": "samples.png",
    "images/interpolation": "interpolation.png",
    "images/traversal": "traversal.png",
    "images/traversal_origin": "traversal_origin.png",
    "images/manifold": "manifold.png",
}
# Test images the callback grids are built on (as training uses 64 validation images).
HELD_OUT = 64
# Test images kept in memory for the neighbourhood and attribute figures.
KEEP_IMAGES = 256
MANIFOLD_SIZE = 15  # the callback's default
NEIGHBOURHOOD_SAMPLES = 8
DIRECTION_STEPS = np.arange(-3.0, 4.0)  # -3 .. +3 standard deviations
ATTRIBUTE_STRENGTHS = np.linspace(-2.0, 2.0, 5)
ATTRIBUTE_ROWS = 4
MAX_CLASSES = 10  # rows of samples_per_class.png (the callback's default)
SAMPLES_PER_CLASS = 8  # its columns: the first prior codes of samples.png


def parse_attribute(spec, label_names):
    """Parses `--attribute`: `NAME` (NAME == 1) or `NAME:VALUE` (NAME == VALUE).

    `NAME` suits binary attributes (CelebA's `Smiling`); `NAME:VALUE` one class
    of a class label against all others (`label:3` on MNIST, `shape:2`, the
    hearts, on shapes). None picks the default: `Smiling` when the dataset
    has it, else `<first label>:1`.

    Args:
        spec: the flag value or None.
        label_names: `DatasetInfo.label_names`.

    Returns:
        `(name, value)`, or None when the dataset has no labels.

    Raises:
        UsageError: a malformed spec or a name the dataset does not have.
    """
    if not label_names:
        return None
    if spec is None:
        return ("Smiling", 1) if "Smiling" in label_names else (label_names[0], 1)
    name, _, value = spec.partition(":")
    if name not in label_names:
        raise UsageError(
            f"--attribute={spec}: this dataset has no label {name!r}. "
            f"Use one of {', '.join(label_names)}, as NAME or NAME:VALUE."
        )
    try:
        return name, int(value) if value else 1
    except ValueError:
        raise UsageError(
            f"--attribute={spec}: the value after ':' must be an integer (e.g. {name}:1)."
        ) from None


def parse_radii(values):
    """`--radius` strings -> tuple of floats > 0; UsageError otherwise."""
    try:
        radii = tuple(float(v) for v in values)
    except ValueError:
        raise UsageError(
            f"--radius must be numbers, e.g. 0.25,0.5,1. Received: {values!r}."
        ) from None
    if not radii or not all(r > 0 and math.isfinite(r) for r in radii):
        raise UsageError(f"--radius must be positive numbers. Received: {values!r}.")
    return radii


def check_neighbourhood(index, info):
    """UsageError unless 0 <= index < size of the test split."""
    if not 0 <= index < info.num_examples:
        raise UsageError(
            f"--neighbourhood_of={index} is not an index of the test split "
            f"({info.num_examples} images): use 0..{info.num_examples - 1}."
        )


# ---------------------------------------------------------------------------
# The figures of one run.


def _condition(model, config, labels):
    """A conditional model's labels from a labels dict (`condition_labels`):
    NumPy `(n,)` class ids or `(n, K)` attribute vectors; None otherwise."""
    if not model.conditional:
        return None
    return np.asarray(data_lib.condition_labels(labels, config.condition))


def _encode(model, images, condition):
    """`model.encode`, with the labels of `images` for a conditional model."""
    if condition is None:
        return model.encode(images)
    return model.encode(images, labels=condition)


def _codes_and_labels(model, config, dataset, count):
    """Posterior means and labels of the first `max(count, KEEP_IMAGES)` test
    examples and the first `KEEP_IMAGES` images (fewer if the split is smaller).

    Returns:
        `(means (n, D), labels {name: (n,)}, images (m, H, W, C))`; a
        conditional model's images are encoded with their labels
        (`labels`' `config.condition`).
    """
    total = max(count, KEEP_IMAGES)
    means, labels, kept, n = [], {}, [], 0
    for batch in dataset:
        x, y = batch if isinstance(batch, tuple) else (batch, {})
        x = np.asarray(x, dtype=np.float32)[: total - n]
        y = {key: np.asarray(value)[: len(x)] for key, value in (y or {}).items()}
        mean, _ = _encode(model, x, _condition(model, config, y))
        means.append(np.asarray(mean, dtype=np.float32))
        for key, value in y.items():
            labels.setdefault(key, []).append(value)
        if n < KEEP_IMAGES:
            kept.append(x[: KEEP_IMAGES - n])
        n += len(x)
        if n >= total:
            break
    if n == 0:
        raise UserError("The test split is empty: nothing to draw.")
    return (
        np.concatenate(means),
        {k: np.concatenate(v) for k, v in labels.items()},
        np.concatenate(kept),
    )


def _image_at(dataset, index, kept, all_labels):
    """Test image `index` `(H, W, C)` and its labels `{name: ()}`: from `kept`
    when there, else read from `dataset`."""
    if index < len(kept):
        return kept[index], {key: value[index] for key, value in all_labels.items()}
    ds = dataset.unbatch().skip(index).take(1)
    for element in ds:
        x, y = element if isinstance(element, tuple) else (element, {})
        return np.asarray(x, dtype=np.float32), {k: np.asarray(v) for k, v in (y or {}).items()}
    raise UsageError(f"--neighbourhood_of={index} is beyond the test split.")


def write_run_figures(
    model,
    config,
    out_dir,
    *,
    results,
    attribute=None,
    neighbourhood_of=0,
    radii=(0.5,),
    num_directions=4,
    max_batches=None,
    figure_examples=5000,
    seed=None,
):
    """Writes the figures of the module docstring for one run into `out_dir`.

    Args:
        model: the run's `VAE`.
        config: its `Config`.
        out_dir: folder of the PNG files (created).
        results: `evaluate_run`'s dict (for `kl_per_dim`, `latent_variances`).
        attribute: `(name, value)` from `parse_attribute`, or None for its
            default; only used with labelled data.
        neighbourhood_of: index into the test split of the neighbourhood image.
        radii: radii R of the neighbourhood samples z = mean(x) + R * eps.
        num_directions: principal directions drawn (capped at min(N, D)).
        max_batches: the evaluation's batch limit: the latent figures use at
            most the examples evaluated ...
        figure_examples: ... and at most this many.
        seed: seed of the prior and neighbourhood noise (None: the run's).

    Returns:
        list of the paths written.
    """
    seed = config.seed if seed is None else seed
    runs.makedirs(out_dir)
    dataset, info = runs.load_split(config, "test", with_labels=True)
    label_names = tuple(info.label_names)
    if attribute is None:
        attribute = parse_attribute(None, label_names)
    count = figure_examples
    if max_batches is not None:
        count = min(count, max_batches * config.batch_size)
    count = max(2, min(count, info.num_examples))
    # The latent figures' statistics use the first `count` codes (the
    # evaluated examples); the image grids the first 64 test images whatever
    # --max_batches, like the TensorBoard callback's fixed held-out batch.
    all_means, all_labels, kept = _codes_and_labels(model, config, dataset, count)
    means = all_means[:count]
    labels = {k: v[:count] for k, v in all_labels.items()}
    latent_dim = means.shape[1]
    cell = kept.shape[1:3]
    written = []

    def out(name):
        path = os.path.join(out_dir, name)
        written.append(path)
        return path

    # The TensorBoard grids, by the callback's own code, on the first 64 test images.
    held_out = kept[:HELD_OUT]
    if len(held_out) < 2:
        raise UserError("The test split has fewer than 2 images: nothing to draw.")
    # A conditional model's labels of the kept images, (m,) or (m, K); else None.
    kept_condition = _condition(model, config, {k: v[: len(kept)] for k, v in all_labels.items()})
    held_out_condition = None if kept_condition is None else kept_condition[: len(held_out)]
    colour_name = attribute[0] if attribute else None
    colour_labels = labels.get(colour_name) if colour_name else None
    stats = latent_grids.latent_statistics(model, held_out, labels=held_out_condition)
    bounded = model.bounds_likelihood
    if not bounded:  # no KL: traversal rows by the variance of the codes
        stats["order"] = walks.order_by_kl(stats["mean_variance"])  # descending, stable
        stats["traversal_dims"] = stats["order"][: len(stats["traversal_dims"])]
    held_out_labels = all_labels.get(colour_name) if colour_name else None
    pairs = latent_grids.choose_pairs(
        len(held_out), 4, None if held_out_labels is None else held_out_labels[: len(held_out)]
    )
    noise = latent_grids.prior_noise(16, latent_dim, seed)
    tiles = latent_grids.image_grids(
        model,
        held_out,
        stats,
        noise=noise,
        pairs=pairs,
        manifold_size=MANIFOLD_SIZE,
        condition=held_out_condition,
        max_classes=MAX_CLASSES,
    )
    # A conditional model's per-class grid gets its class names: drawn below.
    tiles.pop("images/samples_per_class", None)
    for tag, grid in tiles.items():
        plots.save_grid_png(out(GRID_FILES[tag]), grid)
    if "images/manifold" in tiles:
        plots.manifold_figure(
            out("manifold_axes.png"),
            tiles["images/manifold"],
            cell_shape=cell,
            axis=walks.manifold_axis(MANIFOLD_SIZE),
        )
    if model.conditional:
        _samples_per_class_figure(model, config, out("samples_per_class.png"), noise)

    # Latent scatter: the two dimensions with the largest KL over the test data
    # (without a KL, the largest variance of the codes).
    ranking = results["kl_per_dim"] if bounded else results["latent_variances"]
    dims = [int(d) for d in walks.order_by_kl(np.asarray(ranking, dtype=np.float64))[:2]]
    plots.scatter_figure(
        out("latent_scatter.png"), means[:, dims], dims, colour_labels, colour_name,
        ranked_by="KL" if bounded else "variance",
    )  # fmt: skip
    if bounded:
        plots.kl_figure(
            out("kl_per_dim.png"),
            results["kl_per_dim"],
            results["latent_variances"],
            results.get("active_unit_threshold", evaluation.ACTIVE_UNIT_THRESHOLD),
        )
    image, image_labels = _image_at(dataset, neighbourhood_of, kept, all_labels)
    image_condition = _condition(model, config, {k: v[None] for k, v in image_labels.items()})
    _neighbourhood_figure(
        model, out("neighbourhood.png"), image, image_condition, neighbourhood_of, radii, seed
    )
    _directions_figure(model, config, out("principal_directions.png"), means, num_directions)
    if attribute is None:
        logging.info("%s has no labels: no attribute_vector.png.", config.dataset)
    else:
        path = os.path.join(out_dir, "attribute_vector.png")
        kept_labels = (all_labels, kept, kept_condition)
        if _attribute_figure(model, path, means, labels, all_means, kept_labels, attribute):
            written.append(path)
    logging.info("Wrote %d figures to %s.", len(written), out_dir)
    return written


def _neighbourhood_figure(model, path, image, condition, index, radii, seed):
    """Input, reconstruction and samples z = mean(x) + R * eps, one row per R.

    The same eps ~ N(0, I) for every row, so the rows differ only by R: a
    small R shows how wide the decoder's neighbourhood of the image is. A
    conditional model encodes and decodes them all with the image's label
    (`condition` `(1,)` or `(1, K)`; None otherwise).
    """
    mean, _ = _encode(model, image[None], condition)
    mean = np.asarray(mean, dtype=np.float32)[0]  # (D,)
    rng = np.random.default_rng([seed, 1])
    eps = rng.standard_normal((NEIGHBOURHOOD_SAMPLES, mean.shape[0])).astype(np.float32)
    codes = np.concatenate([mean[None]] + [mean + r * eps for r in radii])  # (1 + R*S, D)
    decoded = latent_grids.decode_codes(model, codes, labels=_repeat(condition, len(codes)))
    samples = decoded[1:].reshape((len(radii), NEIGHBOURHOOD_SAMPLES) + decoded.shape[1:])
    plots.neighbourhood_figure(path, image, decoded[0], samples, radii, index)


def _directions_figure(model, config, path, means, num_directions):
    """Rows walk from -3 to +3 standard deviations along each principal axis
    of the test codes, from their mean code (a conditional model decodes them
    as its first class, `class_labels(1)`: they belong to no image)."""
    k = min(num_directions, means.shape[0], means.shape[1])
    if k < num_directions:
        logging.info("Principal directions: %d asked, %d exist (min(N, D)).", num_directions, k)
    directions = walks.principal_directions(means, k)  # (k, D)
    centre = means.mean(axis=0).astype(np.float64)  # (D,)
    spread = (means - centre) @ directions.T  # (N, k): coordinates on each axis
    sds = spread.std(axis=0)  # (k,)
    codes = (
        centre[None, None]
        + DIRECTION_STEPS[None, :, None] * sds[:, None, None] * directions[:, None, :]
    )  # (k, steps, D)
    codes = codes.reshape(-1, means.shape[1])
    first, decoded_as = None, None
    if model.conditional:
        first = np.asarray(model.class_labels(1))  # class 0, or no attribute
        decoded_as = _class_name(model, config, None if model.multi_hot else int(first[0]))
    decoded = latent_grids.decode_codes(model, codes, labels=_repeat(first, len(codes)))
    decoded = decoded.reshape((k, len(DIRECTION_STEPS)) + decoded.shape[1:])
    plots.directions_figure(path, decoded, sds, DIRECTION_STEPS, len(means), decoded_as=decoded_as)


def _attribute_figure(model, path, means, labels, all_means, kept_labels, attribute):
    """Adds the attribute vector to a few test codes at strengths -2 .. +2.

    The vector comes from `means` / `labels` (the evaluated examples); the
    rows are the first kept test images without the attribute (adding it
    should show it), then the first with it (subtracting it should remove
    it), each decoded with its image's label for a conditional model
    (`kept_labels`: all labels, the kept images and their condition or None).
    Returns False (with a warning) when one of the two groups is empty.
    """
    all_labels, kept, kept_condition = kept_labels
    name, value = attribute
    mask = labels[name] == value
    try:
        vector = walks.attribute_vector(means, mask)  # (D,)
    except ValueError:
        logging.warning(
            "No attribute_vector.png: %d of %d test codes have %s == %d; both groups "
            "must be non-empty (see --attribute).",
            int(mask.sum()),
            len(mask),
            name,
            value,
        )
        return False
    kept_mask = all_labels[name][: len(kept)] == value
    without = np.flatnonzero(~kept_mask)[: ATTRIBUTE_ROWS // 2]
    with_ = np.flatnonzero(kept_mask)[: ATTRIBUTE_ROWS - len(without)]
    rows_index = np.concatenate([without, with_]).astype(int)
    base = all_means[rows_index]  # (R, D)
    codes = base[:, None, :] + ATTRIBUTE_STRENGTHS[None, :, None] * vector[None, None, :]
    row_labels = None  # each row's image label, for every strength: (R * S,) or (R * S, K)
    if kept_condition is not None:
        row_labels = np.repeat(kept_condition[rows_index], len(ATTRIBUTE_STRENGTHS), axis=0)
    decoded = latent_grids.decode_codes(model, codes.reshape(-1, means.shape[1]), labels=row_labels)
    decoded = decoded.reshape((len(rows_index), len(ATTRIBUTE_STRENGTHS)) + decoded.shape[1:])
    plots.attribute_figure(
        path,
        kept[rows_index],
        decoded,
        row_labels=[f"image {i} ({name}={int(all_labels[name][i])})" for i in rows_index],
        strengths=ATTRIBUTE_STRENGTHS,
        title=f"z + s * v, v = mean code with {name}={value} ({int(mask.sum())}) minus "
        f"without ({int((~mask).sum())})",
    )
    return True


def _repeat(label, n):
    """`n` copies of a label batch of one, `(1,)` -> `(n,)`, `(1, K)` -> `(n, K)`;
    None stays None (an unconditional model)."""
    return None if label is None else np.repeat(np.asarray(label)[:1], n, axis=0)


def _class_name(model, config, row):
    """A `latent_grids.class_rows` row (a class id; multi-hot: the attribute
    switched on, None for none) in words: its name where the data names it
    (shapes' shapes, MNIST's digits, CelebA's attributes), else "<condition> <id>"."""
    condition = config.condition
    if model.multi_hot:
        if row is None:
            return "no attribute"
        return CELEBA_ATTRIBUTES[row] if config.dataset == "celeb_a" else f"attribute {row}"
    if config.dataset == "shapes" and condition == "shape":
        return shapes.SHAPE_NAMES[row]
    if config.dataset == "mnist":
        return f"digit {row}"
    if condition in CELEBA_ATTRIBUTES:  # one attribute: 2 classes, without and with it
        return condition if row else f"not {condition}"
    return f"{condition} {row}"


def _samples_per_class_figure(model, config, path, noise):
    """`samples_per_class.png`: `latent_grids.samples_per_class` of the first
    `SAMPLES_PER_CLASS` codes of `noise` (those of samples.png), a row per
    class named by `_class_name`."""
    cells, rows = latent_grids.samples_per_class(model, noise[:SAMPLES_PER_CLASS], MAX_CLASSES)
    labels = "no attribute, then each alone" if model.multi_hot else f"each {config.condition}"
    plots.labelled_grid_figure(
        path,
        grids.tile_rows(cells),
        cell_shape=cells.shape[2:4],
        row_labels=[_class_name(model, config, row) for row in rows],
        col_labels=[f"s{j + 1}" for j in range(cells.shape[1])],
        title=f"Prior samples decoded with {labels}: the same z in every row",
    )
