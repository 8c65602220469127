"""The VAE with an inverse autoregressive flow posterior (Kingma et al. 2016).

The encoder's diagonal Gaussian is followed by T IAF steps, each a MADE
(Germain et al. 2015) over the latent dimensions with the context
c = concat(mean, log_var) as an extra unmasked input (their eqs. 10-14):

    z_0 = mean + exp(log_var / 2) * eps,                eps ~ N(0, I)
    [m_t, s_t] = MADE_t(z_{t-1}, c),  sigma_t = sigmoid(s_t)
    z_t = sigma_t * z_{t-1} + (1 - sigma_t) * m_t       (eq. 14; order reversed
                                                         between steps)
    log q(z_T|x) = sum_d [log N(eps_d) - log_var_d / 2 - sum_t log sigma_t,d]

and the KL term is its one-sample Monte Carlo estimate per dimension,
kl_d = log N(eps_d) - log_var_d / 2 - sum_t log sigma_t,d - log N(z_T,d; 0, 1).
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae.models.vae import VAE


def made_masks(latent_dim, units, reverse=False):
    """MADE masks `(D, H)` input -> hidden and `(H, D)` hidden -> output.

    Input d has degree k(d) in 1..D (its position in the step's order, which
    `reverse` reverses); hidden unit h degree m(h) in 1..max(D - 1, 1),
    cyclically. Hidden h sees z_d iff m(h) >= k(d); output d sees hidden h iff
    k(d) > m(h); so output d depends only on the z's before it in the order.
    """
    degrees = np.arange(1, latent_dim + 1)
    if reverse:
        degrees = degrees[::-1]
    hidden = np.arange(units) % max(latent_dim - 1, 1) + 1
    mask_in = (hidden[None, :] >= degrees[:, None]).astype("float32")
    mask_out = (degrees[None, :] > hidden[:, None]).astype("float32")
    return mask_in, mask_out


@keras.saving.register_keras_serializable(package="keras_vae")
class IAFFlow(keras.layers.Layer):
    """T inverse autoregressive flow steps with MADE networks (eq. 14 of Kingma
    et al. 2016), the variable order reversed between steps.

    Step t: h = relu(z_{t-1} W_z * M_in + c W_c + b), m_t = h W_m * M_out + b_m,
    s_t = h W_s * M_out + b_s, sigma_t = sigmoid(s_t), z_t = sigma_t * z_{t-1}
    + (1 - sigma_t) * m_t; even steps use the order 1..D, odd steps D..1.
    Each step's Jacobian is triangular (in its order) with diagonal sigma_t,
    so log |det dz_T/dz_0| = sum_t sum_d log sigma_t,d.

    Args:
        latent_dim: D, the size of z.
        steps: T >= 0 (0 is the identity).
        units: MADE hidden width H >= 1.
        s_bias: initial bias of s_t (Kingma et al.: +1 or +2, so sigma_t
            starts near 1 and the flow near the identity).
        **kwargs: base layer keyword arguments (`name`, `dtype`, ...).

    Input shape:
        `(z_0, context)`: `(..., D)` and `(batch, 2 D)` (leading sample axes of
        z_0 broadcast against the context's batch).

    Output shape:
        `(z_T, sum_t log sigma_t)`, each shaped as z_0.

    Reference:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved
        Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016;
        Germain, Gregor, Murray & Larochelle, "MADE", ICML 2015.
    """

    def __init__(self, latent_dim, steps=2, units=64, s_bias=2.0, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.steps = int(steps)
        self.units = int(units)
        self.s_bias = float(s_bias)
        self.masks = [
            made_masks(self.latent_dim, self.units, t % 2 == 1) for t in range(self.steps)
        ]
        self.build()

    def build(self, input_shape=None):
        d, h = self.latent_dim, self.units
        self.step_weights = []
        for t in range(self.steps):

            def weight(name, shape, init="glorot_uniform", t=t):
                return self.add_weight(shape=shape, initializer=init, name=f"step{t}_{name}")

            self.step_weights.append(
                {
                    "w_z": weight("w_z", (d, h)),
                    "w_c": weight("w_c", (2 * d, h)),
                    "b_h": weight("b_h", (h,), "zeros"),
                    "w_m": weight("w_m", (h, d)),
                    "b_m": weight("b_m", (d,), "zeros"),
                    "w_s": weight("w_s", (h, d)),
                    "b_s": weight("b_s", (d,), keras.initializers.Constant(self.s_bias)),
                }
            )
        self.built = True

    def step(self, z, context, t):
        """Step t: `(z_t, log sigma_t)` from z_{t-1} `(..., D)` and c `(batch, 2 D)`."""
        w = self.step_weights[t]
        mask_in, mask_out = (ops.convert_to_tensor(m, z.dtype) for m in self.masks[t])
        hidden = ops.relu(
            ops.matmul(z, w["w_z"] * mask_in) + ops.matmul(context, w["w_c"]) + w["b_h"]
        )
        m = ops.matmul(hidden, w["w_m"] * mask_out) + w["b_m"]
        s = ops.matmul(hidden, w["w_s"] * mask_out) + w["b_s"]
        sigma = ops.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m, ops.log_sigmoid(s)

    def call(self, z, context):
        log_sigma = ops.zeros_like(z)
        for t in range(self.steps):
            z, log_sigma_t = self.step(z, context, t)
            log_sigma = log_sigma + log_sigma_t
        return z, log_sigma

    def compute_output_shape(self, z_shape, context_shape):
        return z_shape, z_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "latent_dim": self.latent_dim,
                "steps": self.steps,
                "units": self.units,
                "s_bias": self.s_bias,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vae")
class IAF(VAE):
    """VAE whose posterior is a Gaussian followed by T inverse autoregressive
    flow steps (`IAFFlow`): a flexible, non-factorised q(z|x) at the cost of
    T small MADEs in latent space (the decoder's cost is unchanged).

    Training draws eps, runs z_0 = mean + exp(log_var / 2) * eps through the
    flow and decodes z_T; the KL term is the one-sample estimate per
    dimension d (nats)

        kl_d = log N(eps_d) - log_var_d / 2 - sum_t log sigma_t,d - log N(z_T,d; 0, 1),

    whose sum is log q(z_T|x) - log p(z_T), so `beta`, its schedule and free
    bits (per dimension, on the batch mean) act on it as in the `VAE`. With
    T = 0 the posterior is the VAE's and the loss its sampled-KL estimate.
    The flow runs in float32 under a mixed precision policy.

    The posterior's central code is the flow applied to eps = 0 (z_0 = mean):
    `encode` returns it, so consumers that decode `encode(x)[0]` see the
    same code as `reconstruct` and `call` at inference.

    Args:
        encoder, decoder: as for `VAE`.
        flow_steps: T >= 0 IAF steps.
        flow_units: hidden width of each step's MADE, >= 1.
        **kwargs: the other `VAE` arguments and `keras.Model` keyword arguments.

    Input shape:
        `(batch, H, W, C)` float in [0, 1] (uint8 is accepted and divided by 255).

    Output shape (`call`):
        `(batch, H, W, C)` reconstructions in [0, 1]: the decoded central code
        at inference, a decoded posterior sample z_T when `training=True`.

    Reference:
        Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling, "Improved
        Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016,
        eqs. (10)-(14).
    """

    def __init__(self, encoder, decoder, flow_steps=2, flow_units=64, **kwargs):
        for name, value, low in (("flow_steps", flow_steps, 0), ("flow_units", flow_units, 1)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(
                    f"Expected `{name}` to be an integer >= {low}. Received: {name}={value!r}"
                )
        super().__init__(encoder, decoder, **kwargs)
        self.flow_steps = int(flow_steps)
        self.flow_units = int(flow_units)
        self._flow_dtype = "float64" if self.dtype_policy.variable_dtype == "float64" else "float32"
        self.flow = IAFFlow(
            self.latent_dim,
            self.flow_steps,
            self.flow_units,
            dtype=self._flow_dtype,
            name="iaf_flow",
        )

    @classmethod
    def config_options(cls, config, dataset_size=None):
        """`flow_steps` and `flow_units` from `config.iaf_steps`, `config.iaf_units`."""
        return {
            "flow_steps": config.iaf_steps,
            "flow_units": config.iaf_units,
        }

    # -- maths --------------------------------------------------------------

    def posterior(self, mean, log_var, eps):
        """z_T and the per-dimension log q(z_T|x) terms for given noise.

        Args:
            mean, log_var: `(batch, D)` the encoder's Gaussian.
            eps: `(..., batch, D)` standard-normal noise.

        Returns:
            `(z, log_q_per_dim)`, both shaped as eps, in the flow's dtype:
            z = z_T and log_q_per_dim[d] = log N(eps_d) - log_var_d / 2 -
            sum_t log sigma_t,d (its sum over d is log q(z_T|x)).
        """
        dtype = self._flow_dtype
        mean, log_var, eps = (ops.cast(t, dtype) for t in (mean, log_var, eps))
        z0 = mean + ops.exp(0.5 * log_var) * eps
        z, log_sigma = self.flow(z0, ops.concatenate([mean, log_var], axis=-1))
        log_q = -0.5 * (likelihoods_lib.LOG_2PI + ops.square(eps) + log_var) - log_sigma
        return z, log_q

    def _draw_eps(self, shape):
        if self.sampling.deterministic:
            return ops.zeros(shape, self._flow_dtype)
        return keras.random.normal(shape, dtype=self._flow_dtype, seed=self.sampling.seed_generator)

    def compute_terms(self, x, training=False, eps=None, labels=None):
        """Encoder, flow on z_0 = mean + exp(log_var / 2) * eps, decoder on z_T.

        Args:
            x: `(batch, H, W, C)` images.
            training: passed to the sub-models.
            eps: optional `(batch, latent_dim)` standard-normal noise;
                otherwise drawn from the `Sampling` layer's seed generator
                (zeros, i.e. the central code, when it is deterministic).
            labels: a conditional model's labels; else None.

        Returns:
            dict with `log_px (batch,)`, `kl_per_dim` (the one-sample estimate
            above, float32), `z` (= z_T), `mean` and `log_var` (the base
            Gaussian's) `(batch, latent_dim)`, `log_qz (batch,)` and `params`.
        """
        x = self._as_images(x)
        mean, log_var = self._encoder_outputs(x, labels, training)
        if eps is None:
            eps = self._draw_eps((ops.shape(mean)[0], self.latent_dim))
        z, log_q = self.posterior(mean, log_var, eps)
        params = self._decoder_outputs(z, labels, training)
        log_pz = -0.5 * (likelihoods_lib.LOG_2PI + ops.square(z))
        return {
            "log_px": self.likelihood_fn.log_prob(x, params),
            "kl_per_dim": log_q - log_pz,
            "mean": mean,
            "log_var": log_var,
            "z": z,
            "log_qz": ops.sum(log_q, axis=-1),
            "params": params,
        }

    def log_weights(self, images, k, seed=None, eps=None, labels=None):
        """Log importance weights `(batch, k)`: log p(x|z_T) + log N(z_T; 0, I)
        - log q(z_T|x), the k codes decoded in one decoder call (arguments as
        for `VAE.log_weights`)."""
        x = self._as_images(images)
        mean, log_var = self._encoder_outputs(x, labels)
        batch, latent_dim = ops.shape(mean)[0], self.latent_dim
        if eps is None:
            seed = self.sampling.seed_generator if seed is None else seed
            eps = keras.random.normal((k, batch, latent_dim), seed=seed)
        z, log_q = self.posterior(mean, log_var, eps)  # (K, B, D)
        image_shape = tuple(ops.shape(x)[1:])
        x_flat = ops.reshape(
            ops.tile(ops.expand_dims(x, 0), (k, 1) + (1,) * len(image_shape)),
            (k * batch,) + image_shape,
        )  # (K*B, H, W, C), sample-major as in `VAE.log_weights`
        params = self._decoder_outputs(ops.reshape(z, (k * batch, latent_dim)), labels)
        log_px = ops.reshape(
            ops.cast(self.likelihood_fn.log_prob(x_flat, params), "float32"), (k, batch)
        )
        log_pz = likelihoods_lib.standard_normal_log_density(ops.cast(z, "float32"))
        log_qz = ops.cast(ops.sum(log_q, axis=-1), "float32")
        return ops.transpose(log_px + log_pz - log_qz)  # (B, K)

    # -- inference API ------------------------------------------------------

    def _code(self, x, training, sample, labels=None):
        mean, log_var = self._encoder_outputs(self._as_images(x), labels, training)
        shape = ops.shape(mean)
        if sample:
            eps = keras.random.normal(shape, seed=self.sampling.seed_generator)
        else:
            eps = ops.zeros(shape)
        return self.posterior(mean, log_var, eps)[0], log_var

    def encode(self, images, labels=None):
        """`(code, log_var)`, each `(batch, latent_dim)`: code = the posterior's
        central code, z_T of the flow at eps = 0 (z_0 = the encoder's mean), in
        the flow's dtype; log_var = the base Gaussian's log-variance."""
        return self._code(images, False, False, labels)

    def call(self, inputs, training=None):
        z, _ = self._code(inputs, training, bool(training))
        return self.likelihood_fn.mean(self._decoder_outputs(z, training=training))

    def reconstruct(self, images, sample_latent=False, labels=None):
        """Decoded central code (or, with `sample_latent`, a posterior sample z_T)."""
        return self.decode(self._code(images, False, sample_latent, labels)[0], labels)

    # -- serialization ------------------------------------------------------

    def get_config(self):
        return {
            **super().get_config(),
            "flow_steps": self.flow_steps,
            "flow_units": self.flow_units,
        }
