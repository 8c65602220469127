"""Tests for keras_vae.runs: the checks of a run folder, in-process and through
evaluate.py (and `python -m keras_vae.export`) on broken run folders.

Each fault ends with one `error:` line naming the file or folder and the fix,
exit code 1, before any evaluation (no INFO line on stderr) and with every
file left as it was: a read-only folder, a model.keras that is truncated,
garbage, diverged (NaN weights) or written by another run.

The runs are not trained: `training.build_model` and `model.save` (~0.5 s)
give the files train.py writes, which is all these checks read.
"""

import contextlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_vae import config as config_lib
from keras_vae import networks, runs, training
from keras_vae.config import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE = os.path.join(REPO, "evaluate.py")
SMALL = ["--iwae_samples=2", "--max_batches=1", "--nodisentanglement"]
# The shapes preset (64 x 64 x 1, conv, latent_dim 10, bernoulli) with narrow layers.
CONFIG = config_lib.resolve(
    "shapes", epochs=1, steps_per_epoch=3, batch_size=16, widths=(8, 8, 16, 16), dense_units=32
)
SHAPE = (64, 64, 1)
# What the OS says about a write into a read-only folder (see `read_only`).
READ_ONLY = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
UNWRITABLE = "make it writable (chmod u+w, or remount it read-write)"


def _weights(config, image_shape=SHAPE, condition_size=0):
    """The weights of `config`'s networks, by `networks.estimate_size` (exact:
    tests/test_faults.py checks it against `count_params()`)."""
    params, _ = networks.estimate_size(
        image_shape, config.latent_dim, config.network, config.likelihood, config.widths,
        config.dense_units, config.per_channel_scale, condition_size,
    )  # fmt: skip
    return params


def _run(args, module=False):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    command = ["-m", "keras_vae.export"] if module else [EVALUATE]
    return subprocess.run(
        [sys.executable, *command, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _one_error_line(proc, code=1):
    """The single stderr line: no traceback, no log line (nothing evaluated)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


def _snapshot(folder):
    """{relative path: (size, mtime_ns)} of every file and folder under `folder`."""
    found = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = os.path.join(root, name)
            stat = os.stat(path)
            found[os.path.relpath(path, folder)] = (stat.st_size, stat.st_mtime_ns)
    return found


def make_run(workdir, config=CONFIG, model_config=None, image_shape=SHAPE, nan=False):
    """A run folder as train.py leaves it: config.json (`config`) and an
    untrained model.keras built from `model_config` (default: `config`).

    Returns:
        `(workdir, path of the NaN variable or None)`.
    """
    os.makedirs(workdir)
    keras.utils.set_random_seed(0)
    model = training.build_model(model_config or config, image_shape, steps_per_epoch=3)
    poisoned = None
    if nan:  # what a diverged run leaves
        weight = model.decoder.weights[0]
        value = keras.ops.convert_to_numpy(weight).copy()
        value.flat[0] = np.nan
        weight.assign(value)
        poisoned = weight.path
    model.save(os.path.join(workdir, "model.keras"))
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json())
    keras.backend.clear_session()
    return str(workdir), poisoned


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    workdir, _ = make_run(tmp_path_factory.mktemp("good") / "run")
    return workdir


@contextlib.contextmanager
def read_only(folder):
    """Makes `folder` read-only for real. As root, permission bits do not stop
    a write (and `os.access` says yes), so a read-only bind mount; else chmod."""
    folder = str(folder)
    if os.geteuid() == 0:
        subprocess.run(["mount", "--bind", folder, folder], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,ro,bind", folder, folder], check=True)
            with pytest.raises(OSError):  # the mount works: a write fails
                open(os.path.join(folder, ".probe"), "w").close()
            yield
        finally:
            subprocess.run(["umount", folder], check=True)
    else:
        mode = os.stat(folder).st_mode
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, mode)


# ---------------------------------------------------------------------------
# Folders that cannot be written: checked before the evaluation.


def test_read_only_workdir_fails_before_evaluating(tmp_path):
    workdir, _ = make_run(tmp_path / "run")
    before = _snapshot(workdir)
    with read_only(workdir):
        proc = _run([f"--workdir={workdir}", *SMALL])
    assert _one_error_line(proc) == (
        f"error: Cannot write to {workdir} ({READ_ONLY}): {UNWRITABLE}, "
        "or copy the run to a folder you can write to."
    )
    assert _snapshot(workdir) == before


def test_read_only_figures_folder_fails_before_evaluating(tmp_path):
    workdir, _ = make_run(tmp_path / "run")
    out = os.path.join(workdir, "figures")
    os.makedirs(out)
    before = _snapshot(workdir)
    with read_only(out):
        proc = _run([f"--workdir={workdir}", *SMALL])
    assert _one_error_line(proc) == (
        f"error: Cannot write to {out} ({READ_ONLY}): {UNWRITABLE}, "
        "or copy the run to a folder you can write to."
    )
    assert _snapshot(workdir) == before  # no results.json either


def test_read_only_compare_output_fails_before_comparing(good_run, tmp_path):
    other, _ = make_run(tmp_path / "other")
    out = tmp_path / "out"
    out.mkdir()
    before = [_snapshot(d) for d in (good_run, other, out)]
    with read_only(out):
        proc = _run(["--compare", good_run, other, f"--output={out}", "--max_batches=1"])
    assert _one_error_line(proc) == (
        f"error: Cannot write to {out} ({READ_ONLY}): {UNWRITABLE}, or pass another --output."
    )
    assert [_snapshot(d) for d in (good_run, other, out)] == before


def test_check_writable(tmp_path):
    runs.check_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []  # the probe file is gone
    runs.check_writable(str(tmp_path / "missing"))  # created later, by makedirs
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError) as info:
        runs.check_writable(str(tmp_path / "file"))
    assert str(info.value) == (
        f"Cannot write into {tmp_path / 'file'}: it is a file; remove it or move it away."
    )


# ---------------------------------------------------------------------------
# A diverged model: NaN weights.


def test_nonfinite_weights_refused_by_evaluate_and_export(tmp_path):
    workdir, variable = make_run(tmp_path / "run", nan=True)
    path = os.path.join(workdir, "model.keras")
    before = _snapshot(workdir)
    expected = (
        f"error: The weights in {path} are not finite (NaN or Inf in 1 variable(s), e.g. "
        f"{variable}): the run diverged; retrain it: python train.py --workdir={workdir} "
        "--restart --learning_rate=LOWER with the other flags of its config.json."
    )
    assert _one_error_line(_run([f"--workdir={workdir}", *SMALL])) == expected
    assert _one_error_line(_run([f"--workdir={workdir}"], module=True)) == expected
    assert _snapshot(workdir) == before  # no results.json, figures/ or export/


def test_nonfinite_weights_with_a_backup_say_resume(tmp_path):
    workdir, variable = make_run(tmp_path / "run", nan=True)
    assert runs.BACKUP_DIR == training.BACKUP_DIR  # the folder training writes
    backup = os.path.join(workdir, runs.BACKUP_DIR)
    os.makedirs(backup)
    with pytest.raises(UserError) as info:
        runs.load_run(workdir)
    assert str(info.value).endswith(
        f"the run diverged; rerun its training command with a lower --learning_rate to "
        f"resume from {backup}, or retrain it: python train.py --workdir={workdir} --restart "
        "--learning_rate=LOWER with the other flags of its config.json."
    )


# ---------------------------------------------------------------------------
# A model.keras of another run.


def _mixed(workdir, differences):
    path = os.path.join(workdir, "model.keras")
    return (
        f"error: {path} does not match {os.path.join(workdir, 'config.json')} ({differences}): "
        f"the folder mixes two runs. Retrain with python train.py --workdir={workdir} --restart "
        "and the flags of its config.json, or point --workdir at the folder of the run that "
        "wrote this model."
    )


@pytest.mark.parametrize(
    "model_changes, config_changes, image_shape, differences",
    [
        (
            dict(latent_dim=3, likelihood="gaussian"),
            {},
            SHAPE,
            "latent_dim 3 in the model, 10 in config.json; "
            "likelihood 'gaussian' in the model, 'bernoulli' in config.json",
        ),
        # Which of network, widths, dense_units differs cannot be told from
        # the model's public face; the number of its weights can.
        (dict(network="mlp", widths=(16,)), {}, SHAPE,
         f"network weights {_weights(CONFIG.replace(network='mlp', widths=(16,)))} in the "
         f"model, {_weights(CONFIG)} from config.json's network, widths, dense_units, "
         "per_channel_scale"),
        ({}, dict(image_size=32), SHAPE,
         "image_size (64, 64) in the model, (32, 32) in config.json"),
        # No image_size in config.json: the data's shape tells.
        ({}, {}, (32, 32, 1),
         "image shape (32, 32, 1) in the model, (64, 64, 1) from config.json's data"),
        # A cvae's model.keras in a vae's folder.
        (dict(model="cvae", condition="shape"), {}, SHAPE,
         "condition 3 classes in the model, none from config.json's condition"),
    ],
    ids=["latent_dim+likelihood", "network", "image_size", "data_shape", "condition"],
)  # fmt: skip
def test_model_of_another_run_is_refused(
    tmp_path, model_changes, config_changes, image_shape, differences
):
    workdir, _ = make_run(
        tmp_path / "run",
        config=CONFIG.replace(**config_changes),
        model_config=CONFIG.replace(**config_changes, **model_changes),
        image_shape=image_shape,
    )
    before = _snapshot(workdir)
    assert _one_error_line(_run([f"--workdir={workdir}", *SMALL])) == _mixed(workdir, differences)
    assert _snapshot(workdir) == before


def test_model_differences(tmp_path):
    """Every field the loaded model shows, compared in-process.

    The networks (network, widths, dense_units, per_channel_scale) are
    compared by their number of weights, as `networks.estimate_size` gives
    it for config.json at the model's latent size, likelihood and images.
    """
    cases = {
        "same": ({}, []),
        "widths": (
            dict(widths=(8, 8, 16, 32)),
            [("weights", _weights(CONFIG.replace(widths=(8, 8, 16, 32))), _weights(CONFIG))],
        ),
        "dense_units": (
            dict(dense_units=64),
            [("weights", _weights(CONFIG.replace(dense_units=64)), _weights(CONFIG))],
        ),
        "beta": (dict(beta=4.0), [("beta", 4.0, 1.0)]),
        "free_bits": (dict(free_bits=0.5), [("free_bits", 0.5, 0.0)]),
        "seed": (dict(seed=7), [("seed", 7, 0)]),
    }
    for name, (changes, expected) in cases.items():
        workdir, _ = make_run(tmp_path / name, model_config=CONFIG.replace(**changes))
        config = config_lib.Config.from_json_file(os.path.join(workdir, "config.json"))
        model = runs.load_model(os.path.join(workdir, "model.keras"))
        assert runs.model_differences(config, model) == expected, name
        if name in ("widths", "dense_units"):
            assert expected[0][1] != expected[0][2], name  # the change shows in the count
    # An mlp run: the same count for its own config, another for other widths or a conv net.
    mlp = CONFIG.replace(network="mlp", widths=(16, 8))
    workdir, _ = make_run(tmp_path / "mlp", config=mlp)
    model = runs.load_model(os.path.join(workdir, "model.keras"))
    assert runs.network_weights(model) == _weights(mlp)
    assert runs.model_differences(mlp, model) == []
    assert runs.model_differences(mlp.replace(widths=(16, 4)), model) == [
        ("weights", _weights(mlp), _weights(mlp.replace(widths=(16, 4))))
    ]
    assert runs.model_differences(CONFIG, model) == [("weights", _weights(mlp), _weights(CONFIG))]
    # A network this version cannot build: no count to match.
    assert runs.model_differences(mlp.replace(network="resnet"), model) == [
        ("weights", _weights(mlp), None)
    ]
    # gaussian / gaussian_learned options.
    gaussian = CONFIG.replace(likelihood="gaussian", gaussian_sigma=0.2)
    workdir, _ = make_run(tmp_path / "gaussian", model_config=gaussian)
    model = runs.load_model(os.path.join(workdir, "model.keras"))
    assert runs.model_differences(gaussian.replace(gaussian_sigma=0.1), model) == [
        ("gaussian_sigma", 0.2, 0.1)
    ]
    # per_channel_scale: one learned sigma per channel, 3 weights on RGB images
    # instead of 1. (On 1-channel images the two are the same model.)
    learned = CONFIG.replace(likelihood="gaussian_learned", per_channel_scale=True)
    rgb = (64, 64, 3)
    workdir, _ = make_run(tmp_path / "learned", model_config=learned, image_shape=rgb)
    model = runs.load_model(os.path.join(workdir, "model.keras"))
    assert runs.model_differences(learned, model) == []
    shared = learned.replace(per_channel_scale=False)
    assert _weights(learned, rgb) == _weights(shared, rgb) + 2
    assert runs.model_differences(shared, model) == [
        ("weights", _weights(learned, rgb), _weights(shared, rgb))
    ]


def test_model_differences_of_conditional_runs(tmp_path):
    """A cvae's condition, against config.json's: its size and kind; its
    networks' extra inputs are counted in the weights (`estimate_size`)."""
    cvae = CONFIG.replace(model="cvae", condition="shape")  # 3 classes
    scale = cvae.replace(condition="scale")  # 6 classes
    cases = {
        "same": (cvae, cvae, []),
        "vae_config": (cvae, CONFIG, [("condition", (3, False), None)]),
        "cvae_config": (CONFIG, cvae, [("condition", None, (3, False))]),
        "other_condition": (cvae, scale, [("condition", (3, False), (6, False))]),
    }
    for name, (model_config, config, expected) in cases.items():
        workdir, _ = make_run(tmp_path / name, config=config, model_config=model_config)
        model = runs.load_model(os.path.join(workdir, "model.keras"))
        assert runs.model_differences(config, model) == expected, name
    # The condition's inputs are weights of both networks: 3 more inputs to the
    # encoder's dense layer (32 units) and to the decoder's first layers.
    weights = runs.network_weights(model)  # the last: a 3-class cvae
    assert weights == _weights(cvae, condition_size=3) > _weights(cvae) + 3 * 32
    assert runs.describe_difference("condition", (3, False), None) == (
        "condition 3 classes in the model, none from config.json's condition"
    )
    assert runs.describe_difference("condition", None, (40, True)) == (
        "condition none in the model, 40 attributes (multi-hot) from config.json's condition"
    )


def test_describe_difference():
    assert runs.describe_difference("latent_dim", 3, 10) == (
        "latent_dim 3 in the model, 10 in config.json"
    )
    assert runs.describe_difference("likelihood", "gaussian", "bernoulli") == (
        "likelihood 'gaussian' in the model, 'bernoulli' in config.json"
    )
    assert runs.describe_difference("weights", 20465, 150377) == (
        "network weights 20465 in the model, 150377 from config.json's network, widths, "
        "dense_units, per_channel_scale"
    )
    assert runs.describe_difference("weights", 20465, None) == (
        "network weights 20465 in the model, none from config.json's network, widths, "
        "dense_units, per_channel_scale"
    )


# ---------------------------------------------------------------------------
# A damaged model.keras.


def _corrupt(workdir, path):
    return (
        f"error: {path} is corrupt or truncated (not a complete .keras zip archive), e.g. cut "
        f"short by a full disk or an interrupted copy: retrain it: python train.py "
        f"--workdir={workdir} --restart with the flags of its config.json."
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_model_file(good_run, tmp_path, damage):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with open(os.path.join(good_run, "model.keras"), "rb") as f:
        data = f.read()
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = workdir / "model.keras"
    path.write_bytes(data)
    (workdir / "config.json").write_text(CONFIG.to_json())
    before = _snapshot(workdir)
    line = _one_error_line(_run([f"--workdir={workdir}", *SMALL]))
    assert line == _corrupt(workdir, path) and "File not found" not in line
    if damage == "truncated":
        assert _one_error_line(_run([f"--workdir={workdir}"], module=True)) == line
    assert _snapshot(workdir) == before


def test_damaged_member_of_a_complete_zip(good_run, tmp_path):
    """A flipped byte inside the archive (its directory intact): a CRC error."""
    with open(os.path.join(good_run, "model.keras"), "rb") as f:
        data = bytearray(f.read())
    at = data.index(b'"class_name"', data.index(b"config.json"))
    data[at + 1 : at + 6] = b"CLASS"  # same length, other bytes
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "model.keras").write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        runs.load_model(str(workdir / "model.keras"))
    assert f"error: {info.value}" == _corrupt(workdir, workdir / "model.keras")
