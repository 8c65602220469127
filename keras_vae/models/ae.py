"""The deterministic autoencoder: the VAE's networks and likelihood, no KL.

Objective, per example, averaged over the batch, in nats:

    loss = reconstruction = -log p(x | z),   z = mean(x)   (no sampling, no KL)

It is the VAE's baseline: the same encoder (its `log_var` head is ignored),
decoder and likelihood, trained without the prior. So its codes go wherever
reconstruction wants them, and `sample`, which still decodes z ~ N(0, I),
decodes codes the decoder never saw: the comparison that shows why the VAE
has a KL term (`evaluate.py --compare runs/ae runs/vae`, `compare_prior.png`).

What it logs: `loss` and `reconstruction` (both the reconstruction NLL above,
nats per example; `loss` is kept under Keras' own key for `val_loss`
monitors) and `skipped_steps`. There is no `kl`, `elbo` or `beta`: an
autoencoder has no posterior distribution, so no KL to its prior (the KL of
a point mass to N(0, I) would be infinite, and a logged 0 would claim the
codes fit the prior), and no ELBO; its reconstruction error bounds no
likelihood. `bounds_likelihood = False` tells evaluation to report the
reconstruction and the codes instead of ELBO, IWAE and bits/dim; `elbo` and
`log_weights` raise. `encode` still returns the encoder's `(mean, log_var)`
pair, as for every variant (and the SavedModel's `encode`), but that
`log_var` is an untrained head's output and means nothing here.
"""

from __future__ import annotations

import warnings

import keras
from absl import logging
from keras import ops

from keras_vae.models.vae import VAE

_NO_DENSITY = (
    "{cls}.{method}: a deterministic autoencoder defines no density p(x) (its code is a "
    "point, not a distribution q(z|x) against a prior), so it has no ELBO or importance "
    "weights, and its reconstruction error -log p(x|z) is not a likelihood bound "
    "(bounds_likelihood is False). Use compute_terms(x)['log_px'] for the reconstruction, "
    "or a VAE variant for likelihoods."
)

# The log_var head of `build_encoder` gets no gradient by design; Keras would
# warn at every trace that "Gradients do not exist for variables
# ['raw_log_var/kernel', 'raw_log_var/bias']" and ask whether a `loss` is
# missing. Only that exact message is silenced (a VAE's head always has a
# gradient; another encoder's unused variables are still reported).
warnings.filterwarnings(
    "ignore",
    message=r"Gradients do not exist for variables \['raw_log_var/\w+', 'raw_log_var/\w+'\]",
    category=UserWarning,
)


@keras.saving.register_keras_serializable(package="keras_vae")
class AE(VAE):
    """Deterministic autoencoder with the `VAE`'s networks and likelihood.

    z = the encoder's mean; the loss is -log p(x|z) under `likelihood`, with
    no KL and no noise, so training is a deterministic function of the
    weights and the batch. `sample` decodes z ~ N(0, temperature^2 I) like
    the VAE's, although nothing made the codes look like N(0, I).

    Args:
        encoder: `keras.Model` images -> `[mean, log_var]` (see
            `keras_vae.build_encoder`); `log_var` is not used, so its head
            gets no gradient and keeps its initial weights.
        decoder: `keras.Model` z -> likelihood parameters, as for `VAE`.
        likelihood: as for `VAE`.
        **kwargs: the other `VAE` arguments (`gaussian_sigma`, `seed`, ...).
            The KL settings (`beta`, `beta_schedule`, `warmup_steps`,
            `cycle_steps`, `cycle_ratio`, `free_bits`) are kept (saved with
            the model, checked against `config.json`) but have no effect; a
            warning says so when one differs from the ELBO's.

    Input shape:
        `(batch, H, W, C)` float in [0, 1] (uint8 is accepted and divided by 255).

    Output shape (`call`):
        `(batch, H, W, C)` reconstructions in [0, 1], decode(mean(x)), in
        training too.

    Reference:
        Hinton & Salakhutdinov, "Reducing the Dimensionality of Data with
        Neural Networks", Science 2006; the likelihood view of the loss as in
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014.
    """

    bounds_likelihood = False

    def __init__(self, encoder, decoder, likelihood="bernoulli", **kwargs):
        super().__init__(encoder, decoder, likelihood=likelihood, **kwargs)
        unused = {
            name: value
            for name, value, default in (
                ("beta", self.beta, 1.0),
                ("beta_schedule", self.beta_schedule, "constant"),
                ("free_bits", self.free_bits, 0.0),
            )
            if value != default
        }
        if unused:
            logging.warning(
                "The autoencoder (ae) has no KL term: %s have no effect on it.",
                ", ".join(f"{k}={v!r}" for k, v in unused.items()),
            )

    @property
    def metrics(self):
        # Tracker names equal the log keys (see `VAE.metrics`); no kl, elbo, beta.
        return [self.loss_tracker, self.reconstruction_tracker, self.skipped_tracker]

    # -- maths --------------------------------------------------------------

    def compute_terms(self, x, training=False, eps=None, labels=None):
        """Runs the encoder and the decoder on z = mean (no sampling).

        Args:
            x: `(batch, H, W, C)` images.
            training: passed to the sub-models.
            eps: ignored (accepted for the `VAE` signature): there is no noise.
            labels: a conditional model's labels; else None.

        Returns:
            dict with `log_px (batch,)`, `mean`, `log_var`, `z` (= `mean`)
            `(batch, latent_dim)` and `params` (decoder output). No
            `kl_per_dim`: there is no KL.
        """
        x = self._as_images(x)
        mean, log_var = self._encoder_outputs(x, labels, training)
        params = self._decoder_outputs(mean, labels, training)
        return {
            "log_px": self.likelihood_fn.log_prob(x, params),
            "mean": mean,
            "log_var": log_var,
            "z": mean,
            "params": params,
        }

    def objective(self, terms, beta):
        """`(loss, logs)`: loss = mean(-log p(x|z)) = `logs["reconstruction"]`;
        `beta` is ignored (no KL)."""
        reconstruction = -ops.mean(terms["log_px"])
        return reconstruction, {"reconstruction": reconstruction}

    def _update_trackers(self, x, loss, logs, beta, finite=True):
        # As `VAE._update_trackers`, for the trackers of `metrics` only.
        weight = ops.cast(ops.shape(x)[0], "float32") * ops.cast(finite, "float32")
        for tracker, value in (
            (self.loss_tracker, loss),
            (self.reconstruction_tracker, logs["reconstruction"]),
        ):
            value = ops.cast(value, "float32")
            tracker.update_state(ops.where(finite, value, 0.0), sample_weight=weight)
        self.skipped_tracker.update_state(self.skipped_steps)
        return {m.name: m.result() for m in self.metrics}

    def call(self, inputs, training=None):
        mean, _ = self._encoder_outputs(self._as_images(inputs), training=training)
        return self.likelihood_fn.mean(self._decoder_outputs(mean, training=training))

    # -- inference API ------------------------------------------------------

    def reconstruct(self, images, sample_latent=False, labels=None):
        """decode(mean(x)); `sample_latent=True` raises (there is no posterior)."""
        if sample_latent:
            raise ValueError(
                "Expected sample_latent=False: the autoencoder's code is a point, there is "
                "no posterior q(z|x) to sample. Received: sample_latent=True"
            )
        mean, _ = self.encode(images, labels)
        return self.decode(mean, labels)

    def elbo(self, images, num_samples=1, labels=None):
        """Raises `NotImplementedError`: an autoencoder has no ELBO."""
        raise NotImplementedError(_NO_DENSITY.format(cls=type(self).__name__, method="elbo"))

    def log_weights(self, images, k, seed=None, eps=None, labels=None):
        """Raises `NotImplementedError`: an autoencoder has no importance weights."""
        raise NotImplementedError(
            _NO_DENSITY.format(cls=type(self).__name__, method="log_weights")
        )
