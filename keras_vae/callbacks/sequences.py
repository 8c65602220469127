"""`SequenceSummaries`: what a sequence VAE shows of itself in TensorBoard.

The sequence model's counterpart of `LatentSummaries`, on a fixed batch of
held-out sequences and fixed prior noise (`keras_vae.sequence_views`):

| tag | strokes (Images) | text (Text) |
| --- | --- | --- |
| `sequences/reconstructions` | rows alternate: held-out drawings, their greedy reconstructions | a table: held-out sequence, its greedy reconstruction |
| `sequences/samples` | greedy decodings of prior samples | the same, as numbered lines |
| `sequences/homotopy` | decodings on the line between two held-out codes (Bowman et al. Table 8) | the same, as numbered lines |
| `sequences/token_accuracy` | scalar: tokens the greedy reconstruction gets right | same |
| `latent/kl_per_dim`, `latent/active_units` | as for images | same |
"""  # noqa: E501

from __future__ import annotations

import numpy as np
import tensorflow as tf
from absl import logging

from keras_vae import sequence_views
from keras_vae.callbacks.images import EpochSummaries
from keras_vae.latent_grids import DivergedModelError, latent_statistics, prior_noise

DESCRIPTIONS = {
    "sequences/reconstructions": "Held-out sequences and their greedy reconstructions "
    "(decoded from the posterior mean).",
    "sequences/samples": "Greedy decodings of fixed prior samples z ~ N(0, I).",
    "sequences/homotopy": "Greedy decodings of codes on the line between the posterior means "
    "of two held-out sequences (of the first 8, the two whose codes lie farthest apart), "
    "first to last (Bowman et al. 2016, Table 8).",
}


class SequenceSummaries(EpochSummaries):
    """Writes a sequence VAE's reconstructions, samples and homotopy to TensorBoard.

    Every `every` epochs and at the end of training (at step = the epoch
    index, as `LatentSummaries`); strokes as image grids, text as markdown.

    Args:
        log_dir: directory of the event file (`workdir/tensorboard/validation`).
        sequences: `(N, T)` held-out token ids, N >= 2 (the first 8 are
            reconstructed; 0 and 1 are the homotopy's ends).
        every: write after every `every`-th epoch, >= 1.
        num_samples: prior samples decoded.
        seed: seed of the fixed prior noise.
        chief: only the chief writes; False makes the callback a no-op.
    """

    def __init__(self, log_dir, sequences, every=1, num_samples=8, seed=0, chief=True):
        super().__init__()
        sequences = np.asarray(sequences)
        if sequences.ndim != 2 or sequences.shape[0] < 2:
            raise ValueError(
                f"Expected `sequences` (N, T) with N >= 2. Received: shape {sequences.shape}"
            )
        if every < 1:
            raise ValueError(f"Expected `every` >= 1. Received: every={every!r}")
        self.log_dir = log_dir
        self.sequences = sequences[:8]
        self.statistics_sequences = sequences
        self.every = int(every)
        self.num_samples = int(num_samples)
        self.seed = seed
        self.chief = bool(chief)

    def write(self, step):
        """Computes and writes every summary at `step`; flushes the event file."""
        if not self.chief:
            return
        model = self.model
        try:
            stats = latent_statistics(model, self.statistics_sequences)
        except DivergedModelError:
            logging.warning("Epoch %d: the posterior is not finite; no summaries.", step + 1)
            return
        noise = prior_noise(self.num_samples, model.latent_dim, self.seed)
        view = sequence_views.views(model, self.sequences, noise)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            if sequence_views.is_drawing(model):
                for name, grid in sequence_views.pictures(view).items():
                    tag = f"sequences/{name}"
                    tf.summary.image(tag, grid[None], max_outputs=1, description=DESCRIPTIONS[tag])
            else:
                for name, markdown in sequence_views.texts(model, view).items():
                    tag = f"sequences/{name}"
                    tf.summary.text(tag, markdown, description=DESCRIPTIONS[tag])
            tf.summary.scalar(
                "sequences/token_accuracy",
                sequence_views.token_accuracy(view["inputs"], view["reconstructions"]),
                description="Fraction of the held-out tokens (end token included) the greedy "
                "reconstruction has at the same position.",
            )
            tf.summary.histogram(
                "latent/kl_per_dim", stats["kl_per_dim"],
                description="Mean KL of each latent dimension over the held-out batch, nats.",
            )
            tf.summary.scalar("latent/active_units", stats["active_units"])
        self._writer.flush()
        self._last_written = step
