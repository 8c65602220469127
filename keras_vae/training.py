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

import json
import math
import os
import shutil
import time

import keras
import tensorflow as tf
from absl import logging

from keras_vae import data as data_lib
from keras_vae import files
from keras_vae.callbacks import LatentSummaries
from keras_vae.config import OPERATIONAL_FIELDS, Config, UsageError, UserError, validate
from keras_vae.evaluation import bits_per_dim
from keras_vae.model import VAE
from keras_vae.networks import build_decoder, build_encoder

SUMMARY_FILE = "train_summary.json"
BACKUP_DIR = "backup"
_WEIGHTS = "weights.weights.h5"
_STATE = "state.json"


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary `.keras` file and a rename."""
    files.atomic_save(path, model.save, suffix=".keras")


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

    def _step(self):
        return int(keras.ops.convert_to_numpy(self.model.kl_step))

    def save(self):
        step = self._step()
        state = {"step": step, "rng": self.model.rng_state(), "time": time.time()}

        def build(tmp):
            self.model.save_weights(os.path.join(tmp, _WEIGHTS))
            files.atomic_write_text(os.path.join(tmp, _STATE), json.dumps(state) + "\n")

        files.replace_dir(self.backup_dir, build)

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
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
        return None
    try:
        with open(state_path) as f:
            state = json.load(f)
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
        files.atomic_write_text(self.path, json.dumps(self.history, indent=2) + "\n")


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training after `max_consecutive` skipped (non-finite) steps in a row.

    The model skips each such update (its optimizer is a LossScaleOptimizer,
    see `VAE.compile`), so the weights stay those of the last good step.
    """

    def __init__(self, max_consecutive):
        super().__init__()
        self.max_consecutive = max_consecutive
        self.tripped_at = None

    def on_train_batch_end(self, batch, logs=None):
        run = int(keras.ops.convert_to_numpy(self.model.consecutive_skips))
        if run >= self.max_consecutive:
            self.tripped_at = int(keras.ops.convert_to_numpy(self.model.kl_step))
            self.model.stop_training = True


def load_split(config, split, *, shuffle, repeat, drop_remainder=False):
    """The `split` of `config.dataset` as a batched `tf.data.Dataset` and its info."""
    return data_lib.load(
        config.dataset,
        split,
        batch_size=config.batch_size,
        image_size=config.image_size,
        binarize=config.binarize,
        shuffle=shuffle,
        seed=config.seed,
        data_dir=config.data_dir,
        download=config.download,
        strict=config.strict_data,
        repeat=repeat,
        drop_remainder=drop_remainder,
    )


def build_model(config, image_shape, steps_per_epoch):
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
        architecture=config.architecture,
        widths=config.widths,
        dense_units=config.dense_units,
    )
    try:
        encoder = build_encoder(**common)
        decoder = build_decoder(
            **common, likelihood=config.likelihood, per_channel_scale=config.per_channel_scale
        )
    except ValueError as e:
        raise UsageError(f"Cannot build the {config.architecture} networks: {e}") from e
    model = VAE(
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
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    return model


def _steps(requested, num_examples, batch_size, what):
    available = num_examples // batch_size
    if available == 0:
        raise UsageError(
            f"--batch_size={batch_size} is larger than the {what} split "
            f"({num_examples} images): use a smaller --batch_size."
        )
    return available if requested is None else requested


def check_workdir(config, workdir, restart=False):
    """Refuses to clobber a finished run or to resume one with other settings.

    Reads only; `restart` skips both checks (the caller then clears the run).

    Returns:
        True when `workdir` holds an unfinished run of the same config.

    Raises:
        UsageError: a finished run, or a config.json that disagrees with
            `config` in a field that changes what is computed.
    """
    config_path = os.path.join(workdir, "config.json")
    if restart or not os.path.exists(config_path):
        return False
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
    return True


def _clear_run(workdir):
    """--restart: removes what a previous run left, except model.keras, which the
    new run replaces atomically at its first epoch's end."""
    for name in (BACKUP_DIR, "tensorboard", "export"):
        shutil.rmtree(os.path.join(workdir, name), ignore_errors=True)
    for name in ("history.json", SUMMARY_FILE):
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


def train_and_evaluate(config: Config, workdir: str, verbose="auto", restart=False):
    """Trains the VAE of `config` in `workdir` (resuming it), evaluates it on the test split.

    Args:
        config: a resolved `Config` (see `keras_vae.config.resolve`).
        workdir: the run's folder; created if missing.
        verbose: passed to `fit`/`evaluate` (progress bars).
        restart: start over even if `workdir` holds a run (finished or not).

    Returns:
        dict with the test metrics (`elbo`, `reconstruction`, `kl` in nats
        per example, `bits_per_dim`, `num_images`), `steps`,
        `skipped_steps`, `resumed_from_step` and `workdir`.

    Raises:
        UsageError: bad config, a finished workdir, a config that disagrees
            with the workdir's; UserError: missing data, an unwritable
            workdir, training stopped by non-finite steps.
    """
    validate(config)
    resuming = check_workdir(config, workdir, restart)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)

    def train_stream():
        return load_split(config, "train", shuffle=True, repeat=True, drop_remainder=True)

    # Data first: a missing dataset must not leave a half-made workdir.
    train_ds, train_info = train_stream()
    val_ds, val_info = load_split(config, "validation", shuffle=False, repeat=False)
    image_shape = tuple(train_info.image_shape)
    steps_per_epoch = _steps(
        config.steps_per_epoch, train_info.num_examples, config.batch_size, "train"
    )
    validation_steps = _steps(
        config.validation_steps, val_info.num_examples, config.batch_size, "validation"
    )

    try:
        os.makedirs(workdir, exist_ok=True)
        if restart:
            _clear_run(workdir)
        files.atomic_write_text(os.path.join(workdir, "config.json"), config.to_json())
    except OSError as e:
        raise UserError(
            f"Cannot write to --workdir={workdir} ({e.strerror}): "
            "choose a folder you can write to."
        ) from e

    model = build_model(config, image_shape, steps_per_epoch)
    backup_dir = os.path.join(workdir, BACKUP_DIR)
    start_step = restore_backup(model, backup_dir) if resuming else None
    history_path = os.path.join(workdir, "history.json")
    previous = None
    if start_step is not None:
        logging.info(
            "Resuming %s from step %d (epoch %d, step %d of %d).",
            workdir,
            start_step,
            start_step // steps_per_epoch + 1,
            start_step % steps_per_epoch,
            steps_per_epoch,
        )
        if os.path.exists(history_path):
            with open(history_path) as f:
                previous = {
                    k: v[: start_step // steps_per_epoch] for k, v in json.load(f).items()
                }
    start_step = start_step or 0
    logging.info(
        "Training on %s: %d train / %d validation images of shape %s, "
        "%d epochs of %d steps, batch %d.",
        config.dataset,
        train_info.num_examples,
        val_info.num_examples,
        image_shape,
        config.epochs,
        steps_per_epoch,
        config.batch_size,
    )

    model_path = os.path.join(workdir, "model.keras")
    guard = NonFiniteGuard(config.max_consecutive_skips)
    callbacks = [
        guard,
        keras.callbacks.TensorBoard(
            log_dir=os.path.join(workdir, "tensorboard"), write_graph=False, profile_batch=0
        ),
        EpochHistory(history_path, previous),
        AtomicModelSaver(model_path),
        Backup(backup_dir, config.backup_every_steps, steps_per_epoch),
        # Image grids next to the validation scalars, on the first (up to) 64
        # validation images: fixed, as the split is not shuffled. (N, H, W, C).
        LatentSummaries(
            os.path.join(workdir, "tensorboard", "validation"),
            next(iter(val_ds.unbatch().batch(64))).numpy(),
            every=config.image_every,
            seed=config.seed,
        ),
    ]
    for phase, (initial_epoch, epochs, steps) in enumerate(
        _phases(start_step, steps_per_epoch, config.epochs)
    ):
        # A freshly built input pipeline replays the seeded stream from its
        # start (its shuffle's seed generator is new): skipping the batches
        # already trained on continues it exactly. Rebuilt for a second
        # phase, as the first one's generator has moved on.
        if phase:
            train_ds, _ = train_stream()
        done = int(keras.ops.convert_to_numpy(model.kl_step))
        model.fit(
            train_ds.skip(done),
            initial_epoch=initial_epoch,
            epochs=epochs,
            steps_per_epoch=steps,
            validation_data=val_ds,
            validation_steps=validation_steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles (seeded)
        )
        if guard.tripped_at is not None:
            raise UserError(
                f"Training stopped at step {guard.tripped_at}: {config.max_consecutive_skips} "
                "steps in a row had a non-finite loss or gradient (NaN/Inf) and were skipped. "
                f"Likely causes: a learning rate too high (try --learning_rate="
                f"{config.learning_rate / 10:g}), float16 overflow under mixed precision, "
                f"or broken input images. The last good weights are in {model_path} and "
                f"{backup_dir}; fix the cause and rerun the same command to resume, or --restart."
            )
    save_model_atomic(model, model_path)

    test_ds, test_info = load_split(config, "test", shuffle=False, repeat=False)
    eval_steps = config.eval_steps
    if eval_steps is not None:
        eval_steps = min(eval_steps, math.ceil(test_info.num_examples / config.batch_size))
    metrics = model.evaluate(test_ds, steps=eval_steps, return_dict=True, verbose=verbose)
    num_images = test_info.num_examples
    if eval_steps is not None:
        num_images = min(num_images, eval_steps * config.batch_size)
    if config.export:
        from keras_vae import export as export_lib

        export_lib.export_saved_model(model, os.path.join(workdir, "export"))
    results = {
        "workdir": workdir,
        "elbo": float(metrics["elbo"]),
        "reconstruction": float(metrics["reconstruction"]),
        "kl": float(metrics["kl"]),
        "bits_per_dim": bits_per_dim(-float(metrics["elbo"]), image_shape),
        "num_images": int(num_images),
        "steps": int(keras.ops.convert_to_numpy(model.kl_step)),
        "skipped_steps": int(keras.ops.convert_to_numpy(model.skipped_steps)),
        "resumed_from_step": start_step or None,
    }
    # The finished marker; then the resume state is no longer needed.
    files.atomic_write_text(
        os.path.join(workdir, SUMMARY_FILE), json.dumps(results, indent=2) + "\n"
    )
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
