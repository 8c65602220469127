"""The Variational Autoencoder: a `keras.Model` with its own `train_step`.

Objective (Kingma & Welling 2014; Higgins et al. 2017 for beta), per example,
averaged over the batch, in nats:

    loss = -log p(x|z) + beta * KL(q(z|x) || N(0, I)),   z ~ q(z|x)
    elbo = log p(x|z) - KL                                (beta = 1; logged)

with beta following a schedule (constant, linear warm-up, cyclical) and,
optionally, free bits per latent dimension (Kingma et al. 2016).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae.layers import Sampling
from keras_vae.models import importance
from keras_vae.models.loss_scaling import LossScaling
from keras_vae.models.run_state import RunState
from keras_vae.models.schedules import BETA_SCHEDULES, LastValue, beta_at


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(RunState, LossScaling, keras.Model):
    """Variational Autoencoder with a beta-weighted, annealed, free-bits KL term.

    Args:
        encoder: `keras.Model` images `(batch, H, W, C)` -> `[mean, log_var]`,
            see `keras_vae.build_encoder`.
        decoder: `keras.Model` `z` -> likelihood parameters, see
            `keras_vae.build_decoder` (built for the same `likelihood`).
        likelihood: `bernoulli`, `gaussian`, `gaussian_learned` or
            `discretized_logistic`.
        beta: float >= 0, the KL weight (beta-VAE; 1 for the ELBO).
        beta_schedule: `constant`, `linear` or `cyclical`, see `beta_at`.
        warmup_steps: steps of the linear warm-up.
        cycle_steps: steps per cycle of the cyclical schedule.
        cycle_ratio: fraction of a cycle spent rising, in (0, 1].
        free_bits: nats per latent dimension below which the KL is not
            penalised (0 disables); applied to the batch-averaged KL of each
            dimension, as in Kingma et al. 2016 (the global batch's average
            under tf.distribute, so N replicas clamp what one device would).
        gaussian_sigma: the fixed standard deviation of the `gaussian`
            likelihood, in [0, 1] pixel units.
        seed: int or None; seeds the posterior sampling and prior sampling.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Input shape:
        `(batch, H, W, C)` float in [0, 1] (uint8 is accepted and divided by 255).

    Output shape (`call`):
        `(batch, H, W, C)` reconstructions in [0, 1]: the decoded posterior
        mean at inference, a decoded posterior sample when `training=True`.

    Reference:
        Kingma & Welling, "Auto-Encoding Variational Bayes", ICLR 2014;
        Higgins et al., "beta-VAE", ICLR 2017; Fu et al., "Cyclical Annealing
        Schedule", NAACL 2019; Kingma et al., "Improved Variational Inference
        with Inverse Autoregressive Flow", NeurIPS 2016 (free bits).
    """

    # `elbo` and `log_weights` bound log p(x): evaluation reports ELBO, IWAE and
    # bits/dim only then (the deterministic autoencoder sets it False).
    bounds_likelihood = True
    # A conditional model (`CVAE`) takes `labels` with its images and codes;
    # callers pass `labels=` to the public methods only when this is True.
    conditional = False
    # A sequence model (`SequenceVAE`) takes token ids `(batch, T)`, not images.
    is_sequence = False

    def __init__(
        self,
        encoder,
        decoder,
        likelihood="bernoulli",
        beta=1.0,
        beta_schedule="constant",
        warmup_steps=0,
        cycle_steps=0,
        cycle_ratio=0.5,
        free_bits=0.0,
        gaussian_sigma=0.1,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(beta, (int, float)) or beta < 0:
            raise ValueError(f"Expected `beta` >= 0. Received: beta={beta!r}")
        if beta_schedule not in BETA_SCHEDULES:
            raise ValueError(
                f"Expected `beta_schedule` in {BETA_SCHEDULES}. "
                f"Received: beta_schedule={beta_schedule!r}"
            )
        if beta_schedule == "cyclical" and cycle_steps <= 0:
            raise ValueError(
                "Expected `cycle_steps` > 0 with beta_schedule='cyclical'. "
                f"Received: cycle_steps={cycle_steps!r}"
            )
        if not 0 < cycle_ratio <= 1:
            raise ValueError(
                f"Expected `cycle_ratio` in (0, 1]. Received: cycle_ratio={cycle_ratio!r}"
            )
        if free_bits < 0:
            raise ValueError(f"Expected `free_bits` >= 0. Received: free_bits={free_bits!r}")
        if warmup_steps < 0:
            raise ValueError(
                f"Expected `warmup_steps` >= 0. Received: warmup_steps={warmup_steps!r}"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.likelihood = likelihood
        self.beta = float(beta)
        self.beta_schedule = beta_schedule
        self.warmup_steps = int(warmup_steps)
        self.cycle_steps = int(cycle_steps)
        self.cycle_ratio = float(cycle_ratio)
        self.free_bits = float(free_bits)
        self.gaussian_sigma = float(gaussian_sigma)
        self.seed = seed
        self.likelihood_fn = likelihoods_lib.get(likelihood, sigma=self.gaussian_sigma)
        self._check_decoder()
        self.sampling = Sampling(seed=seed, dtype="float32", name="sampling")
        # A second stream for prior samples, so `sample` does not shift the
        # posterior draws of training.
        self.prior_seed_generator = keras.random.SeedGenerator(
            None if seed is None else seed + 1, name="prior_seed_generator"
        )
        # Training steps taken, for the beta schedule; saved with the model.
        self.kl_step = self._counter("kl_step")
        # Updates skipped because the loss or a gradient was not finite
        # (the LossScaleOptimizer that `compile` installs skips them), in
        # all and in a row; saved with the model.
        self.skipped_steps = self._counter("skipped_steps")
        self.consecutive_skips = self._counter("consecutive_skips")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.elbo_tracker = keras.metrics.Mean(name="elbo")
        self.beta_tracker = LastValue(name="beta")
        self.skipped_tracker = LastValue(name="skipped_steps")
        self.built = True

    def _counter(self, name):
        """An int64 scalar weight, not trained, saved with the model."""
        return self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False,
            aggregation="only_first_replica", name=name,
        )

    def _check_decoder(self):
        """Raises ValueError when the decoder's output does not fit the likelihood."""
        channels = self.image_shape[-1]
        expected = self.likelihood_fn.num_params * channels
        if self.decoder.output_shape[-1] != expected:
            raise ValueError(
                f"Expected a decoder with {expected} output channels for likelihood "
                f"{self.likelihood!r} and {channels} image channels. Received: decoder "
                f"output shape {self.decoder.output_shape}; build it with "
                f"build_decoder(..., likelihood={self.likelihood!r})."
            )

    @property
    def latent_dim(self):
        return self.encoder.output_shape[0][-1]

    @property
    def image_shape(self):
        return tuple(self.encoder.inputs[0].shape[1:])

    @property
    def network_parameters(self):
        """Trained weights of the encoder and decoder (a variant's own, e.g. a flow's, apart)."""
        return self.encoder.count_params() + self.decoder.count_params()

    @property
    def metrics(self):
        # Tracker names equal the log keys: with a mismatch (the keras.io
        # example's), Keras' epoch-end logs silently fall back to the last
        # batch's values instead of the epoch's means.
        return [
            self.loss_tracker,
            self.reconstruction_tracker,
            self.kl_tracker,
            self.elbo_tracker,
            self.beta_tracker,
            self.skipped_tracker,
        ]

    # -- maths --------------------------------------------------------------

    @staticmethod
    def _as_images(x):
        x = ops.convert_to_tensor(x)
        if x.dtype == "uint8":
            return ops.cast(x, "float32") / 255.0
        return x

    def current_beta(self):
        """The KL weight of the next training step (float32 scalar)."""
        return beta_at(
            self.kl_step,
            self.beta,
            self.beta_schedule,
            self.warmup_steps,
            self.cycle_steps,
            self.cycle_ratio,
        )

    def _encoder_outputs(self, x, labels=None, training=False):
        """`[mean, log_var]` of q(z|x): the one place images enter the encoder
        (a conditional model adds its labels here)."""
        return self.encoder(x, training=training)

    def _decoder_outputs(self, z, labels=None, training=False):
        """The likelihood's parameters for codes `z` `(n, latent_dim)`: the one
        place codes enter the decoder (a conditional model adds its labels)."""
        return self.decoder(z, training=training)

    def _likelihood_params(self, x, z, labels=None, training=False):
        """The parameters of p(x|z) that score `x`: the decoder's output for `z`
        (a sequence model also feeds it `x`'s prefix, teacher forcing)."""
        return self._decoder_outputs(z, labels, training)

    def _batch_terms(self, x, y, training):
        """`compute_terms` of a batch `(x, y)` as `fit` hands it over; `y`
        (labels) is used by conditional models only."""
        return self.compute_terms(x, training=training)

    def compute_terms(self, x, training=False, eps=None, labels=None):
        """Runs encoder, reparameterized sampling and decoder on a batch.

        Args:
            x: `(batch, H, W, C)` images.
            training: passed to the sub-models.
            eps: optional `(batch, latent_dim)` standard-normal noise; given,
                z = mean + exp(0.5 * log_var) * eps (for gradient checks and
                common random numbers); otherwise the `Sampling` layer draws it.
            labels: a conditional model's labels (`conditional`); else None.

        Returns:
            dict with `log_px (batch,)`, `kl_per_dim (batch, latent_dim)`,
            `mean`, `log_var`, `z` `(batch, latent_dim)`, `params` (decoder output).
        """
        x = self._as_images(x)
        mean, log_var = self._encoder_outputs(x, labels, training)
        if eps is None:
            z = self.sampling([mean, log_var])
        else:
            z = mean + ops.exp(0.5 * log_var) * ops.cast(eps, mean.dtype)
        params = self._likelihood_params(x, z, labels, training)
        return {
            "log_px": self.likelihood_fn.log_prob(x, params),
            "kl_per_dim": likelihoods_lib.gaussian_kl_per_dim(mean, log_var),
            "mean": mean,
            "log_var": log_var,
            "z": z,
            "params": params,
        }

    def objective(self, terms, beta):
        """Batch loss and logged values from `compute_terms`' output.

        The one place where per-example values are reduced over the batch.

        Returns:
            `(loss, logs)`: scalar loss = mean(-log p(x|z)) + beta * KL term,
            where the KL term is the mean KL, or with free bits
            sum_d max(free_bits, mean_batch KL_d), the batch mean taken from
            `terms["kl_batch_mean"]` `(latent_dim,)` when given (the global
            batch's, see `train_step`); `logs` holds the scalars
            `reconstruction` (mean -log p(x|z)), `kl` (mean KL, no free bits)
            and `elbo` (mean of log p(x|z) - KL).
        """
        reconstruction = -ops.mean(terms["log_px"])
        kl_per_example = ops.sum(terms["kl_per_dim"], axis=-1)
        kl = ops.mean(kl_per_example)
        if self.free_bits > 0:
            kl_mean = terms.get("kl_batch_mean")
            if kl_mean is None:
                kl_mean = ops.mean(terms["kl_per_dim"], axis=0)
            kl_term = ops.sum(ops.maximum(self.free_bits, kl_mean))
        else:
            kl_term = kl
        # beta is a float32 tensor in train_step; match a float64 model's KL.
        loss = reconstruction + ops.cast(beta, kl_term.dtype) * kl_term
        elbo = ops.mean(terms["log_px"] - kl_per_example)
        return loss, {"reconstruction": reconstruction, "kl": kl, "elbo": elbo}

    def _update_trackers(self, x, loss, logs, beta, finite=True):
        # Weighted by the batch size, so an epoch's value is the mean over
        # examples even with a smaller last batch; a skipped (non-finite)
        # step contributes nothing instead of a NaN.
        weight = ops.cast(ops.shape(x)[0], "float32") * ops.cast(finite, "float32")
        for tracker, value in (
            (self.loss_tracker, loss),
            (self.reconstruction_tracker, logs["reconstruction"]),
            (self.kl_tracker, logs["kl"]),
            (self.elbo_tracker, logs["elbo"]),
        ):
            value = ops.cast(value, "float32")
            tracker.update_state(ops.where(finite, value, 0.0), sample_weight=weight)
        self.beta_tracker.update_state(beta)
        self.skipped_tracker.update_state(self.skipped_steps)
        return {m.name: m.result() for m in self.metrics}

    @classmethod
    def config_options(cls, config, dataset_size=None):
        """Constructor arguments a variant takes from the run's `Config` (and the
        training split's size), beyond the `VAE`'s own: none for the VAE."""
        return {}

    # -- Keras training hooks ----------------------------------------------

    def _global_batch_terms(self, terms):
        """`terms` plus, with free bits, `kl_batch_mean` `(latent_dim,)`: the
        mean KL per dimension over the global batch, whose replicas' sums are
        all-reduced, so the clamp sees on N replicas what it sees on one (a
        clamp of each replica's own mean gave another update). The
        all-reduce's gradient is an all-reduce too: each replica's examples
        get the gradient the global mean gives them."""
        context = tf.distribute.get_replica_context()
        if self.free_bits <= 0 or context is None:  # None: cross-replica context
            return terms
        kl = terms["kl_per_dim"]  # (B, D), float32 (or a float64 model's)
        total, count = context.all_reduce(
            "sum", (tf.reduce_sum(kl, axis=0), tf.cast(tf.shape(kl)[0], kl.dtype))
        )
        return {**terms, "kl_batch_mean": total / count}

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = self._as_images(x)
        beta = self.current_beta()
        # The optimizer sums the replicas' gradients: dividing each replica's
        # batch mean by the replica count makes one global batch give the
        # same update on 1 or N replicas (DESIGN.md, "Distribution").
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self._global_batch_terms(self._batch_terms(x, y, training=True))
            loss, logs = self.objective(terms, beta)
            # Scale for the LossScaleOptimizer (see `compile`); `apply`
            # unscales and skips a step whose gradients are not finite.
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled_loss, self.trainable_weights)
        finite = self.apply_if_finite(loss, grads)
        skipped = tf.cast(tf.logical_not(finite), "int64")
        self.skipped_steps.assign_add(skipped)
        self.consecutive_skips.assign((self.consecutive_skips + skipped) * skipped)
        self.kl_step.assign_add(1)
        return self._update_trackers(x, loss, logs, beta, finite)

    def test_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x = self._as_images(x)
        beta = self.current_beta()
        terms = self._global_batch_terms(self._batch_terms(x, y, training=False))
        loss, logs = self.objective(terms, beta)
        return self._update_trackers(x, loss, logs, beta)

    def call(self, inputs, training=None):
        mean, log_var = self._encoder_outputs(self._as_images(inputs), training=training)
        z = self.sampling([mean, log_var], deterministic=not training)
        return self.likelihood_fn.mean(self._decoder_outputs(z, training=training))

    def build(self, input_shape=None):
        # Encoder and decoder are functional models, built on construction.
        self.built = True

    # The public methods below take `labels` for a conditional model
    # (`conditional`, e.g. `CVAE`: class ids `(batch,)` or attribute vectors
    # `(batch, K)`); an unconditional model ignores them.

    def encode(self, images, labels=None):
        """q(z|x) parameters: `(mean, log_var)`, each `(batch, latent_dim)`."""
        return self._encoder_outputs(self._as_images(images), labels)

    def decode(self, z, labels=None):
        """The mean of p(x|z) as images `(batch, H, W, C)` in [0, 1]."""
        return self.likelihood_fn.mean(self._decoder_outputs(z, labels))

    def sample(self, n, temperature=1.0, seed=None, labels=None):
        """`n` images decoded from z ~ N(0, temperature^2 I).

        Args:
            n: number of samples.
            temperature: scale of the prior noise (< 1 trades diversity for
                quality).
            seed: int for a reproducible draw; None uses the model's own
                prior seed generator (different at each call).
            labels: a conditional model's labels for the `n` samples.
        """
        seed = self.prior_seed_generator if seed is None else seed
        z = keras.random.normal((n, self.latent_dim), seed=seed) * temperature
        return self.decode(z, labels)

    def reconstruct(self, images, sample_latent=False, labels=None):
        """Decoded posterior mean (or, with `sample_latent`, a posterior sample)."""
        mean, log_var = self.encode(images, labels)
        z = self.sampling([mean, log_var], deterministic=not sample_latent)
        return self.decode(z, labels)

    def elbo(self, images, num_samples=1, labels=None):
        """Per-example ELBO in nats, `(batch,)`, averaged over `num_samples` draws of z."""
        total = 0.0
        for _ in range(num_samples):
            terms = self.compute_terms(images, training=False, labels=labels)
            total = total + terms["log_px"] - ops.sum(terms["kl_per_dim"], axis=-1)
        return total / num_samples

    def log_weights(self, images, k, seed=None, eps=None, labels=None):
        """Log importance weights, `(batch, k)`: log p(x, z_k) - log q(z_k|x).

        log w_k = log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x), z_k ~ q(z|x)
        (Burda et al. 2015, eq. 8; see `_importance_terms`); logmeanexp over k
        is the IWAE bound. A variant with another posterior or prior overrides it.

        Args:
            images: `(batch, H, W, C)` float in [0, 1], or uint8.
            k: importance samples per image.
            seed: int, None (the model's own sampling stream) or a
                `keras.random.SeedGenerator`.
            eps: optional `(k, batch, latent_dim)` standard-normal noise to
                use instead of drawing it (common random numbers, tests).
            labels: a conditional model's labels.

        Returns:
            `(batch, k)` float32 log-weights in nats.
        """
        x = self._as_images(images)
        mean, log_var = (ops.cast(t, "float32") for t in self.encode(x, labels))  # (B, D)
        if eps is None:
            seed = self.sampling.seed_generator if seed is None else seed
            eps = keras.random.normal((k,) + tuple(ops.shape(mean)), seed=seed)  # (K, B, D)
        eps = ops.cast(eps, "float32")
        log_w, *_ = self._importance_terms(x, mean, log_var, eps, labels=labels)
        return ops.transpose(log_w)  # (B, K)

    def _importance_terms(self, x, mean, log_var, eps, training=False, labels=None):
        """`(log_w, log_px, z, params)` of z_k = mean + exp(log_var / 2) * eps_k,
        `eps` `(K, B, D)`: one decoder call on K * B codes, sample-major;
        `log_w`, `log_px` `(K, B)`, `z` `(K, B, D)`, `params` `(K * B, ...)`
        (`keras_vae.models.importance.importance_terms`)."""
        return importance.importance_terms(self, x, mean, log_var, eps, training, labels)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "likelihood": self.likelihood,
            "beta": self.beta,
            "beta_schedule": self.beta_schedule,
            "warmup_steps": self.warmup_steps,
            "cycle_steps": self.cycle_steps,
            "cycle_ratio": self.cycle_ratio,
            "free_bits": self.free_bits,
            "gaussian_sigma": self.gaussian_sigma,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        config["decoder"] = keras.saving.deserialize_keras_object(config["decoder"])
        return cls(**config)
