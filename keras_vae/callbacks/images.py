"""`LatentSummaries`: TensorBoard image summaries of the latent space.

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
| `images/samples_per_class` | conditional models: a row per class, the same z per column |
| `latent/kl_per_dim` | histogram of the mean KL of each dimension, nats |
| `latent/kl_dim_XX` | the same per dimension as scalars (latent_dim <= 32 only) |
| `latent/active_units` | number of active units (Burda et al. 2015) |

The grids are built by `keras_vae.latent_grids`, which `evaluate.py` uses
as well: its PNG files are the same pictures. A conditional model (cvae)
decodes each grid with labels, which each tag's description names.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_vae.latent_grids import (
    DivergedModelError,
    check_int,
    choose_pairs,
    class_rows,
    describe_class_rows,
    image_grids,
    latent_statistics,
    prior_noise,
)

# Above this many latent dimensions the per-dimension KL is only written as
# the `latent/kl_per_dim` histogram, not as one scalar card per dimension.
MAX_KL_SCALARS = 32


class EpochSummaries(keras.callbacks.Callback):
    """When summaries are written: after every `every`-th epoch (at step = the
    epoch index) and once more at the end of training if the last epoch was
    not written. A subclass sets `every` and implements `write(step)`, which
    records `_last_written`; the event file writer `_writer` is closed at the end."""

    _writer = None
    _last_epoch = None  # last epoch seen by on_epoch_end
    _last_written = None  # last step written

    def write(self, step):
        raise NotImplementedError

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


class LatentSummaries(EpochSummaries):
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
    informative ones (largest mean KL over `images`, `walks.order_by_kl`);
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
        condition: a conditional model's labels of `images` (`model.conditional`,
            the cvae): `(N,)` class ids or `(N, K)` 0/1 attribute vectors;
            None for an unconditional model (which ignores it).
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
        max_classes: most rows of `images/samples_per_class` (`class_rows`).
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
        condition=None,
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
        max_classes=10,
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
        if condition is not None:
            condition = np.asarray(condition)  # (N,) class ids or (N, K) attributes
            if condition.ndim not in (1, 2) or condition.shape[0] != len(images):
                raise ValueError(
                    f"Expected `condition` of shape ({len(images)},) (class ids) or "
                    f"({len(images)}, K) (attribute vectors), a label per image. "
                    f"Received: condition.shape={condition.shape}"
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
        self.condition = condition
        self.every = check_int("every", every, 1)
        self.num_reconstructions = check_int("num_reconstructions", num_reconstructions, 1)
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.temperatures = temperatures
        self.num_pairs = check_int("num_pairs", num_pairs, 1)
        self.interpolation_steps = check_int("interpolation_steps", interpolation_steps, 2)
        self.traversal_steps = check_int("traversal_steps", traversal_steps, 2)
        self.traversal_range = float(traversal_range)
        self.max_traversal_dims = check_int("max_traversal_dims", max_traversal_dims, 1)
        self.traversal_index = check_int("traversal_index", traversal_index, 0)
        if self.traversal_index >= images.shape[0]:
            raise ValueError(
                f"Expected `traversal_index` < {images.shape[0]} (the number of images). "
                f"Received: traversal_index={traversal_index!r}"
            )
        self.manifold_size = check_int("manifold_size", manifold_size, 2)
        self.columns = check_int("columns", columns, 1)
        self.pad = check_int("pad", pad, 0)
        self.pad_value = float(pad_value)
        self.decode_batch_size = check_int("decode_batch_size", decode_batch_size, 1)
        self.max_classes = check_int("max_classes", max_classes, 1)
        self.seed = seed
        self.chief = bool(chief)
        self.pairs = choose_pairs(images.shape[0], self.num_pairs, labels)  # (P, 2)
        self._noise = None  # (num_samples, D), drawn on first use (D is the model's)

    def set_model(self, model):
        # Fails at the start of `fit`, not after the first epoch.
        if model.conditional and self.condition is None:
            raise ValueError(
                "Expected `condition`, the labels of `images`: a conditional model decodes "
                "every code with a label. Received: condition=None"
            )
        super().set_model(model)

    # -- what is drawn ------------------------------------------------------

    def _condition(self):
        """The labels of `images` for the model: None unless it is conditional."""
        return self.condition if self.model.conditional else None

    def prior_noise(self, latent_dim):
        """The fixed eps ~ N(0, I), `(num_samples, latent_dim)` float32, drawn once."""
        if self._noise is None or self._noise.shape[1] != latent_dim:
            self._noise = prior_noise(self.num_samples, latent_dim, self.seed)
        return self._noise

    def latent_statistics(self):
        """Encodes `images` once: the module-level `latent_statistics` of the model."""
        return latent_statistics(
            self.model, self.images, self.max_traversal_dims, labels=self._condition()
        )

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
            condition=self._condition(),
            max_classes=self.max_classes,
        )

    # -- writing ------------------------------------------------------------

    def _descriptions(self, stats):
        dims = ", ".join(str(d) for d in stats["traversal_dims"])
        rank = "KL" if stats["kl_per_dim"] is not None else "code variance"
        temps = ", ".join(f"{t:g}" for t in self.temperatures)
        pairs = len(self.pairs)
        out = {
            "images/reconstructions": "Rows alternate: held-out inputs, their reconstructions "
            "(decoded posterior means).",
            "images/samples": f"Decoded prior samples z = t * eps, fixed eps; one row block "
            f"per temperature t = {temps}, top to bottom.",
            "images/interpolation": f"{pairs} held-out pairs: {pairs} linear rows, then "
            f"{pairs} slerp rows, between posterior means.",
            "images/traversal": f"Rows: latent dimensions {dims} (by decreasing {rank}), each "
            f"set to linspace(-{self.traversal_range:g}, {self.traversal_range:g}, "
            f"{self.traversal_steps}) around the code of held-out image "
            f"{self.traversal_index}.",
            "images/traversal_origin": f"Rows: latent dimensions {dims} (by decreasing {rank}), "
            "traversed around z = 0.",
            "images/manifold": f"{self.manifold_size} x {self.manifold_size} codes at "
            "Gaussian quantiles; z1 grows to the right, z2 upwards.",
        }
        if self.model.conditional:
            self._describe_labels(out)
        return out

    def _describe_labels(self, out):
        """Adds to `out` which labels a conditional model's grids are decoded with."""
        multi_hot = getattr(self.model, "multi_hot", False)
        first = "no attribute (all-zero vector)" if multi_hot else "the first class (0)"
        for tag, labels in (
            ("images/reconstructions", "each image's own label"),
            ("images/samples", first if multi_hot else "the classes in turn, 0, 1, 2, ..."),
            ("images/interpolation", "the label of each row's start (left) image"),
            ("images/traversal", f"the label of held-out image {self.traversal_index}"),
            ("images/traversal_origin", first),
            ("images/manifold", first),
        ):
            out[tag] += f" Decoded with {labels}."
        rows = describe_class_rows(self.model, class_rows(self.model, self.max_classes)[1])
        out["images/samples_per_class"] = (
            f"Rows: {rows}. Columns: the first {min(self.columns, self.num_samples)} fixed prior "
            "samples (t = 1), the same z in every row: one code rendered as each row's label."
        )

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
            kl_per_dim = stats["kl_per_dim"]  # (D,), None without a posterior (AE)
            if kl_per_dim is not None:
                tf.summary.histogram(
                    "latent/kl_per_dim",
                    kl_per_dim,
                    description="Mean KL(q(z_d|x) || p(z_d)) of each latent dimension over "
                    "the held-out batch, nats.",
                )
            if kl_per_dim is not None and kl_per_dim.shape[0] <= MAX_KL_SCALARS:
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
