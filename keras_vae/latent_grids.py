"""The latent-space pictures shared by TensorBoard and evaluate.py's figures.

Model + NumPy grids (`keras_vae.grids`): `latent_statistics` (posterior
means and per-dimension KL of held-out images), `prior_noise`,
`choose_pairs`, `image_grids` and `samples_per_class`, which
`callbacks.LatentSummaries` writes to TensorBoard and `keras_vae.report` saves
as PNG files: the same pictures. They talk to the model through its public
methods only (`encode`, `decode`, and a conditional model's `class_labels`),
so every variant gets them. A conditional model (`model.conditional`, the
cvae) decodes every code with a label: which one, grid by grid, is said at
`image_grids`.

Grid geometry (the `keras_vae.grids` convention): cells of `H x W` pixels,
`pad` pixels between cells and no outer border, so `r x c` cells make
`(r * H + (r - 1) * pad, c * W + (c - 1) * pad)`. Row blocks of one image
(sample temperatures, linear / slerp) are stacked with a band of `BLOCK_GAP`
pixels between them. Default settings on the `shapes` preset (64 held-out
64x64x1 images, latent_dim 10):

    images/reconstructions   8 x 8 cells             519 x 519
    images/samples           2 blocks of 2 x 8        262 x 519
    images/interpolation     2 blocks of 4 x 10       522 x 649
    images/traversal(_origin) 10 x 9 cells             649 x 584
    images/manifold          15 x 15 cells (D == 2)   974 x 974
    images/samples_per_class 3 x 8 cells (cvae, shape) 194 x 519
"""

from __future__ import annotations

import math

import numpy as np

from keras_vae import grids, likelihoods, walks
from keras_vae.config import UserError

# Pixels of `pad_value` between the row blocks of one image (e.g. between the
# temperature-1.0 and temperature-0.7 samples): wider than the cell separator
# so the blocks read as two groups.
BLOCK_GAP = 4

IMAGE_TAGS = (
    "images/reconstructions",
    "images/samples",
    "images/interpolation",
    "images/traversal",
    "images/traversal_origin",
    "images/manifold",
    "images/samples_per_class",
)


def active_units(means, threshold=0.01):
    """Active latent units: Cov_x(E_q(z|x)[z_d]) > threshold.

    A unit is active when its posterior mean moves with the input (Burda et
    al. 2015, section 5.2); a collapsed unit has the same posterior, the
    prior, for every x. The variance over x is the variance (ddof=0, as
    `evaluation.active_units`, which this room may not import) of the
    posterior means of the given images, so on a small batch it is an
    estimate (its relative standard error is about sqrt(2 / (N - 1)), ~18%
    for N = 64): a unit near the threshold may flip between epochs.

    Args:
        means: `(N, D)` posterior means E_q(z|x)[z] of N >= 2 images.
        threshold: variance above which a unit counts as active (0.01 in
            Burda et al.).

    Returns:
        `(count, variances)`: the number of active units (int) and the
        `(D,)` float64 variance of each dimension's posterior mean.

    Raises:
        ValueError: `means` not 2-D with N >= 2.

    Reference:
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
        ICLR 2016 (arXiv:1509.00519), section 5.2.
    """
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] < 2 or means.shape[1] == 0:
        raise ValueError(
            "Expected `means` of shape (N, D) with N >= 2 and D >= 1. "
            f"Received: means.shape={means.shape}"
        )
    variances = means.var(axis=0)  # (D,)
    return int(np.sum(variances > threshold)), variances


def choose_pairs(num_images, num_pairs, labels=None):
    """Indices of distinct held-out images to interpolate between.

    Without labels the pairs are `(0, 1), (2, 3), ...`: the held-out batch is
    already a random draw. With labels each image is paired, in order, with
    the next unused image of a *different* label (an interpolation between
    two classes says more than one within a class); when the labels run out,
    the remaining pairs are consecutive unused images.

    Args:
        num_images: size of the held-out batch, >= 2.
        num_pairs: pairs wanted; `min(num_pairs, num_images // 2)` are returned.
        labels: optional `(num_images,)` class labels.

    Returns:
        `(P, 2)` int64 indices, no index used twice.
    """
    count = min(num_pairs, num_images // 2)
    if labels is None:
        return np.arange(2 * count, dtype=np.int64).reshape(count, 2)
    labels = np.asarray(labels)
    used = np.zeros(num_images, dtype=bool)
    pairs = []
    for i in range(num_images):
        if len(pairs) == count:
            break
        if used[i]:
            continue
        for j in range(i + 1, num_images):
            if not used[j] and labels[j] != labels[i]:
                pairs.append((i, j))
                used[i] = used[j] = True
                break
    free = np.flatnonzero(~used)
    while len(pairs) < count:
        pairs.append((int(free[0]), int(free[1])))
        free = free[2:]
    return np.asarray(pairs, dtype=np.int64).reshape(count, 2)


def _stack_blocks(blocks, gap, fill):
    """Stacks `(h_i, W, C)` images vertically with `gap` rows of `fill` between."""
    band = np.full((gap,) + blocks[0].shape[1:], fill, dtype=blocks[0].dtype)
    parts = []
    for i, block in enumerate(blocks):
        if i:
            parts.append(band)
        parts.append(block)
    return np.concatenate(parts, axis=0)


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"Expected `{name}` to be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def prior_noise(num_samples, latent_dim, seed):
    """Fixed prior noise eps ~ N(0, I): `(num_samples, latent_dim)` float32 from `seed`."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((num_samples, latent_dim)).astype(np.float32)


class DivergedModelError(UserError):
    """A model whose posterior is NaN/Inf: nothing meaningful to draw."""


def latent_statistics(model, images, max_traversal_dims=16, labels=None):
    """Encodes `images` once; the statistics every image grid is built from.

    Args:
        model: a `VAE`.
        images: `(N, H, W, C)` float32 images in [0, 1], N >= 2.
        max_traversal_dims: cap on the traversal rows.
        labels: a conditional model's labels of `images` (`(N,)` class ids or
            `(N, K)` attribute vectors), passed to `encode`; None otherwise.

    Returns:
        dict with `mean`, `log_var` `(N, D)` float32 posterior parameters;
        `kl_per_dim` `(D,)` mean KL(q(z_d|x) || N(0, 1)) over the images,
        nats (None for a model without a posterior, the autoencoder);
        `order` `(D,)` dimensions by decreasing KL (or code variance); `traversal_dims`
        the first `min(D, max_traversal_dims)` of `order`; `active_units`
        (int) and `mean_variance` `(D,)` (see `active_units`).

    Raises:
        DivergedModelError: the posterior is not finite.
    """
    mean, log_var = _encode(model, images, labels)
    mean = np.asarray(mean, dtype=np.float32)  # (N, D)
    log_var = np.asarray(log_var, dtype=np.float32)  # (N, D)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(log_var))):
        raise DivergedModelError(
            "The model's posterior for the held-out images is not finite (the run diverged): "
            "retrain it with a lower --learning_rate, or resume from an earlier backup."
        )
    count, variances = active_units(mean)
    if getattr(model, "bounds_likelihood", True):
        # The training objective's own closed-form KL, averaged over the
        # images: (N, D) -> (D,).
        kl = np.asarray(likelihoods.gaussian_kl_per_dim(mean, log_var), dtype=np.float64)
        kl_per_dim = kl.mean(axis=0)
        order = walks.order_by_kl(kl_per_dim)
    else:
        # An autoencoder has no posterior variance, so no KL: its dimensions
        # are ranked by how much their codes vary over the images.
        kl_per_dim = None
        order = walks.order_by_kl(variances)
    return {
        "mean": mean,
        "log_var": log_var,
        "kl_per_dim": kl_per_dim,
        "order": order,
        "traversal_dims": order[:max_traversal_dims],
        "active_units": count,
        "mean_variance": variances,
    }


def _encode(model, images, labels):
    # Labels go only to a model given them: the contract of generic code
    # (`VAE.conditional`), so a variant's `encode` is called as before.
    if labels is None:
        return model.encode(images)
    return model.encode(images, labels=labels)


def encode_means(model, images, labels=None, batch_size=256):
    """The posterior means of `images`, `(N, D)` float32, in batches; `labels`:
    a conditional model's labels of the images, `(N,)` or `(N, K)` (else None)."""
    out = []
    for start in range(0, len(images), batch_size):
        batch = slice(start, start + batch_size)
        mean, _ = _encode(model, images[batch], None if labels is None else labels[batch])
        out.append(np.asarray(mean, dtype=np.float32))
    return np.concatenate(out, axis=0)


def decode_codes(model, codes, batch_size=128, labels=None):
    """`(M, D)` codes -> `(M, H, W, C)` float32 in [0, 1], in few batched `decode` calls.

    `labels`: a conditional model's label of each code, `(M,)` or `(M, K)`;
    None for an unconditional model.
    """
    codes = np.asarray(codes, dtype=np.float32)
    out = []
    for start in range(0, codes.shape[0], batch_size):
        batch = codes[start : start + batch_size]
        if labels is None:
            batch = model.decode(batch)
        else:
            batch = model.decode(batch, labels=labels[start : start + batch_size])
        out.append(np.asarray(batch, dtype=np.float32))
    # The Gaussian likelihoods' mean is not bounded to [0, 1].
    return np.clip(np.concatenate(out, axis=0), 0.0, 1.0)


def class_rows(model, max_classes=10):
    """The rows of `samples_per_class`: one label each, and what it is.

    One-hot (class ids): every class when `condition_size <= max_classes`;
    else `max_classes` classes evenly spaced from the first to the last,
    `floor(i * (K - 1) / (max_classes - 1))` (e.g. shapes' 32 x positions ->
    0, 3, 6, 10, 13, 17, 20, 24, 27, 31), so the rows span the whole range.
    Multi-hot (`model.multi_hot`, attributes): the all-zero vector, then
    attributes 0, 1, ..., min(K, max_classes) - 1 switched on one at a time
    (the first ones: the attributes have no order to space them by).

    Args:
        model: a conditional model (`condition_size`, `multi_hot`).
        max_classes: most classes (attributes) shown, >= 1.

    Returns:
        `(labels, rows)`: `labels` `(R,)` int32 class ids or `(R, K)` int32
        attribute vectors; `rows` a list of R ints, the class id or the
        attribute switched on, None for the all-zero row.
    """
    max_classes = check_int("max_classes", max_classes, 1)
    size = model.condition_size
    if getattr(model, "multi_hot", False):
        count = min(size, max_classes)
        labels = np.zeros((1 + count, size), dtype=np.int32)
        labels[np.arange(1, 1 + count), np.arange(count)] = 1
        return labels, [None, *range(count)]
    if size <= max_classes:
        labels = np.arange(size, dtype=np.int32)
    else:  # integer maths: distinct, first and last included
        labels = (np.arange(max_classes) * (size - 1) // max(1, max_classes - 1)).astype(np.int32)
    return labels, [int(c) for c in labels]


def describe_class_rows(model, rows):
    """`class_rows`' rows in words, for captions: e.g. "classes 0, 1, 2"."""
    size = model.condition_size
    if getattr(model, "multi_hot", False):
        named = ", ".join(str(r) for r in rows[1:])
        return (
            f"no attribute (all-zero vector), then attributes {named} (of {size}) "
            "each switched on alone"
        )
    text = "classes " + ", ".join(str(r) for r in rows)
    if len(rows) < size:
        text += f" ({len(rows)} of {size}, evenly spaced)"
    return text


def _per_class_codes(noise, labels):
    """`(R * S, D)` codes and their labels: row r is all of `noise` with label r."""
    noise = np.asarray(noise, dtype=np.float32)  # (S, D)
    codes = np.tile(noise, (len(labels), 1))  # (R * S, D), row-major
    return codes, np.repeat(labels, noise.shape[0], axis=0)  # (R * S,) or (R * S, K)


def samples_per_class(model, noise, max_classes=10, batch_size=128):
    """Prior samples rendered as each class: the same z in every row.

    Row r decodes all of `noise` with the r-th label of `class_rows`, so a
    column shows one code as each class (or with each attribute): what the
    label controls, apart from what the code does. Tile with
    `grids.tile_rows(cells)`.

    Args:
        model: a conditional model.
        noise: `(S, D)` prior codes, e.g. `prior_noise(S, D, seed)`.
        max_classes: most classes (attributes) shown, see `class_rows`.
        batch_size: most codes per `decode` call.

    Returns:
        `(cells, rows)`: `(R, S, H, W, C)` float32 images in [0, 1] and the
        row list of `class_rows`.
    """
    labels, rows = class_rows(model, max_classes)
    codes, code_labels = _per_class_codes(noise, labels)
    cells = decode_codes(model, codes, batch_size, code_labels)  # (R * S, H, W, C)
    return cells.reshape((len(rows), len(codes) // len(rows)) + cells.shape[1:]), rows


def _repeat(labels, n):
    """`n` copies of one label `()` or `(K,)`: `(n,)` or `(n, K)`."""
    return np.repeat(np.asarray(labels)[None], n, axis=0)


def image_grids(
    model,
    images,
    stats,
    *,
    noise,
    pairs,
    temperatures=(1.0, 0.7),
    num_reconstructions=32,
    interpolation_steps=10,
    traversal_steps=9,
    traversal_range=3.0,
    traversal_index=0,
    manifold_size=15,
    columns=8,
    pad=1,
    pad_value=1.0,
    decode_batch_size=128,
    condition=None,
    max_classes=10,
):
    """All image grids of the module docstring, `{tag: (height, width, C) float32 in [0, 1]}`.

    What `LatentSummaries` writes to TensorBoard and `evaluate.py` to PNG
    files: one batched `decode` of every code the grids need. Arguments as
    `LatentSummaries`, plus:

    A conditional model (`model.conditional`) decodes with these labels:
    reconstructions, each image's own; `images/samples`, `class_labels(S)`
    (the classes in turn; all-zero attributes when multi-hot); each
    interpolation row, its start (left) image's; the traversal, the label of
    image `traversal_index`; the origin traversal and the manifold, the first
    class `class_labels(1)` (the all-zero attribute vector when multi-hot).
    It also gets `images/samples_per_class`: `samples_per_class` of the first
    `columns` noise vectors (temperature 1), a row per `class_rows` label.

    Args:
        model: a `VAE`.
        images: `(N, H, W, C)` float32 images in [0, 1].
        stats: `latent_statistics(model, images, ...)` (with the same labels).
        noise: `(S, D)` prior noise, e.g. `prior_noise(S, D, seed)`.
        pairs: `(P, 2)` indices into `images` to interpolate between
            (`choose_pairs`).
        condition: a conditional model's labels of `images`, `(N,)` class ids
            or `(N, K)` attribute vectors; ignored by an unconditional model.
        max_classes: most rows of `images/samples_per_class` (`class_rows`).

    Returns:
        dict keyed by the `IMAGE_TAGS` (`images/manifold` only when D == 2,
        `images/samples_per_class` only for a conditional model).

    Raises:
        ValueError: a conditional model without `condition`.
    """
    conditional = getattr(model, "conditional", False)
    if conditional and condition is None:
        raise ValueError(
            "Expected `condition`, the labels of `images`: a conditional model decodes "
            "every code with a label. Received: condition=None"
        )
    mean = stats["mean"]  # (N, D)
    latent_dim = mean.shape[1]

    # Every code to decode, by grid, each (M_i, D); decoded in one pass.
    recon_codes = mean[:num_reconstructions]  # (n_rec, D)
    eps = np.asarray(noise, dtype=np.float32)  # (S, D)
    num_samples = eps.shape[0]
    sample_codes = np.concatenate([t * eps for t in temperatures])  # (T*S, D)
    interp_codes = np.stack(
        [
            walks.interpolate(mean[i], mean[j], interpolation_steps, method)
            for method in walks.INTERPOLATION_METHODS
            for i, j in pairs
        ]
    )  # (2 * P, steps, D): linear rows, then slerp rows
    values = walks.traversal_values(-traversal_range, traversal_range, traversal_steps)  # (K,)
    dims = stats["traversal_dims"]  # (R,)
    base = mean[traversal_index]
    traversal = walks.traversal(base, dims, values)  # (R, K, D)
    traversal_origin = walks.traversal(np.zeros_like(base), dims, values)  # (R, K, D)
    parts = {
        "recon": recon_codes,
        "samples": sample_codes,
        "interp": interp_codes.reshape(-1, latent_dim),
        "traversal": traversal.reshape(-1, latent_dim),
        "traversal_origin": traversal_origin.reshape(-1, latent_dim),
    }
    if latent_dim == 2:
        parts["manifold"] = walks.manifold_grid(manifold_size)  # (n * n, 2)
    labels = None
    if conditional:
        # The label of every code, part by part: (M_i,) or (M_i, K).
        condition = np.asarray(condition)
        first_class = np.asarray(model.class_labels(1))[0]  # () or (K,)
        in_turn = np.asarray(model.class_labels(num_samples))  # the classes in turn
        starts = np.repeat(condition[pairs[:, 0]], interpolation_steps, axis=0)
        part_labels = {
            "recon": condition[:num_reconstructions],
            "samples": np.concatenate([in_turn] * len(temperatures)),
            "interp": np.concatenate([starts] * len(walks.INTERPOLATION_METHODS)),
            "traversal": _repeat(condition[traversal_index], len(parts["traversal"])),
            "traversal_origin": _repeat(first_class, len(parts["traversal_origin"])),
        }
        if "manifold" in parts:
            part_labels["manifold"] = _repeat(first_class, len(parts["manifold"]))
        class_labels, class_ids = class_rows(model, max_classes)
        per_class_cols = min(columns, num_samples)
        parts["per_class"], part_labels["per_class"] = _per_class_codes(
            eps[:per_class_cols], class_labels
        )
        labels = np.concatenate([part_labels[name] for name in parts])
    ends = np.cumsum([len(codes) for codes in parts.values()])
    decoded = decode_codes(
        model, np.concatenate(list(parts.values())), decode_batch_size, labels
    )  # (sum M_i, H, W, C)
    decoded = dict(zip(parts, np.split(decoded, ends[:-1]), strict=True))

    cell = images.shape[1:]  # (H, W, C)
    tile = {"pad": pad, "pad_value": pad_value}
    out = {}

    # Reconstructions: rows of inputs alternating with their reconstructions;
    # a short last row is filled with blank cells. (2 * rows, cols, H, W, C).
    n_rec = recon_codes.shape[0]
    cols = min(columns, n_rec)
    rows = math.ceil(n_rec / cols)
    recon_pairs = np.full((2, rows * cols) + cell, pad_value, dtype=np.float32)
    recon_pairs[0, :n_rec] = images[:n_rec]
    recon_pairs[1, :n_rec] = decoded["recon"]
    recon_pairs = recon_pairs.reshape((2, rows, cols) + cell).swapaxes(0, 1)  # (rows, 2, cols, ...)
    out["images/reconstructions"] = grids.tile_rows(
        recon_pairs.reshape((2 * rows, cols) + cell), **tile
    )

    # Samples: one block per temperature, ceil(S / cols) x cols each.
    cols = min(columns, num_samples)
    blocks = np.split(decoded["samples"], len(temperatures))
    out["images/samples"] = _stack_blocks(
        [grids.tile(block, cols=cols, **tile) for block in blocks], BLOCK_GAP, pad_value
    )

    # Interpolation: the linear block (P rows) over the slerp block (P rows).
    interp = decoded["interp"].reshape((2, len(pairs), interpolation_steps) + cell)
    out["images/interpolation"] = _stack_blocks(
        [grids.tile_rows(block, **tile) for block in interp], BLOCK_GAP, pad_value
    )

    # Traversals: (R, K) cells, row r varies dimension traversal_dims[r].
    shape = (len(dims), traversal_steps) + cell
    out["images/traversal"] = grids.tile_rows(decoded["traversal"].reshape(shape), **tile)
    out["images/traversal_origin"] = grids.tile_rows(
        decoded["traversal_origin"].reshape(shape), **tile
    )
    if "manifold" in decoded:
        out["images/manifold"] = grids.tile(
            decoded["manifold"], rows=manifold_size, cols=manifold_size, **tile
        )
    if "per_class" in decoded:
        # A row per class, a column per noise vector: (R, cols) cells.
        shape = (len(class_ids), per_class_cols) + cell
        out["images/samples_per_class"] = grids.tile_rows(
            decoded["per_class"].reshape(shape), **tile
        )
    return out
