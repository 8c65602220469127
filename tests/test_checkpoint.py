"""Never lose a run (training.checkpoint): kill, resume, preemption, atomic saves, guards."""

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
from PIL import Image
from script_helpers import train_in_process

import keras_vae
from keras_vae import config as config_lib
from keras_vae import files, training
from keras_vae.config import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO, "train.py")
# A tiny shapes run: 2 epochs of 40 steps, a backup every 10 steps.
TINY = [
    "--epochs=2",
    "--steps_per_epoch=40",
    "--validation_steps=2",
    "--eval_steps=1",
    "--batch_size=16",
    "--latent_dim=3",
    "--widths=8,8,16,16",
    "--backup_every_steps=10",
    "--noexport",
    "--deterministic",
]


def _cmd(workdir, *extra):
    return [sys.executable, TRAIN, f"--workdir={workdir}", *TINY, *extra]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)


def _run(args, **kwargs):
    return subprocess.run(
        args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, **kwargs
    )


def _weights(workdir):
    """Model and optimizer variables of a run's model.keras (loaded without warnings)."""
    with warnings.catch_warnings():
        # e.g. "Skipping variable loading for optimizer": a mismatch is an error.
        warnings.simplefilter("error")
        model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    return [np.asarray(w) for w in model.weights + model.optimizer.variables]


@pytest.fixture(scope="module")
def straight_weights(tmp_path_factory):
    """Weights and optimizer state of an uninterrupted TINY run: train.py's
    work in this process, from the same flags (script_helpers), a reference
    for the runs that train.py itself was stopped in."""
    straight = str(tmp_path_factory.mktemp("straight") / "run")
    train_in_process(straight, *TINY)
    return _weights(straight)


def _backup_step(workdir):
    try:
        with open(os.path.join(workdir, "backup", "state.json")) as f:
            return json.load(f)["step"]
    except (OSError, ValueError):
        return None


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path, straight_weights):
    killed = str(tmp_path / "killed")
    state = os.path.join(killed, "backup", "state.json")
    proc = subprocess.Popen(
        _cmd(killed), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # SIGKILL as soon as a mid-epoch backup exists (step 10, 20 or 30 of 80).
    deadline = time.time() + 300
    step = None
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(state) as f:
                step = json.load(f)["step"]
        except (OSError, ValueError):
            step = None
        if step is not None and step % 40:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before a mid-epoch backup"
    assert not os.path.exists(os.path.join(killed, training.SUMMARY_FILE))

    # The same command again: it resumes (from a backup at a step the kill
    # found or a later one), and finishes the planned 2 x 40 steps.
    resumed = _run(_cmd(killed))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming" in resumed.stderr
    with open(os.path.join(killed, training.SUMMARY_FILE)) as f:
        summary = json.load(f)
    assert summary["steps"] == 80
    assert summary["resumed_from_step"] in (10, 20, 30) and summary["resumed_from_step"] >= step
    assert not os.path.exists(os.path.join(killed, "backup"))
    with open(os.path.join(killed, "history.json")) as f:
        history = json.load(f)
    assert len(history["loss"]) == 2 and len(history["val_elbo"]) == 2

    # With --deterministic, the weights and the optimizer state equal those of
    # an uninterrupted run.
    for a, b in zip(_weights(killed), straight_weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_back_up_then_stop_with_one_line(tmp_path, straight_weights, signum):
    workdir = str(tmp_path / "run")
    proc = subprocess.Popen(
        _cmd(workdir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )
    # The signal (how schedulers and preemptible machines stop a job, or
    # Ctrl-C) once training is under way: after the first backup.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and _backup_step(workdir) is None:
        time.sleep(0.01)
    seen = _backup_step(workdir)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert seen is not None, "the run ended before its first backup"
    # 128 + the signal's number, as a shell reports it: 143 and 130.
    assert proc.returncode == 128 + signum, stderr[-3000:]
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr
    saved = _backup_step(workdir)
    # Saved at the step it stopped after, later than the backup it had.
    assert saved is not None and seen < saved < 80
    assert lines[-1] == (
        f"error: Stopped by {signal.Signals(signum).name}; the run up to step {saved} is "
        f"saved in {workdir}: rerun the same command to resume."
    )
    assert not os.path.exists(os.path.join(workdir, training.SUMMARY_FILE))

    # The same command resumes: its run in this process (train.py's flags and
    # config, script_helpers), as the test is about the stop; a resume by
    # train.py itself, with its log line, is the SIGKILL test's.
    train_in_process(workdir, *TINY)
    with open(os.path.join(workdir, training.SUMMARY_FILE)) as f:
        summary = json.load(f)
    assert summary["resumed_from_step"] == saved and summary["steps"] == 80
    # Nothing lost, nothing repeated: the same weights as a run never stopped.
    for a, b in zip(_weights(workdir), straight_weights, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_deterministic_runs_give_identical_losses(tmp_path):
    # Two runs in two processes: train.py, then the same flags' run in this
    # one (script_helpers.train_in_process: train.py's flags and config).
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    proc = _run(_cmd(a, "--epochs=1", "--steps_per_epoch=10"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    train_in_process(b, *TINY, "--epochs=1", "--steps_per_epoch=10")
    histories = []
    for workdir in (a, b):
        with open(os.path.join(workdir, "history.json")) as f:
            histories.append(json.load(f))
    assert histories[0] == histories[1]


def _tiny_config(**overrides):
    values = dict(
        epochs=1,
        steps_per_epoch=4,
        validation_steps=1,
        eval_steps=1,
        batch_size=8,
        latent_dim=2,
        widths=(8, 8, 16, 16),
        dense_units=16,
        export=False,
    )
    values.update(overrides)
    return config_lib.resolve("shapes", **values)


def test_phases_split_an_interrupted_epoch():
    # (initial_epoch, epochs, steps) fit calls from a given step.
    assert training.phases(0, 10, 3) == [(0, 3, 10)]
    assert training.phases(14, 10, 3) == [(1, 2, 6), (2, 3, 10)]
    assert training.phases(20, 10, 3) == [(2, 3, 10)]
    assert training.phases(29, 10, 3) == [(2, 3, 1)]
    assert training.phases(30, 10, 3) == []


def test_crash_during_model_save_keeps_previous_file(tmp_path):
    path = str(tmp_path / "model.keras")
    enc = keras_vae.build_encoder((8, 8, 1), 2, "mlp", widths=(8,))
    dec = keras_vae.build_decoder((8, 8, 1), 2, "mlp", widths=(8,))
    model = keras_vae.VAE(enc, dec, seed=0)
    training.save_model_atomic(model, path)
    before = np.asarray(keras.models.load_model(path).decode(np.zeros((1, 2), "float32")))

    class Crash(Exception):
        pass

    def half_save(tmp):
        with open(tmp, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")  # what a crash mid-write leaves
        raise Crash

    with pytest.raises(Crash):
        files.atomic_save(path, half_save, suffix=".keras")
    # The previous model is intact and nothing temporary is left.
    after = np.asarray(keras.models.load_model(path).decode(np.zeros((1, 2), "float32")))
    np.testing.assert_array_equal(before, after)
    assert os.listdir(tmp_path) == ["model.keras"]


def test_crash_while_replacing_a_folder_keeps_previous_and_recovers(tmp_path):
    target = str(tmp_path / "backup")

    def build(text):
        def write(tmp):
            with open(os.path.join(tmp, "state.json"), "w") as f:
                f.write(text)

        return write

    files.replace_dir(target, build("old"))

    def crash(tmp):
        build("new")(tmp)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.replace_dir(target, crash)
    with open(os.path.join(target, "state.json")) as f:
        assert f.read() == "old"
    assert sorted(os.listdir(tmp_path)) == ["backup"]

    # A kill between the two renames leaves only backup.old-*: recovered.
    os.rename(target, target + ".old-abc123")
    files.recover_dir(target)
    with open(os.path.join(target, "state.json")) as f:
        assert f.read() == "old"


def _images(n, nan_batches=(), batch=8):
    rng = np.random.default_rng(0)
    x = (rng.random((n, 8, 8, 1)) > 0.5).astype("float32")
    for b in nan_batches:
        x[b * batch : (b + 1) * batch] = np.nan
    return x


def _tiny_vae():
    enc = keras_vae.build_encoder((8, 8, 1), 2, "mlp", widths=(16,))
    dec = keras_vae.build_decoder((8, 8, 1), 2, "mlp", widths=(16,))
    vae = keras_vae.VAE(enc, dec, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    return vae


def test_planted_nan_batch_is_skipped_and_counted():
    vae = _tiny_vae()
    x = _images(64, nan_batches=(3,))  # 8 batches of 8, the 4th all NaN
    kernel = vae.encoder.weights[0]
    history = vae.fit(x, batch_size=8, epochs=2, shuffle=False, verbose=0)
    # One skipped update per epoch, counted in the model and the logs.
    assert int(np.asarray(vae.skipped_steps)) == 2
    assert history.history["skipped_steps"] == [1.0, 2.0]
    assert int(np.asarray(vae.kl_step)) == 16
    # The weights stayed finite and training went on: the loss (over the
    # finite batches only) fell.
    assert np.all(np.isfinite(np.asarray(kernel)))
    assert all(np.isfinite(history.history["loss"]))
    assert history.history["loss"][1] < history.history["loss"][0]


def test_nan_update_leaves_weights_unchanged():
    vae = _tiny_vae()
    vae.fit(_images(8), batch_size=8, epochs=1, verbose=0)  # builds the optimizer
    before = [np.asarray(w).copy() for w in vae.trainable_weights]
    vae.fit(_images(8, nan_batches=(0,)), batch_size=8, epochs=1, verbose=0)
    for a, b in zip(before, vae.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_consecutive_non_finite_steps_stop_the_run_with_a_cause(tmp_path, monkeypatch):
    # A learning rate so large that the losses overflow within a few steps
    # (the weights themselves stay finite: the skips guard stops the run).
    config = _tiny_config(learning_rate=1e30, max_consecutive_skips=3, epochs=3)
    with pytest.raises(UserError) as info:
        training.train_and_evaluate(config, str(tmp_path), verbose=0)
    message = str(info.value)
    assert "3 steps in a row had a non-finite loss" in message
    assert "--learning_rate=0.001" in message and "float16" in message
    # The run stopped at step 4, epoch 1's last, before its end-of-epoch
    # saves: weights whose losses are infinite are not kept.
    assert not os.path.exists(os.path.join(tmp_path, "model.keras"))
    assert not os.path.exists(os.path.join(tmp_path, "backup"))
    assert not os.path.exists(os.path.join(tmp_path, training.SUMMARY_FILE))


# ---------------------------------------------------------------------------
# Bad input: one line, the right exit code, nothing saved lost.


def _train(tmp_path, *args):
    proc = _run([sys.executable, TRAIN, *args])
    lines = proc.stderr.strip().splitlines()
    # Progress logs (e.g. a folder scan) may come first; the error is one
    # line, the last, with no traceback.
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.returncode, errors[0]


def test_batch_size_larger_than_dataset(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(np.full((16, 16, 3), i * 5, np.uint8)).save(folder / f"{i}.png")
    code, line = _train(
        tmp_path, f"--dataset=folder:{folder}", "--batch_size=64", f"--workdir={tmp_path / 'w'}"
    )
    assert code == 2
    assert "--batch_size=64 is larger than the train split" in line
    assert not (tmp_path / "w").exists()


def test_folder_without_readable_images(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("hello")
    code, line = _train(tmp_path, f"--dataset=folder:{folder}", f"--workdir={tmp_path / 'w'}")
    assert code == 1 and str(folder) in line
    empty = tmp_path / "empty"
    empty.mkdir()
    code, line = _train(tmp_path, f"--dataset=folder:{empty}", f"--workdir={tmp_path / 'w'}")
    assert code == 1 and str(empty) in line
    assert not (tmp_path / "w").exists()


def test_workdir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    code, line = _train(tmp_path, f"--workdir={blocker / 'run'}", *TINY)
    assert code == 1
    assert f"Cannot write to --workdir={blocker / 'run'}" in line
    assert "choose a folder you can write to" in line


def test_resume_with_another_network_is_refused(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    saved = config_lib.resolve("shapes", network="mlp", latent_dim=3)
    (workdir / "config.json").write_text(saved.to_json())
    code, line = _train(tmp_path, f"--workdir={workdir}", "--network=conv", "--latent_dim=3")
    assert code == 2
    assert "network: 'mlp' in config.json, 'conv' now" in line
    assert "--restart" in line
    # config.json untouched.
    assert config_lib.Config.from_json_file(str(workdir / "config.json")) == saved


@pytest.mark.slow
def test_finished_workdir_needs_restart(tmp_path):
    workdir = tmp_path / "run"
    args = [f"--workdir={workdir}", *TINY, "--epochs=1", "--steps_per_epoch=3"]
    # The finished run: train.py's work in this process (script_helpers), the
    # two commands below by train.py itself.
    train_in_process(str(workdir), *args[1:])
    before = (workdir / "model.keras").read_bytes()
    code, line = _train(tmp_path, *args)
    assert code == 2 and "holds a finished run" in line and "--restart" in line
    assert (workdir / "model.keras").read_bytes() == before
    again = _run([sys.executable, TRAIN, *args, "--restart"])
    assert again.returncode == 0, again.stderr[-2000:]
    with open(workdir / training.SUMMARY_FILE) as f:
        assert json.load(f)["resumed_from_step"] is None


class _SigtermAt(keras.callbacks.Callback):
    """Sends this process SIGTERM after training step `at`, as a scheduler would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(keras.ops.convert_to_numpy(self.model.kl_step)) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["ae", "iwae", "beta_tcvae", "iaf", "cvae"])
def test_every_model_resumes_exactly_after_sigterm(tmp_path, model):
    # Every variant keeps its whole state in the backup (weights, optimizer,
    # step, random state): stopped mid-epoch and resumed, it ends with the
    # weights of a run never stopped (deterministic ops). The vae's case is
    # tests/test_tensorboard.py::test_step_axis_continues_after_a_stop_and_resume:
    # the same runs (this config with log_every_steps=2, which changes what is
    # logged, not what is trained), checked there for the same.
    config = _tiny_config(model=model, epochs=2, steps_per_epoch=4, deterministic=True)
    straight, stopped = str(tmp_path / "straight"), str(tmp_path / "stopped")
    training.train_and_evaluate(config, straight, verbose=0)
    with pytest.raises(config_lib.Interrupted, match="the run up to step 6 is saved") as info:
        # SIGTERM after step 5: the handler backs up at the end of step 6.
        training.train_and_evaluate(config, stopped, verbose=0, callbacks=[_SigtermAt(5)])
    assert info.value.exit_code == 128 + signal.SIGTERM
    results = training.train_and_evaluate(config, stopped, verbose=0)
    assert results["resumed_from_step"] == 6 and results["steps"] == 8
    for a, b in zip(_weights(stopped), _weights(straight), strict=True):
        np.testing.assert_array_equal(a, b)
