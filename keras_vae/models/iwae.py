"""The Importance Weighted Autoencoder (Burda, Grosse & Salakhutdinov 2015).

Objective, per example, averaged over the batch, in nats (their eq. 8):

    L_K(x) = log (1/K) sum_k w_k,   w_k = p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),
    loss   = -L_K                  (K = 1: exactly the VAE's loss, see `IWAE`)

with ELBO = E[L_1] <= E[L_K] <= E[L_{K+1}] <= log p(x) (their Theorem 1). The
architecture is the VAE's; only the bound it is trained on differs.
"""

from __future__ import annotations

import math
import numbers

import keras
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae.models.vae import VAE


@keras.saving.register_keras_serializable(package="keras_vae")
class IWAE(VAE):
    """Importance Weighted Autoencoder: a VAE trained on the K-sample bound L_K.

    Each image is encoded once; K codes z_k = mean + exp(log_var / 2) * eps_k
    are drawn from q(z|x) and decoded in one decoder call on `K * batch`
    codes, and the loss is -L_K with

        L_K(x) = logsumexp_k(log w_k) - log K,
        log w_k = log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)

    (the same log-weights as `VAE.log_weights`), computed in float32 under a
    mixed precision policy. Its gradient weights each sample's
    log w_k-gradient by the normalised weight w_k / sum_j w_j (their
    section 3), so a code that explains x poorly counts less than in the VAE.

    K = 1 is the VAE: L_1 = log w_1 is the one-sample ELBO with a sampled KL,
    and its estimator with the closed-form KL has the same expectation and
    usually less variance (Kingma & Welling 2014, section 2.3), so with
    K = 1 the loss is exactly `VAE.objective`'s.

    The bound has no KL term to weight or floor: `beta` must be 1, with the
    `constant` schedule, and `free_bits` 0.

    Logged (nats per example; tracker names equal the keys): `loss` (-L_K;
    for K = 1 -ELBO), `iwae_bound` (L_K, a batch mean: higher is better),
    and the first sample's single-sample ELBO terms, as the VAE logs them:
    `reconstruction` (-log p(x|z_1)), `kl` (closed-form KL(q(z|x) || N(0, I)))
    and `elbo` (their difference), so they compare with a VAE's logs.

    Args:
        encoder: `keras.Model` images -> `[mean, log_var]`, as for `VAE`.
        decoder: `keras.Model` `z` -> likelihood parameters, as for `VAE`.
        k: int >= 1, importance samples K per image in training and
            validation (the training cost grows about K-fold with the decoder).
        **kwargs: the other `VAE` arguments (`likelihood`, `gaussian_sigma`,
            `seed`, ...; `beta` 1 and `free_bits` 0 only) and `keras.Model`
            keyword arguments.

    Input shape:
        `(batch, H, W, C)` float in [0, 1] (uint8 is accepted and divided by 255).

    Output shape (`call`):
        `(batch, H, W, C)` reconstructions in [0, 1], as for `VAE`.

    Reference:
        Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders",
        ICLR 2016 (arXiv:1509.00519, 2015), eq. (8), Theorem 1, section 3.
    """

    def __init__(self, encoder, decoder, k=5, **kwargs):
        super().__init__(encoder, decoder, **kwargs)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"Expected `k` to be an integer >= 1. Received: k={k!r}")
        if self.beta != 1.0:
            raise ValueError(
                "Expected beta=1 for the IWAE: its bound has no KL term to weight (a "
                f"beta-VAE is the 'vae' model). Received: beta={self.beta!r}"
            )
        if self.beta_schedule != "constant":
            raise ValueError(
                "Expected beta_schedule='constant' for the IWAE: its bound has no KL term "
                f"to anneal. Received: beta_schedule={self.beta_schedule!r}"
            )
        if self.free_bits > 0:
            raise ValueError(
                "Expected free_bits=0 for the IWAE: its bound has no KL term to floor. "
                f"Received: free_bits={self.free_bits!r}"
            )
        self.k = int(k)
        self.bound_tracker = keras.metrics.Mean(name="iwae_bound")

    @property
    def metrics(self):
        return super().metrics + [self.bound_tracker]

    @classmethod
    def config_options(cls, config, dataset_size=None):
        """`k` from `config.iwae_k`."""
        return {"k": config.iwae_k}

    # -- maths --------------------------------------------------------------

    def compute_terms(self, x, training=False, eps=None, labels=None):
        """Encodes once, draws K codes per image, decodes them in one call.

        Args:
            x: `(batch, H, W, C)` images.
            training: passed to the sub-models.
            eps: optional standard-normal noise, `(K, batch, latent_dim)`
                for K codes z_k = mean + exp(0.5 * log_var) * eps_k, or
                `(batch, latent_dim)` as for `VAE.compute_terms` (K = 1);
                otherwise `k` draws from the `Sampling` layer's seed
                generator (zeros, i.e. z = mean, when it is deterministic).
            labels: a conditional model's labels; else None.

        Returns:
            dict with `log_w (batch, K)` (float32, or float64 under a float64
            policy), and the `VAE.compute_terms` keys for the first code z_1:
            `log_px (batch,)`, `kl_per_dim`, `mean`, `log_var`, `z`
            `(batch, latent_dim)`, `params`.
        """
        # `VAE.log_weights`' maths, passing `training` on and keeping the first
        # code's terms; tests/test_iwae.py pins the two to the same numbers.
        x = self._as_images(x)
        mean, log_var = self._encoder_outputs(x, labels, training)
        # The bound in float32 whatever the policy (float64 stays float64):
        # logsumexp of 16-bit log-weights of a few hundred nats is too coarse.
        dtype = "float64" if keras.backend.standardize_dtype(mean.dtype) == "float64" else "float32"
        mean, log_var = ops.cast(mean, dtype), ops.cast(log_var, dtype)  # (B, D)
        batch, latent_dim = ops.shape(mean)[0], self.latent_dim
        if eps is None:
            shape = (self.k, batch, latent_dim)
            if self.sampling.deterministic:
                eps = ops.zeros(shape, dtype)
            else:
                eps = keras.random.normal(shape, dtype=dtype, seed=self.sampling.seed_generator)
        else:
            eps = ops.cast(eps, dtype)
            if len(eps.shape) == 2:
                eps = ops.expand_dims(eps, 0)
        k = eps.shape[0]
        # `VAE._importance_terms`: one decoder call on K * B codes, sample-major.
        log_w, log_px, z, params = self._importance_terms(
            x, mean, log_var, eps, training, labels=labels
        )
        params = ops.reshape(params, (k, batch) + tuple(params.shape[1:]))
        return {
            "log_w": ops.transpose(log_w),  # (B, K)
            "log_px": log_px[0],
            "kl_per_dim": likelihoods_lib.gaussian_kl_per_dim(mean, log_var),
            "mean": mean,
            "log_var": log_var,
            "z": z[0],
            "params": params[0],
        }

    def objective(self, terms, beta):
        """Batch loss and logged values from `compute_terms`' output.

        Returns:
            `(loss, logs)`: loss = -mean_batch L_K for K = `log_w`'s second
            axis > 1, `VAE.objective`'s loss for K = 1 (with `beta`, which
            training holds at 1); `logs` has `VAE.objective`'s
            `reconstruction`, `kl` and `elbo` (of the first code) and
            `iwae_bound` (mean_batch L_K).
        """
        loss, logs = super().objective(terms, beta)
        log_w = terms["log_w"]  # (B, K)
        k = log_w.shape[-1]
        bound = ops.mean(ops.logsumexp(log_w, axis=-1) - math.log(k))
        logs["iwae_bound"] = bound
        if k > 1:
            loss = -bound
        return loss, logs

    def _update_trackers(self, x, loss, logs, beta, finite=True):
        # The base updates its own trackers, then reports every tracker in
        # `metrics`: this one is updated first, the same way.
        weight = ops.cast(ops.shape(x)[0], "float32") * ops.cast(finite, "float32")
        value = ops.cast(logs["iwae_bound"], "float32")
        self.bound_tracker.update_state(ops.where(finite, value, 0.0), sample_weight=weight)
        return super()._update_trackers(x, loss, logs, beta, finite)

    # -- serialization ------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        config["k"] = self.k
        return config
