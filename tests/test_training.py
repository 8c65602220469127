"""End-to-end runs of the real `train.py` on tiny data, and its error paths."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train.py")
# Tiny but real: the shapes preset's conv net with narrow layers.
TINY = [
    "--epochs=2",
    "--steps_per_epoch=15",
    "--validation_steps=4",
    "--eval_steps=2",
    "--batch_size=32",
    "--latent_dim=4",
    "--widths=8,8,16,16",
    "--dense_units=32",
]

# Runs train.py as __main__ inside tfds.testing.mock_data, so the real tfds
# loader runs on generated examples (no network here).
MOCK_RUNNER = """
import runpy, sys
import tensorflow_datasets as tfds
sys.argv = ["train.py"] + sys.argv[1:]
with tfds.testing.mock_data(num_examples=96):
    runpy.run_path({train!r}, run_name="__main__")
"""


def _run(args, mock_tfds=False, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    if mock_tfds:
        cmd = [sys.executable, "-c", MOCK_RUNNER.format(train=TRAIN), *args]
    else:
        cmd = [sys.executable, TRAIN, *args]
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _check_run(workdir, proc, dataset, image_shape):
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("config.json", "model.keras", "history.json"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    for sub in ("train", "validation"):
        events = os.listdir(os.path.join(workdir, "tensorboard", sub))
        assert any(e.startswith("events.out.tfevents") for e in events), sub
    # No temporary files left behind by the atomic saves.
    assert not [f for f in os.listdir(workdir) if f.startswith(".tmp-")]

    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert config["dataset"] == dataset
    assert config["epochs"] == 2 and config["steps_per_epoch"] == 15
    assert config["widths"] == [8, 8, 16, 16] and config["latent_dim"] == 4
    assert config["dense_units"] == 32

    with open(os.path.join(workdir, "history.json")) as f:
        history = json.load(f)
    for key in ("loss", "reconstruction", "kl", "elbo", "beta", "val_elbo", "val_loss"):
        assert len(history[key]) == 2, key
    # Validation ELBO (a log-likelihood bound: higher is better) improved.
    assert history["val_elbo"][1] > history["val_elbo"][0], history["val_elbo"]

    # The last line is the summary: test ELBO in nats and bits/dim.
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("Test ELBO ") and "nats/image" in last and "bits/dim" in last, last
    elbo = float(last.split()[2])
    assert elbo < 0
    bpd = float(last.split("(")[1].split()[0])
    # bits/dim = -ELBO / (H*W*C*ln 2), to the printed precision.
    np.testing.assert_allclose(bpd, -elbo / (np.prod(image_shape) * np.log(2)), rtol=1e-3)

    import keras

    import keras_vae  # noqa: F401  (registers the classes)

    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    assert model.image_shape == image_shape
    # 2 epochs x 15 steps taken, saved with the model.
    assert int(model.kl_step.numpy()) == 30
    return history


@pytest.mark.slow
def test_train_py_on_shapes(tmp_path):
    workdir = str(tmp_path / "run")
    proc = _run([f"--workdir={workdir}", *TINY])
    _check_run(workdir, proc, "shapes", (64, 64, 1))


@pytest.mark.slow
def test_train_py_on_mock_celeb_a(tmp_path):
    workdir = str(tmp_path / "run")
    proc = _run(
        [f"--workdir={workdir}", "--dataset=celeb_a", "--data_dir=" + str(tmp_path), *TINY],
        mock_tfds=True,
    )
    history = _check_run(workdir, proc, "celeb_a", (64, 64, 3))
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    # The celeb_a preset, overridden only where flags were given.
    assert config["likelihood"] == "discretized_logistic" and config["image_size"] == 64
    assert history["kl"][0] >= 0


def test_missing_tfds_dataset_stops_with_one_line(tmp_path):
    empty = tmp_path / "tfds"
    empty.mkdir()
    proc = _run(["--dataset=mnist", f"--data_dir={empty}", f"--workdir={tmp_path / 'run'}"])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("error: ")
    assert "mnist" in line and str(empty) in line
    assert "--dataset=folder:" in line and "--download" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--dataset=imagenet", ["Unknown dataset 'imagenet'", "shapes", "folder:PATH"]),
        ("--latent_dim=0", ["--latent_dim must be a positive integer"]),
        ("--beta=-1", ["--beta must be >= 0"]),
        ("--network=resnet", ["--network must be one of mlp, conv"]),
        ("--model=mlp", ["--model names the model variant now", "--network=mlp"]),
        ("--likelihood=poisson", ["--likelihood must be one of"]),
        ("--image_size=32", ["not available for shapes"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(tmp_path, flag, words):
    proc = _run([flag, f"--workdir={tmp_path / 'run'}"])
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    # Nothing was created for a run that never started.
    assert not (tmp_path / "run").exists()
