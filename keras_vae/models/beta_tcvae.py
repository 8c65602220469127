"""beta-TCVAE: the KL term split into mutual information, total correlation and
dimension-wise KL, each estimated on the minibatch (Chen et al. 2018).

    E_x KL(q(z|x) || p(z)) = I_q(z; n) + KL(q(z) || prod_j q(z_j)) + sum_j KL(q(z_j) || p(z_j))
                           =    MI    +            TC             +           DWKL

`tc_decomposition` is the estimator, a pure function; `BetaTCVAE` weights its
three terms in the loss and logs them as `mi`, `tc` and `dwkl`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vae import likelihoods as likelihoods_lib
from keras_vae.models.vae import VAE

ESTIMATORS = ("mws", "mss")


def log_importance_weights(batch_size, dataset_size, estimator="mws", dtype="float32"):
    """log w_ij of the minibatch estimate q(z_i) ~= sum_j w_ij q(z_i|x_j).

    z_i is drawn from q(z|x_i), and q(z_i) = 1/N q(z_i|x_i) + 1/N sum_{n != i}
    q(z_i|x_n) over the N training examples. The own term is known; the
    other examples of a batch of M drawn without replacement stand for the
    N - 1 others:

    - `mws` (minibatch-weighted sampling): w_ii = 1/N and
      w_ij = (N - 1) / (N (M - 1)) for j != i, an unbiased estimate of q(z_i).
    - `mss` (minibatch stratified sampling, Chen et al.'s appendix): w_ii = 1/N,
      w_ij = 1/(M - 1) for M - 2 others and (N - M + 1) / (N (M - 1)) for the
      last one, taken as j = i + 1 (mod M).

    Every row sums to 1, and with N = M the `mws` weights are the exact 1/N.
    A batch of one has no other example: w_11 = 1 (the batch is taken as the
    whole data). A `dataset_size` below the batch size is taken as the batch
    size.

    Args:
        batch_size: M, an int or a scalar int tensor (a traced batch size).
        dataset_size: N, the number of training examples.
        estimator: `mws` or `mss`.
        dtype: float dtype of the result.

    Returns:
        `(M, M)` log-weights; row i is for the code z_i, column j for q(.|x_j).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"Expected `estimator` in {ESTIMATORS}. Received: estimator={estimator!r}")
    m = ops.cast(batch_size, dtype)
    n = ops.maximum(ops.cast(dataset_size, dtype), m)
    log_n = ops.log(n)
    log_others = ops.log(ops.maximum(m - 1.0, 1.0))  # log(M - 1); 0 when unused (M = 1)
    index = ops.arange(batch_size)
    row, col = ops.expand_dims(index, 1), ops.expand_dims(index, 0)  # (M, 1), (1, M)
    if estimator == "mws":
        log_other = ops.log(ops.maximum(n - 1.0, 1.0)) - log_n - log_others
    else:
        last = col == ops.mod(row + 1, batch_size)  # (M, M): the one stratum of the rest
        log_other = ops.where(last, ops.log(n - m + 1.0) - log_n - log_others, -log_others)
    log_own = ops.where(m > 1.0, -log_n, ops.zeros_like(log_n))
    return ops.where(row == col, log_own, log_other)


def tc_decomposition(mean, log_var, z, dataset_size, estimator="mws"):
    """Per-example estimates of the three parts of the KL term (Chen et al. 2018).

    From the batch's codes z_i ~ q(z|x_i) and weights w_ij
    (`log_importance_weights`):

        log q(z_i)     ~= log sum_j w_ij q(z_i|x_j)
        log q(z_i,d)   ~= log sum_j w_ij q(z_i,d|x_j,d)            (each dimension d)
        mi_i   = log q(z_i|x_i)   - log q(z_i)
        tc_i   = log q(z_i)       - sum_d log q(z_i,d)
        dwkl_i = sum_d log q(z_i,d) - log p(z_i),                  p = N(0, I)

    Their sum telescopes to log q(z_i|x_i) - log p(z_i), the one-sample
    estimate of KL(q(z|x_i) || p(z)), whatever the weights. The batch means
    estimate MI, TC and DWKL; the log of an estimate of q is biased (low),
    the bias shrinking as the batch grows. Memory and time are O(M^2 D).

    Args:
        mean, log_var: `(M, D)` parameters of the diagonal Gaussian q(z|x_i).
        z: `(M, D)` codes, z_i drawn from q(z|x_i).
        dataset_size: N, the number of training examples.
        estimator: `mws` or `mss`, see `log_importance_weights`.

    Returns:
        dict of `(M,)` tensors `mi`, `tc`, `dwkl` in nats, float32 (float64
        if an input is float64).
    """
    z_, mean_, log_var_ = (ops.expand_dims(t, -1) for t in (z, mean, log_var))
    # log q(z_i,d | x_j,d) for every pair (i, j): (M, M, D). The trailing
    # axis of size 1 makes `gaussian_log_density` keep the dimensions apart.
    log_q_pairs = likelihoods_lib.gaussian_log_density(
        ops.expand_dims(z_, 1), ops.expand_dims(mean_, 0), ops.expand_dims(log_var_, 0)
    )
    dtype = keras.backend.standardize_dtype(log_q_pairs.dtype)
    log_w = log_importance_weights(ops.shape(log_q_pairs)[0], dataset_size, estimator, dtype)
    log_q_joint = ops.sum(log_q_pairs, axis=-1)  # (M, M): log q(z_i | x_j)
    log_qz_x = ops.diagonal(log_q_joint)  # (M,): log q(z_i | x_i)
    log_qz = ops.logsumexp(log_w + log_q_joint, axis=1)  # (M,)
    log_qz_marginals = ops.sum(
        ops.logsumexp(ops.expand_dims(log_w, -1) + log_q_pairs, axis=1), axis=-1
    )  # (M,): sum_d log q(z_i,d)
    log_pz = likelihoods_lib.standard_normal_log_density(ops.cast(z, dtype))  # (M,)
    return {
        "mi": log_qz_x - log_qz,
        "tc": log_qz - log_qz_marginals,
        "dwkl": log_qz_marginals - log_pz,
    }


@keras.saving.register_keras_serializable(package="keras_vae")
class BetaTCVAE(VAE):
    """beta-TCVAE: a VAE whose KL term is split and reweighted, penalising the
    total correlation of the aggregate posterior (the dependence between
    latent dimensions) more than its other parts.

    With the aggregate posterior q(z) = 1/N sum_n q(z|x_n) over the N training
    examples, the batch-averaged KL term decomposes as

        E_x KL(q(z|x) || p(z)) = I_q(z; n) + KL(q(z) || prod_j q(z_j))
                                 + sum_j KL(q(z_j) || p(z_j)),

    index-code mutual information (`mi`), total correlation (`tc`) and
    dimension-wise KL (`dwkl`), and the loss is, per example, batch-averaged,

        loss = -log p(x|z) + beta_t * (alpha * MI + tc_weight * TC + gamma * DWKL).

    The three terms come from the batch's own codes z_i ~ q(z|x_i) through
    `tc_decomposition` (minibatch-weighted or stratified sampling; the
    weights are in `log_importance_weights`); they sum to the one-sample KL
    estimate mean_i [log q(z_i|x_i) - log p(z_i)], so with alpha = tc_weight =
    gamma = 1 this is the VAE's loss with a sampled KL. `kl` and `elbo` are
    logged as by the `VAE` (analytic KL). beta_t is the `VAE`'s KL weight and
    schedule (1 by default): it scales all three terms, so a warm-up anneals
    them together.

    Chen et al.'s printed minibatch-weighted estimate weights every
    q(z_i|x_j) by 1/(N M): those weights sum to 1/N, so its log q(z) is low by
    about log N (logged MI too high by log N, TC by (D - 1) log N, DWKL too
    low by D log N), and z_i's own posterior weighs as much as another's.
    Here the own term has weight 1/N and the others share (N - 1)/N, which
    is unbiased for q(z_i) and exact when the batch is the whole data. For
    `mss`, their reference code's weight matrix misplaces the stratum weight
    on its last two rows (rtqichen/beta-tcvae pull request 1); here it is at
    (i, i + 1 mod M) on every row.

    A batch of one carries no information on q(z): it is taken as the whole
    data, so MI = TC = 0 and DWKL is the KL estimate (a VAE step). Under
    `tf.distribute` (e.g. `MirroredStrategy`), each replica estimates the
    terms on its own part of the global batch (M / replicas codes, the same
    N); the update averages the replicas' estimates, which differ from one
    estimate on the whole batch, as q(z_i) then never sees the other
    replicas' codes. Under a mixed precision policy the estimate is computed
    in float32 (float64 for a float64 model), like the `VAE`'s KL.

    Args:
        encoder, decoder: as for `VAE`.
        tc_weight: float >= 0, the total correlation's weight (Chen et al.'s
            beta; 1, with alpha = gamma = 1, gives back the VAE).
        alpha: float >= 0, the mutual information's weight.
        gamma: float >= 0, the dimension-wise KL's weight.
        estimator: `mws` (minibatch-weighted sampling) or `mss` (minibatch
            stratified sampling).
        dataset_size: int >= 1, N, the number of training examples (the run
            passes the training split's size).
        **kwargs: the other `VAE` arguments, by keyword (`likelihood`, `beta`,
            `seed`, ...); `free_bits` must be 0 (it acts on the analytic KL,
            which this loss does not use).

    Input shape:
        `(batch, H, W, C)` float in [0, 1] (uint8 is accepted and divided by 255).

    Output shape (`call`):
        `(batch, H, W, C)` reconstructions in [0, 1], as for `VAE`.

    Reference:
        Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in
        Variational Autoencoders", NeurIPS 2018.
    """

    def __init__(
        self,
        encoder,
        decoder,
        *,
        tc_weight=6.0,
        alpha=1.0,
        gamma=1.0,
        estimator="mws",
        dataset_size=None,
        **kwargs,
    ):
        for name, value in (("tc_weight", tc_weight), ("alpha", alpha), ("gamma", gamma)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"Expected `{name}` >= 0. Received: {name}={value!r}")
        if estimator not in ESTIMATORS:
            raise ValueError(
                f"Expected `estimator` in {ESTIMATORS}. Received: estimator={estimator!r}"
            )
        if (
            isinstance(dataset_size, bool)
            or not isinstance(dataset_size, (int, np.integer))
            or dataset_size < 1
        ):
            raise ValueError(
                "Expected `dataset_size`, the number of training examples N, an int >= 1. "
                f"Received: dataset_size={dataset_size!r}"
            )
        if kwargs.get("free_bits", 0.0) != 0:
            raise ValueError(
                "Expected `free_bits`=0: free bits act on the analytic KL, which the "
                f"beta-TCVAE loss replaces. Received: free_bits={kwargs['free_bits']!r}"
            )
        super().__init__(encoder, decoder, **kwargs)
        self.tc_weight = float(tc_weight)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.estimator = estimator
        self.dataset_size = int(dataset_size)
        self.mi_tracker = keras.metrics.Mean(name="mi")
        self.tc_tracker = keras.metrics.Mean(name="tc")
        self.dwkl_tracker = keras.metrics.Mean(name="dwkl")

    @property
    def metrics(self):
        return super().metrics + [self.mi_tracker, self.tc_tracker, self.dwkl_tracker]

    @classmethod
    def config_options(cls, config, dataset_size=None):
        """`tc_weight` and `estimator` from the config; N = the training split's size."""
        return {
            "tc_weight": config.tc_weight,
            "estimator": config.tc_estimator,
            "dataset_size": dataset_size,
        }

    def objective(self, terms, beta):
        """Batch loss and logged values: the `VAE`'s `reconstruction`, `kl`
        (analytic) and `elbo`, plus `mi`, `tc` and `dwkl` (batch means of
        `tc_decomposition`), loss = reconstruction + beta * (alpha * mi +
        tc_weight * tc + gamma * dwkl)."""
        _, logs = super().objective(terms, beta)
        parts = tc_decomposition(
            terms["mean"], terms["log_var"], terms["z"], self.dataset_size, self.estimator
        )
        mi, tc, dwkl = (ops.mean(parts[key]) for key in ("mi", "tc", "dwkl"))
        kl_term = self.alpha * mi + self.tc_weight * tc + self.gamma * dwkl
        reconstruction = ops.cast(logs["reconstruction"], kl_term.dtype)
        loss = reconstruction + ops.cast(beta, kl_term.dtype) * kl_term
        return loss, {**logs, "mi": mi, "tc": tc, "dwkl": dwkl}

    def _update_trackers(self, x, loss, logs, beta, finite=True):
        # As the base's trackers: weighted by the batch size, nothing from a
        # skipped (non-finite) step.
        weight = ops.cast(ops.shape(x)[0], "float32") * ops.cast(finite, "float32")
        for tracker in (self.mi_tracker, self.tc_tracker, self.dwkl_tracker):
            value = ops.cast(logs[tracker.name], "float32")
            tracker.update_state(ops.where(finite, value, 0.0), sample_weight=weight)
        return super()._update_trackers(x, loss, logs, beta, finite)

    def get_config(self):
        return {
            **super().get_config(),
            "tc_weight": self.tc_weight,
            "alpha": self.alpha,
            "gamma": self.gamma,
            "estimator": self.estimator,
            "dataset_size": self.dataset_size,
        }
