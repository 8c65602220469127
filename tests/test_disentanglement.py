"""Tests for keras_vae.disentanglement: MIG, SAP, DCI and the FactorVAE score
against hand-computed values and disentanglement_lib's definitions, on codes
of known quality (the factors themselves, the same codes rotated, noise)."""

import math

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import disentanglement
from keras_vae.disentanglement import discrete_mutual_information
from keras_vae.models import VAE


def test_discrete_mutual_information_by_hand():
    a = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    # I(a; a) = H(a) = log 4 for 4 equally frequent values.
    assert discrete_mutual_information(a, a) == pytest.approx(math.log(4))
    # b = a // 2 is a function of a: I(a; b) = H(b) = log 2.
    assert discrete_mutual_information(a, a // 2) == pytest.approx(math.log(2))
    # c = a mod 2 and b: every (b, c) pair once each twice -> independent, I = 0.
    assert discrete_mutual_information(a // 2, a % 2) == pytest.approx(0.0, abs=1e-12)
    # Labels need not be 0..n-1.
    assert discrete_mutual_information(a * 10 - 7, a) == pytest.approx(math.log(4))


def test_histogram_discretize_matches_disentanglement_lib():
    values = np.array([[0.0], [0.049], [0.05], [0.5], [0.999], [1.0]])
    # 20 equal bins over [0, 1], index = digitize against the 20 lower edges:
    # 0.05 starts bin 2; the maximum falls into the last bin, 20.
    np.testing.assert_array_equal(
        disentanglement.histogram_discretize(values, 20)[:, 0], [1, 1, 2, 11, 20, 20]
    )


def _factors(n, sizes, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in sizes], axis=1)


def test_mig_is_high_for_copied_factors_and_low_for_noise():
    # Factors with <= 20 values: 20 equal-width bins keep them all distinct.
    factors = _factors(10_000, (3, 6, 10, 16))
    rng = np.random.default_rng(1)
    codes = factors + 1e-3 * rng.normal(size=factors.shape)
    # Plus an uninformative code dimension.
    codes = np.concatenate([codes, rng.normal(size=(10_000, 1))], axis=1)
    mig = disentanglement.mutual_information_gap(codes, factors)
    # Each factor: top MI = H(factor), second ~ the plug-in bias
    # (bins - 1)(values - 1) / 2N ~ 0.01 nats. Seen: 0.99.
    assert mig > 0.9
    noise = rng.normal(size=(10_000, 5))
    assert disentanglement.mutual_information_gap(noise, factors) < 0.05
    # A code that mixes two factors informs both weakly: MIG drops.
    mixed = np.stack([factors[:, 2] + factors[:, 3], factors[:, 2] - factors[:, 3]], axis=1)
    assert disentanglement.mutual_information_gap(mixed, factors[:, 2:]) < 0.5


def test_mig_skips_a_constant_factor_and_validates():
    factors = _factors(2000, (4, 1))  # second factor has a single value
    codes = np.concatenate(
        [factors[:, :1] + 0.0, np.random.default_rng(0).normal(size=(2000, 1))], axis=1
    )
    assert disentanglement.mutual_information_gap(codes, factors) > 0.9
    with pytest.raises(ValueError, match="constant"):
        disentanglement.mutual_information_gap(codes, factors[:, 1:])
    with pytest.raises(ValueError, match="num_codes >= 2"):
        disentanglement.mutual_information_gap(codes[:, :1], factors)
    with pytest.raises(ValueError, match="same N"):
        disentanglement.mutual_information_gap(codes[:10], factors)


def test_compute_mig_on_shapes_runs_on_a_small_model():

    keras.utils.set_random_seed(0)
    encoder = keras_vae.build_encoder((16, 16, 1), 3, network="mlp", widths=(16,))
    decoder = keras_vae.build_decoder((16, 16, 1), 3, network="mlp", widths=(16,))
    model = VAE(encoder, decoder)
    mig = disentanglement.compute_mig_on_shapes(model, num_points=600, seed=0, batch_size=256)
    assert 0.0 <= mig <= 1.0
    # The factor draw is seeded: the same seed gives the same number.
    assert disentanglement.compute_mig_on_shapes(model, num_points=600, seed=0) == mig


class _CopiesItsLabel:
    """A conditional model whose code is its label (and a constant): it
    records the labels `encode` was given. Stands in for a cvae conditioned
    on `condition_size` classes."""

    conditional = True
    multi_hot = False
    image_shape = (16, 16, 1)

    def __init__(self, condition_size):
        self.condition_size = condition_size
        self.labels = []

    def encode(self, images, labels=None):
        labels = np.asarray(labels)
        self.labels.append(labels)
        codes = np.stack([labels, np.zeros(len(labels))], axis=1).astype("float32")
        return codes, np.zeros_like(codes)


def test_mig_of_a_conditional_model_scores_the_other_factors():
    # Encoded with the sampled factor as label; that factor is left out. The
    # stand-in's code holds only its label, so it holds none of the four
    # scored factors: MIG 0 (were it handed another factor, e.g. scale, as
    # labels, that factor's gap would be ~1 and MIG ~0.25). The plug-in MI of
    # independent variables is biased up by ~(a - 1)(b - 1) / 2N nats: for 6
    # label values and 32 positions over 3000 points, 0.026 nats, 0.007 of
    # H(pos_x) = log 32.
    for condition, size in (("shape", 3), ("scale", 6)):
        model = _CopiesItsLabel(size)
        mig = disentanglement.compute_mig_on_shapes(model, num_points=3000, condition=condition)
        assert mig == pytest.approx(0.0, abs=0.03), condition
        labels = np.concatenate(model.labels)
        assert labels.shape == (3000,) and set(labels.tolist()) == set(range(size))
    scored = disentanglement.scored_factor_names("shape")
    assert scored == ["scale", "orientation", "pos_x", "pos_y"]
    with pytest.raises(ValueError, match="conditioned on, one of"):
        disentanglement.compute_mig_on_shapes(_CopiesItsLabel(3), num_points=100)
    with pytest.raises(ValueError, match="the 6 classes of 'scale'"):
        disentanglement.compute_mig_on_shapes(_CopiesItsLabel(3), num_points=100, condition="scale")


def test_compute_mig_on_shapes_runs_on_a_small_cvae():
    from keras_vae.models import CVAE

    keras.utils.set_random_seed(0)
    shape = dict(image_shape=(16, 16, 1), latent_dim=3, network="mlp", widths=(16,))
    encoder = keras_vae.build_encoder(**shape, condition_size=3)
    decoder = keras_vae.build_decoder(**shape, condition_size=3)
    model = CVAE(encoder, decoder, condition_size=3)
    mig = disentanglement.compute_mig_on_shapes(model, num_points=600, seed=0, condition="shape")
    assert 0.0 <= mig <= 1.0
    assert disentanglement.compute_mig_on_shapes(model, num_points=600, condition="shape") == mig


# -- Codes of known quality: the true factors, the same rotated, noise -------
#
# Shapes' factor sizes: shape 3, scale 6, orientation 40, pos_x 32, pos_y 32.
SIZES = (3, 6, 40, 32, 32)
SHAPES_FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")


def _standardized(factors, sizes):
    """Uniform factor indices scaled to mean 0, variance 1: (v - (s-1)/2) / sqrt((s^2-1)/12)."""
    sizes = np.asarray(sizes)
    return (factors - (sizes - 1) / 2) / np.sqrt((sizes**2 - 1) / 12)


def _rotation(k, seed=0):
    """A random k x k orthogonal matrix (QR of a Gaussian matrix)."""
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(k, k)))[0]


def _binned_entropy_ratio(num_values, num_bins=20):
    """H(binned v) / H(v) for v uniform over `num_values` equal-width bins'
    values 0..num_values-1, from the bin counts (by hand below)."""
    edges = np.linspace(0, num_values - 1, num_bins + 1)
    counts = np.array([np.sum(np.arange(num_values) >= lo) for lo in edges[:-1]])
    counts = -np.diff(np.append(counts, 0))  # values per bin
    p = counts[counts > 0] / num_values
    return float(-np.sum(p * np.log(p)) / math.log(num_values))


def test_mig_ceiling_of_the_true_shapes_factors():
    # 20 equal-width bins over the range of a code that equals its factor:
    # - shape (3 values) and scale (6) keep every value apart: I = H, ratio 1;
    # - orientation (40 values): 20 bins of 2 values, H(bin) = log 20, ratio
    #   log 20 / log 40 = 0.8121;
    # - pos_x, pos_y (32 values): bin width 31/20 = 1.55, so 12 bins hold 2
    #   values and 8 hold 1: H(bin) = 12 (2/32) log 16 + 8 (1/32) log 32
    #   = 4.25 log 2 against H = 5 log 2, ratio 0.85 (the README's "~0.86"
    #   was log 20 / log 32, an upper bound).
    assert _binned_entropy_ratio(3) == pytest.approx(1.0)
    assert _binned_entropy_ratio(6) == pytest.approx(1.0)
    assert _binned_entropy_ratio(40) == pytest.approx(math.log(20) / math.log(40))
    assert _binned_entropy_ratio(32) == pytest.approx(0.85)
    ceiling = (1 + 1 + math.log(20) / math.log(40) + 0.85 + 0.85) / 5  # 0.90242
    assert ceiling == pytest.approx(0.90242, abs=1e-5)
    factors = _factors(10_000, SIZES)
    mig = disentanglement.mutual_information_gap(factors.astype(float), factors)
    # Minus the second-best dimension's plug-in MI of independent variables,
    # ~(a - 1)(b - 1) / 2N nats: for pos_x against 20 bins of orientation,
    # 19 * 31 / 20,000 = 0.029 nats = 0.0085 of log 32. Seen: 0.8966.
    assert ceiling - 0.015 < mig < ceiling + 0.002
    # The same codes rotated: every dimension mixes all factors.
    rotated = _standardized(factors, SIZES) @ _rotation(5)
    assert disentanglement.mutual_information_gap(rotated, factors) < 0.3


def test_sap_ceiling_of_the_true_shapes_factors():
    # A one-vs-rest linear classifier with C = 0.01 on one number tells few
    # of a factor's values apart, and which ones depends on the sample (the
    # middle classes' lines nearly tie): from its own code, shape is read
    # whole (accuracy 1), scale half right (3 of 6 values), orientation and
    # positions between chance and ~0.3. An independent code dimension
    # scores chance, 1 / v (balanced classes). So SAP of the true factors is
    # at least (2/3 + 1/3) / 5 = 0.2 and, measured over seeds, below 0.3.
    factors = _factors(3000, SIZES)
    codes = factors.astype(float)
    train, test = slice(0, 2000), slice(2000, None)
    matrix = disentanglement.sap_score_matrix(
        codes[train], factors[train], codes[test], factors[test]
    )
    chance = 1 / np.array(SIZES, float)
    off_diagonal = ~np.eye(5, dtype=bool)
    # 1000 test points: standard error of an accuracy <= 0.016.
    np.testing.assert_allclose(
        matrix[off_diagonal], np.broadcast_to(chance, (5, 5))[off_diagonal], atol=0.04
    )
    assert matrix[0, 0] == 1.0 and matrix[1, 1] == pytest.approx(0.5, abs=0.04)
    assert np.all(matrix[[2, 3, 4], [2, 3, 4]] > chance[2:]) and np.all(
        matrix[[2, 3, 4], [2, 3, 4]] < 0.3
    )
    sap = disentanglement.sap_score(codes[train], factors[train], codes[test], factors[test])
    top = np.sort(matrix, axis=0)
    assert sap == pytest.approx(np.mean(top[-1] - top[-2]))
    assert 0.2 <= sap < 0.3
    rotated = _standardized(factors, SIZES) @ _rotation(5)
    assert (
        disentanglement.sap_score(rotated[train], factors[train], rotated[test], factors[test])
        < 0.12
    )
    noise = np.random.default_rng(3).normal(size=(3000, 5))
    assert (
        disentanglement.sap_score(noise[train], factors[train], noise[test], factors[test]) < 0.05
    )


def test_dci_entropies_by_hand():
    # One-hot rows and columns: D = C = 1.
    assert disentanglement.dci_disentanglement(np.eye(3)) == pytest.approx(1.0)
    assert disentanglement.dci_completeness(np.eye(3)) == pytest.approx(1.0)
    # Uniform importance: every entropy is maximal, D = C = 0.
    assert disentanglement.dci_disentanglement(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-9)
    assert disentanglement.dci_completeness(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-9)
    # Code 0 informs factor 0 alone (1 - H = 1), code 1 both factors equally
    # (1 - H_2(1/2, 1/2) = 0); weights = row sums / total = 1/3 and 2/3: D = 1/3.
    # Columns: factor 0 is (1, 1) over 2 codes -> 0; factor 1 is (0, 1) -> 1;
    # weights 2/3 and 1/3: C = 1/3.
    importance = np.array([[1.0, 0.0], [1.0, 1.0]])
    assert disentanglement.dci_disentanglement(importance) == pytest.approx(1 / 3, abs=1e-6)
    assert disentanglement.dci_completeness(importance) == pytest.approx(1 / 3, abs=1e-6)


def test_scores_of_true_rotated_and_noise_codes():
    # Few values per factor and few points keep the gradient-boosted trees
    # (100 stages x one tree per class) quick: sizes 2, 3, 4, 5 (14 classes).
    sizes = (2, 3, 4, 5)
    n = 900  # 600 train, 300 test
    factors = _factors(n, sizes, seed=4)
    true = disentanglement.scores(factors.astype(float), factors, sizes)
    # Every factor <= 20 values: each code holds one factor whole, MIG ~ 1
    # minus the second code's plug-in MI, ~(a-1)(b-1)/2N nats: for the
    # 3-valued factor against the 5-valued code, 8/1200 = 0.006 of log 3.
    # Seen: 0.993.
    assert true["mig"] > 0.97
    # SAP: each code reads >= 2 of its factor's values, others score chance
    # 1 / v (see above): gaps >= (1 - 1/2, 2/3 - 1/3, 2/4 - 1/4, 2/5 - 1/5).
    assert true["sap"] > (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4
    # The trees use each factor's own code: importance ~ the identity.
    assert true["dci_disentanglement"] > 0.95 and true["dci_completeness"] > 0.95
    assert true["dci_informativeness"] == 1.0 and true["dci_informativeness_train"] == 1.0

    # The same codes, standardised and rotated by the 4 x 4 Hadamard matrix / 2:
    # every code is +-1/2 of each factor, so all four inform each factor alike.
    hadamard = np.kron([[1, 1], [1, -1]], [[1, 1], [1, -1]]) / 2
    np.testing.assert_allclose(hadamard @ hadamard.T, np.eye(4))
    rotated = disentanglement.scores(_standardized(factors, sizes) @ hadamard, factors, sizes)
    # Seen: MIG 0.013, SAP 0.02, D 0.001, C 0.003.
    for key in ("mig", "sap", "dci_disentanglement", "dci_completeness"):
        assert rotated[key] < 0.1, key
    # Still all the information: the trees decode it (seen: 1.0).
    assert rotated["dci_informativeness"] > 0.9

    noise = disentanglement.scores(np.random.default_rng(5).normal(size=(n, 5)), factors, sizes)
    for key in ("mig", "sap", "dci_disentanglement", "dci_completeness"):
        assert 0.0 <= noise[key] < 0.05, key
    # Chance: (1/2 + 1/3 + 1/4 + 1/5) / 4 = 0.32; 300 test points, SE <= 0.03
    # per factor, ~0.014 for the mean.
    assert noise["dci_informativeness"] == pytest.approx(
        (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4, abs=0.05
    )
    # The trees overfit the train points.
    assert noise["dci_informativeness_train"] > 0.5

    # The split: the first num_train points train, MIG on those alone.
    head = disentanglement.mutual_information_gap(factors[:600].astype(float), factors[:600])
    assert true["mig"] == pytest.approx(head)


def test_scores_validates_its_inputs():
    factors = _factors(30, (3, 4))
    codes = factors.astype(float)
    with pytest.raises(ValueError, match=r"factors in \[0, size\)"):
        disentanglement.scores(codes, factors, factor_sizes=(3, 3))
    with pytest.raises(ValueError, match="num_train"):
        disentanglement.scores(codes, factors, num_train=30)
    with pytest.raises(ValueError, match="finite"):
        disentanglement.scores(np.where(codes > 1, np.nan, codes), factors)
    with pytest.raises(ValueError, match="same N"):
        disentanglement.scores(codes[:10], factors)
    with pytest.raises(ValueError, match=">= 2 varying factors"):
        disentanglement.dci(codes, factors[:, :1], codes, factors[:, :1])


# -- FactorVAE score ------------------------------------------------------------


def test_factor_vae_score_of_true_rotated_and_noise_codes():
    rng = np.random.default_rng(0)

    def noised(factors):  # the factors themselves, plus noise well under one step
        return factors + 0.1 * rng.normal(size=factors.shape)

    kwargs = dict(num_train=500, num_eval=300, num_variance_estimate=2000)
    # Fixing factor k makes code k vary by the noise alone (variance 0.01
    # against its global variance (v^2 - 1)/12 >= 0.67): every vote is right.
    true = disentanglement.factor_vae_score_of(noised, SIZES, **kwargs)
    assert true == {
        "factor_vae_score": 1.0,
        "factor_vae_train_accuracy": 1.0,
        "factor_vae_active_dims": 5,
    }
    # Codes that tell nothing: the argmin is one of 10 dimensions at random,
    # whatever the factor; a vote is right with probability 1/5. 300 votes:
    # standard error 0.023.
    noise = disentanglement.factor_vae_score_of(
        lambda f: rng.normal(size=(len(f), 10)), SIZES, **kwargs
    )
    assert noise["factor_vae_score"] == pytest.approx(0.2, abs=0.08)
    rotation = _rotation(5)
    rotated = disentanglement.factor_vae_score_of(
        lambda f: _standardized(f, SIZES) @ rotation, SIZES, **kwargs
    )
    assert rotated["factor_vae_score"] < 0.9  # seen: 0.75
    # Collapsed dimensions (std < 0.05) get no votes; with none left the score is 0.
    pruned = disentanglement.factor_vae_score_of(
        lambda f: np.concatenate([noised(f), 0.01 * rng.normal(size=(len(f), 3))], 1),
        SIZES,
        **kwargs,
    )
    assert pruned["factor_vae_score"] == 1.0 and pruned["factor_vae_active_dims"] == 5
    flat = disentanglement.factor_vae_score_of(lambda f: 0.001 * f, SIZES, **kwargs)  # std <= 0.012
    assert flat == {
        "factor_vae_score": 0.0,
        "factor_vae_train_accuracy": 0.0,
        "factor_vae_active_dims": 0,
    }


def test_factor_vae_votes_fix_one_factor_per_batch():
    seen = []

    def record(factors):
        seen.append(factors.copy())
        return factors + 0.0

    votes = disentanglement.factor_vae_votes(
        record,
        SIZES,
        40,
        rng=np.random.default_rng(0),
        global_variances=np.ones(5),
        active=np.ones(5, bool),
        scored=[1, 3],
        batch_size=8,
        votes_per_call=16,
    )
    batches = np.concatenate(seen).reshape(40, 8, 5)
    for batch in batches:
        constant = [k for k in range(5) if len(set(batch[:, k])) == 1]
        # The fixed factor, one of `scored`; others vary (a chance repeat of
        # shape, 3 values, over 8 draws has probability 3^-7).
        assert constant in ([1], [3]), constant
    # Codes = factors: the fixed factor's own dimension always wins.
    assert votes.sum() == 40 and votes[1, 1] + votes[3, 3] == 40


class _Centroid:
    """A stand-in model whose code is the sprite's centroid (column, row) and
    area in pixels: it holds pos_x, pos_y and (with shape) scale."""

    conditional = False
    image_shape = (32, 32, 1)

    def encode(self, images, labels=None):
        images = np.asarray(images)[..., 0]  # (b, S, S)
        area = images.sum(axis=(1, 2))
        grid = np.arange(images.shape[1], dtype=float)
        x = (images.sum(axis=1) @ grid) / area
        y = (images.sum(axis=2) @ grid) / area
        codes = np.stack([x, y, area / 10], axis=1).astype("float32")
        return codes, np.zeros_like(codes)


def test_factor_vae_score_on_shapes_of_a_centroid_model():
    # Fixing pos_x (pos_y) fixes the centroid's column (row): those votes go
    # to that dimension. Fixing scale leaves the area only the shapes'
    # differences: its votes go to the area. Fixing shape or orientation
    # fixes no dimension: their votes spread over all three (seen over 1000
    # training votes: pos_x 196/196, pos_y 180/180, scale 191/191 on their
    # dimension; shape 46/75/85, orientation 46/98/83). The classifier maps
    # the three dimensions to pos_x, pos_y and scale, so the votes fixing
    # those (3/5 of them) are right: score ~0.6; 300 evaluation votes,
    # standard error 0.028.
    result = disentanglement.factor_vae_score(
        _Centroid(), num_train=300, num_eval=300, num_variance_estimate=1000, seed=0
    )
    assert result["factor_vae_active_dims"] == 3
    assert result["factor_vae_score"] == pytest.approx(0.6, abs=0.09)  # seen: 0.52-0.59


@pytest.mark.slow  # 11-35 s on 2 busy cores: DCI's 113 classes x 100 boosting stages
def test_scores_on_shapes_of_a_centroid_model():
    # Through rendering: the centroid's column holds pos_x, its row pos_y (MI
    # ~2.8 nats of log 32 = 3.47, ~0.15 with the other dimensions), the area
    # scale (1.3 of log 6 = 1.79 nats) and a little shape (0.15 of log 3):
    # gaps ~0.75, 0.75, 0.7, 0.1 and 0 for orientation, MIG ~0.45 on 2000
    # points; less on 400 (seen: 0.399).
    result = disentanglement.scores_on_shapes(_Centroid(), num_train=400, num_test=200)
    assert set(result) == {
        "mig",
        "sap",
        "dci_disentanglement",
        "dci_completeness",
        "dci_informativeness",
        "dci_informativeness_train",
    }
    for value in result.values():
        assert 0.0 <= value <= 1.0
    assert result["mig"] == pytest.approx(0.4, abs=0.08)
    # The train points are `compute_mig_on_shapes`' draw.
    assert result["mig"] == disentanglement.compute_mig_on_shapes(_Centroid(), num_points=400)


# -- evaluate.py's library call ---------------------------------------------------


@pytest.mark.slow  # 11-40 s on 2 busy cores, mostly DCI's 113 classes x 100 boosting stages
def test_evaluate_run_writes_every_metric_with_its_sample_counts():
    import tensorflow as tf

    from keras_vae import config as config_lib
    from keras_vae import evaluation, report

    keras.utils.set_random_seed(0)
    encoder = keras_vae.build_encoder((16, 16, 1), 3, network="mlp", widths=(16,))
    decoder = keras_vae.build_decoder((16, 16, 1), 3, network="mlp", widths=(16,))
    model = VAE(encoder, decoder)
    config = config_lib.resolve("shapes", seed=3)
    images = keras_vae.data.shapes.render(_factors(32, SIZES), 16)
    test_ds = tf.data.Dataset.from_tensor_slices(images).batch(16)
    results = report.evaluate_run(
        model,
        config,
        test_ds,
        iwae_samples=0,
        disentanglement_points=60,
        factor_vae_votes=40,
        progress=False,
    )
    keys = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness")
    for key in (*keys, "factor_vae_score"):
        assert math.isfinite(results[key]) and 0.0 <= results[key] <= 1.0, key
    assert results["mig_points"] == 60 and results["mig_factors"] == list(SHAPES_FACTORS)
    assert results["disentanglement_samples"] == {
        "num_train": 60,
        "num_test": 30,
        "num_bins": 20,
        "factor_vae_num_train": 40,
        "factor_vae_num_eval": 20,
        "factor_vae_num_variance_estimate": 60,
        "factor_vae_batch_size": 64,
    }
    note = results["disentanglement_note"]
    assert "MIG, SAP and DCI on 60 train and 30 test points" in note
    assert "from 40 training and 20 evaluation votes" in note
    # 1/2 / sqrt(20) = 0.112: the largest standard error of an accuracy on 20 votes.
    assert "standard error <= 0.112" in note
    # The run's seed drives the draws: the same numbers again, the MIG of
    # `compute_mig_on_shapes` on the same draw.
    assert results["mig"] == disentanglement.compute_mig_on_shapes(model, num_points=60, seed=3)
    table = evaluation.format_table(results, disentanglement.TABLE_ROWS)
    for label in ("MIG", "SAP", "DCI disentanglement", "DCI informativeness", "FactorVAE score"):
        assert label in table
    assert f"{results['factor_vae_score']:.4f}" in table
    # Off shapes, or asked not to: none of them.
    skipped = report.evaluate_run(
        model, config, test_ds, iwae_samples=0, disentanglement=False, progress=False
    )
    assert not {*keys, "factor_vae_score", "mig_points"} & set(skipped)
