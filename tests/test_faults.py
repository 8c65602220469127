"""Issue 10's fault matrix for training: divergence, garbage flags, full disks,
corrupt files, models too large for memory, --restart, leftovers.

Each case runs the real code: `train.py` in a subprocess where the exit code
and the single `error:` line matter, `train_and_evaluate` in-process
otherwise. The rule every case checks: no file a run writes holds a
non-finite value, and the previous good files stay as they were.
"""

import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
from script_helpers import train_in_process

from keras_vae import config as config_lib
from keras_vae import files, networks, training
from keras_vae.config import UsageError, UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train.py")
# A tiny shapes run (about 5 s of training on 2 cores).
TINY = [
    "--batch_size=8",
    "--latent_dim=2",
    "--widths=8,8,16,16",
    "--dense_units=16",
    "--validation_steps=1",
    "--eval_steps=1",
    "--noexport",
    "--deterministic",
]


def _train(workdir, *args, preexec_fn=None, network=TINY):
    """Runs train.py; returns (exit code, the one `error:` line or None, stderr)."""
    proc = subprocess.run(
        [sys.executable, TRAIN, f"--workdir={workdir}", *network, *args],
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=preexec_fn,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if proc.returncode == 0:
        assert not errors, proc.stderr[-3000:]
        return 0, None, proc.stderr
    # One error line, the last thing on stderr.
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr
    return proc.returncode, errors[0], proc.stderr


def _h5_arrays(path):
    """Every dataset of an HDF5 file (a backup's weights), as arrays."""
    arrays = []

    def collect(name, obj):
        if isinstance(obj, h5py.Dataset):
            arrays.append(obj[()])

    with h5py.File(path, "r") as f:
        f.visititems(collect)
    return arrays


def _assert_saved_files_finite(workdir):
    """model.keras and backup/ (where they exist) hold finite values only."""
    model_path = os.path.join(workdir, "model.keras")
    if os.path.exists(model_path):
        model = keras.models.load_model(model_path)
        assert model.nonfinite_variables() == []
    weights = os.path.join(workdir, "backup", "weights.weights.h5")
    if os.path.exists(weights):
        arrays = [a for a in _h5_arrays(weights) if np.asarray(a).dtype.kind == "f"]
        assert arrays and all(np.isfinite(a).all() for a in arrays)


def _suggested_learning_rate(line):
    return float(re.search(r"--learning_rate=([0-9.e+-]+)", line).group(1))


def _summary(workdir):
    with open(os.path.join(workdir, training.SUMMARY_FILE)) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Divergence: the two cases of the issue, run for real.


@pytest.mark.slow
def test_finite_step_that_makes_weights_nan_stops_the_run(tmp_path):
    # The case: learning rate 10, batch 8. A step with a finite loss
    # (~1e33) and finite gradients makes the weights NaN; before, the run
    # saved them and blamed "non-finite steps".
    workdir = str(tmp_path / "run")
    args = ["--max_consecutive_skips=3", "--epochs=1", "--steps_per_epoch=20"]
    code, line, _ = _train(workdir, "--learning_rate=10", *args)
    assert code == 1
    assert "diverged" in line and "non-finite" in line
    _assert_saved_files_finite(workdir)
    assert not os.path.exists(os.path.join(workdir, "backup"))  # none before step 200
    assert "No finite state had been saved yet" in line
    # 10 / 10 = 1 would diverge again: the advice is Adam's usual 1e-3.
    assert _suggested_learning_rate(line) == 1e-3

    # The way out it names: the same command with that learning rate.
    code, line, stderr = _train(workdir, "--learning_rate=0.001", *args)
    assert code == 0, line
    assert "Resuming with learning_rate=0.001 (config.json had 10.0)" in stderr
    assert "has no backup yet: training from step 0" in stderr
    assert _summary(workdir)["steps"] == 20
    config = config_lib.Config.from_json_file(os.path.join(workdir, "config.json"))
    assert config.learning_rate == 1e-3


@pytest.mark.slow
def test_divergence_never_overwrites_model_keras_and_exits_1(tmp_path):
    # The second case, on the shapes preset's own network: before,
    # epoch 2 overwrote model.keras with NaN weights and the run exited 0.
    workdir = str(tmp_path / "run")
    args = ["--epochs=3", "--steps_per_epoch=2", "--validation_steps=1", "--eval_steps=1",
            "--noexport"]
    code, line, _ = _train(workdir, "--learning_rate=1", *args, network=[])
    assert code == 1 and "diverged" in line
    _assert_saved_files_finite(workdir)
    assert not os.path.exists(os.path.join(workdir, training.SUMMARY_FILE))
    rate = _suggested_learning_rate(line)
    assert rate == 1e-3
    # The rerun it advises: train.py's work in this process, from the same
    # flags (script_helpers; an error would raise). The rerun by train.py
    # itself, with its lines, is the previous test's.
    train_in_process(workdir, f"--learning_rate={rate}", *args)
    assert _summary(workdir)["steps"] == 6


class _Poison(keras.callbacks.Callback):
    """Sets one kernel to NaN after training step `at` (1-based), as a bad
    update would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.kl_step)) == self.at:
            kernel = self.model.encoder.trainable_weights[0]
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def _tiny_config(**overrides):
    values = dict(
        epochs=2, steps_per_epoch=4, validation_steps=1, eval_steps=1, batch_size=8,
        latent_dim=2, widths=(8, 8, 16, 16), dense_units=16, export=False,
        backup_every_steps=2,
    )
    values.update(overrides)
    return config_lib.resolve("shapes", **values)


@pytest.mark.parametrize(
    "poison_at, backup_step",
    [
        (5, 4),  # step 6 is skipped (NaN loss): caught there, before its backup
        (8, 6),  # epoch 2's last step: caught at the epoch's end, before any save
    ],
)
def test_nan_weights_are_never_saved(tmp_path, poison_at, backup_step):
    workdir = str(tmp_path)
    with pytest.raises(UserError, match="diverged") as info:
        training.train_and_evaluate(
            _tiny_config(), workdir, verbose=0, callbacks=[_Poison(poison_at)]
        )
    assert f"(step {backup_step})" in str(info.value)
    _assert_saved_files_finite(workdir)
    with open(os.path.join(workdir, "history.json")) as f:
        assert len(json.load(f)["loss"]) == 1  # epoch 2 was not recorded
    # model.keras is epoch 1's: its step counter says so.
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    assert int(keras.ops.convert_to_numpy(model.kl_step)) == 4

    # Resuming with another learning rate continues from that backup, and
    # the restored optimizer runs at the new rate, not the backup's.
    results = training.train_and_evaluate(
        _tiny_config(learning_rate=2e-4), workdir, verbose=0
    )
    assert results["resumed_from_step"] == backup_step and results["steps"] == 8
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 2e-4, rtol=1e-6)


# ---------------------------------------------------------------------------
# Garbage that used to end in "success".


@pytest.mark.parametrize(
    "name", ["learning_rate", "beta", "free_bits", "gaussian_sigma", "cycle_ratio"]
)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_float_settings_must_be_finite(name, value):
    with pytest.raises(UsageError, match=f"--{name} must be a finite number"):
        config_lib.resolve("shapes", **{name: value})


@pytest.mark.parametrize("flag", ["--learning_rate=inf", "--beta=nan", "--free_bits=inf",
                                  "--gaussian_sigma=inf"])
def test_non_finite_flags_exit_2(tmp_path, flag):
    code, line, _ = _train(str(tmp_path / "run"), flag)
    assert code == 2 and "must be a finite number" in line
    assert not (tmp_path / "run").exists()


def test_run_that_skips_every_step_fails(tmp_path):
    # sigma 1e-30: every squared error overflows float32, every loss is inf.
    config = _tiny_config(likelihood="gaussian", gaussian_sigma=1e-30, epochs=1)
    with pytest.raises(UserError, match="All 4 training steps were skipped"):
        training.train_and_evaluate(config, str(tmp_path), verbose=0)
    assert not os.path.exists(os.path.join(tmp_path, training.SUMMARY_FILE))


def test_non_finite_test_metrics_are_an_error():
    results = {"elbo": float("-inf"), "reconstruction": float("inf"), "kl": 1.0}
    with pytest.raises(UserError, match="elbo=-inf, reconstruction=inf"):
        training.failures.check_finite_results(results)
    training.failures.check_finite_results({"elbo": -1.0, "reconstruction": 0.5, "kl": 0.5})


def test_json_files_are_strict(tmp_path):
    path = str(tmp_path / "h.json")
    files.write_json(path, {"loss": [1.5, float("nan")], "kl": np.float32("inf"), "n": np.int64(3)})
    text = open(path).read()

    def refuse(constant):
        raise AssertionError(f"non-strict JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse) == {"loss": [1.5, None], "kl": None, "n": 3}


# ---------------------------------------------------------------------------
# Disks and files.


def _limit_file_size():
    # A write past 3 MB fails with EFBIG (SIGXFSZ ignored): the h5py write
    # of a backup fails half-way, as on a disk that fills up during it.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3_000_000, 3_000_000))


@pytest.mark.slow
def test_write_failing_half_way_is_one_line_and_keeps_previous_files(tmp_path):
    workdir = str(tmp_path / "run")
    # widths 8,8,16,16 + dense 256 (the default): a backup is ~3.1 MB.
    args = ["--epochs=1", "--steps_per_epoch=6", "--backup_every_steps=2", "--dense_units=256"]
    code, line, _ = _train(workdir, *args, preexec_fn=_limit_file_size)
    # Before: an h5py error traceback, then a segmentation fault (exit 139).
    assert code == 1
    assert f"Cannot write {os.path.join(workdir, 'backup')} (File too large)" in line
    assert "rerun the same command to resume" in line
    assert not [e for e in os.listdir(workdir) if ".tmp-" in e]


@pytest.mark.slow
def test_full_disk_is_refused_before_writing(tmp_path):
    if os.geteuid() != 0:
        # Justified: mounting needs root; the RLIMIT_FSIZE test above covers
        # a failed write without it.
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3M", "tmpfs", str(disk)], check=True)
    try:
        workdir = str(disk / "run")
        args = ["--epochs=1", "--steps_per_epoch=20", "--backup_every_steps=2", "--dense_units=256"]
        code, line, _ = _train(workdir, *args)
        assert code == 1
        assert re.search(r"Cannot write .*backup: about [0-9.]+ MiB are needed and", line), line
        # The one backup that fits is intact and loadable: resume is possible.
        with open(os.path.join(workdir, "backup", "state.json")) as f:
            assert json.load(f)["step"] == 2
        _assert_saved_files_finite(workdir)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_corrupt_history_refuses_resume_and_keeps_files(tmp_path):
    config = _tiny_config()
    (tmp_path / "config.json").write_text(config.to_json())
    (tmp_path / "history.json").write_text('{"loss": [2840.1, 12')  # cut by a crash
    with pytest.raises(UserError, match=r"history.json is corrupt .*Move it away .*--restart"):
        training.train_and_evaluate(config, str(tmp_path), verbose=0)
    assert (tmp_path / "history.json").read_text() == '{"loss": [2840.1, 12'
    assert config_lib.Config.from_json_file(str(tmp_path / "config.json")) == config


@pytest.mark.parametrize(
    "shape, latent_dim, network, likelihood, widths, per_channel",
    [
        ((64, 64, 1), 10, "conv", "bernoulli", None, False),
        ((28, 28, 1), 32, "mlp", "bernoulli", None, False),
        ((28, 20, 1), 2, "mlp", "gaussian_learned", None, True),
        ((32, 32, 3), 128, "conv", "discretized_logistic", None, False),
        ((28, 28, 3), 7, "conv", "gaussian_learned", (8, 16, 32), True),
    ],
)
def test_size_estimate_counts_every_parameter(shape, latent_dim, network, likelihood,
                                              widths, per_channel):
    encoder = networks.build_encoder(shape, latent_dim, network, widths=widths, dense_units=48)
    decoder = networks.build_decoder(shape, latent_dim, network, likelihood, widths=widths,
                                     dense_units=48, per_channel_scale=per_channel)
    params, activations = networks.estimate_size(
        shape, latent_dim, network, likelihood, widths, 48, per_channel
    )
    assert params == encoder.count_params() + decoder.count_params()
    # Every layer's output counted once per example: at least the image and
    # the decoder's parameters, e.g. 64*64*1 + 2 latent heads.
    assert activations >= np.prod(shape) + 2 * latent_dim


def test_model_too_large_for_memory_is_refused_before_building(tmp_path):
    config = _tiny_config(latent_dim=300_000_000, widths=None, dense_units=256)
    # Encoder heads 2 x (256 * 3e8 + 3e8) = 154,200,000,000, the decoder's
    # first layer 3e8 * 256 + 256 = 76,800,000,256, the rest < 1M.
    with pytest.raises(UserError, match=r"does not fit in memory: 231,000,7\d\d,\d{3} parameters"):
        training.check_memory(config, (64, 64, 1), available=24 * 2**30)
    # 64x64 with the default widths: ~0.3M parameters, far below 1 GiB.
    assert training.check_memory(_tiny_config(), (64, 64, 1), available=2**30) < 2**30


def test_huge_latent_dim_leaves_no_config_json(tmp_path):
    workdir = tmp_path / "run"
    code, line, _ = _train(str(workdir), "--latent_dim=300000000")
    assert code == 1 and "does not fit in memory" in line and "--latent_dim" in line
    assert not workdir.exists()  # nothing blocks a corrected rerun


# ---------------------------------------------------------------------------
# --restart, leftovers, empty backups, validation steps.


def test_leftovers_are_removed_at_start_and_restart_clears_the_old_runs_files(tmp_path):
    # Two checks on one run of the same tiny config (a run costs ~5 s): the
    # leftovers of killed saves go as it starts, then --restart over it.
    config = _tiny_config(epochs=1, steps_per_epoch=2)
    (tmp_path / "config.json").write_text(config.to_json())  # an unfinished run
    (tmp_path / ".tmp-a1b2.keras").write_bytes(b"half a model")
    (tmp_path / "export.tmp-x9").mkdir()
    (tmp_path / "backup.old-77").mkdir()  # killed between replace_dir's renames
    training.train_and_evaluate(config, str(tmp_path), verbose=0)
    assert not [e for e in os.listdir(tmp_path) if ".tmp-" in e or ".old-" in e]

    # --restart clears the old run's files. What evaluate.py would have added
    # for the old model:
    (tmp_path / "results.json").write_text('{"elbo": -1}')
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "samples.png").write_bytes(b"png")
    old_model = (tmp_path / "model.keras").read_bytes()
    new_config = config.replace(latent_dim=3)
    results = training.train_and_evaluate(new_config, str(tmp_path), verbose=0, restart=True)
    assert results["steps"] == 2
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "figures").exists()
    assert (tmp_path / "model.keras").read_bytes() != old_model
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    assert model.latent_dim == 3


def test_empty_backup_folder_is_reported(tmp_path, caplog):
    config = _tiny_config()
    with keras.device("cpu"):
        model = training.build_model(config, (64, 64, 1), 4)
    (tmp_path / "backup").mkdir()
    with caplog.at_level(logging.WARNING):
        assert training.restore_backup(model, str(tmp_path / "backup")) is None
    assert "holds no resume state" in caplog.text and "starting from step 0" in caplog.text


def test_validation_steps_are_capped_at_the_split(caplog):
    with caplog.at_level(logging.WARNING):
        # 100 images in batches of 16: 7 batches, the last one of 4.
        assert training.validation_steps_for(50, 100, 16, whole_batches=False) == 7
        # The multi-worker loop takes whole batches only: 6.
        assert training.validation_steps_for(50, 100, 16, whole_batches=True) == 6
    assert "--validation_steps=50 is more than the validation split holds" in caplog.text
    assert training.validation_steps_for(3, 100, 16, whole_batches=False) == 3
    assert training.validation_steps_for(None, 100, 16, whole_batches=False) == 7
