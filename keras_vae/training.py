"""`train_and_evaluate(config, workdir)`: data, model, `fit`, saving, test summary.

Everything `train.py` does, importable and testable without flags. The run's
files (DESIGN.md section 1) go into `workdir`, each written atomically
(`keras_vae.files`):

    config.json                 the resolved config
    model.keras                 the latest model (each epoch and at the end)
    history.json                per-epoch logs of `fit` (kept across resumes)
    backup/                     resume state: weights + optimizer + RNG + step
    tensorboard/{train,validation}  scalars (loss, reconstruction, kl, elbo, beta,
                                learning rate, skipped_steps); validation also
                                the image grids of `LatentSummaries`
    export/                     the SavedModel (`keras_vae.export`)
    train_summary.json          test metrics; its presence marks a finished run

A run killed at any point and started again with the same arguments resumes
from its last backup: the model, optimizer and random state are restored and
the (deterministic) input stream skips the batches already used, so it ends
with the same number of epochs and steps as an uninterrupted run, and with
`deterministic=True` the same weights.
"""

from __future__ import annotations

import errno
import gc
import json
import math
import os
import shutil
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from keras_vae import data as data_lib
from keras_vae import files
from keras_vae.callbacks import LatentSummaries
from keras_vae.config import (
    OPERATIONAL_FIELDS,
    Config,
    Interrupted,
    UsageError,
    UserError,
    validate,
)
from keras_vae.evaluation import bits_per_dim
from keras_vae import models
from keras_vae.networks import build_decoder, build_encoder, estimate_size

SUMMARY_FILE = "train_summary.json"
BACKUP_DIR = "backup"
_WEIGHTS = "weights.weights.h5"
_STATE = "state.json"


class Diverged(Exception):
    """Raised inside `fit` to stop a run whose state must not be kept.

    `train_and_evaluate` turns it into a one-line `UserError` naming the last
    finite state on disk and the way out.

    Attributes:
        step: training steps taken when it was noticed.
        reason: `nonfinite` (a weight or optimizer variable is NaN/Inf) or
            `skips` (too many non-finite steps in a row).
    """

    def __init__(self, step, reason):
        super().__init__(f"{reason} at step {step}")
        self.step = step
        self.reason = reason


class Preempted(Exception):
    """SIGTERM or Ctrl-C: the run stops after a backup of its current step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _step(model):
    return int(keras.ops.convert_to_numpy(model.kl_step))


def check_finite(model):
    """Raises `Diverged` if any weight or optimizer variable is NaN/Inf.

    Called before every save: no file a run writes holds a non-finite value.
    """
    if model.nonfinite_variables():
        raise Diverged(_step(model), "nonfinite")


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


def _write(path, write):
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
    _write(path, lambda: files.atomic_save(path, model.save, suffix=".keras"))


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

    def save(self):
        check_finite(self.model)  # a non-finite state never replaces a good backup
        _check_space(self.backup_dir, self.model)
        step = _step(self.model)
        state = {"step": step, "rng": self.model.rng_state(), "time": time.time()}

        def build(tmp):
            self.model.save_weights(os.path.join(tmp, _WEIGHTS))
            files.atomic_write_text(os.path.join(tmp, _STATE), json.dumps(state) + "\n")

        _write(self.backup_dir, lambda: files.replace_dir(self.backup_dir, build))

    def on_train_batch_end(self, batch, logs=None):
        step = _step(self.model)
        if step % self.every_steps == 0 and step % self.steps_per_epoch != 0:
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
    step = int(keras.ops.convert_to_numpy(model.kl_step))
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
        _write(self.path, lambda: files.write_json(self.path, self.history))


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops a run before it can save a state that is not worth keeping.

    Two ways a run goes bad:
    - a step with a finite loss and finite gradients whose update overflows
      the weights (a learning rate far too high): every later loss is NaN.
      The weights are checked whenever a step is skipped and at each epoch's
      end (and by every save, see `check_finite`), so the run stops at once
      instead of saving NaN;
    - `max_consecutive` skipped (non-finite) steps in a row with finite
      weights: the model skips each such update (its optimizer is a
      LossScaleOptimizer, see `VAE.compile`), but the run goes nowhere.

    Either raises `Diverged` out of `fit`; nothing after the last good save
    is written. It is the first callback, so it acts before the savers.
    """

    def __init__(self, max_consecutive):
        super().__init__()
        self.max_consecutive = max_consecutive

    def on_train_batch_end(self, batch, logs=None):
        run = int(keras.ops.convert_to_numpy(self.model.consecutive_skips))
        if run:  # only then can the weights have gone bad unseen: cheap otherwise
            check_finite(self.model)
        if run >= self.max_consecutive:
            raise Diverged(_step(self.model), "skips")

    def on_epoch_end(self, epoch, logs=None):
        check_finite(self.model)


class PreemptionGuard(keras.callbacks.Callback):
    """Turns SIGTERM and SIGINT (Ctrl-C) into a backup and a clean stop.

    `tf.distribute.experimental.PreemptionCheckpointHandler` does this for a
    custom loop under MultiWorkerMirroredStrategy or TPUStrategy only, around
    its own `tf.train.Checkpoint`; here `fit` runs on any strategy and the
    backup is `Backup`'s, so a small handler does it: a signal sets a flag,
    and at the next step's end the backup is written and `Preempted` raised.
    A signal during validation or at an epoch's end waits for that epoch's
    own backup. A second signal stops at once (the previous backup stays).

    Use as a context manager around training: it installs the handlers
    (main thread only) and puts the previous ones back.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, backup=None):
        super().__init__()
        self.backup = backup
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None or not self._in_training:
            raise Preempted(signum)
        self.received = signum
        logging.warning("%s received: stopping after this step.", signal.Signals(signum).name)

    def __enter__(self):
        self._in_training = False
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def on_train_begin(self, logs=None):
        self._in_training = True

    def on_train_end(self, logs=None):
        self._in_training = False

    def _stop(self):
        if self.received is not None:
            if self.backup is not None:
                self.backup.save()
            raise Preempted(self.received)

    def on_train_batch_end(self, batch, logs=None):
        # Not on an epoch's last step: its state is saved after validation.
        steps = self.params.get("steps")
        if steps is None or (batch + 1) % steps:
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()  # placed after Backup: this epoch's backup is written


class Runtime:
    """Where and how a run computes: strategy, chief, precision, XLA.

    Attributes:
        strategy: the `tf.distribute.Strategy` (the default one for `none`).
        kind: `none`, `mirrored`, `multi_worker` or `tpu`.
        is_chief: whether this process writes checkpoints, summaries, exports.
        policy: the Keras dtype policy name set for the model.
        jit_compile: whether `fit`'s train step is XLA-compiled.
    """

    def __init__(self, strategy, kind, is_chief, policy, jit_compile):
        self.strategy = strategy
        self.kind = kind
        self.is_chief = is_chief
        self.policy = policy
        self.jit_compile = jit_compile

    @property
    def custom_loop(self):
        # Keras 3 `fit` fails under MultiWorkerMirroredStrategy (UPSTREAM_NOTES:
        # keras-team/keras#20585): drive `train_step` with `strategy.run` instead.
        return self.kind == "multi_worker"


def _tf_config_tasks():
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError as e:
        raise UsageError(f"TF_CONFIG is not valid JSON ({e}): fix or unset it.") from e
    return sum(len(tasks) for tasks in cluster.values())


def _is_chief(strategy):
    """The chief writes: task `chief`, or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def make_runtime(config):
    """Creates the strategy and sets the dtype policy; call before other TF work.

    `MultiWorkerMirroredStrategy` must exist before TensorFlow runs its first
    operation, so `train_and_evaluate` calls this first.

    - mixed_precision `auto`: `mixed_float16` with a GPU, float32 on CPU;
    - jit_compile `auto`: XLA with a GPU; off on CPU, where a 64x64 conv VAE
      trained at 353 img/s with XLA against 784 without (UPSTREAM_NOTES);
    - distribution `auto`: multi-worker when TF_CONFIG lists more than one
      task, mirrored over several local GPUs, else none.
    """
    gpus = tf.config.list_physical_devices("GPU")
    kind = config.distribution
    if kind == "auto":
        if _tf_config_tasks() > 1:
            kind = "multi_worker"
        elif len(gpus) > 1:
            kind = "mirrored"
        else:
            kind = "none"
    if kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == "mirrored":
        # All local GPUs; without GPUs, every logical CPU device (tests split
        # the CPU into several), which is one replica on a plain machine.
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as e:
            raise UsageError(
                f"--distribution=tpu but no TPU was found ({e}): run on a TPU host or "
                "drop the flag."
            ) from e
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        strategy = tf.distribute.get_strategy()

    policy = {
        "auto": "mixed_float16" if gpus else "float32",
        "float16": "mixed_float16",
        "bfloat16": "mixed_bfloat16",
        "none": "float32",
    }[config.mixed_precision]
    keras.config.set_dtype_policy(policy)
    jit = {"auto": bool(gpus), "true": True, "false": False}[config.jit_compile]
    runtime = Runtime(strategy, kind, _is_chief(strategy), policy, jit)
    return runtime


def _distributed_fit(
    model,
    strategy,
    train_ds,
    val_ds,
    *,
    initial_epoch,
    epochs,
    steps,
    validation_steps,
    callbacks,
    verbose,
):
    """`fit` for MultiWorkerMirroredStrategy: `strategy.run(model.train_step)`
    in a `tf.function`, driving the same callbacks (UPSTREAM_NOTES)."""

    @tf.function
    def train_fn(iterator):
        outputs = strategy.run(model.train_step, args=(next(iterator),))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_progbar=bool(verbose),
        model=model,
        verbose=1 if verbose == "auto" else verbose,
        epochs=epochs,
        steps=steps,
    )
    iterator = iter(strategy.experimental_distribute_dataset(train_ds))
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_fn(iterator).items()}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        val_logs = _distributed_evaluate(model, strategy, val_ds, validation_steps)
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()


def _distributed_evaluate(model, strategy, dataset, steps):
    """`evaluate` for MultiWorkerMirroredStrategy: `model.test_step` over
    `steps` batches of `dataset`; returns the metrics as floats."""

    @tf.function
    def test_fn(batch):
        outputs = strategy.run(model.test_step, args=(batch,))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

    model.reset_metrics()
    logs = {}
    for batch in strategy.experimental_distribute_dataset(dataset.take(steps)):
        logs = test_fn(batch)
    return {k: float(v) for k, v in logs.items()}


def load_split(config, split, *, shuffle, repeat, drop_remainder=False):
    """The `split` of `config.dataset` as a batched `tf.data.Dataset` and its info."""
    return data_lib.load_for_config(
        config, split, shuffle=shuffle, repeat=repeat, drop_remainder=drop_remainder
    )


def build_model(config, image_shape, steps_per_epoch, jit_compile=False):
    """Builds and compiles the VAE that `config` describes.

    `steps_per_epoch` sets the beta schedule's length: a linear warm-up over
    `config.warmup_steps` (default a quarter of training) or
    `config.beta_cycles` cycles over the whole run.
    """
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = config.warmup_steps
    if warmup_steps is None:
        warmup_steps = max(1, total_steps // 4)
    cycle_steps = max(1, total_steps // config.beta_cycles)
    common = dict(
        image_shape=image_shape,
        latent_dim=config.latent_dim,
        network=config.network,
        widths=config.widths,
        dense_units=config.dense_units,
    )
    try:
        encoder = build_encoder(**common)
        decoder = build_decoder(
            **common, likelihood=config.likelihood, per_channel_scale=config.per_channel_scale
        )
    except ValueError as e:
        raise UsageError(f"Cannot build the {config.network} networks: {e}") from e
    model = models.get(config.model)(
        encoder,
        decoder,
        likelihood=config.likelihood,
        beta=config.beta,
        beta_schedule=config.beta_schedule,
        warmup_steps=warmup_steps,
        cycle_steps=cycle_steps,
        cycle_ratio=config.cycle_ratio,
        free_bits=config.free_bits,
        gaussian_sigma=config.gaussian_sigma,
        seed=config.seed,
    )
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=jit_compile)
    return model


def _steps(requested, num_examples, batch_size, what):
    available = num_examples // batch_size
    if available == 0:
        raise UsageError(
            f"--batch_size={batch_size} is larger than the {what} split "
            f"({num_examples} images): use a smaller --batch_size."
        )
    return available if requested is None else requested


def _validation_steps(requested, num_examples, batch_size, whole_batches):
    """Validation batches per epoch: all of them, or `requested`, capped at
    what the (unrepeated) split holds, saying so."""
    batches = _steps(None, num_examples, batch_size, "validation")
    if not whole_batches:
        batches = math.ceil(num_examples / batch_size)
    if requested is not None and requested > batches:
        logging.warning(
            "--validation_steps=%d is more than the validation split holds (%d images, %d "
            "batches of %d): validating on all %d batches.",
            requested, num_examples, batches, batch_size, batches,
        )
        return batches
    return batches if requested is None else requested


def _available_memory():
    """Bytes of memory available to a new allocation, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, image_shape, available=None):
    """Refuses a model too large for this machine's memory, before building it.

    Building allocates every weight: a huge `latent_dim` or `image_size`
    would end in an out-of-memory kill (or a swap storm) instead of a line.
    The estimate counts float32 weights, gradients and two Adam moments per
    parameter (16 bytes) and each layer output of a batch twice (forward and
    backward, 8 bytes a value); it is a lower bound, so only a model that
    cannot fit is refused.

    Raises:
        UserError: the estimate exceeds the available memory.
    """
    available = _available_memory() if available is None else available
    try:
        params, activations = estimate_size(
            image_shape, config.latent_dim, config.network, config.likelihood,
            config.widths, config.dense_units, config.per_channel_scale,
        )
    except ValueError as e:
        raise UsageError(f"Cannot build the {config.network} networks: {e}") from e
    need = 16 * params + 8 * activations * config.batch_size
    if available is not None and need > available:
        gib = 2.0**30
        raise UserError(
            f"This model does not fit in memory: {params:,} parameters and {activations:,} "
            f"activations per image (images {'x'.join(map(str, image_shape))}, latent_dim "
            f"{config.latent_dim}) need about {need / gib:,.1f} GiB to train with batch "
            f"{config.batch_size}, and {available / gib:,.1f} GiB are available: use a "
            "smaller --latent_dim, --image_size, --widths, --dense_units or --batch_size."
        )
    return need


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
_RUN_FILES = ("model.keras", "history.json", SUMMARY_FILE, "results.json")
_RUN_DIRS = (BACKUP_DIR, "tensorboard", "export", "figures")


def _clear_run(workdir):
    """--restart: removes what the previous run in `workdir` left."""
    for name in _RUN_DIRS:
        shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    for name in _RUN_FILES:
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            os.remove(path)


def _phases(start_step, steps_per_epoch, epochs):
    """The `fit` calls that take a run from `start_step` to its end.

    Returns:
        A list of `(initial_epoch, epochs, steps_per_epoch)`: first the rest
        of an interrupted epoch, then whole epochs.
    """
    epoch, within = divmod(start_step, steps_per_epoch)
    phases = []
    if within and epoch < epochs:
        phases.append((epoch, epoch + 1, steps_per_epoch - within))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    return phases


def _backup_step(backup_dir):
    try:
        with open(os.path.join(backup_dir, _STATE)) as f:
            return int(json.load(f)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _diverged_error(error, config, workdir):
    """The one line for a `Diverged` run: what happened, what is kept, the way out."""
    backup_step = _backup_step(os.path.join(workdir, BACKUP_DIR))
    # A tenth of the rate, and no more than Adam's usual 1e-3.
    lower = f"--learning_rate={min(config.learning_rate / 10, 1e-3):g}"
    if error.reason == "nonfinite":
        what = (
            f"Training diverged at step {error.step}: an update made the weights NaN/Inf "
            "(non-finite) although the loss and gradients were finite, so nothing after the "
            "last finite state was saved. Likely cause: a learning rate too high"
        )
    else:
        what = (
            f"Training stopped at step {error.step}: {config.max_consecutive_skips} steps in a "
            "row had a non-finite loss or gradient (NaN/Inf) and were skipped. Likely causes: a "
            "learning rate too high, float16 overflow under mixed precision, or broken input "
            "images"
        )
    if backup_step is None:
        kept = (
            "No finite state had been saved yet: rerun the same command with e.g. "
            f"{lower} (it starts from step 0), or --restart."
        )
    else:
        kept = (
            f"The last finite state is in {os.path.join(workdir, BACKUP_DIR)} (step "
            f"{backup_step}) and model.keras (its last finished epoch): rerun the same command "
            f"with e.g. {lower} to resume from step {backup_step}, or --restart."
        )
    return UserError(f"{what}. {kept}")


def _check_finite_results(results, image_shape):
    bad = [k for k in ("elbo", "reconstruction", "kl") if not math.isfinite(results[k])]
    if bad:
        raise UserError(
            f"The test metrics are not finite ({', '.join(f'{k}={results[k]}' for k in bad)}) "
            "although the weights are: the likelihood overflows on the test images (e.g. a "
            "--gaussian_sigma far too small). The run is not marked finished: change the "
            "setting and pass --restart."
        )


def train_and_evaluate(config: Config, workdir: str, verbose="auto", restart=False, callbacks=()):
    """Trains the VAE of `config` in `workdir` (resuming it), evaluates it on the test split.

    Args:
        config: a resolved `Config` (see `keras_vae.config.resolve`).
        workdir: the run's folder; created if missing.
        verbose: passed to `fit`/`evaluate` (progress bars).
        restart: start over even if `workdir` holds a run (finished or not).
        callbacks: more Keras callbacks, run on every worker.

    Returns:
        dict with the test metrics (`elbo`, `reconstruction`, `kl` in nats
        per example, `bits_per_dim`, `num_images`), `steps`,
        `skipped_steps`, `resumed_from_step` and `workdir`.

    Raises:
        UsageError: bad config, a finished workdir, a config that disagrees
            with the workdir's; UserError: missing data, an unwritable
            workdir or full disk, a model too large for memory, a run that
            diverged or produced non-finite test metrics; Interrupted:
            SIGTERM or Ctrl-C (after a backup).
    """
    with PreemptionGuard() as preemption:
        try:
            return _train_and_evaluate(config, workdir, verbose, restart, callbacks, preemption)
        except Preempted as e:
            step = _backup_step(os.path.join(workdir, BACKUP_DIR))
            kept = "nothing" if step is None else f"the run up to step {step}"
            raise Interrupted(
                f"Stopped by {signal.Signals(e.signum).name}; {kept} is saved in {workdir}: "
                "rerun the same command to resume.",
                e.signum,
            ) from None


def _train_and_evaluate(config, workdir, verbose, restart, callbacks, preemption):
    validate(config)
    runtime = make_runtime(config)  # first: a multi-worker strategy needs it
    strategy = runtime.strategy
    saved = check_workdir(config, workdir, restart)
    history_path = os.path.join(workdir, "history.json")
    # Read before anything is written: a corrupt file stops the run here.
    previous = read_history(history_path) if saved is not None else None
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)

    def train_stream():
        return load_split(config, "train", shuffle=True, repeat=True, drop_remainder=True)

    # Data and model first: a missing dataset or a model that cannot be
    # built must not leave a config.json that blocks the workdir. (The
    # distributed loop splits each global batch over the replicas: only
    # whole batches.)
    train_ds, train_info = train_stream()
    val_ds, val_info = load_split(
        config, "validation", shuffle=False, repeat=False, drop_remainder=runtime.custom_loop
    )
    image_shape = tuple(train_info.image_shape)
    steps_per_epoch = _steps(
        config.steps_per_epoch, train_info.num_examples, config.batch_size, "train"
    )
    validation_steps = _validation_steps(
        config.validation_steps, val_info.num_examples, config.batch_size, runtime.custom_loop
    )
    check_memory(config, image_shape)

    backup_dir = os.path.join(workdir, BACKUP_DIR)
    with strategy.scope():
        model = build_model(config, image_shape, steps_per_epoch, runtime.jit_compile)
        if not model.optimizer.built:  # LossScaleOptimizer.build is not idempotent
            model.optimizer.build(model.trainable_variables)
        # Every worker restores the chief's backup (shared storage).
        start_step = None
        if saved is not None:
            if runtime.is_chief:
                files.recover_all(workdir)  # leftovers of saves a kill interrupted
            start_step = restore_backup(model, backup_dir)
            if start_step is None:
                logging.warning("%s has no backup yet: training from step 0.", workdir)
            # The backup holds the optimizer's learning rate; the flags' wins.
            model.optimizer.learning_rate = config.learning_rate
    if saved is not None:
        for name in sorted(OPERATIONAL_FIELDS):
            if getattr(saved, name) != getattr(config, name):
                logging.warning(
                    "Resuming with %s=%r (config.json had %r).",
                    name, getattr(config, name), getattr(saved, name),
                )

    if runtime.is_chief:
        try:
            os.makedirs(workdir, exist_ok=True)
            if restart:
                _clear_run(workdir)
            files.recover_all(workdir)
        except OSError as e:
            raise UserError(
                f"Cannot write to --workdir={workdir} ({e.strerror}): "
                "choose a folder you can write to."
            ) from e
        config_path = os.path.join(workdir, "config.json")
        _write(config_path, lambda: files.atomic_write_text(config_path, config.to_json()))

    if start_step is not None:
        logging.info(
            "Resuming %s from step %d (epoch %d, step %d of %d).",
            workdir,
            start_step,
            start_step // steps_per_epoch + 1,
            start_step % steps_per_epoch,
            steps_per_epoch,
        )
        previous = {k: v[: start_step // steps_per_epoch] for k, v in previous.items()}
    else:
        previous = None
    start_step = start_step or 0
    logging.info(
        "Training on %s: %d train / %d validation images of shape %s, "
        "%d epochs of %d steps, batch %d; distribution %s (%d replicas, %s), policy %s, "
        "XLA %s.",
        config.dataset,
        train_info.num_examples,
        val_info.num_examples,
        image_shape,
        config.epochs,
        steps_per_epoch,
        config.batch_size,
        runtime.kind,
        strategy.num_replicas_in_sync,
        "chief" if runtime.is_chief else "worker",
        runtime.policy,
        "on" if runtime.jit_compile else "off",
    )

    model_path = os.path.join(workdir, "model.keras")
    backup = Backup(backup_dir, config.backup_every_steps, steps_per_epoch)
    preemption.backup = backup if runtime.is_chief else None
    # Only the chief writes; every worker runs the guard (they skip the same
    # steps, the gradients being all-reduced) and the caller's callbacks.
    # The guard comes first (it acts before anything is saved), the
    # preemption handler after the backup (an epoch's end saves first).
    chief_callbacks = [
        keras.callbacks.TensorBoard(
            log_dir=os.path.join(workdir, "tensorboard"), write_graph=False, profile_batch=0
        ),
        EpochHistory(history_path, previous),
        AtomicModelSaver(model_path),
        backup,
        # Image grids next to the validation scalars, on the first (up to) 64
        # validation images: fixed, as the split is not shuffled. (N, H, W, C).
        LatentSummaries(
            os.path.join(workdir, "tensorboard", "validation"),
            next(iter(val_ds.unbatch().batch(64))).numpy(),
            every=config.image_every,
            seed=config.seed,
        ),
    ]
    callbacks = [
        NonFiniteGuard(config.max_consecutive_skips),
        *(chief_callbacks if runtime.is_chief else []),
        preemption,
        *callbacks,
    ]
    try:
        for phase, (initial_epoch, epochs, steps) in enumerate(
            _phases(start_step, steps_per_epoch, config.epochs)
        ):
            # A freshly built input pipeline replays the seeded stream from its
            # start (its shuffle's seed generator is new): skipping the batches
            # already trained on continues it exactly. Rebuilt for a second
            # phase, as the first one's generator has moved on.
            if phase:
                train_ds, _ = train_stream()
            done = _step(model)
            fit_args = dict(
                initial_epoch=initial_epoch,
                epochs=epochs,
                validation_steps=validation_steps,
                callbacks=callbacks,
                verbose=verbose,
            )
            if runtime.custom_loop:
                _distributed_fit(
                    model, strategy, train_ds.skip(done), val_ds, steps=steps, **fit_args
                )
            else:
                model.fit(
                    train_ds.skip(done),
                    steps_per_epoch=steps,
                    validation_data=val_ds,
                    shuffle=False,  # the tf.data pipeline shuffles (seeded)
                    **fit_args,
                )
        if runtime.is_chief:
            save_model_atomic(model, model_path)
    except Diverged as e:
        raise _diverged_error(e, config, workdir) from None
    steps_done, skipped = _step(model), int(keras.ops.convert_to_numpy(model.skipped_steps))
    if steps_done and skipped >= steps_done:
        raise UserError(
            f"All {steps_done} training steps were skipped (non-finite loss or gradient): "
            "nothing was learned. Check the data and settings, then pass --restart."
        )

    test_ds, test_info = load_split(
        config, "test", shuffle=False, repeat=False, drop_remainder=runtime.custom_loop
    )
    eval_steps = config.eval_steps
    batches = (
        test_info.num_examples // config.batch_size
        if runtime.custom_loop
        else math.ceil(test_info.num_examples / config.batch_size)
    )
    eval_steps = batches if eval_steps is None else min(eval_steps, batches)
    if runtime.custom_loop:
        metrics = _distributed_evaluate(model, strategy, test_ds, eval_steps)
    else:
        metrics = model.evaluate(test_ds, steps=eval_steps, return_dict=True, verbose=verbose)
    num_images = min(test_info.num_examples, eval_steps * config.batch_size)
    results = {
        "workdir": workdir,
        "elbo": float(metrics["elbo"]),
        "reconstruction": float(metrics["reconstruction"]),
        "kl": float(metrics["kl"]),
        "bits_per_dim": bits_per_dim(-float(metrics["elbo"]), image_shape),
        "num_images": int(num_images),
        "steps": steps_done,
        "skipped_steps": skipped,
        "resumed_from_step": start_step or None,
        "replicas": strategy.num_replicas_in_sync,
    }
    _check_finite_results(results, image_shape)
    if not runtime.is_chief:
        return results
    if config.export:
        from keras_vae import export as export_lib

        export_dir = os.path.join(workdir, "export")
        _write(export_dir, lambda: export_lib.export_saved_model(model, export_dir))
    # The finished marker; then the resume state is no longer needed.
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    _write(summary_path, lambda: files.write_json(summary_path, results))
    shutil.rmtree(backup_dir, ignore_errors=True)
    return results


def summary_line(results):
    """The one-line summary `train.py` ends with."""
    return (
        f"Test ELBO {results['elbo']:.2f} nats/image "
        f"({results['bits_per_dim']:.4f} bits/dim; reconstruction "
        f"{results['reconstruction']:.2f}, KL {results['kl']:.2f}) "
        f"on {results['num_images']} test images. Run saved in {results['workdir']}"
    )
