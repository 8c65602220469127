"""Keras callbacks: TensorBoard image summaries of the latent space.

`LatentSummaries` shows, epoch after epoch, what the VAE has learned, on a
fixed batch of held-out images and a fixed batch of prior noise, so that the
pictures of two epochs differ only because the weights did:

| tag | what |
| --- | --- |
| `images/reconstructions` | rows alternate: held-out inputs, then their reconstructions |
| `images/samples` | decoded prior samples, one row block per temperature (1.0, 0.7) |
| `images/interpolation` | held-out pairs, linear rows, then slerp rows |
| `images/traversal` | one row per latent dimension, by decreasing KL, around a code |
| `images/traversal_origin` | the same rows around the origin z = 0 |
| `images/manifold` | the 2-D manifold (only when latent_dim == 2) |
| `latent/kl_per_dim` | histogram of the mean KL of each dimension, nats |
| `latent/kl_dim_XX` | the same per dimension as scalars (latent_dim <= 32 only) |
| `latent/active_units` | number of active units (Burda et al. 2015) |

The grids are built by the module-level `latent_statistics`, `prior_noise`,
`choose_pairs` and `image_grids`, which `evaluate.py` (through
`keras_vae.figures`) calls as well: its PNG files are the same pictures.

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
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_vae import grids, likelihoods
from keras_vae.config import UserError

# Pixels of `pad_value` between the row blocks of one image (e.g. between the
# temperature-1.0 and temperature-0.7 samples): wider than the cell separator
# so the blocks read as two groups.
BLOCK_GAP = 4

# Above this many latent dimensions the per-dimension KL is only written as
# the `latent/kl_per_dim` histogram, not as one scalar card per dimension.
MAX_KL_SCALARS = 32

IMAGE_TAGS = (
    "images/reconstructions",
    "images/samples",
    "images/interpolation",
    "images/traversal",
    "images/traversal_origin",
    "images/manifold",
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


def _check_int(name, value, minimum):
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


def latent_statistics(model, images, max_traversal_dims=16):
    """Encodes `images` once; the statistics every image grid is built from.

    Args:
        model: a `VAE`.
        images: `(N, H, W, C)` float32 images in [0, 1], N >= 2.
        max_traversal_dims: cap on the traversal rows.

    Returns:
        dict with `mean`, `log_var` `(N, D)` float32 posterior parameters;
        `kl_per_dim` `(D,)` mean KL(q(z_d|x) || N(0, 1)) over the images,
        nats; `order` `(D,)` dimensions by decreasing KL; `traversal_dims`
        the first `min(D, max_traversal_dims)` of `order`; `active_units`
        (int) and `mean_variance` `(D,)` (see `active_units`).

    Raises:
        DivergedModelError: the posterior is not finite.
    """
    mean, log_var = model.encode(images)
    mean = np.asarray(mean, dtype=np.float32)  # (N, D)
    log_var = np.asarray(log_var, dtype=np.float32)  # (N, D)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(log_var))):
        raise DivergedModelError(
            "The model's posterior for the held-out images is not finite (the run diverged): "
            "retrain it with a lower --learning_rate, or resume from an earlier backup."
        )
    # The training objective's own closed-form KL, averaged over the
    # images: (N, D) -> (D,).
    kl = np.asarray(likelihoods.gaussian_kl_per_dim(mean, log_var), dtype=np.float64)
    kl_per_dim = kl.mean(axis=0)
    order = grids.order_by_kl(kl_per_dim)
    count, variances = active_units(mean)
    return {
        "mean": mean,
        "log_var": log_var,
        "kl_per_dim": kl_per_dim,
        "order": order,
        "traversal_dims": order[:max_traversal_dims],
        "active_units": count,
        "mean_variance": variances,
    }


def decode_codes(model, codes, batch_size=128):
    """`(M, D)` codes -> `(M, H, W, C)` float32 in [0, 1], in few batched `decode` calls."""
    codes = np.asarray(codes, dtype=np.float32)
    out = []
    for start in range(0, codes.shape[0], batch_size):
        batch = model.decode(codes[start : start + batch_size])
        out.append(np.asarray(batch, dtype=np.float32))
    # The Gaussian likelihoods' mean is not bounded to [0, 1].
    return np.clip(np.concatenate(out, axis=0), 0.0, 1.0)


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
):
    """All image grids of the module docstring, `{tag: (height, width, C) float32 in [0, 1]}`.

    What `LatentSummaries` writes to TensorBoard and `evaluate.py` to PNG
    files: one batched `decode` of every code the grids need. Arguments as
    `LatentSummaries`, plus:

    Args:
        model: a `VAE`.
        images: `(N, H, W, C)` float32 images in [0, 1].
        stats: `latent_statistics(model, images, ...)`.
        noise: `(S, D)` prior noise, e.g. `prior_noise(S, D, seed)`.
        pairs: `(P, 2)` indices into `images` to interpolate between
            (`choose_pairs`).

    Returns:
        dict keyed by the `IMAGE_TAGS` (`images/manifold` only when D == 2).
    """
    mean = stats["mean"]  # (N, D)
    latent_dim = mean.shape[1]

    # Every code to decode, by grid, each (M_i, D); decoded in one pass.
    recon_codes = mean[:num_reconstructions]  # (n_rec, D)
    eps = np.asarray(noise, dtype=np.float32)  # (S, D)
    num_samples = eps.shape[0]
    sample_codes = np.concatenate([t * eps for t in temperatures])  # (T*S, D)
    interp_codes = np.stack(
        [
            grids.interpolate(mean[i], mean[j], interpolation_steps, method)
            for method in grids.INTERPOLATION_METHODS
            for i, j in pairs
        ]
    )  # (2 * P, steps, D): linear rows, then slerp rows
    values = grids.traversal_values(-traversal_range, traversal_range, traversal_steps)  # (K,)
    dims = stats["traversal_dims"]  # (R,)
    base = mean[traversal_index]
    traversal = grids.traversal(base, dims, values)  # (R, K, D)
    traversal_origin = grids.traversal(np.zeros_like(base), dims, values)  # (R, K, D)
    parts = {
        "recon": recon_codes,
        "samples": sample_codes,
        "interp": interp_codes.reshape(-1, latent_dim),
        "traversal": traversal.reshape(-1, latent_dim),
        "traversal_origin": traversal_origin.reshape(-1, latent_dim),
    }
    if latent_dim == 2:
        parts["manifold"] = grids.manifold_grid(manifold_size)  # (n * n, 2)
    ends = np.cumsum([len(codes) for codes in parts.values()])
    decoded = decode_codes(
        model, np.concatenate(list(parts.values())), decode_batch_size
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
    return out


class LatentSummaries(keras.callbacks.Callback):
    """Writes TensorBoard image summaries of a VAE's latent space.

    Every `every` epochs (after epochs `every - 1, 2 * every - 1, ...`,
    0-based) and once more at the end of training if the last epoch was not
    written, it writes, at step = the epoch index (the step of the epoch
    scalars of `keras.callbacks.TensorBoard`), the tags of the module
    docstring. Everything is computed deterministically: codes are posterior
    means, images are the likelihood mean (`VAE.decode`), the prior noise is
    drawn once from `seed`; with unchanged weights two epochs give identical
    images. The cost is one `encode` of `images` and a few batched `decode`
    calls (324 images with the defaults at latent_dim 10): ~0.2 s on 2 CPU
    cores for the `shapes` preset, under 1% of its ~40 s epoch.

    The traversal shows at most `max_traversal_dims` dimensions, the most
    informative ones (largest mean KL over `images`, `grids.order_by_kl`);
    with a large latent (e.g. 128) the collapsed dimensions beyond them carry
    nothing worth a row. KL per dimension and active units are estimates from
    the held-out batch only.

    Args:
        log_dir: directory of the event file (`train_and_evaluate` uses
            `workdir/tensorboard/validation`, next to the epoch scalars).
        images: `(N, H, W, C)` held-out images, float in [0, 1] or uint8,
            chosen once (e.g. the first 64 validation images), N >= 2;
            C must be 1, 3 or 4 (what `tf.summary.image` accepts).
        labels: optional `(N,)` class labels; interpolation pairs then join
            different classes (see `choose_pairs`).
        every: write after every `every`-th epoch, >= 1.
        num_reconstructions: the first this many `images` are shown with
            their reconstructions.
        num_samples: prior samples per temperature.
        temperatures: prior temperatures, one row block each: z = t * eps.
        num_pairs: interpolation pairs (fewer when N < 2 * num_pairs).
        interpolation_steps: images per interpolation row, endpoints included.
        traversal_steps: values per traversal row, `linspace(-r, r, steps)`.
        traversal_range: r, the traversal's extent in prior standard deviations.
        max_traversal_dims: cap on traversal rows (the top dimensions by KL).
        traversal_index: which of `images` gives the traversal's base code.
        manifold_size: points per axis of the 2-D manifold (latent_dim == 2).
        columns: cells per row of the reconstruction and sample grids.
        pad: pixels between cells.
        pad_value: separator colour on the [0, 1] scale (1.0 is white).
        decode_batch_size: most codes per `decode` call (bounds memory).
        seed: seed of the fixed prior noise.
        chief: only the chief writes; False makes the callback a no-op.

    Reference:
        Higgins et al., "beta-VAE", ICLR 2017 (traversals); White, "Sampling
        Generative Networks", 2016 (slerp); Kingma & Welling 2014, Fig. 4
        (manifold); Burda et al. 2015 (active units).
    """

    def __init__(
        self,
        log_dir,
        images,
        labels=None,
        every=1,
        num_reconstructions=32,
        num_samples=16,
        temperatures=(1.0, 0.7),
        num_pairs=4,
        interpolation_steps=10,
        traversal_steps=9,
        traversal_range=3.0,
        max_traversal_dims=16,
        traversal_index=0,
        manifold_size=15,
        columns=8,
        pad=1,
        pad_value=1.0,
        decode_batch_size=128,
        seed=0,
        chief=True,
    ):
        super().__init__()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] < 2 or images.shape[-1] not in (1, 3, 4):
            raise ValueError(
                "Expected `images` of shape (N, H, W, C) with N >= 2 and C in (1, 3, 4). "
                f"Received: images.shape={images.shape}"
            )
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 255.0
        elif not np.issubdtype(images.dtype, np.floating):
            raise ValueError(
                f"Expected float images in [0, 1] or uint8. Received: images.dtype={images.dtype}"
            )
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (images.shape[0],):
                raise ValueError(
                    f"Expected `labels` of shape ({images.shape[0]},). "
                    f"Received: labels.shape={labels.shape}"
                )
        temperatures = tuple(float(t) for t in temperatures)
        if not temperatures or min(temperatures) <= 0:
            raise ValueError(
                f"Expected positive temperatures. Received: temperatures={temperatures!r}"
            )
        if not traversal_range > 0:
            raise ValueError(
                f"Expected `traversal_range` > 0. Received: traversal_range={traversal_range!r}"
            )
        self.log_dir = log_dir
        self.images = images.astype(np.float32)  # (N, H, W, C)
        self.labels = labels
        self.every = _check_int("every", every, 1)
        self.num_reconstructions = _check_int("num_reconstructions", num_reconstructions, 1)
        self.num_samples = _check_int("num_samples", num_samples, 1)
        self.temperatures = temperatures
        self.num_pairs = _check_int("num_pairs", num_pairs, 1)
        self.interpolation_steps = _check_int("interpolation_steps", interpolation_steps, 2)
        self.traversal_steps = _check_int("traversal_steps", traversal_steps, 2)
        self.traversal_range = float(traversal_range)
        self.max_traversal_dims = _check_int("max_traversal_dims", max_traversal_dims, 1)
        self.traversal_index = _check_int("traversal_index", traversal_index, 0)
        if self.traversal_index >= images.shape[0]:
            raise ValueError(
                f"Expected `traversal_index` < {images.shape[0]} (the number of images). "
                f"Received: traversal_index={traversal_index!r}"
            )
        self.manifold_size = _check_int("manifold_size", manifold_size, 2)
        self.columns = _check_int("columns", columns, 1)
        self.pad = _check_int("pad", pad, 0)
        self.pad_value = float(pad_value)
        self.decode_batch_size = _check_int("decode_batch_size", decode_batch_size, 1)
        self.seed = seed
        self.chief = bool(chief)
        self.pairs = choose_pairs(images.shape[0], self.num_pairs, labels)  # (P, 2)
        self._noise = None  # (num_samples, D), drawn on first use (D is the model's)
        self._writer = None
        self._last_epoch = None  # last epoch seen by on_epoch_end
        self._last_written = None  # last step written

    # -- what is drawn ------------------------------------------------------

    def prior_noise(self, latent_dim):
        """The fixed eps ~ N(0, I), `(num_samples, latent_dim)` float32, drawn once."""
        if self._noise is None or self._noise.shape[1] != latent_dim:
            self._noise = prior_noise(self.num_samples, latent_dim, self.seed)
        return self._noise

    def latent_statistics(self):
        """Encodes `images` once: the module-level `latent_statistics` of the model."""
        return latent_statistics(self.model, self.images, self.max_traversal_dims)

    def summary_images(self, stats=None):
        """All image grids, `{tag: (height, width, C) float32 in [0, 1]}` (`image_grids`).

        One `encode` (unless `stats` from `latent_statistics` is given) and
        one batched `decode` of every code the grids need.
        """
        stats = self.latent_statistics() if stats is None else stats
        return image_grids(
            self.model,
            self.images,
            stats,
            noise=self.prior_noise(stats["mean"].shape[1]),
            pairs=self.pairs,
            temperatures=self.temperatures,
            num_reconstructions=self.num_reconstructions,
            interpolation_steps=self.interpolation_steps,
            traversal_steps=self.traversal_steps,
            traversal_range=self.traversal_range,
            traversal_index=self.traversal_index,
            manifold_size=self.manifold_size,
            columns=self.columns,
            pad=self.pad,
            pad_value=self.pad_value,
            decode_batch_size=self.decode_batch_size,
        )

    # -- writing ------------------------------------------------------------

    def _descriptions(self, stats):
        dims = ", ".join(str(d) for d in stats["traversal_dims"])
        temps = ", ".join(f"{t:g}" for t in self.temperatures)
        pairs = len(self.pairs)
        return {
            "images/reconstructions": "Rows alternate: held-out inputs, their reconstructions "
            "(decoded posterior means).",
            "images/samples": f"Decoded prior samples z = t * eps, fixed eps; one row block "
            f"per temperature t = {temps}, top to bottom.",
            "images/interpolation": f"{pairs} held-out pairs: {pairs} linear rows, then "
            f"{pairs} slerp rows, between posterior means.",
            "images/traversal": f"Rows: latent dimensions {dims} (by decreasing KL), each "
            f"set to linspace(-{self.traversal_range:g}, {self.traversal_range:g}, "
            f"{self.traversal_steps}) around the code of held-out image "
            f"{self.traversal_index}.",
            "images/traversal_origin": f"Rows: latent dimensions {dims} (by decreasing KL), "
            "traversed around z = 0.",
            "images/manifold": f"{self.manifold_size} x {self.manifold_size} codes at "
            "Gaussian quantiles; z1 grows to the right, z2 upwards.",
        }

    def write(self, step):
        """Computes and writes every summary at `step`; flushes the event file."""
        if not self.chief:
            return
        try:
            stats = self.latent_statistics()
        except DivergedModelError:
            # The run's NonFiniteGuard is about to stop it; its pictures
            # would say nothing.
            logging.warning(
                "Epoch %d: the posterior of the held-out images is not finite; "
                "no image summaries written.",
                step + 1,
            )
            return
        images = self.summary_images(stats)
        descriptions = self._descriptions(stats)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            for tag, grid in images.items():
                # (1, height, width, C) float32 in [0, 1]; encoded as one PNG.
                tf.summary.image(tag, grid[None], max_outputs=1, description=descriptions[tag])
            kl_per_dim = stats["kl_per_dim"]  # (D,)
            tf.summary.histogram(
                "latent/kl_per_dim",
                kl_per_dim,
                description="Mean KL(q(z_d|x) || p(z_d)) of each latent dimension over the "
                "held-out batch, nats.",
            )
            if kl_per_dim.shape[0] <= MAX_KL_SCALARS:
                digits = max(2, len(str(kl_per_dim.shape[0] - 1)))
                for d, value in enumerate(kl_per_dim):
                    tf.summary.scalar(f"latent/kl_dim_{d:0{digits}d}", value)
            tf.summary.scalar(
                "latent/active_units",
                stats["active_units"],
                description="Units whose posterior mean varies over the held-out batch "
                "(variance > 0.01, Burda et al. 2015); an estimate from that batch.",
            )
        self._writer.flush()
        self._last_written = step

    # -- Keras hooks --------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if (epoch + 1) % self.every == 0:
            self.write(epoch)

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._last_written != self._last_epoch:
            self.write(self._last_epoch)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
