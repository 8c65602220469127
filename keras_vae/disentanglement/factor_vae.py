"""The FactorVAE disentanglement score (Kim & Mnih 2018, section 4).

A representation is disentangled if fixing one factor fixes one code
dimension. Each vote: pick a factor k at random, draw `batch_size` factor
combinations with factor k held at one random value, encode them, normalise
each code dimension's variance over the batch by its variance over the whole
data, and vote for the dimension with the smallest normalised variance. A
majority-vote classifier maps each dimension to the factor that most often
made it vote; the score is its accuracy on fresh votes. 1 is perfect; a
representation that tells nothing scores about 1 / num_factors.

As disentanglement_lib computes it (`factor_vae.py`, gin defaults of
Locatello et al. 2019): global variances (ddof 1) from 10,000 points,
dimensions with standard deviation < 0.05 pruned as collapsed, batches of 64,
10,000 training votes, 5,000 evaluation votes. This module is pure NumPy
over a `representation(factors) -> codes` function;
`keras_vae.disentanglement.on_shapes.factor_vae_score` renders and encodes
shapes images for it.
"""

from __future__ import annotations

import numpy as np


def factor_vae_votes(
    representation,
    factor_sizes,
    num_votes,
    *,
    rng,
    global_variances,
    active,
    scored=None,
    batch_size=64,
    votes_per_call=16,
):
    """Votes of `num_votes` batches, each with one factor fixed.

    Args:
        representation: `(n, num_factors)` int factors -> `(n, num_codes)` codes.
        factor_sizes: the number of values of each factor.
        num_votes: batches drawn.
        rng: a `np.random.Generator`.
        global_variances: `(num_codes,)` variance of each code dimension over the data.
        active: `(num_codes,)` bool, the dimensions that can receive votes.
        scored: indices of the factors that may be fixed (default: all).
        batch_size: points per vote (64 in disentanglement_lib).
        votes_per_call: votes whose points go through `representation` at once.

    Returns:
        `(num_factors, num_codes)` int64 counts: votes[k, i] is how often
        fixing factor k made dimension i the least varying one.
    """
    sizes = np.asarray(factor_sizes)
    scored = np.arange(len(sizes)) if scored is None else np.asarray(scored)
    active_index = np.flatnonzero(active)  # (A,)
    votes = np.zeros((len(sizes), len(global_variances)), np.int64)
    for start in range(0, num_votes, votes_per_call):
        m = min(votes_per_call, num_votes - start)
        fixed = rng.choice(scored, size=m)  # (m,): the factor each vote fixes
        factors = rng.integers(0, sizes, size=(m, batch_size, len(sizes)))  # (m, B, K)
        rows = np.arange(m)
        factors[rows, :, fixed] = factors[rows, 0, fixed][:, None]  # (m, B) <- (m, 1)
        codes = np.asarray(representation(factors.reshape(m * batch_size, -1)), np.float64)
        codes = codes.reshape(m, batch_size, -1)  # (m, B, num_codes)
        ratio = np.var(codes, axis=1, ddof=1)[:, active_index] / global_variances[active_index]
        np.add.at(votes, (fixed, active_index[np.argmin(ratio, axis=1)]), 1)
    return votes


def factor_vae_score_of(
    representation,
    factor_sizes,
    *,
    num_train=10_000,
    num_eval=5_000,
    num_variance_estimate=10_000,
    batch_size=64,
    prune_threshold=0.05,
    scored=None,
    seed=0,
    votes_per_call=16,
):
    """The FactorVAE score of a representation of uniformly drawn factors.

    Args:
        representation: `(n, num_factors)` int factors -> `(n, num_codes)`
            codes, e.g. render and encode to posterior means.
        factor_sizes: the number of values of each factor (each drawn uniformly).
        num_train: training votes (10,000 in disentanglement_lib).
        num_eval: evaluation votes (5,000).
        num_variance_estimate: points of the global variances (10,000).
        batch_size: points per vote (64).
        prune_threshold: dimensions whose global standard deviation is below
            it are collapsed and get no votes (0.05).
        scored: indices of the factors that votes may fix (default: all); a
            conditional model's label factor is left out.
        seed: seed of every draw.
        votes_per_call: votes encoded together (speed only).

    Returns:
        dict: `factor_vae_score` (accuracy on the evaluation votes),
        `factor_vae_train_accuracy`, `factor_vae_active_dims`. Without an
        active dimension the score is 0, as in disentanglement_lib.

    Reference:
        Kim & Mnih, "Disentangling by Factorising", ICML 2018;
        disentanglement_lib `factor_vae.py`.
    """
    sizes = np.asarray(factor_sizes)
    if num_train < 1 or num_eval < 1 or num_variance_estimate < 2 or batch_size < 2:
        raise ValueError(
            "Expected num_train, num_eval >= 1 and num_variance_estimate, batch_size >= 2. "
            f"Received: {num_train}, {num_eval}, {num_variance_estimate}, {batch_size}"
        )
    rng = np.random.default_rng(seed)
    points = rng.integers(0, sizes, size=(num_variance_estimate, len(sizes)))
    global_variances = np.var(np.asarray(representation(points), np.float64), axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold  # (num_codes,)
    if not np.any(active):
        return {"factor_vae_score": 0.0, "factor_vae_train_accuracy": 0.0,
                "factor_vae_active_dims": 0}  # fmt: skip
    kwargs = dict(
        rng=rng,
        global_variances=global_variances,
        active=active,
        scored=scored,
        batch_size=batch_size,
        votes_per_call=votes_per_call,
    )
    train_votes = factor_vae_votes(representation, sizes, num_train, **kwargs)
    eval_votes = factor_vae_votes(representation, sizes, num_eval, **kwargs)
    # The majority-vote classifier: code dimension -> the factor it voted for most.
    classifier = np.argmax(train_votes, axis=0)  # (num_codes,)
    dims = np.arange(len(classifier))
    return {
        "factor_vae_score": float(eval_votes[classifier, dims].sum() / eval_votes.sum()),
        "factor_vae_train_accuracy": float(train_votes[classifier, dims].sum() / num_train),
        "factor_vae_active_dims": int(np.sum(active)),
    }
