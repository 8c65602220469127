"""The deterministic autoencoder (`--model=ae`): its loss by hand, determinism,
serialization, distribution and precision, and the real train.py / evaluate.py
on it (reconstruction instead of ELBO, the note, the prior comparison figure)."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from script_helpers import run_script

import keras_vae
from keras_vae import config as config_lib
from keras_vae import evaluation, models, plots, training
from keras_vae.models import AE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIDE, LATENT = 8, 3


def _ae(likelihood="bernoulli", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    shape = dict(image_shape=(SIDE, SIDE, 1), latent_dim=LATENT, network="mlp", widths=(32,))
    encoder = keras_vae.build_encoder(**shape)
    decoder = keras_vae.build_decoder(**shape, likelihood=likelihood)
    model = AE(encoder, decoder, likelihood=likelihood, seed=seed, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def _images(n=16, seed=0):
    return (np.random.default_rng(seed).random((n, SIDE, SIDE, 1)) > 0.5).astype("float32")


def test_registered_and_logs_what_exists():
    assert models.get("ae") is AE and AE.bounds_likelihood is False
    assert keras_vae.VAE.bounds_likelihood is True
    assert keras.saving.get_registered_object("keras_vae>AE") is AE
    model = _ae()
    # Tracker names are the log keys: no kl, elbo or beta for an autoencoder.
    assert [m.name for m in model.metrics] == ["loss", "reconstruction", "skipped_steps"]
    history = model.fit(_images(), batch_size=8, epochs=1, verbose=0, validation_data=(_images(),))
    assert sorted(history.history) == [
        "loss", "reconstruction", "skipped_steps",
        "val_loss", "val_reconstruction", "val_skipped_steps",
    ]  # fmt: skip
    assert history.history["loss"] == history.history["reconstruction"]


def test_loss_is_the_reconstruction_nll_of_decode_mean_by_hand():
    model = _ae()
    x = _images(16)
    mean, _ = model.encoder(x)
    logits = np.asarray(model.decoder(mean), dtype=np.float64)  # (16, 8, 8, 1)
    # Bernoulli with logits l: log p(x|z) = sum_pixels x * l - softplus(l),
    # softplus(l) = log(1 + e^l) = logaddexp(0, l); z = the encoder's mean.
    log_px = np.sum(x * logits - np.logaddexp(0.0, logits), axis=(1, 2, 3))
    expected = -np.mean(log_px)
    terms = model.compute_terms(x)
    loss, logs = model.objective(terms, beta=4.0)  # beta has no effect
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
    assert float(logs["reconstruction"]) == float(loss) and sorted(logs) == ["reconstruction"]
    assert "kl_per_dim" not in terms
    np.testing.assert_array_equal(terms["z"], mean)
    assert model.evaluate(x, batch_size=16, return_dict=True, verbose=0)["loss"] == pytest.approx(
        expected, rel=1e-6
    )
    # Independent of the encoder's log_var: shifting its head changes nothing.
    head = model.encoder.get_layer("raw_log_var")
    kernel, bias = head.get_weights()
    head.set_weights([kernel + 0.5, bias + 3.0])
    assert not np.allclose(model.encode(x)[1], terms["log_var"])
    np.testing.assert_array_equal(model.objective(model.compute_terms(x), 1.0)[0], loss)
    # The same with a Gaussian likelihood: 1/2 sum ((x - mu) / sigma)^2 + log(sigma sqrt(2 pi)).
    model = _ae(likelihood="gaussian", gaussian_sigma=0.2)
    mu = np.asarray(model.decoder(model.encoder(x)[0]), dtype=np.float64)
    nll = np.sum(0.5 * ((x - mu) / 0.2) ** 2 + math.log(0.2 * math.sqrt(2 * math.pi)), (1, 2, 3))
    loss, _ = model.objective(model.compute_terms(x), 1.0)
    np.testing.assert_allclose(float(loss), np.mean(nll), rtol=1e-5)


def test_training_has_no_randomness():
    x = _images(16)
    # Two models with the same weights but different seeds: one step each.
    first, second = _ae(seed=0), _ae(seed=5)
    second.set_weights(first.get_weights())
    logs = [m.train_on_batch(x, return_dict=True) for m in (first, second)]
    assert logs[0] == logs[1]
    for a, b in zip(first.trainable_weights, second.trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # call(training=True) is decode(mean) too.
    np.testing.assert_array_equal(first(x, training=True), first.reconstruct(x))


def test_loss_drops_over_50_steps():
    model = _ae()
    x = _images(4)[np.arange(32) % 4]  # 4 random patterns, 8 times each: learnable
    first = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)["loss"]
    # 50 steps on the one batch: one epoch of it repeated, the same steps as 50
    # epochs of `fit(x, batch_size=32)` without fit's per-epoch work.
    batches = tf.data.Dataset.from_tensors(x).repeat()
    model.fit(batches, steps_per_epoch=50, epochs=1, shuffle=False, verbose=0)
    last = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)["loss"]
    # Untrained ~ 64 pixels * log 2 = 44 nats; seen: 45.3 -> 0.0015 nats (memorised).
    assert last < 0.1 * first, (first, last)
    assert int(model.skipped_steps.numpy()) == 0 and int(model.kl_step.numpy()) == 50


def test_keras_round_trip(tmp_path):
    model = _ae(likelihood="gaussian", gaussian_sigma=0.3, seed=2)
    x = _images(8)
    model.fit(x, batch_size=8, epochs=2, verbose=0)
    path = str(tmp_path / "ae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is AE

    def options(m):  # the constructor arguments but the networks
        return {k: v for k, v in m.get_config().items() if k not in ("encoder", "decoder")}

    assert options(loaded) == options(model) and loaded.gaussian_sigma == 0.3
    np.testing.assert_array_equal(loaded.reconstruct(x), model.reconstruct(x))
    np.testing.assert_array_equal(loaded.sample(4, seed=3), model.sample(4, seed=3))
    assert loaded.evaluate(x, verbose=0, return_dict=True) == model.evaluate(
        x, verbose=0, return_dict=True
    )
    loaded.fit(x, batch_size=8, epochs=1, verbose=0)  # compiled on load: it trains on


def test_sample_decodes_the_prior_and_bounds_raise():
    model = _ae()
    z = keras.random.normal((5, LATENT), seed=7)
    np.testing.assert_array_equal(model.sample(5, seed=7), model.decode(z))
    x = _images(4)
    for call in (lambda: model.elbo(x), lambda: model.log_weights(x, 3)):
        with pytest.raises(NotImplementedError, match="defines no density p\\(x\\)"):
            call()
    with pytest.raises(ValueError, match="no posterior"):
        model.reconstruct(x, sample_latent=True)
    with pytest.raises(ValueError, match="AE has no ELBO"):
        evaluation.elbo_terms(model, x)
    with pytest.raises(NotImplementedError, match="no ELBO or importance weights"):
        evaluation.iwae_log_likelihood(model, x, num_samples=2)


def test_evaluate_model_reports_reconstruction_and_a_note():
    model = _ae()
    x = _images(20)
    ds = tf.data.Dataset.from_tensor_slices(x).batch(8)  # 8 + 8 + 4
    results = evaluation.evaluate_model(model, ds, iwae_samples=5, progress=False)
    for key in ("elbo", "kl", "iwae_nll", "elbo_bits_per_dim", "iwae_bits_per_dim", "kl_per_dim"):
        assert key not in results, key
    assert results["note"] == evaluation.NO_BOUND_NOTE and results["bounds_likelihood"] is False
    expected = float(model.objective(model.compute_terms(x), 1.0)[0])
    assert results["reconstruction"] == pytest.approx(expected, rel=1e-5)
    assert results["reconstruction_per_dim"] == pytest.approx(expected / SIDE**2, rel=1e-5)
    codes = np.asarray(model.encode(x)[0], dtype=np.float64)
    np.testing.assert_allclose(results["latent_means"], codes.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(results["latent_variances"], codes.var(axis=0), atol=1e-6)
    assert results["num_examples"] == 20 and results["latent_dim"] == LATENT
    table = evaluation.format_table(results)
    assert "note: No ELBO, IWAE NLL or bits/dim" in table and "ELBO [" not in table
    assert "nats/dim" in table and "bits/dim]" not in table


# ---------------------------------------------------------------------------
# Distribution and precision.

# MirroredStrategy: tests/test_distribute.py runs one step of every model on 2 CPUs.


def test_mixed_bfloat16_20_steps_finite(dtype_policy):
    x = (np.random.default_rng(0).random((64, 16, 16, 1)) > 0.5).astype("float32")
    losses = {}
    for policy in ("float32", "mixed_bfloat16"):
        dtype_policy(policy)
        keras.utils.set_random_seed(3)
        kwargs = dict(image_shape=(16, 16, 1), latent_dim=4, network="conv", widths=(8, 16))
        model = AE(keras_vae.build_encoder(**kwargs), keras_vae.build_decoder(**kwargs), seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(x, batch_size=16, epochs=5, shuffle=False, verbose=0)  # 20 steps
        losses[policy] = history.history["loss"]
    assert model.encoder.layers[1].compute_dtype == "bfloat16"  # really in 16 bits
    assert np.all(np.isfinite(losses["mixed_bfloat16"]))
    assert int(np.asarray(model.skipped_steps)) == 0
    np.testing.assert_allclose(losses["mixed_bfloat16"][-1], losses["float32"][-1], rtol=0.05)


# ---------------------------------------------------------------------------
# The real train.py and evaluate.py on a tiny ae run (and a tiny vae to compare).

TINY = [
    "--epochs=2", "--steps_per_epoch=15", "--validation_steps=4", "--eval_steps=2",
    "--batch_size=32", "--latent_dim=4", "--widths=8,8,16,16", "--dense_units=32",
]  # fmt: skip
SMALL = ["--iwae_samples=8", "--max_batches=1", "--nodisentanglement"]


def _run(script, args):
    return run_script(script, *args, timeout=600)


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("runs") / "ae")
    proc = _run("train.py", ["--model=ae", f"--workdir={workdir}", *TINY])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_train_py_ae(ae_run):
    workdir, proc = ae_run
    with open(os.path.join(workdir, training.SUMMARY_FILE)) as f:
        summary = json.load(f)
    assert "elbo" not in summary and "kl" not in summary and "bits_per_dim" not in summary
    assert summary["note"] == evaluation.NO_BOUND_NOTE and summary["steps"] == 30
    assert summary["reconstruction_per_dim"] == pytest.approx(summary["reconstruction"] / 4096)
    last = proc.stdout.strip().splitlines()[-1]
    assert last == training.summary_line(summary)
    assert last.startswith(f"Test reconstruction {summary['reconstruction']:.2f} nats/image (")
    assert "no ELBO or bits/dim" in last
    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)
    assert sorted(history) == [
        "loss", "reconstruction", "skipped_steps",
        "val_loss", "val_reconstruction", "val_skipped_steps",
    ]  # fmt: skip
    assert history["val_loss"][1] < history["val_loss"][0]
    from tensorboard.backend.event_processing import event_accumulator

    tags = {}
    for sub in ("train", "validation"):
        acc = event_accumulator.EventAccumulator(
            os.path.join(workdir, "tensorboard", sub), size_guidance={"tensors": 0}
        )
        acc.Reload()
        tags[sub] = set(acc.Tags()["tensors"])
    for sub in ("train", "validation"):
        assert {"epoch_loss", "epoch_reconstruction"} <= tags[sub], tags[sub]
        assert not {"epoch_kl", "epoch_elbo", "epoch_beta"} & tags[sub]
    images = {"images/reconstructions", "images/samples", "images/interpolation",
              "images/traversal", "images/traversal_origin"}  # fmt: skip
    assert images <= tags["validation"], tags["validation"]
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    assert type(model) is AE


@pytest.mark.slow
def test_saved_model_export_of_ae(ae_run):
    workdir, _ = ae_run
    served = tf.saved_model.load(os.path.join(workdir, "export"))  # plain TensorFlow
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    images = np.asarray(_shapes_images(4))
    np.testing.assert_allclose(
        served.reconstruct(images)["images"], model.reconstruct(images), atol=1e-5
    )
    samples = served.sample(count=3, temperature=1.0, seed=tf.constant(1, tf.int64))["images"]
    assert samples.shape == (3, 64, 64, 1) and np.all(np.isfinite(samples))
    again = served.sample(count=3, temperature=1.0, seed=tf.constant(1, tf.int64))["images"]
    np.testing.assert_array_equal(samples, again)


def _shapes_images(n):
    from keras_vae import runs

    config = config_lib.resolve("shapes", batch_size=8)
    images, _ = runs.first_examples(runs.load_split(config, "test")[0], n)
    return images


@pytest.fixture(scope="module")
def evaluated(ae_run):
    workdir, _ = ae_run
    proc = _run("evaluate.py", [f"--workdir={workdir}", *SMALL])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_evaluate_py_ae(evaluated):
    workdir, proc = evaluated
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    for key in ("elbo", "iwae_nll", "kl", "elbo_bits_per_dim", "iwae_bits_per_dim", "kl_per_dim"):
        assert key not in results, key
    assert results["note"] == evaluation.NO_BOUND_NOTE
    assert results["reconstruction"] > 0 and results["num_examples"] == 32
    assert results["reconstruction_per_dim"] == pytest.approx(results["reconstruction"] / 4096)
    assert "mig" not in results  # --nodisentanglement
    assert len(results["latent_means"]) == len(results["latent_variances"]) == 4
    assert f"{results['reconstruction']:.3f}" in proc.stdout
    assert "note: No ELBO, IWAE NLL or bits/dim" in proc.stdout
    figures = set(os.listdir(os.path.join(workdir, "figures")))
    assert "kl_per_dim.png" not in figures  # no KL
    assert {"samples.png", "interpolation.png", "latent_scatter.png", "traversal.png"} <= figures


@pytest.mark.slow
def test_compare_ae_with_vae_writes_the_prior_figure(evaluated, tmp_path):
    ae_dir, _ = evaluated
    vae_dir = str(tmp_path / "vae")
    cfg = config_lib.resolve(
        "shapes", epochs=1, steps_per_epoch=3, validation_steps=1, eval_steps=1, batch_size=16,
        latent_dim=4, widths=(8, 8, 16, 16), dense_units=32, export=False,
    )  # fmt: skip
    training.train_and_evaluate(cfg, vae_dir, verbose=0)
    out = tmp_path / "compare"
    proc = _run("evaluate.py", ["--compare", ae_dir, vae_dir, f"--output={out}",
                                "--max_batches=1", "--pca_images=64"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "compare.json") as f:
        summary = json.load(f)
    ae, vae = summary["rows"]
    assert (ae["variant"], vae["variant"]) == ("ae", "vae")
    assert ae["source"] == "results.json" and ae["note"] == evaluation.NO_BOUND_NOTE
    assert ae["elbo"] is None and ae["kl"] is None and ae["reconstruction"] > 0
    assert vae["elbo"] < 0 and vae.get("note") is None
    for row in (ae, vae):
        stats = row["aggregate_posterior"]
        assert stats["images"] == 1000 and len(stats["mean"]) == len(stats["variance"]) == 4
        assert stats["kl_to_prior"] >= 0
    assert "- ae: No ELBO" in (out / "compare.md").read_text() and "- ae: No ELBO" in proc.stdout
    with Image.open(out / "compare_prior.png") as image:
        size = image.size
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert size == (2 * plots.PRIOR_COLUMN_WIDTH * plots.DPI, plots.PRIOR_HEIGHT * plots.DPI)
    assert pixels.std() > 5.0
