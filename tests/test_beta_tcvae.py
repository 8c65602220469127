"""Tests for keras_vae.models.beta_tcvae: the importance weights, the MI + TC +
DWKL estimator (identity, golden values, convergence to a closed form), the
objective, training, `.keras` round trip, train.py / evaluate.py / export end to
end, mixed precision (MirroredStrategy: tests/test_distribute.py)."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import special
from script_helpers import quick_evaluate_in_process, train_in_process
from tensorboard.backend.event_processing import event_accumulator
from test_training import TINY

import keras_vae
from keras_vae import config as config_lib
from keras_vae import models
from keras_vae.models.beta_tcvae import BetaTCVAE, log_importance_weights, tc_decomposition
from keras_vae.training import plan

LOG_2PI = np.log(2 * np.pi)
TRACKERS = {"loss", "reconstruction", "kl", "elbo", "beta", "skipped_steps", "mi", "tc", "dwkl"}


def np_(x):
    return keras.ops.convert_to_numpy(x)


def posterior(m, d, seed=0):
    """A random batch: `mean`, `log_var` of q(z|x_i) and a code z_i from each,
    float32 `(m, d)`."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(m, d))
    log_var = rng.uniform(-2.0, 0.5, size=(m, d))
    z = mean + np.exp(0.5 * log_var) * rng.normal(size=(m, d))
    return tuple(a.astype("float32") for a in (mean, log_var, z))


def squares(n=64, size=16, seed=0):
    """`n` binary images, one square each at a random place and size."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, size, size, 1), "float32")
    for image in images:
        r = int(rng.integers(2, 5))
        y, x = rng.integers(0, size - r, 2)
        image[y : y + r, x : x + r] = 1.0
    return images


def make_model(latent_dim=3, dataset_size=64, seed=0, **kwargs):
    """A tiny mlp BetaTCVAE on 16x16x1 images; initial weights fixed by `seed`."""
    keras.utils.set_random_seed(seed)
    enc = keras_vae.build_encoder((16, 16, 1), latent_dim, "mlp", widths=(32,))
    dec = keras_vae.build_decoder((16, 16, 1), latent_dim, "mlp", widths=(32,))
    return BetaTCVAE(enc, dec, dataset_size=dataset_size, seed=seed, **kwargs)


def numpy_decomposition(mean, log_var, z, weights):
    """Reference in float64, one pair (i, j) at a time: `(mi, tc, dwkl)` per example."""
    m, d = mean.shape
    mean, log_var, z = (a.astype("float64") for a in (mean, log_var, z))
    log_q = np.empty((m, m, d))  # log q(z_i,k | x_j,k)
    for i in range(m):
        for j in range(m):
            var = np.exp(log_var[j])
            log_q[i, j] = -0.5 * (LOG_2PI + log_var[j] + (z[i] - mean[j]) ** 2 / var)
    log_qz = np.array([special.logsumexp(log_q[i].sum(-1), b=weights[i]) for i in range(m)])
    log_marginals = np.array(
        [sum(special.logsumexp(log_q[i, :, k], b=weights[i]) for k in range(d)) for i in range(m)]
    )
    log_qz_x = np.array([log_q[i, i].sum() for i in range(m)])
    log_pz = -0.5 * (LOG_2PI + z**2).sum(-1)
    return log_qz_x - log_qz, log_qz - log_marginals, log_marginals - log_pz


def mws_weights(m, n):
    # Own code 1/N; the M - 1 others share the remaining (N - 1)/N.
    return np.where(np.eye(m, dtype=bool), 1.0 / n, (n - 1) / (n * (m - 1)))


def mss_weights(m, n):
    # Own 1/N; (i, i + 1 mod M) the stratum (N - M + 1)/(N (M - 1)); others 1/(M - 1).
    w = np.full((m, m), 1.0 / (m - 1))
    w[np.arange(m), (np.arange(m) + 1) % m] = (n - m + 1) / (n * (m - 1))
    w[np.arange(m), np.arange(m)] = 1.0 / n
    return w


# ---------------------------------------------------------------------------
# The weights and the estimator


def test_registered_and_serializable():
    assert models.get("beta_tcvae") is BetaTCVAE
    assert keras.saving.get_registered_name(BetaTCVAE) == "keras_vae>BetaTCVAE"


@pytest.mark.parametrize(
    "estimator,expected",
    [
        # M = 4, N = 10: own 1/10, others 9 / (10 * 3) = 0.3; rows sum to 0.1 + 3 * 0.3 = 1.
        ("mws", [[0.1, 0.3, 0.3, 0.3]]),
        # Own 1/10, stratum (10 - 4 + 1) / (10 * 3) = 7/30, the other two 1/3:
        # 0.1 + 7/30 + 2/3 = 1.
        ("mss", [[0.1, 7 / 30, 1 / 3, 1 / 3]]),
    ],
)
def test_log_importance_weights_golden(estimator, expected):
    w = np.exp(np_(log_importance_weights(4, 10, estimator)))
    # Row i is row 0 rotated by i (the stratum sits at column i + 1 mod M).
    rows = np.array([np.roll(expected[0], i) for i in range(4)])
    np.testing.assert_allclose(w, rows, rtol=1e-6)
    reference = (mws_weights if estimator == "mws" else mss_weights)(4, 10)
    np.testing.assert_allclose(w, reference, rtol=1e-6)
    for m, n in [(2, 1000), (7, 7), (5, 3), (64, 60_000)]:
        w = np.exp(np_(log_importance_weights(m, n, estimator, dtype="float64")))
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    # N = M: every code's mixture is the exact 1/N over the whole "dataset" (mws).
    if estimator == "mws":
        np.testing.assert_allclose(np.exp(np_(log_importance_weights(5, 5))), 0.2, rtol=1e-6)
    # A batch of one is its own data.
    assert np.exp(np_(log_importance_weights(1, 10, estimator))).tolist() == [[1.0]]
    with pytest.raises(ValueError, match="Expected `estimator`"):
        log_importance_weights(4, 10, "paper")


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_mi_tc_dwkl_sum_to_the_same_sample_kl(estimator):
    # mi + tc + dwkl = (log q(z|x) - log q(z)) + (log q(z) - sum_d log q(z_d))
    #                + (sum_d log q(z_d) - log p(z)) = log q(z|x) - log p(z):
    # the estimates of log q(z) and sum_d log q(z_d) cancel exactly whatever the
    # weights, so only float32 rounding (of terms ~10 nats) remains.
    for m, d in [(1, 3), (2, 1), (7, 3), (64, 10)]:
        mean, log_var, z = posterior(m, d, seed=m)
        parts = {k: np_(v) for k, v in tc_decomposition(mean, log_var, z, 1000, estimator).items()}
        total = parts["mi"] + parts["tc"] + parts["dwkl"]
        z64, mean64, log_var64 = (a.astype("float64") for a in (z, mean, log_var))
        log_qz_x = -0.5 * (LOG_2PI + log_var64 + (z64 - mean64) ** 2 / np.exp(log_var64)).sum(-1)
        log_pz = -0.5 * (LOG_2PI + z64**2).sum(-1)
        np.testing.assert_allclose(total, log_qz_x - log_pz, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(total.mean(), (log_qz_x - log_pz).mean(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_golden_small_batch_against_numpy(estimator):
    # M = 3 codes in D = 2 dimensions from a dataset of N = 10, against the
    # float64 pair-by-pair reference above with the weights written out.
    mean = np.array([[0.0, 1.0], [0.5, -0.5], [-1.0, 0.2]], "float32")
    log_var = np.array([[0.0, -1.0], [-0.5, 0.0], [0.3, -0.2]], "float32")
    z = np.array([[0.1, 0.8], [0.9, -0.3], [-1.2, 0.0]], "float32")
    weights = (mws_weights if estimator == "mws" else mss_weights)(3, 10)
    got = tc_decomposition(mean, log_var, z, 10, estimator)
    expected = numpy_decomposition(mean, log_var, z, weights)
    for key, value in zip(("mi", "tc", "dwkl"), expected, strict=True):
        np.testing.assert_allclose(np_(got[key]), value, rtol=1e-5, atol=1e-6, err_msg=key)
    if estimator == "mws":
        # A hand check of one number: code 0's mixture log q(z_0), from the pair
        # densities and w = (0.1, 0.45, 0.45) (N = 10, M = 3: 9 / (10 * 2)).
        q = [
            np.prod(np.exp(-0.5 * (LOG_2PI + lv + (z[0] - mu) ** 2 / np.exp(lv))))
            for mu, lv in zip(mean.astype("float64"), log_var.astype("float64"), strict=True)
        ]
        log_qz0 = np.log(0.1 * q[0] + 0.45 * q[1] + 0.45 * q[2])
        np.testing.assert_allclose(np.log(q[0]) - log_qz0, np_(got["mi"])[0], rtol=1e-5)


def test_one_dimension_has_no_total_correlation():
    mean, log_var, z = posterior(16, 1)
    for estimator in ("mws", "mss"):
        tc = np_(tc_decomposition(mean, log_var, z, 100, estimator)["tc"])
        np.testing.assert_allclose(tc, 0.0, atol=1e-6)


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_converges_to_the_gaussian_closed_form(estimator):
    # q(z|x) = N(mu_x, s^2 I) with mu_x ~ N(0, C), C = [[1, 0.9], [0.9, 1]],
    # s = 0.3: q(z) = N(0, Sigma), Sigma = C + s^2 I, whose total correlation is
    # 0.5 * (sum_j log Sigma_jj - log det Sigma) = 0.5725 nats. With N = M the
    # batch is the whole data set of posteriors, so the estimate's only error
    # is the batch's finite sample. Root-mean-square error over 3 draws, seen:
    # M = 100: 0.041, 1,000: 0.019, 5,000: 0.012 nats (both estimators; over 10
    # draws 0.055, 0.021, 0.010: about 0.6 / sqrt(M)).
    s = 0.3
    cov = np.array([[1.0, 0.9], [0.9, 1.0]])
    sigma = cov + s**2 * np.eye(2)
    closed_form = 0.5 * (np.log(np.diag(sigma)).sum() - np.linalg.slogdet(sigma)[1])
    np.testing.assert_allclose(closed_form, 0.572476, rtol=1e-5)
    rms = []
    for m in (100, 1000, 5000):
        errors = []
        for seed in range(3):
            rng = np.random.default_rng(seed)
            mean = rng.multivariate_normal([0.0, 0.0], cov, size=m)
            z = mean + s * rng.normal(size=(m, 2))
            log_var = np.full((m, 2), np.log(s**2))
            tc = tc_decomposition(
                mean.astype("float32"), log_var.astype("float32"), z.astype("float32"),
                dataset_size=m, estimator=estimator,
            )["tc"]  # fmt: skip
            errors.append(float(np_(keras.ops.mean(tc))) - closed_form)
        rms.append(float(np.sqrt(np.mean(np.square(errors)))))
    assert rms[0] > rms[1] > rms[2], rms
    assert rms[2] < 0.03, rms  # 5% of the closed form at M = 5,000


# ---------------------------------------------------------------------------
# The model: objective, arguments, config


def test_objective_weights_the_three_terms():
    model = make_model(latent_dim=3, dataset_size=200)
    x = squares(16)
    eps = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    terms = model.compute_terms(x, eps=eps)
    loss, logs = model.objective(terms, 1.0)
    logs = {k: float(np_(v)) for k, v in logs.items()}
    assert set(logs) == {"reconstruction", "kl", "elbo", "mi", "tc", "dwkl"}
    # Default weights alpha = gamma = 1, tc_weight = 6.
    expected = logs["reconstruction"] + logs["mi"] + 6.0 * logs["tc"] + logs["dwkl"]
    np.testing.assert_allclose(float(np_(loss)), expected, rtol=1e-6)
    # All weights 1: the VAE loss with the same-sample KL estimate.
    model.tc_weight = 1.0
    mean, log_var, z = (np_(terms[k]).astype("float64") for k in ("mean", "log_var", "z"))
    kl_sample = -0.5 * (LOG_2PI + log_var + (z - mean) ** 2 / np.exp(log_var)).sum(-1)
    kl_sample += 0.5 * (LOG_2PI + z**2).sum(-1)
    np.testing.assert_allclose(
        float(np_(model.objective(terms, 1.0)[0])),
        logs["reconstruction"] + kl_sample.mean(), rtol=1e-5,
    )  # fmt: skip
    # The schedule's beta scales all three; alpha and gamma their own term.
    model.tc_weight, model.alpha, model.gamma = 6.0, 0.5, 2.0
    loss = float(np_(model.objective(terms, 0.25)[0]))
    kl_term = 0.5 * logs["mi"] + 6.0 * logs["tc"] + 2.0 * logs["dwkl"]
    np.testing.assert_allclose(loss, logs["reconstruction"] + 0.25 * kl_term, rtol=1e-5)
    # `kl` stays the analytic KL, as for the VAE.
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1.0 - log_var).sum(-1).mean()
    np.testing.assert_allclose(logs["kl"], kl, rtol=1e-5)


def test_batch_of_one_is_a_vae_step():
    # No other code to estimate q(z) from: the example is taken as the whole
    # data, so MI = TC = 0 and DWKL is the KL sample; the loss stays finite.
    model = make_model(dataset_size=1000)
    terms = model.compute_terms(squares(1))
    _, logs = model.objective(terms, 1.0)
    np.testing.assert_allclose(float(np_(logs["mi"])), 0.0, atol=1e-6)
    np.testing.assert_allclose(float(np_(logs["tc"])), 0.0, atol=1e-6)
    assert np.isfinite(float(np_(logs["dwkl"])))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(squares(3), batch_size=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))  # batches of 2, then 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"tc_weight": -1.0}, "tc_weight"),
        ({"alpha": -0.5}, "alpha"),
        ({"gamma": float("nan")}, "gamma"),
        ({"estimator": "paper"}, "estimator"),
        ({"dataset_size": None}, "dataset_size"),
        ({"dataset_size": 0}, "dataset_size"),
        ({"dataset_size": 10.5}, "dataset_size"),
        ({"free_bits": 0.5}, "free_bits"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"dataset_size": 10, **kwargs}
    enc = keras_vae.build_encoder((16, 16, 1), 2, "mlp", widths=(8,))
    dec = keras_vae.build_decoder((16, 16, 1), 2, "mlp", widths=(8,))
    with pytest.raises(ValueError, match=match):
        BetaTCVAE(enc, dec, **kwargs)


def test_build_model_takes_its_options_from_the_config():
    config = config_lib.resolve(
        "shapes", model="beta_tcvae", tc_weight=3.0, tc_estimator="mss", latent_dim=2,
        widths=(4, 4, 8, 8), dense_units=8,
    )  # fmt: skip
    model = plan.build_model(config, (64, 64, 1), steps_per_epoch=10, dataset_size=1234)
    assert type(model) is BetaTCVAE
    assert (model.tc_weight, model.estimator, model.dataset_size) == (3.0, "mss", 1234)
    assert (model.alpha, model.gamma) == (1.0, 1.0)


# ---------------------------------------------------------------------------
# Training and saving


def test_training_lowers_the_loss_and_logs_every_key():
    # 64 images, batch 16, 13 epochs: 52 Adam steps. Seen: 174 -> 56 nats.
    model = make_model(dataset_size=64)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x = squares(64)
    history = model.fit(x, batch_size=16, epochs=13, shuffle=False, verbose=0,
                        validation_data=(x[:16],))  # fmt: skip
    names = {metric.name for metric in model.metrics}
    assert names == TRACKERS
    assert set(history.history) == names | {f"val_{name}" for name in names}
    for values in history.history.values():
        assert np.all(np.isfinite(values))
    loss = history.history["loss"]
    assert loss[-1] < 0.6 * loss[0], loss
    assert int(np_(model.kl_step)) == 52


def test_keras_file_round_trip(tmp_path):
    model = make_model(dataset_size=321, tc_weight=4.0, estimator="mss", alpha=0.5, gamma=2.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = squares(16)
    model.fit(x, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is BetaTCVAE
    for key, value in {"tc_weight": 4.0, "estimator": "mss", "dataset_size": 321,
                       "alpha": 0.5, "gamma": 2.0}.items():  # fmt: skip
        assert getattr(loaded, key) == value, key
    np.testing.assert_array_equal(np_(model(x)), np_(loaded(x)))
    eps = np.random.default_rng(0).standard_normal((16, 3)).astype("float32")
    for a, b in zip(model.objective(model.compute_terms(x, eps=eps), 1.0)[1].values(),
                    loaded.objective(loaded.compute_terms(x, eps=eps), 1.0)[1].values(),
                    strict=True):  # fmt: skip
        np.testing.assert_array_equal(np_(a), np_(b))
    history = loaded.fit(x, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["tc"][0])


def _tensorboard_scalars(log_dir):
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


@pytest.mark.slow
def test_train_py_evaluate_py_and_export(tmp_path):
    # train.py's and evaluate.py's work in this process, from the same flags
    # (script_helpers): this test is about the beta_tcvae run, the files it
    # leaves and their evaluation; the scripts' exit codes and lines are
    # tested on the other models (test_training, test_report, test_runs).
    workdir = str(tmp_path / "run")
    train_in_process(workdir, "--model=beta_tcvae", *TINY)
    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)
    for key in ("mi", "tc", "dwkl", "val_mi", "val_tc", "val_dwkl"):
        assert len(history[key]) == 2 and np.all(np.isfinite(history[key])), key
    scalars = _tensorboard_scalars(os.path.join(workdir, "tensorboard", "train"))
    for key in ("mi", "tc", "dwkl"):
        assert len(scalars[f"epoch_{key}"]) == 2, sorted(scalars)
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    assert type(model) is BetaTCVAE and model.estimator == "mws"
    assert model.tc_weight == 6.0 and model.dataset_size > 0

    quick_evaluate_in_process(workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        assert np.isfinite(json.load(f)["elbo"])

    served = tf.saved_model.load(os.path.join(workdir, "export"))
    images = np.zeros((2, 64, 64, 1), np.float32)
    assert served.reconstruct(images)["images"].shape == (2, 64, 64, 1)


# ---------------------------------------------------------------------------
# Distribution and precision

# MirroredStrategy: each replica estimates MI, TC and DWKL on its own half of
# the batch (the logged values are the mean of the halves' estimates, not the
# estimate on all 16 codes): checked in the one 2-CPU process of
# tests/test_distribute.py::test_mirrored_two_cpus_one_step_equals_no_strategy.


def test_mixed_bfloat16_twenty_steps_finite(dtype_policy):
    dtype_policy("mixed_bfloat16")
    model = make_model(dataset_size=64)
    assert model.encoder.layers[1].compute_dtype == "bfloat16"
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = squares(64)
    terms = model.compute_terms(x[:16])
    _, logs = model.objective(terms, 1.0)
    for key in ("mi", "tc", "dwkl"):
        assert logs[key].dtype == "float32", key  # the estimate runs in float32
    history = model.fit(x, batch_size=16, epochs=5, shuffle=False, verbose=0)  # 20 steps
    for key in ("loss", "mi", "tc", "dwkl"):
        assert np.all(np.isfinite(history.history[key])), key
    assert int(np_(model.skipped_steps)) == 0
    assert int(np_(model.kl_step)) == 20
