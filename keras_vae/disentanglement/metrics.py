"""Code-based disentanglement metrics: MIG, SAP and DCI of codes against known factors.

Pure functions of a representation `codes` `(N, num_codes)` (e.g. posterior
means) and the discrete ground-truth factors `factors` `(N, num_factors)`
that generated the images, each as disentanglement_lib computes it
(Locatello et al. 2019, "Challenging Common Assumptions in the Unsupervised
Learning of Disentangled Representations", ICML 2019, `evaluation/metrics/`):

- `mutual_information_gap` (Chen et al. 2018): 20-bin histogram
  discretization, discrete mutual information;
- `sap_score` (Kumar et al. 2018): one `LinearSVC(C=0.01,
  class_weight="balanced")` per (code dimension, factor) for discrete
  factors, test accuracy, mean gap between the two best dimensions;
- `dci` (Eastwood & Williams 2018): one `GradientBoostingClassifier()` per
  factor, importances -> disentanglement, completeness, informativeness;
- `scores`: all of them from one sample, split into train and test points.

A factor that takes a single value over the points is skipped with a warning
(disentanglement_lib would divide by zero or fail to fit a classifier).
scikit-learn provides the reference's SVM and gradient-boosted trees.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np
from absl import logging


def histogram_discretize(values, num_bins=20):
    """Discretizes each column into `num_bins` equal-width bins over its range.

    As disentanglement_lib's `_histogram_discretize` (it works on the
    transposed `(num_codes, N)` array): bin edges from `np.histogram`, bin
    index by `np.digitize` against the lower edges, so values are in
    [1, num_bins].

    Args:
        values: `(N, num_columns)` array.
        num_bins: bins per column.

    Returns:
        `(N, num_columns)` int64 array.
    """
    values = np.asarray(values)
    out = np.zeros(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        edges = np.histogram(values[:, j], num_bins)[1]
        out[:, j] = np.digitize(values[:, j], edges[:-1])
    return out


def discrete_mutual_information(a, b):
    """Mutual information of two discrete variables from their samples, in nats.

    I(a; b) = sum_ij p_ij log(p_ij / (p_i p_j)) with the empirical joint
    p_ij = n_ij / N of the contingency table; the same value as
    `sklearn.metrics.mutual_info_score(a, b)`. I(a; a) is the entropy H(a).

    Args:
        a, b: `(N,)` arrays of labels (any hashable values NumPy can sort).

    Returns:
        float >= 0.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"Expected two non-empty label arrays of one length. Received: {a.shape} and {b.shape}"
        )
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = int(ai.max()) + 1, int(bi.max()) + 1
    # The contingency table n_ij, (na, nb).
    joint = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = joint.sum()
    pi = joint.sum(axis=1, keepdims=True) / n  # (na, 1)
    pj = joint.sum(axis=0, keepdims=True) / n  # (1, nb)
    pij = joint / n
    nz = pij > 0
    return float(max(0.0, np.sum(pij[nz] * np.log(pij[nz] / (pi @ pj)[nz]))))


def mutual_information_matrix(codes, factors, num_bins=20):
    """I(discretized code_i; factor_j) for every pair, in nats.

    Args:
        codes: `(N, num_codes)` continuous representation (posterior means).
        factors: `(N, num_factors)` discrete ground-truth factors.
        num_bins: histogram bins per code dimension.

    Returns:
        `(num_codes, num_factors)` float64 array.
    """
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(
            "Expected `codes` (N, num_codes) and `factors` (N, num_factors) with the same N. "
            f"Received: codes.shape={codes.shape}, factors.shape={factors.shape}"
        )
    discrete = histogram_discretize(codes, num_bins)
    return np.array(
        [
            [
                discrete_mutual_information(discrete[:, i], factors[:, j])
                for j in range(factors.shape[1])
            ]
            for i in range(discrete.shape[1])
        ]
    )


def mutual_information_gap(codes, factors, num_bins=20):
    """Mutual Information Gap of a representation (Chen et al. 2018, eq. 6).

        MIG = 1/K sum_k (I(v_k; z_j(k)) - max_{j != j(k)} I(v_k; z_j)) / H(v_k),

    j(k) = argmax_j I(v_k; z_j), with the disentanglement_lib protocol: each
    code dimension is discretized into `num_bins` equal-width bins over its
    range (`histogram_discretize`) and the mutual information is the discrete
    one of the contingency table (`discrete_mutual_information`). 10,000
    points of 10-dimensional codes: < 0.1 s.

    A factor that takes a single value over the N points has H(v_k) = 0 and
    is skipped (disentanglement_lib would divide by zero). Note the ceiling
    this protocol puts on factors with more than `num_bins` values: 20 bins
    over a perfect copy of dSprites' 32 uniform positions hold 2 values in 12
    bins and 1 in 8, which keeps 4.25 / 5 = 0.85 of their entropy, and over
    its 40 orientations log 20 / log 40 = 0.81: the MIG of the true shapes
    factors themselves is (1 + 1 + 0.81 + 0.85 + 0.85) / 5 = 0.90, less the
    second dimension's estimation bias (~0.006 at 10,000 points).

    Args:
        codes: `(N, num_codes)`, num_codes >= 2, e.g. posterior means.
        factors: `(N, num_factors)` discrete ground-truth factors.
        num_bins: histogram bins per code dimension (20 in disentanglement_lib).

    Returns:
        float in [0, 1]: higher is more disentangled.

    Reference:
        Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in
        VAEs", NeurIPS 2018; Locatello et al., "Challenging Common Assumptions
        in the Unsupervised Learning of Disentangled Representations", ICML
        2019 (disentanglement_lib, `mig.py`).
    """
    codes, factors = _check(codes, factors)
    mi = mutual_information_matrix(codes, factors, num_bins)  # (num_codes, num_factors)
    entropy = np.array(
        [discrete_mutual_information(factors[:, j], factors[:, j]) for j in range(mi.shape[1])]
    )
    varying = _varying(factors, "MIG")
    top = np.sort(mi[:, varying], axis=0)[::-1]  # (num_codes, F'), descending
    return float(np.mean((top[0] - top[1]) / entropy[varying]))


def sap_score_matrix(train_codes, train_factors, test_codes, test_factors, seed=0):
    """Test accuracy of a linear classifier of each factor from each code dimension.

    As disentanglement_lib's `sap_score.compute_score_matrix` for discrete
    factors: for every pair (i, j) a `sklearn.svm.LinearSVC(C=0.01,
    class_weight="balanced")` is fitted to predict factor j from code
    dimension i alone on the train points and scored by its accuracy on the
    test points. The codes are not standardised (neither are they there), so
    the strong regularisation C = 0.01 acts on the codes' own scale. 10,000
    train points of 10-dimensional codes and shapes' 5 factors: 1.5 s.

    Args:
        train_codes, test_codes: `(N_train, num_codes)`, `(N_test, num_codes)`.
        train_factors, test_factors: `(N_train, num_factors)`, `(N_test, num_factors)`
            discrete factors; each must take >= 2 values on the train points.
        seed: `random_state` of the SVMs (liblinear's coordinate order).

    Returns:
        `(num_codes, num_factors)` float64 accuracies in [0, 1].
    """
    from sklearn import svm

    train_codes, train_factors = _check(train_codes, train_factors)
    test_codes, test_factors = _check(test_codes, test_factors)
    matrix = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    for i in range(train_codes.shape[1]):
        for j in range(train_factors.shape[1]):
            classifier = svm.LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with _factors_are_classes():
                classifier.fit(train_codes[:, i : i + 1], train_factors[:, j])
            matrix[i, j] = np.mean(
                classifier.predict(test_codes[:, i : i + 1]) == test_factors[:, j]
            )
    return matrix


def sap_score(train_codes, train_factors, test_codes, test_factors, seed=0):
    """Separated Attribute Predictability (Kumar et al. 2018, section 3).

        SAP = 1/K sum_k (S_{i1(k), k} - S_{i2(k), k}),

    S the `sap_score_matrix` (test accuracy of factor k from code dimension
    i), i1(k) and i2(k) the two best dimensions for factor k: a factor read
    well from one dimension and badly from all others scores high. The
    ceiling is below 1 for factors with many values: a one-vs-rest linear
    classifier on one number tells apart few of them (measure it on the
    factors themselves).

    Args:
        As `sap_score_matrix`; num_codes >= 2.

    Returns:
        float in [0, 1]: higher is more disentangled.

    Reference:
        Kumar, Sattigeri & Balakrishnan, "Variational Inference of
        Disentangled Latent Concepts from Unlabeled Observations", ICLR 2018;
        disentanglement_lib `sap_score.py` (`continuous_factors=False`).
    """
    varying = _varying(np.asarray(train_factors), "SAP")
    matrix = sap_score_matrix(
        train_codes,
        np.asarray(train_factors)[:, varying],
        test_codes,
        np.asarray(test_factors)[:, varying],
        seed,
    )
    top = np.sort(matrix, axis=0)[::-1]  # (num_codes, F'), descending
    return float(np.mean(top[0] - top[1]))


def dci_importance(train_codes, train_factors, test_codes, test_factors, seed=0):
    """Importance of each code dimension for each factor, by gradient-boosted trees.

    As disentanglement_lib's `dci.compute_importance_gbt`: one
    `sklearn.ensemble.GradientBoostingClassifier()` (its defaults: 100
    stages of depth-3 trees, learning rate 0.1) per factor, fitted on the
    train points; R_ij = |feature_importances_| (impurity-based, each column
    sums to 1 unless no tree split at all).

    Slow: 100 stages of one tree per class, 113 classes for shapes' factors.
    On 10,000 train points of 10-dimensional codes, on 2 CPU cores shared
    with training runs (load 6-8): 12-14 min (shape 20 s, scale 50 s,
    orientation and each position ~3.7 min). Fewer points hardly help below
    ~2,000 (per-tree overhead: ~3 min at 1,000) and lower the scores of
    imperfect codes (`on_shapes.evaluate_on_shapes`).

    Args:
        As `sap_score_matrix`; `seed` is the trees' `random_state` (their
            tie-breaking; the reference leaves it unseeded).

    Returns:
        `(importance, train_accuracy, test_accuracy)`: the `(num_codes,
        num_factors)` matrix R and the mean over factors of the classifiers'
        accuracy on the train and on the test points.
    """
    from sklearn import ensemble

    train_codes, train_factors = _check(train_codes, train_factors)
    test_codes, test_factors = _check(test_codes, test_factors)
    importance = np.zeros((train_codes.shape[1], train_factors.shape[1]))
    train_accuracy, test_accuracy = [], []
    for j in range(train_factors.shape[1]):
        start = time.perf_counter()
        model = ensemble.GradientBoostingClassifier(random_state=seed)
        with _factors_are_classes():
            model.fit(train_codes, train_factors[:, j])
        logging.info(
            "DCI: factor %d of %d (%d classes) fitted in %.0f s.",
            j + 1,
            train_factors.shape[1],
            len(model.classes_),
            time.perf_counter() - start,
        )
        importance[:, j] = np.abs(model.feature_importances_)
        train_accuracy.append(np.mean(model.predict(train_codes) == train_factors[:, j]))
        test_accuracy.append(np.mean(model.predict(test_codes) == test_factors[:, j]))
    return importance, float(np.mean(train_accuracy)), float(np.mean(test_accuracy))


def dci_disentanglement(importance):
    """D = sum_i rho_i (1 - H_K(P_i.)) (Eastwood & Williams 2018).

    P_ij = R_ij / sum_j R_ij is code i's importance over the K factors,
    H_K the entropy in base K, rho_i = sum_j R_ij / sum_ij R_ij the code's
    share of all importance: 1 when every code that matters informs one
    factor only.

    Args:
        importance: `(num_codes, num_factors)` non-negative R, num_factors >= 2.

    Returns:
        float in [0, 1].
    """
    importance = np.asarray(importance, np.float64)
    per_code = 1.0 - _entropy(importance, axis=1)  # (num_codes,)
    weights = importance.sum(axis=1) if importance.sum() > 0 else np.ones(len(importance))
    return float(np.sum(per_code * weights / weights.sum()))


def dci_completeness(importance):
    """C = sum_j rho_j (1 - H_D(P_.j)) (Eastwood & Williams 2018).

    P_ij = R_ij / sum_i R_ij is factor j's importance over the D code
    dimensions, H_D the entropy in base D, rho_j = sum_i R_ij / sum_ij R_ij
    the factor's share of all importance (disentanglement_lib's weighting):
    1 when every factor is captured by one code dimension.

    Args:
        importance: `(num_codes, num_factors)` non-negative R, num_codes >= 2.

    Returns:
        float in [0, 1].
    """
    importance = np.asarray(importance, np.float64)
    per_factor = 1.0 - _entropy(importance, axis=0)  # (num_factors,)
    weights = importance.sum(axis=0) if importance.sum() > 0 else np.ones(importance.shape[1])
    return float(np.sum(per_factor * weights / weights.sum()))


def dci(train_codes, train_factors, test_codes, test_factors, seed=0):
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    The importance matrix of `dci_importance`, then `dci_disentanglement`
    and `dci_completeness`. Informativeness follows disentanglement_lib's
    convention: the gradient-boosted trees' mean test accuracy over the
    factors (higher is better; chance is the mean of 1 / num_values for
    uniform factors), where the paper reports the prediction error.

    Args:
        As `sap_score_matrix`; num_codes >= 2 and >= 2 varying factors.

    Returns:
        dict: `disentanglement`, `completeness`, `informativeness` (test
        accuracy), `informativeness_train` (train accuracy), floats in [0, 1].

    Reference:
        Eastwood & Williams, "A Framework for the Quantitative Evaluation of
        Disentangled Representations", ICLR 2018; disentanglement_lib `dci.py`.
    """
    train_factors = np.asarray(train_factors)
    varying = _varying(train_factors, "DCI")
    if np.sum(varying) < 2:
        raise ValueError(
            "Expected >= 2 varying factors: DCI disentanglement is an entropy over factors. "
            f"Received: {int(np.sum(varying))}"
        )
    importance, train_accuracy, test_accuracy = dci_importance(
        train_codes,
        train_factors[:, varying],
        test_codes,
        np.asarray(test_factors)[:, varying],
        seed,
    )
    return {
        "disentanglement": dci_disentanglement(importance),
        "completeness": dci_completeness(importance),
        "informativeness": test_accuracy,
        "informativeness_train": train_accuracy,
    }


def scores(codes, factors, factor_sizes=None, seed=0, *, num_train=None, num_bins=20):
    """MIG, SAP and DCI of one sample of codes and their factors.

    The first `num_train` points are the train points (MIG is computed on
    them, SAP's and DCI's classifiers are fitted on them), the rest the test
    points SAP and DCI are scored on. With 15,000 points and the default
    split this is disentanglement_lib's protocol (`num_train` 10,000,
    `num_test` 5,000), where each metric draws its own sample.

    Args:
        codes: `(N, num_codes)` float, num_codes >= 2, e.g. posterior means.
        factors: `(N, num_factors)` int ground-truth factors.
        factor_sizes: the number of values of each factor; when given,
            factors outside [0, size) are an error.
        seed: seed of the classifiers.
        num_train: train points; default `round(2 N / 3)`.
        num_bins: MIG's histogram bins per code dimension.

    Returns:
        dict of floats: `mig`, `sap`, `dci_disentanglement`,
        `dci_completeness`, `dci_informativeness` (test accuracy),
        `dci_informativeness_train`.
    """
    codes, factors = _check(codes, factors)
    if factor_sizes is not None:
        sizes = np.asarray(factor_sizes)
        if sizes.shape != (factors.shape[1],) or np.any(factors < 0) or np.any(factors >= sizes):
            raise ValueError(
                f"Expected factors in [0, size) for factor_sizes={tuple(factor_sizes)}. "
                f"Received: factors of shape {factors.shape} in [{factors.min()}, {factors.max()}]"
            )
    n = len(codes)
    num_train = round(2 * n / 3) if num_train is None else int(num_train)
    if not 2 <= num_train <= n - 1:
        raise ValueError(f"Expected 2 <= num_train < N = {n}. Received: num_train={num_train}")
    train = codes[:num_train], factors[:num_train]
    test = codes[num_train:], factors[num_train:]
    dci_scores = dci(*train, *test, seed=seed)
    return {
        "mig": mutual_information_gap(*train, num_bins=num_bins),
        "sap": sap_score(*train, *test, seed=seed),
        "dci_disentanglement": dci_scores["disentanglement"],
        "dci_completeness": dci_scores["completeness"],
        "dci_informativeness": dci_scores["informativeness"],
        "dci_informativeness_train": dci_scores["informativeness_train"],
    }


def _check(codes, factors):
    """`codes` `(N, num_codes >= 2)` float64 and `factors` `(N, num_factors)` int."""
    codes = np.asarray(codes, np.float64)
    factors = np.asarray(factors)
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(
            f"Expected `codes` of shape (N, num_codes >= 2). Received: codes.shape={codes.shape}"
        )
    if factors.ndim != 2 or codes.shape[0] != factors.shape[0] or not len(codes):
        raise ValueError(
            "Expected `codes` (N, num_codes) and `factors` (N, num_factors) with the same N > 0. "
            f"Received: codes.shape={codes.shape}, factors.shape={factors.shape}"
        )
    if not np.all(np.isfinite(codes)):
        raise ValueError("Expected finite `codes`. Received: NaN or infinite values.")
    return codes, factors


def _varying(factors, metric):
    """Boolean mask of the factors that take >= 2 values; warns about the others."""
    varying = np.array([len(np.unique(factors[:, j])) > 1 for j in range(factors.shape[1])])
    if not np.any(varying):
        raise ValueError(f"Every factor is constant over the points: {metric} is undefined.")
    if not np.all(varying):
        logging.warning(
            "%s: skipping %d constant factor(s) (zero entropy).", metric, int(np.sum(~varying))
        )
    return varying


def _entropy(matrix, axis):
    """Normalised entropy of each slice of `matrix` along `axis`, in base
    `matrix.shape[axis]` (scipy.stats.entropy of matrix + 1e-11, as the
    reference): 0 for one-hot, 1 for uniform."""
    p = matrix + 1e-11
    p = p / p.sum(axis=axis, keepdims=True)
    return -np.sum(p * np.log(p), axis=axis) / math.log(matrix.shape[axis])


@contextlib.contextmanager
def _factors_are_classes():
    """Silences scikit-learn's guess that many classes over few points are a
    regression target: a factor's values are classes by definition."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater")
        yield
