"""What a run keeps on disk, and how it resumes: backups, model.keras, history.

Every save goes through `_write` (a failed write is one line, the previous
file intact) after `callbacks.check_finite` (no NaN is ever saved) and
`_check_space` (no write that cannot fit is started).
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
import time

import keras
import numpy as np
from absl import logging

from keras_vae import files
from keras_vae.callbacks import check_finite, step_of
from keras_vae.config import OPERATIONAL_FIELDS, Config, UsageError, UserError
from keras_vae.runs import (  # the run folder's names belong to runs.py
    BACKUP_DIR,
    EXPORT_DIR,
    FIGURES_DIR,
    HISTORY_FILE,
    MODEL_FILE,
    RESULTS_FILE,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
)

_WEIGHTS = "weights.weights.h5"
_STATE = "state.json"


def _ignore(*args):
    pass


def _check_space(path, model):
    """Refuses to start a save that cannot fit on the disk.

    A full disk during an h5py write leaves HDF5 with a file it can neither
    write nor close, and the process then crashed at exit (segmentation
    fault) whatever was caught: better not to start such a write. A save
    holds every model and optimizer value (plus a little structure).
    """
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)  # unset before `compile`
    if optimizer is not None and optimizer.built:
        variables += list(optimizer.variables)
    need = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)
    need = int(need * 1.05) + 2**20
    folder = os.path.dirname(os.path.abspath(path))
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < need:
        raise UserError(
            f"Cannot write {path}: about {need / 2**20:.1f} MiB are needed and "
            f"{free / 2**20:.1f} MiB are free on its disk. Free some space, then rerun the "
            "same command to resume (the previous files are intact)."
        )


def write_or_explain(path, write):
    """Runs `write()`, which saves `path`; a failed write (full disk, I/O
    error) becomes one `UserError` line, the previous file being intact.

    After an h5py write failed, HDF5 still holds the broken file and
    crashes the interpreter's shutdown (segmentation fault, exit 139): the
    error then asks the entry point to exit at once (`hard_exit`).
    """
    # h5py objects of a failed file print the failure again as they are
    # freed (Cython reports it through both hooks): muted meanwhile.
    hooks = sys.excepthook, sys.unraisablehook
    sys.excepthook = sys.unraisablehook = _ignore
    try:
        try:
            write()
            return
        except OSError as e:
            # h5py's messages span lines: the system's reason only.
            reason = os.strerror(e.errno) if e.errno else str(e).splitlines()[0]
        gc.collect()
    finally:
        sys.excepthook, sys.unraisablehook = hooks
    error = UserError(
        f"Cannot write {path} ({reason}): free some space or fix the folder, then rerun the "
        "same command to resume (the previous files are intact)."
    )
    error.hard_exit = True
    raise error


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary `.keras` file and a rename,
    after checking that every value is finite (else `Diverged`)."""
    check_finite(model)
    _check_space(path, model)
    write_or_explain(path, lambda: files.atomic_save(path, model.save, suffix=".keras"))


class AtomicModelSaver(keras.callbacks.Callback):
    """Saves the model to `path` at the end of every epoch, atomically."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.path)


class Backup(keras.callbacks.Callback):
    """Resume state every `every_steps` steps and at each epoch's end.

    Why not `keras.callbacks.BackupAndRestore`: it restores the epoch only
    (the interrupted epoch starts again from its first batch), writes its
    weights and metadata as two files non-atomically, and does not keep the
    seed generators' state (`save_weights` leaves it out), so a resumed run
    could not match an uninterrupted one. Here one folder holds the weights
    (model and optimizer, with the step counter `kl_step`) and the random
    state, and `files.replace_dir` swaps it in whole.

    No batch-level save on an epoch's last step: that step's state is saved
    by `on_epoch_end`, after validation (which draws random numbers).
    """

    def __init__(self, backup_dir, every_steps, steps_per_epoch):
        super().__init__()
        self.backup_dir = backup_dir
        self.every_steps = every_steps
        self.steps_per_epoch = steps_per_epoch
        self._last_step = None

    def save(self):
        check_finite(self.model)  # a non-finite state never replaces a good backup
        _check_space(self.backup_dir, self.model)
        step = step_of(self.model)
        state = {"step": step, "rng": self.model.rng_state(), "time": time.time()}

        def build(tmp):
            self.model.save_weights(os.path.join(tmp, _WEIGHTS))
            files.atomic_write_text(os.path.join(tmp, _STATE), json.dumps(state) + "\n")

        write_or_explain(self.backup_dir, lambda: files.replace_dir(self.backup_dir, build))

    def on_train_begin(self, logs=None):
        self._last_step = step_of(self.model)

    def on_train_batch_end(self, batch, logs=None):
        # At the end of the call that reaches or crosses a multiple of
        # `every_steps` (several steps a call: `training.execution`).
        step, last = step_of(self.model), self._last_step
        last = step - 1 if last is None else last
        self._last_step = step
        if step // self.every_steps > last // self.every_steps and step % self.steps_per_epoch:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()


def restore_backup(model, backup_dir):
    """Loads the resume state into a freshly built, compiled `model`.

    Returns:
        The number of training steps already taken, or None without a backup.

    Raises:
        UserError: a backup that cannot be read.
    """
    files.recover_dir(backup_dir)
    state_path = os.path.join(backup_dir, _STATE)
    if not os.path.isfile(state_path):
        if os.path.isdir(backup_dir):
            logging.warning(
                "%s holds no resume state (its save was interrupted): starting from step 0.",
                backup_dir,
            )
        return None
    try:
        with open(state_path) as f:
            state = json.load(f)
        if not model.optimizer.built:  # LossScaleOptimizer.build is not idempotent
            model.optimizer.build(model.trainable_variables)
        model.load_weights(os.path.join(backup_dir, _WEIGHTS))
        model.set_rng_state(state["rng"])
    except Exception as e:  # a damaged or foreign backup: say so, keep it
        raise UserError(
            f"Cannot resume from {backup_dir} ({type(e).__name__}: {e}); "
            "pass --restart to start the run over."
        ) from e
    step = step_of(model)
    if step != state["step"]:
        raise UserError(
            f"The backup in {backup_dir} is inconsistent (weights at step {step}, "
            f"state at step {state['step']}); pass --restart to start the run over."
        )
    return step


class EpochHistory(keras.callbacks.Callback):
    """Writes `history.json` ({key: [value per epoch]}) after every epoch.

    Keeps the epochs of an earlier, interrupted process: `previous` holds
    them, cut to the epochs before the one the run resumes in.
    """

    def __init__(self, path, previous=None):
        super().__init__()
        self.path = path
        self.history = {k: list(v) for k, v in (previous or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            values = self.history.setdefault(key, [])
            del values[epoch:]
            values.extend([None] * (epoch - len(values)))
            values.append(float(value))
        # Strict JSON: a NaN is written as null.
        write_or_explain(self.path, lambda: files.write_json(self.path, self.history))


def check_workdir(config, workdir, restart=False):
    """Refuses to clobber a finished run or to resume one with other settings.

    Reads only; `restart` skips both checks (the caller then clears the run).

    Returns:
        The saved `Config` when `workdir` holds an unfinished run of the same
        config (operational fields such as the learning rate may differ),
        else None.

    Raises:
        UsageError: a finished run, or a config.json that disagrees with
            `config` in a field that changes what is computed.
    """
    config_path = os.path.join(workdir, "config.json")
    if restart or not os.path.exists(config_path):
        return None
    if os.path.exists(os.path.join(workdir, SUMMARY_FILE)):
        raise UsageError(
            f"--workdir={workdir} holds a finished run; pass --restart to train it again "
            "from scratch (replacing it), or choose another --workdir."
        )
    try:
        saved = Config.from_json_file(config_path)
    except (OSError, ValueError, UserError) as e:
        raise UsageError(
            f"Cannot read {config_path} ({e}); pass --restart to start the run over."
        ) from e
    changed = [
        f"{name}: {getattr(saved, name)!r} in config.json, {getattr(config, name)!r} now"
        for name in Config.__dataclass_fields__
        if name not in OPERATIONAL_FIELDS and getattr(saved, name) != getattr(config, name)
    ]
    if changed:
        raise UsageError(
            f"--workdir={workdir} holds a run with another config ({'; '.join(changed)}): "
            "give the same flags to resume it, --restart to start it over, or another --workdir."
        )
    return saved


def read_history(path):
    """A run's `history.json` ({key: [value per epoch]}), {} if there is none.

    Raises:
        UserError: a file that is not a history (truncated, edited, foreign).
    """
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            history = json.load(f)
        if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
            raise ValueError("not a {key: [values]} object")
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(
            f"Cannot resume: {path} is corrupt ({e}). Move it away to resume without the "
            "earlier epochs' history, or pass --restart to start the run over."
        ) from e
    return history


# What a run writes; --restart removes all of it (evaluate.py's results and
# figures too: they describe the old model).


_RUN_FILES = (MODEL_FILE, HISTORY_FILE, SUMMARY_FILE, RESULTS_FILE)
_RUN_DIRS = (BACKUP_DIR, TENSORBOARD_DIR, EXPORT_DIR, FIGURES_DIR)


def clear_run(workdir):
    """--restart: removes what the previous run in `workdir` left."""
    for name in _RUN_DIRS:
        shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    for name in _RUN_FILES:
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            os.remove(path)


def backup_step(backup_dir):
    """The step of the backup in `backup_dir`, or None if it has none."""
    try:
        with open(os.path.join(backup_dir, _STATE)) as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
