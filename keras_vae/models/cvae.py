"""The conditional VAE: a label y enters the encoder and the decoder.

Sohn, Lee & Yan 2015 (the conditional generative model of their eq. 4-5, with
the prior p(z) = N(0, I) of Kingma et al. 2014's M2 rather than a learned
p(z|y)): per example, in nats,

    loss = -log p(x|z, y) + beta * KL(q(z|x, y) || N(0, I)),   z ~ q(z|x, y)

so the code is free to hold what the label does not say (style, position,
size), and `sample(n, labels=y)` generates the chosen class. The bound is on
the conditional log-likelihood log p(x|y): ELBO, IWAE and bits/dim are
comparable between cvae runs, and are not lower bounds on an unconditional
model's log p(x).

    import keras_vae
    enc = keras_vae.build_encoder((64, 64, 1), 10, condition_size=3)
    dec = keras_vae.build_decoder((64, 64, 1), 10, condition_size=3)
    model = keras_vae.models.CVAE(enc, dec, condition_size=3)
    model.fit(images_and_labels)                  # a dataset of (images, class ids)
    model.sample(8, labels=[2] * 8)               # eight hearts on shapes
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vae.models.vae import VAE


@keras.saving.register_keras_serializable(package="keras_vae")
class CVAE(VAE):
    """A VAE whose encoder and decoder take a condition vector c(y).

    Labels are class ids `(batch,)` (int; c = one-hot of `condition_size`
    classes) or, with `multi_hot=True`, binary attribute vectors
    `(batch, condition_size)` (c = the vector itself, e.g. CelebA's 40
    attributes). Every public method takes them as `labels=`; `fit` and
    `evaluate` take `(images, labels)` batches.

    Args:
        encoder: `keras.Model` `[images, condition]` -> `[mean, log_var]`
            (`keras_vae.build_encoder(..., condition_size=K)`).
        decoder: `keras.Model` `[z, condition]` -> likelihood parameters
            (`keras_vae.build_decoder(..., condition_size=K)`).
        condition_size: K, classes (one-hot) or attributes (multi-hot).
        multi_hot: labels are attribute vectors instead of class ids.
        **kwargs: `VAE` arguments (`likelihood`, `beta`, schedules, `seed`, ...).

    Input shape (`call`):
        `(images, labels)`: images `(batch, H, W, C)` in [0, 1], labels as above.

    Reference:
        Sohn, Lee & Yan, "Learning Structured Output Representation using Deep
        Conditional Generative Models", NeurIPS 2015; Kingma, Rezende, Mohamed
        & Welling, "Semi-Supervised Learning with Deep Generative Models",
        NeurIPS 2014.
    """

    conditional = True

    def __init__(self, encoder, decoder, condition_size, multi_hot=False, **kwargs):
        if isinstance(condition_size, bool) or not isinstance(condition_size, int):
            raise ValueError(
                f"Expected `condition_size` a positive int. Received: {condition_size!r}"
            )
        for network, what in ((encoder, "encoder"), (decoder, "decoder")):
            sizes = [tuple(t.shape) for t in network.inputs]
            if len(sizes) != 2 or sizes[1][-1] != condition_size:
                raise ValueError(
                    f"Expected a conditional {what} with a second input, the condition "
                    f"(batch, {condition_size}). Received: inputs {sizes}; build it with "
                    f"build_{what}(..., condition_size={condition_size})."
                )
        super().__init__(encoder, decoder, **kwargs)
        self.condition_size = condition_size
        self.multi_hot = bool(multi_hot)

    @classmethod
    def config_options(cls, config, dataset_size=None):
        """`condition_size` and `multi_hot` from `config.condition` (`CONDITIONS`)."""
        size, multi_hot = config.condition_spec
        return {"condition_size": size, "multi_hot": multi_hot}

    def condition(self, labels):
        """The condition vectors c(y), float32 `(batch, condition_size)`.

        Args:
            labels: class ids `(batch,)` in [0, condition_size), or with
                `multi_hot` 0/1 vectors `(batch, condition_size)`.
        """
        if labels is None:
            raise ValueError(
                "Expected `labels`: a conditional VAE needs the label of every image and code "
                "(class ids, or attribute vectors with multi_hot=True). Received: labels=None"
            )
        labels = ops.convert_to_tensor(labels)
        if self.multi_hot:
            if len(labels.shape) != 2 or labels.shape[-1] != self.condition_size:
                raise ValueError(
                    f"Expected attribute vectors of shape (batch, {self.condition_size}). "
                    f"Received: labels of shape {tuple(labels.shape)}"
                )
            return ops.cast(labels, "float32")
        if len(labels.shape) != 1:
            raise ValueError(
                f"Expected class ids of shape (batch,). Received: labels of shape "
                f"{tuple(labels.shape)}"
            )
        return ops.one_hot(ops.cast(labels, "int32"), self.condition_size, dtype="float32")

    def class_labels(self, n):
        """Labels cycling through the classes, 0, 1, ..., K-1, 0, ... (`(n,)`
        int32); with `multi_hot`, `(n, K)` zeros (no attribute)."""
        if self.multi_hot:
            return ops.zeros((n, self.condition_size), "int32")
        return ops.mod(ops.arange(n, dtype="int32"), self.condition_size)

    # -- where labels enter ----------------------------------------------------

    def _encoder_outputs(self, x, labels=None, training=False):
        return self.encoder([x, self.condition(labels)], training=training)

    def _decoder_outputs(self, z, labels=None, training=False):
        z = ops.convert_to_tensor(z)
        condition = ops.cast(self.condition(labels), z.dtype)
        # `log_weights` decodes K codes per image in one call, sample-major:
        # the labels of the batch repeat for each block of `batch` codes.
        repeats = ops.shape(z)[0] // ops.shape(condition)[0]
        condition = ops.tile(condition, (repeats, 1))
        return self.decoder([z, condition], training=training)

    def _batch_terms(self, x, y, training):
        if y is None:
            raise ValueError(
                "Expected (images, labels) batches: a conditional VAE trains on the label of "
                "every image. Received: images only"
            )
        return self.compute_terms(x, training=training, labels=y)

    def call(self, inputs, training=None):
        images, labels = inputs
        mean, log_var = self._encoder_outputs(self._as_images(images), labels, training)
        z = self.sampling([mean, log_var], deterministic=not training)
        return self.likelihood_fn.mean(self._decoder_outputs(z, labels, training))

    def sample(self, n, temperature=1.0, seed=None, labels=None):
        """`n` images decoded from z ~ N(0, temperature^2 I) with `labels`
        (default `class_labels(n)`: the classes in turn); see `VAE.sample`."""
        return super().sample(
            n, temperature, seed, self.class_labels(n) if labels is None else labels
        )

    def get_config(self):
        return {
            **super().get_config(),
            "condition_size": self.condition_size,
            "multi_hot": self.multi_hot,
        }
