"""`train_and_evaluate(config, workdir)`: data, model, `fit`, saving, test summary.

Everything `train.py` does, importable and testable without flags. The run's
files (DESIGN.md section 1) go into `workdir`:

    config.json                 the resolved config
    model.keras                 the latest model (saved atomically each epoch)
    history.json                per-epoch logs of `fit`
    tensorboard/{train,validation}  scalars (loss, reconstruction, kl, elbo, beta, lr);
                                validation also the image grids of `LatentSummaries`
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import keras
from absl import logging

from keras_vae import data as data_lib
from keras_vae.callbacks import LatentSummaries
from keras_vae.config import Config, UsageError, UserError, validate
from keras_vae.model import VAE
from keras_vae.networks import build_decoder, build_encoder

LN2 = math.log(2.0)


def _umask_mode():
    """0o666 less the process umask: what open() would give a new file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path, text):
    """Writes `text` to `path` through a temporary file and a rename.

    A crash mid-write leaves the previous file intact (os.replace is atomic
    on POSIX and Windows when both names are on one file system).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_model_atomic(model, path):
    """`model.save(path)` through a temporary `.keras` file and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".keras", dir=directory)
    os.close(fd)
    try:
        model.save(tmp)
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


class AtomicModelSaver(keras.callbacks.Callback):
    """Saves the model to `path` at the end of every epoch, atomically."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        save_model_atomic(self.model, self.path)


def bits_per_dim(nats, image_shape):
    """Converts nats per example to bits per dimension: nats / (H * W * C * ln 2)."""
    return nats / (math.prod(image_shape) * LN2)


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


def train_and_evaluate(config: Config, workdir: str, verbose="auto"):
    """Trains the VAE of `config`, saves it in `workdir`, evaluates it on the test split.

    Args:
        config: a resolved `Config` (see `keras_vae.config.resolve`).
        workdir: the run's folder; created if missing.
        verbose: passed to `fit`/`evaluate` (progress bars).

    Returns:
        dict with the test metrics (`elbo`, `reconstruction`, `kl` in nats
        per example, `bits_per_dim`, `num_images`) and `workdir`.
    """
    validate(config)
    try:
        os.makedirs(workdir, exist_ok=True)
        atomic_write_text(os.path.join(workdir, "config.json"), config.to_json())
    except OSError as e:
        raise UserError(
            f"Cannot write to --workdir={workdir!r} ({e.strerror}): "
            "choose a folder you can write to."
        ) from e
    keras.utils.set_random_seed(config.seed)

    train_ds, train_info = load_split(
        config, "train", shuffle=True, repeat=True, drop_remainder=True
    )
    val_ds, val_info = load_split(config, "validation", shuffle=False, repeat=False)
    image_shape = tuple(train_info.image_shape)
    steps_per_epoch = _steps(
        config.steps_per_epoch, train_info.num_examples, config.batch_size, "train"
    )
    validation_steps = _steps(
        config.validation_steps, val_info.num_examples, config.batch_size, "validation"
    )
    # Evaluate on whole batches only when the split is larger than the request.
    validation_steps = min(validation_steps, math.ceil(val_info.num_examples / config.batch_size))
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

    model = build_model(config, image_shape, steps_per_epoch)
    model_path = os.path.join(workdir, "model.keras")
    callbacks = [
        keras.callbacks.TensorBoard(
            log_dir=os.path.join(workdir, "tensorboard"), write_graph=False, profile_batch=0
        ),
        AtomicModelSaver(model_path),
        # Image grids next to the validation scalars, on the first (up to) 64
        # validation images: fixed, as the split is not shuffled. (N, H, W, C).
        LatentSummaries(
            os.path.join(workdir, "tensorboard", "validation"),
            next(iter(val_ds.unbatch().batch(64))).numpy(),
            every=config.image_every,
            seed=config.seed,
        ),
    ]
    history = model.fit(
        train_ds,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=val_ds,
        validation_steps=validation_steps,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles (seeded)
    )
    save_model_atomic(model, model_path)
    atomic_write_text(
        os.path.join(workdir, "history.json"),
        json.dumps({k: [float(v) for v in vs] for k, vs in history.history.items()}, indent=2)
        + "\n",
    )

    test_ds, test_info = load_split(config, "test", shuffle=False, repeat=False)
    eval_steps = config.eval_steps
    if eval_steps is not None:
        eval_steps = min(eval_steps, math.ceil(test_info.num_examples / config.batch_size))
    metrics = model.evaluate(test_ds, steps=eval_steps, return_dict=True, verbose=verbose)
    num_images = test_info.num_examples
    if eval_steps is not None:
        num_images = min(num_images, eval_steps * config.batch_size)
    return {
        "workdir": workdir,
        "elbo": float(metrics["elbo"]),
        "reconstruction": float(metrics["reconstruction"]),
        "kl": float(metrics["kl"]),
        "bits_per_dim": bits_per_dim(-float(metrics["elbo"]), image_shape),
        "num_images": int(num_images),
    }


def summary_line(results):
    """The one-line summary `train.py` ends with."""
    return (
        f"Test ELBO {results['elbo']:.2f} nats/image "
        f"({results['bits_per_dim']:.4f} bits/dim; reconstruction "
        f"{results['reconstruction']:.2f}, KL {results['kl']:.2f}) "
        f"on {results['num_images']} test images. Run saved in {results['workdir']}"
    )
