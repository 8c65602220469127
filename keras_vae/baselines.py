"""A PCA baseline for the reconstruction term, in the runs' own units.

    from keras_vae import baselines
    out = baselines.pca_baseline(train, test, sizes=[2, 8, 32], likelihood="bernoulli")
    out["nll"]      # -log p(x | PCA reconstruction with k components), nats per image

A VAE with latent_dim k should reconstruct at least as well as the best
linear code of size k. PCA with k components gives that code; its
reconstruction is scored with the runs' likelihood (`keras_vae.likelihoods`,
through the registry: `likelihoods.get(name, sigma=...).log_prob`), so the
numbers sit on the same axis as a run's -E_q log p(x|z) (`latent_size.png`).

NumPy in float64; the likelihoods get float64 inputs (the discretized
logistic computes in float32 whatever its inputs, as it does for the runs).
"""

from __future__ import annotations

import math

import keras
import numpy as np

from keras_vae import likelihoods

# Bernoulli NLL of a PCA reconstruction: probabilities clipped to
# [eps, 1 - eps], since PCA reconstructions leave [0, 1] and p = 0 or 1 on a
# wrong pixel would cost infinitely many nats.
BERNOULLI_CLIP = 1e-3
# The one log-scale of a PCA model under a likelihood whose scale is a
# decoder output is chosen on this grid, from the minimum the discretized
# logistic allows (PixelCNN++) to e^0 = 1.
_LOG_SCALE_GRID = np.linspace(likelihoods.MIN_LOG_SCALE, 0.0, 50)


def pca_fit(x, num_components):
    """Principal components of `x`, for a linear reconstruction baseline.

    Eigenvectors of the smaller of the two Gram matrices of the centred data
    (N x N when N < P, else the P x P covariance), in float64.

    Args:
        x: `(N, P)` data, N >= 2.
        num_components: components wanted; at most `min(N - 1, P)` exist
            with a non-zero variance and no more are returned.

    Returns:
        `(mean (P,), components (k, P))`, orthonormal rows by decreasing variance.
    """
    x = np.asarray(x, dtype=np.float64)
    num, dim = x.shape
    mean = x.mean(axis=0)
    centred = x - mean
    k = int(min(num_components, num - 1, dim))
    if num < dim:
        gram = centred @ centred.T  # (N, N)
        values, vectors = np.linalg.eigh(gram)
        values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
        # Right singular vectors: v_i = X^T u_i / s_i, s_i = sqrt(lambda_i).
        components = (centred.T @ vectors) / np.sqrt(np.maximum(values, 1e-300))
        components = components.T
    else:
        values, vectors = np.linalg.eigh(centred.T @ centred)  # (P, P)
        components = vectors[:, ::-1][:, :k].T
    return mean, components


def pca_reconstruct(x, mean, components, k):
    """Projects `(N, P)` `x` on the first `k` components and back."""
    x = np.asarray(x, dtype=np.float64)
    basis = components[:k]  # (k, P)
    return mean + ((x - mean) @ basis.T) @ basis


# ---------------------------------------------------------------------------
# A PCA reconstruction as a decoder output, per likelihood.
#
# PCA gives a mean image (pixel units, possibly outside [0, 1]); each
# likelihood reads its own parameters (DESIGN.md section 4: logits, mean,
# log-scale). Each entry below says which parameters stand for a
# reconstruction and, for a likelihood whose scale is a parameter, how the
# PCA model's one scale is fitted. A likelihood without an entry has no PCA
# baseline: it raises rather than being scored as another one.


def _logits(lik, recon, log_scale):
    """Bernoulli logits whose probabilities are the clipped reconstruction."""
    p = np.clip(recon, BERNOULLI_CLIP, 1.0 - BERNOULLI_CLIP)
    return np.log(p) - np.log1p(-p)


def _mean(lik, recon, log_scale):
    """The reconstruction itself: the likelihood's mean (its scale is an option)."""
    return recon


def _mean_and_log_scale(lik, recon, log_scale):
    """`[mean, log-scale]` stacked on channels, the layout of `Likelihood.split`."""
    return np.concatenate([recon, np.full_like(recon, log_scale)], axis=-1)


def _log_scale_closed_form(lik, x, recon):
    """A Gaussian's maximum-likelihood scale: sigma^2 = mean squared residual."""
    return 0.5 * math.log(max(float(np.mean((x - recon) ** 2)), 1e-12))


def _log_scale_on_grid(lik, x, recon):
    """The value of `_LOG_SCALE_GRID` under which `x` is most likely."""
    scores = [_nll(lik, x, recon, log_scale=s).mean() for s in _LOG_SCALE_GRID]
    return float(_LOG_SCALE_GRID[int(np.argmin(scores))])


_AS_PARAMS = {
    # likelihood class: (decoder output for a reconstruction, fit of its log-scale)
    likelihoods.Bernoulli: (_logits, None),
    likelihoods.Gaussian: (_mean, None),
    likelihoods.GaussianLearned: (_mean_and_log_scale, _log_scale_closed_form),
    likelihoods.DiscretizedLogistic: (_mean_and_log_scale, _log_scale_on_grid),
}


def _log_prob(lik, x, params):
    """`lik.log_prob(x, params)`, with a fixed scale option kept in float64.

    `Gaussian.log_prob` hands log(sigma) to keras.ops as a Python float,
    which becomes a float32 tensor: log(0.1) off by 3e-8 nats per pixel, so
    a 100-pixel image by 3e-6 nats. The baseline is float64 throughout, so
    it passes the option's log as a float64 scalar to the same density.
    """
    if isinstance(lik, likelihoods.Gaussian):
        return likelihoods.gaussian_log_prob(x, params, np.float64(math.log(lik.sigma)))
    return lik.log_prob(x, params)


def _nll(lik, x, recon, log_scale=None):
    """-log p(x | PCA reconstruction) per image, `(N,)` nats, under `lik`."""
    as_params, _ = _AS_PARAMS[type(lik)]
    value = _log_prob(lik, x, as_params(lik, recon, log_scale))
    return -np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def pca_baseline(train, test, sizes, likelihood="gaussian", gaussian_sigma=0.1):
    """Reconstruction error of PCA with k components, for each k in `sizes`.

    PCA is fitted on `train`; each test image is projected on the first k
    components and back (`pca_reconstruct`) and scored in the units of the
    runs' reconstruction term -E_q log p(x|z), nats per image, with
    `likelihood`:

    - bernoulli: the Bernoulli NLL of the reconstruction clipped to
      [`BERNOULLI_CLIP`, 1 - `BERNOULLI_CLIP`] as probabilities;
    - gaussian: -log N(x; reconstruction, sigma^2), the run's fixed sigma;
    - gaussian_learned: the same with one sigma fitted by maximum likelihood
      on the train reconstructions (the runs learn one sigma too);
    - discretized_logistic: the discretized logistic NLL around the
      reconstruction with one log-scale fitted on the train reconstructions.

    Also the squared error summed over pixels (`sse`), whatever the likelihood.

    Args:
        train: `(N, H, W, C)` or `(N, P)` images in [0, 1].
        test: `(M, ...)` images of the same shape.
        sizes: numbers of components k (a run's latent_dim).
        likelihood: a name in `keras_vae.likelihoods.LIKELIHOODS`.
        gaussian_sigma: sigma of the `gaussian` likelihood.

    Returns:
        dict: `sizes`, `components_used` (k capped at the number of components
        the train data has), `nll` and `sse` (lists of mean nats / squared
        error per test image, one per size), `log_scale` (the fitted ones, or
        None), `likelihood`, `train_images`, `test_images`.

    Raises:
        ValueError: an unknown likelihood, or one without a PCA baseline.
    """
    train = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    test = np.asarray(test, dtype=np.float64)
    shape = test.shape
    test = test.reshape(len(test), -1)
    lik = likelihoods.get(likelihood, sigma=gaussian_sigma)
    if type(lik) not in _AS_PARAMS:
        raise ValueError(
            f"Expected a likelihood with a PCA baseline, one of "
            f"{sorted(cls.name for cls in _AS_PARAMS)}. Received: likelihood={lik.name!r}"
        )
    _, fit_log_scale = _AS_PARAMS[type(lik)]
    mean, components = pca_fit(train, max(sizes))
    image_shape = shape[1:] if len(shape) == 4 else (1, 1, shape[1])  # only for the 4-D ops
    out = {
        "sizes": [int(k) for k in sizes],
        "components_used": [],
        "nll": [],
        "sse": [],
        "log_scale": [],
        "likelihood": lik.name,
        "train_images": len(train),
        "test_images": len(test),
    }
    as_images = (-1,) + tuple(image_shape)
    for k in sizes:
        k_used = min(int(k), len(components))
        recon = pca_reconstruct(test, mean, components, k_used)
        log_scale = None
        if fit_log_scale is not None:
            train_recon = pca_reconstruct(train, mean, components, k_used)
            log_scale = fit_log_scale(lik, train.reshape(as_images), train_recon.reshape(as_images))
        nll = _nll(lik, test.reshape(as_images), recon.reshape(as_images), log_scale=log_scale)
        out["components_used"].append(k_used)
        out["nll"].append(float(nll.mean()))
        out["sse"].append(float(np.mean(np.sum((test - recon) ** 2, axis=1))))
        out["log_scale"].append(log_scale)
    return out
