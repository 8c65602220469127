"""evaluate.py's protocols, plan and estimate (keras_vae.report.protocol), and the
8-bit bits/dim of a Gaussian likelihood (keras_vae.evaluation.dequantized,
dequantized_bits_per_dim) in evaluate_model, train.py's summary and
evaluate.py's results."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from test_evaluation import PIXELS, SIGMA, np_, ppca_data, ppca_log_px, ppca_params, ppca_vae

from keras_vae import config, evaluation, report, runs, training
from keras_vae.config import UsageError
from keras_vae.report import protocol as protocol_lib

# The shapes preset's conv net with narrow layers, 3 training steps (as test_report).
TINY = dict(
    epochs=1, steps_per_epoch=3, validation_steps=1, eval_steps=1, batch_size=16,
    widths=(8, 8, 16, 16), dense_units=32, latent_dim=2,
)  # fmt: skip
D_SHAPES = 64 * 64  # pixels of a shapes image
LOG2_255 = math.log2(255)  # 7.994353436858858


def test_the_two_protocols_and_their_overrides():
    standard = report.resolve_protocol()
    assert standard == {
        "name": "standard", "test_images": 10_000, "iwae_images": 1_000, "iwae_samples": 100,
        "disentanglement_points": 2_000, "factor_vae_votes": 500, "max_batches": None,
        "overrides": [],
    }  # fmt: skip
    paper = report.resolve_protocol("paper")
    assert (paper["test_images"], paper["iwae_images"], paper["iwae_samples"]) == (None, None, 5000)
    assert (paper["disentanglement_points"], paper["factor_vae_votes"]) == (10_000, 10_000)
    # Flags given explicitly override either; None means "the protocol's".
    changed = report.resolve_protocol("paper", iwae_samples=1000, test_images=500, max_batches=None)
    assert changed["iwae_samples"] == 1000
    assert changed["overrides"] == ["iwae_samples", "test_images"]
    assert changed["iwae_images"] is None  # all 500
    # The IWAE images are among the test images: never more.
    assert report.resolve_protocol(test_images=300)["iwae_images"] == 300
    with pytest.raises(UsageError, match="--protocol must be one of standard, paper"):
        report.resolve_protocol("quick")


@pytest.mark.parametrize(
    "name, overrides, num_test, batch, expected",
    [
        ("standard", {}, 73_728, 64, (10_000, 1_000)),  # shapes: a subset
        ("standard", {}, 10_000, 64, (10_000, 1_000)),  # MNIST, CIFAR-10: the whole split
        ("standard", {}, 589, 100, (589, 589)),  # a split smaller than the subset
        ("paper", {}, 73_728, 64, (73_728, 73_728)),
        ("standard", {"max_batches": 16}, 73_728, 16, (256, 256)),  # the older flag
        ("paper", {"max_batches": 3, "test_images": 100}, 10_000, 64, (100, 100)),
        ("standard", {"iwae_samples": 0}, 73_728, 64, (10_000, 0)),  # no IWAE
    ],
)
def test_image_counts(name, overrides, num_test, batch, expected):
    protocol = report.resolve_protocol(name, **overrides)
    assert protocol_lib.image_counts(protocol, num_test, batch) == expected


def test_durations_and_the_plan_as_printed():
    assert [protocol_lib._duration(s) for s in (0.2, 4.4, 44, 130, 1500, 20_000, 166_000)] == [
        "1 s", "4 s", "40 s", "2.2 min", "25 min", "5.6 h", "46 h",
    ]  # fmt: skip
    plan = {
        "protocol": report.resolve_protocol(),
        "num_test": 73_728, "batch_size": 64, "test_images": 10_000, "iwae_images": 1_000,
        "disentanglement": True, "figures": True, "iwae_batch_seconds": 2.84,
        "seconds": {"elbo": 9.2, "iwae": 44.4, "disentanglement": 95.0,
                    "tensorboard_and_figures": 9.0},
        "total_seconds": 157.6,
    }  # fmt: skip
    assert report.describe(plan) == (
        "Evaluation plan: the standard protocol (--protocol=paper for the published one).\n"
        "  ELBO, KL, bits/dim, active units: the first 10,000 of the 73,728 test images "
        "(157 batches of 64).\n"
        "  IWAE NLL: K = 100 importance samples on the first 1,000 of them (2.8 s per batch "
        "of 64, timed now).\n"
        "  Disentanglement (shapes): MIG, SAP, DCI on 2,000 + 1,000 points; the FactorVAE "
        "score from 500 + 250 votes.\n"
        "  Then: TensorBoard's Projector (test codes) and HParams metrics, the figures.\n"
        "Estimated time: about 2.6 min (ELBO 9 s, IWAE 40 s, disentanglement 1.6 min, "
        "TensorBoard and figures 9 s)."
    )
    plan.update(protocol=report.resolve_protocol("paper", iwae_samples=1000), iwae_images=0,
                test_images=73_728, disentanglement=False, figures=False)  # fmt: skip
    text = report.describe(plan)
    assert text.startswith(
        "Evaluation plan: the paper protocol, changed by --iwae_samples (the default "
        "--protocol=standard takes minutes)."
    )
    assert text.splitlines()[1] == (
        "  ELBO, KL, bits/dim, active units: all 73,728 test images (1,152 batches of 64)."
    )
    assert "IWAE" not in text.splitlines()[2] and "Disentanglement" not in text
    assert "HParams metrics.\n" in text


def test_evaluate_model_on_the_first_examples_with_the_iwae_on_fewer(capsys):
    x = ppca_data(64)
    log_px = ppca_log_px(x)
    # Exact posterior: the IWAE estimate is log p(x) per example (float32
    # rounding: 1e-3 on a mean), so its mean says exactly which examples it saw.
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)
    results = evaluation.evaluate_model(
        ppca_vae(), ds, iwae_samples=5, max_examples=40, iwae_examples=20, elbo_samples=20,
    )  # fmt: skip
    # 40 examples: batches of 16, 16 and 8 of the third; the IWAE on 16 + 4.
    assert results["num_examples"] == 40 and results["iwae_num_examples"] == 20
    assert results["iwae_nll"] == pytest.approx(-np.mean(log_px[:20]), abs=1e-3)
    # Other subsets differ by far more than that (seen: 0.13 nats at least).
    for n in (16, 32, 40, 64):
        assert abs(np.mean(log_px[:n]) - np.mean(log_px[:20])) > 0.1, n
    # The ELBO of those 20 (20 draws each: SE 0.98 / sqrt(400) = 0.049 nats),
    # E = log p(x) with the exact posterior; and of all 40 (SE 0.035).
    assert abs(results["iwae_elbo"] - np.mean(log_px[:20])) < 0.25
    assert abs(results["elbo"] - np.mean(log_px[:40])) < 0.18
    # KL per dimension of the 40 examples.
    first = tf.data.Dataset.from_tensor_slices(x[:40]).batch(8)
    kl = evaluation.kl_per_dimension(ppca_vae(), first)
    np.testing.assert_allclose(results["kl_per_dim"], kl, rtol=1e-5, atol=1e-6)
    # Two progress bars: the 2 batches with the IWAE, then the 1 without.
    out = capsys.readouterr().out
    assert "2/2" in out and "1/1" in out and "3/3" not in out
    # max_examples beyond the data: all of it.
    everything = evaluation.evaluate_model(
        ppca_vae(), ds, iwae_samples=0, max_examples=1000, progress=False
    )
    assert everything["num_examples"] == 64 and "iwae_nll" not in everything


# ---------------------------------------------------------------------------
# 8-bit bits/dim of a density on [0, 1] pixels.


def test_dequantized_bits_per_dim_by_hand():
    # The uniform density on the 256 bins of 8-bit pixels in [0, 1] units,
    # [-1/510, 1 + 1/510]^D (side 256/255), has height (255/256)^D: NLL
    # D ln(256/255) nats. It is the uniform distribution over 256 values per
    # pixel: exactly log2(256) = 8 bits/dim, whatever D.
    for shape in ((64, 64, 1), (28, 20, 1), (32, 32, 3)):
        nats = math.prod(shape) * math.log(256 / 255)  # 16.0313 for 64 x 64
        assert evaluation.dequantized_bits_per_dim(nats, shape) == pytest.approx(8.0, rel=1e-12)
    # 100 nats on Frey faces' 28 x 20 pixels: 100 / (560 ln 2) + log2(255)
    # = 0.257624 + 7.994353 = 8.251978 (the sign: + D ln 255, the scaling).
    assert evaluation.dequantized_bits_per_dim(100.0, (28, 20, 1)) == pytest.approx(
        8.2519775513, rel=1e-10
    )
    # A density above 1 on [0, 1] (NLL < 0) still gives a positive figure.
    assert evaluation.dequantized_bits_per_dim(-560 * math.log(2), (28, 20, 1)) == pytest.approx(
        math.log2(255) - 1.0, rel=1e-12
    )


def test_dequantized_images_fill_their_bins_uniformly():
    k = np.random.default_rng(0).integers(0, 256, size=(64, 8, 8, 1))
    for images in (k.astype(np.uint8), (k / 255.0).astype("float32")):
        noisy = np_(evaluation.dequantized(images, seed=0))
        offset = noisy * 255.0 - k  # u, in pixel units
        # u ~ U(-1/2, 1/2): inside the bin (float32 rounding: 1e-4), mean 0
        # and variance 1/12 within 5 standard errors over 4,096 pixels (SE
        # of the mean sqrt(1/12 / 4096) = 0.0045, of the variance
        # sqrt(1/180 / 4096) = 0.0012: Var(u^2) = 1/80 - 1/144 = 1/180).
        assert np.all(np.abs(offset) <= 0.5 + 1e-4)
        assert abs(offset.mean()) < 5 * 0.0045 and abs(offset.var() - 1 / 12) < 5 * 0.0012
    with pytest.raises(ValueError, match="8-bit"):
        evaluation.dequantized(ppca_data(4), seed=0)  # continuous values


def test_evaluate_model_dequantized_gives_8_bit_bits_per_dim():
    # PPCA (a Gaussian density on [0, 1] pixels) on 8-bit data: its images
    # rounded to k / 255 (clipped to [0, 255]: 11% of the pixels).
    x = np.clip(np.round(ppca_data(64) * 255.0), 0, 255).astype("float32") / 255.0
    w, b = ppca_params()
    precision = np.linalg.inv(w @ w.T + SIGMA**2 * np.eye(PIXELS))  # C^-1
    log_px = ppca_log_px(x)  # at the bin centres
    # Dequantized, x' = x + d, d = u / 255 per pixel (Var d = 1 / (12 * 255^2)):
    #   E_d[-log N(x'; b, C)] = -log N(x; b, C) + E[d^T C^-1 d] / 2
    #                         = -log N(x; b, C) + tr(C^-1) / (24 * 255^2),
    # (the cross term has mean 0), here 353.46 / 1,560,600 = 0.000226 nats.
    # The exact posterior makes the IWAE estimate log N(x') itself, so the
    # mean over 64 images is that expectation up to the linear term
    # g.d, g = C^-1 (x - b): SE sqrt(sum_i |g_i|^2 / (12 * 255^2)) / 64 =
    # 0.0025 nats (computed below).
    expected = -np.mean(log_px) + np.trace(precision) / (24 * 255**2)
    g = (x.reshape(64, -1) - b) @ precision
    se = math.sqrt(np.sum(g**2) / (12 * 255**2)) / 64
    assert se == pytest.approx(0.0025, abs=0.0002)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(16)
    results = evaluation.evaluate_model(
        ppca_vae(), ds, iwae_samples=5, dequantize=True, progress=False
    )
    assert results["dequantized"] is True
    assert results["bits_per_dim_note"] == evaluation.DEQUANTIZED_NOTE
    assert abs(results["iwae_nll"] - expected) < 5 * se  # seen: 0.9 SE
    # bits/dim of 8-bit data: (NLL + 16 ln 255) / (16 ln 2). The density's
    # NLL is negative here (seen: -1.50 nats, log p(x) > 0), so the plain
    # nats / (D ln 2) would be -0.136 "bits/dim"; the 8-bit figure is 7.86.
    for bound, nll in (("iwae", results["iwae_nll"]), ("elbo", -results["elbo"])):
        bits = results[f"{bound}_bits_per_dim"]
        assert bits == pytest.approx((nll + 16 * math.log(255)) / (16 * math.log(2)), rel=1e-12)
    assert results["iwae_bits_per_dim"] == pytest.approx(
        (expected + 16 * math.log(255)) / (16 * math.log(2)), abs=5 * se / (16 * math.log(2))
    )
    assert -np.mean(log_px) < 0 and 7.8 < results["iwae_bits_per_dim"] < 7.9
    # Without dequantization nothing changes: the density's own nats and units.
    plain = evaluation.evaluate_model(ppca_vae(), ds, iwae_samples=5, progress=False)
    assert plain["iwae_nll"] == pytest.approx(-np.mean(log_px), abs=1e-3)
    assert "dequantized" not in plain and "bits_per_dim_note" not in plain
    assert plain["iwae_bits_per_dim"] == pytest.approx(plain["iwae_nll"] / (16 * math.log(2)))
    # Continuous data cannot be dequantized: refused, not silently shifted.
    continuous = tf.data.Dataset.from_tensor_slices(ppca_data(16)).batch(16)
    with pytest.raises(ValueError, match="8-bit"):
        evaluation.evaluate_model(ppca_vae(), continuous, iwae_samples=0, dequantize=True)


def test_summarize_test_of_train_py():
    logs = {"elbo": -100.0, "reconstruction": 90.0, "kl": 10.0}
    summary = evaluation.summarize_test(logs, (28, 20, 1))
    assert summary == {
        "elbo": -100.0, "reconstruction": 90.0, "kl": 10.0,
        "bits_per_dim": pytest.approx(100 / (560 * math.log(2)), rel=1e-12),  # 0.257624
    }  # fmt: skip
    # A density of dequantized 8-bit images: 8.251978 (test_dequantized_bits_per_dim_by_hand).
    summary = evaluation.summarize_test(logs, (28, 20, 1), dequantized=True)
    assert summary["bits_per_dim"] == pytest.approx(8.2519775513, rel=1e-10)
    assert summary["dequantized"] is True
    assert summary["bits_per_dim_note"] == evaluation.DEQUANTIZED_NOTE
    summary = evaluation.summarize_test(
        {"reconstruction": 56.0}, (28, 20, 1), bounds_likelihood=False
    )
    assert summary == {"reconstruction": 56.0, "reconstruction_per_dim": 0.1,
                       "note": evaluation.NO_BOUND_NOTE}  # fmt: skip


# ---------------------------------------------------------------------------
# A tiny Gaussian run: train.py's and evaluate.py's 8-bit bits/dim.


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """A 3-step shapes run with the fixed-sigma Gaussian likelihood (sigma 0.1)."""
    workdir = str(tmp_path_factory.mktemp("gaussian") / "run")
    cfg = config.resolve("shapes", likelihood="gaussian", export=False, **TINY)
    results = training.train_and_evaluate(cfg, workdir, verbose=0)
    return workdir, results


def test_train_summary_of_a_gaussian_gives_8_bit_bits_per_dim(gaussian_run):
    workdir, results = gaussian_run
    # The test images were dequantized (x + u/255) and the bits/dim are of
    # 8-bit data: (-ELBO + D ln 255) / (D ln 2) = -ELBO / (4096 ln 2) + 7.994354.
    assert results["dequantized"] is True
    assert results["bits_per_dim_note"] == evaluation.DEQUANTIZED_NOTE
    assert results["bits_per_dim"] == pytest.approx(
        -results["elbo"] / (D_SHAPES * math.log(2)) + LOG2_255, rel=1e-12
    )
    # A 3-step Gaussian with sigma 0.1 on binary images is a poor density:
    # worse than the 8 bits/dim of the uniform distribution, never negative.
    assert results["bits_per_dim"] > 8.0
    with open(os.path.join(workdir, "train_summary.json")) as f:
        assert json.load(f)["bits_per_dim"] == results["bits_per_dim"]
    line = training.summary_line(results)
    assert f"({results['bits_per_dim']:.4f} bits/dim of the 8-bit pixels, an upper bound " in line


def test_summary_line_golden():
    results = {
        "elbo": -100.0, "reconstruction": 90.0, "kl": 10.0, "num_images": 196,
        "workdir": "runs/frey", "dequantized": True,
        # (100 + 560 ln 255) / (560 ln 2) for Frey faces' 28 x 20 pixels.
        "bits_per_dim": evaluation.dequantized_bits_per_dim(100.0, (28, 20, 1)),
    }  # fmt: skip
    assert training.summary_line(results) == (
        "Test ELBO -100.00 nats/image (8.2520 bits/dim of the 8-bit pixels, an upper bound "
        "from dequantized images; reconstruction 90.00, KL 10.00) on 196 test images. "
        "Run saved in runs/frey"
    )
    del results["dequantized"]
    results["bits_per_dim"] = evaluation.bits_per_dim(100.0, (28, 28, 1))  # 0.184017
    assert training.summary_line(results).startswith(
        "Test ELBO -100.00 nats/image (0.1840 bits/dim; reconstruction 90.00"
    )


def test_evaluate_workdir_of_a_gaussian_run(gaussian_run):
    workdir, _ = gaussian_run
    printed = []
    out = report.evaluate_workdir(
        workdir, test_images=64, iwae_samples=4, disentanglement=False, figures=False,
        echo=printed.append,
    )  # fmt: skip
    results = out["results"]
    assert results["dequantized"] is True and results["num_examples"] == 64
    for bound, nll in (("elbo", -results["elbo"]), ("iwae", results["iwae_nll"])):
        assert results[f"{bound}_bits_per_dim"] == pytest.approx(
            nll / (D_SHAPES * math.log(2)) + LOG2_255, rel=1e-12
        )
    assert results["protocol"]["overrides"] == ["iwae_samples", "test_images"]
    # The plan came first; the table says which bits/dim these are.
    assert printed[0].startswith("Evaluation plan: the standard protocol, changed by")
    assert "the first 64 of the 73,728 test images (4 batches of 16)" in printed[0]
    assert "K = 4 importance samples on all of them" in printed[0]
    assert "note: " + evaluation.DEQUANTIZED_NOTE in printed[1]
    with open(out["results_file"]) as f:
        assert json.load(f) == results
    # The plan's estimate and what it took (seconds: both small here).
    assert 0 < out["plan"]["total_seconds"] < 120
    assert out["plan"]["seconds"]["disentanglement"] == 0


def test_make_plan_scales_from_timed_batches(gaussian_run):
    workdir, _ = gaussian_run
    cfg, model = runs.load_run(workdir)
    test_ds, info = runs.load_split(cfg, "test")
    protocol = report.resolve_protocol(iwae_samples=32, disentanglement_points=200,
                                       factor_vae_votes=10)  # fmt: skip
    plan = report.make_plan(model, cfg, test_ds, info.num_examples, protocol, dequantize=True)
    assert (plan["test_images"], plan["iwae_images"], plan["batch_size"]) == (10_000, 1_000, 16)
    seconds = plan["seconds"]
    # 625 ELBO batches and 62.5 IWAE batches of 16 images; K = 32 in one
    # decoder call (_auto_chunk: 2**22 // (16 * 4096) = 64 >= 32).
    assert seconds["iwae"] == pytest.approx(plan["iwae_batch_seconds"] * 1000 / 16)
    assert plan["disentanglement"] and seconds["disentanglement"] > 0
    assert plan["total_seconds"] == pytest.approx(sum(seconds.values()))
    assert all(np.isfinite(v) and v > 0 for v in seconds.values()), seconds
