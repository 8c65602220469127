"""Importance weights of K codes per example: the maths of `VAE._importance_terms`.

Shared by `VAE.log_weights` (evaluation's IWAE bound) and `IWAE.compute_terms`
(the training objective), kept out of `vae.py` for its size.
"""

from __future__ import annotations

from keras import ops

from keras_vae import compiled
from keras_vae import likelihoods as likelihoods_lib


def importance_terms(model, x, mean, log_var, eps, training=False, labels=None):
    """`(log_w, log_px, z, params)` of z_k = mean + exp(log_var / 2) * eps_k.

    log w_k = log p(x|z_k) + log N(z_k; 0, I) - log q(z_k|x)
    (Burda et al. 2015, eq. 8), with log q(z_k|x) = -1/2 sum_d (log 2 pi +
    log_var_d + eps_kd^2) from eps (no (z - mean) / sigma round trip).

    One decoder call on K * B codes, sample-major (row s * B + i is sample s
    of example i). In a graph, when the decoder reads only the codes
    (`_likelihood_params` not overridden), `x` is broadcast against each
    sample's block of B codes (`ops.vectorized_map` over k: the same ops on
    the same values as tiling, without writing K copies of the images;
    ~3% of an MNIST IWAE chunk). Otherwise `x` is tiled to `(K * B, ...)`:
    a sequence model's decoder also reads `x` (teacher forcing), and eagerly
    TensorFlow's `vectorized_map` would trace a new graph at every call.

    Args:
        model: a `VAE`.
        x: `(B, H, W, C)` images (a sequence model's `(B, T)` tokens).
        mean, log_var: `(B, D)` parameters of q(z|x).
        eps: `(K, B, D)` standard-normal noise.
        training: passed to the decoder.
        labels: a conditional model's labels `(B, ...)`: they serve each
            block of B codes.

    Returns:
        `log_w`, `log_px` `(K, B)`, `z` `(K, B, D)`, `params` `(K * B, ...)`.
    """
    from keras_vae.models.vae import VAE  # the base class, for the override check

    k, batch, latent_dim = (ops.shape(eps)[i] for i in range(3))
    z = ops.expand_dims(mean, 0) + ops.exp(0.5 * ops.expand_dims(log_var, 0)) * eps
    z_flat = ops.reshape(z, (k * batch, latent_dim))
    if compiled.tracing() and type(model)._likelihood_params is VAE._likelihood_params:
        params = model._decoder_outputs(z_flat, labels, training)
        blocks = ops.reshape(params, (k, batch) + tuple(ops.shape(params)[1:]))
        log_px = ops.vectorized_map(lambda p: model.likelihood_fn.log_prob(x, p), blocks)
    else:
        image_shape = tuple(ops.shape(x)[1:])
        x_flat = ops.reshape(
            ops.tile(ops.expand_dims(x, 0), (k, 1) + (1,) * len(image_shape)),
            (k * batch,) + image_shape,
        )  # (K*B, ...)
        params = model._likelihood_params(x_flat, z_flat, labels, training)
        log_px = ops.reshape(model.likelihood_fn.log_prob(x_flat, params), (k, batch))
    log_px = ops.cast(log_px, mean.dtype)  # (K, B)
    log_pz = likelihoods_lib.standard_normal_log_density(z)  # (K, B)
    log_qz = -0.5 * ops.sum(
        likelihoods_lib.LOG_2PI + ops.expand_dims(log_var, 0) + ops.square(eps), axis=-1
    )
    return log_px + log_pz - log_qz, log_px, z, params
