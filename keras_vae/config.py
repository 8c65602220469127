"""Run configuration: one frozen dataclass, per-dataset presets, validation.

Also home of the error types every room raises for problems a user can fix: the
entry points print their message as one line and exit with their `exit_code`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os


class UserError(Exception):
    """A problem the user can fix (bad data, missing files). One-line message.

    The entry points catch it, print `str(error)` as a single line and exit
    with `exit_code`; no traceback unless asked for.
    """

    exit_code = 1


class UsageError(UserError):
    """Bad flags or arguments: exit code 2, like absl and argparse."""

    exit_code = 2


class DataError(UserError):
    """Data that is missing, empty or unreadable."""


class Interrupted(UserError):
    """Stopped by a signal (SIGTERM, Ctrl-C) after saving what resumes the run.

    Exit code 128 + the signal's number, as a shell reports a killed process.
    """

    def __init__(self, message, signum):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


ARCHITECTURES = ("mlp", "conv")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "discretized_logistic")
BETA_SCHEDULES = ("constant", "linear", "cyclical")
# Datasets with a preset; `folder:PATH` uses the `folder` preset.
DATASETS = ("shapes", "mnist", "fashion_mnist", "cifar10", "celeb_a", "svhn_cropped", "frey_faces")
FOLDER_PREFIX = "folder:"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Resolved = default <- preset <- flags."""

    # Data.
    dataset: str = "shapes"  # a name in DATASETS or "folder:PATH"
    data_dir: str | None = None  # tfds data_dir; where frey_rawface.mat is looked for
    download: bool = False  # let tfds download a missing dataset (needs network)
    strict_data: bool = False  # folder: stop on a corrupt file instead of skipping it
    image_size: int | None = None  # resize to image_size^2; None = the dataset's own size
    binarize: bool = False  # dynamic binarization (a fresh Bernoulli draw each epoch)
    # Model.
    architecture: str = "conv"  # "mlp" (fully connected) or "conv"
    latent_dim: int = 10  # size of z
    widths: tuple[int, ...] | None = None  # layer widths; None = networks' defaults
    dense_units: int = 256  # conv nets: width of the dense layer next to z
    likelihood: str = "bernoulli"  # bernoulli | gaussian | gaussian_learned | discretized_logistic
    gaussian_sigma: float = 0.1  # fixed sigma of the "gaussian" likelihood, [0, 1] pixel units
    per_channel_scale: bool = False  # gaussian_learned: one sigma per channel
    # Objective.
    beta: float = 1.0  # KL weight (1 = the ELBO; > 1 beta-VAE)
    beta_schedule: str = "constant"  # constant | linear (warm-up) | cyclical (Fu et al. 2019)
    warmup_steps: int | None = None  # linear: steps to reach beta; None = 1/4 of training
    beta_cycles: int = 4  # cyclical: number of cycles over the whole run
    cycle_ratio: float = 0.5  # cyclical: fraction of each cycle spent rising
    free_bits: float = 0.0  # nats per latent dimension not penalised (0 = off)
    # Optimisation.
    epochs: int = 5  # passes (of steps_per_epoch steps when set)
    steps_per_epoch: int | None = None  # None = one full pass over the training split
    validation_steps: int | None = None  # None = the whole validation split
    eval_steps: int | None = None  # test batches for the final summary; None = all
    batch_size: int = 64  # global batch size
    learning_rate: float = 1e-3  # Adam
    seed: int = 0  # seeds weights, sampling and data order
    deterministic: bool = False  # TensorFlow op determinism: same seed, same losses (slower)
    # Hardware.
    mixed_precision: str = "auto"  # auto (float16 on GPU, none on CPU) | float16 | bfloat16 | none
    jit_compile: str = "auto"  # XLA: auto (on for GPU, off on CPU, measured slower) | true | false
    distribution: str = "auto"  # auto | none | mirrored | multi_worker (TF_CONFIG) | tpu
    # Logging, saving, fault tolerance.
    image_every: int = 1  # write TensorBoard image grids every this many epochs (and at the end)
    backup_every_steps: int = 200  # resume state every this many steps (and each epoch)
    max_consecutive_skips: int = 20  # stop after this many non-finite steps in a row
    export: bool = True  # write the SavedModel to workdir/export at the end

    def replace(self, **changes):
        """A copy with `changes`; an unknown key is a UsageError."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise UsageError(
                f"Unknown config key(s) {unknown}. Known keys: "
                f"{sorted(f.name for f in dataclasses.fields(self))}."
            )
        return dataclasses.replace(self, **changes)

    @property
    def preset_name(self):
        return "folder" if self.dataset.startswith(FOLDER_PREFIX) else self.dataset

    @property
    def total_steps(self):
        """Training steps of the run, or None when an epoch's length is unknown."""
        return None if self.steps_per_epoch is None else self.epochs * self.steps_per_epoch

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values):
        values = dict(values)
        if values.get("widths") is not None:
            values["widths"] = tuple(values["widths"])
        return cls().replace(**values)

    @classmethod
    def from_json_file(cls, path):
        with open(path) as f:
            return cls.from_dict(json.load(f))


# Fields that may differ between a run's config.json and the flags that
# resume it: they change how a run is watched, saved or run, not the model
# and data it trains. The learning rate is one: lowering it is the way to
# continue a run that diverged (the change is logged and config.json updated).
OPERATIONAL_FIELDS = frozenset({
    "data_dir", "download", "strict_data", "validation_steps", "eval_steps", "image_every",
    "backup_every_steps", "max_consecutive_skips", "export", "mixed_precision", "jit_compile",
    "distribution", "learning_rate",
})
MIXED_PRECISION = ("auto", "float16", "bfloat16", "none")
JIT_COMPILE = ("auto", "true", "false")
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "tpu")

# Presets override the defaults above, nothing else: keep them short.
PRESETS = {
    # Built in, no download (dSprites-like): beta-VAE conv nets (Burgess et al. 2018).
    "shapes": dict(architecture="conv", latent_dim=10, likelihood="bernoulli",
                   epochs=10, steps_per_epoch=500, validation_steps=20, eval_steps=40),
    # Dynamically binarized MNIST, the classic benchmark (Burda et al. 2015).
    "mnist": dict(architecture="mlp", latent_dim=32, likelihood="bernoulli", binarize=True,
                  epochs=30),
    "fashion_mnist": dict(architecture="conv", latent_dim=32, likelihood="bernoulli",
                          binarize=True, epochs=30),
    # 8-bit colour data: the discretized logistic gives exact bits/dim.
    "cifar10": dict(architecture="conv", latent_dim=128, likelihood="discretized_logistic",
                    epochs=50),
    "svhn_cropped": dict(architecture="conv", latent_dim=64, likelihood="discretized_logistic",
                         epochs=30),
    "celeb_a": dict(architecture="conv", latent_dim=128, image_size=64,
                    likelihood="discretized_logistic", epochs=20),
    # Kingma & Welling's Frey faces: 2-D latent for the manifold figure.
    "frey_faces": dict(architecture="mlp", latent_dim=2, likelihood="gaussian_learned",
                       batch_size=100, epochs=200),
    "folder": dict(architecture="conv", latent_dim=128, image_size=64,
                   likelihood="discretized_logistic", epochs=20),
}


def _positive_int(name, value, allow_none=False):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"--{name} must be a positive integer. Received: {name}={value!r}.")


def _float_fields():
    return [f.name for f in dataclasses.fields(Config) if f.type in ("float", float)]


def validate(config):
    """Checks a resolved config; raises UsageError naming the flag and the fix."""
    for name in _float_fields():
        value = getattr(config, name)
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (numeric and math.isfinite(value)):
            raise UsageError(f"--{name} must be a finite number. Received: {name}={value!r}.")
    if config.preset_name not in PRESETS:
        raise UsageError(
            f"Unknown dataset {config.dataset!r}. Use one of {', '.join(DATASETS)}, "
            f"or {FOLDER_PREFIX}PATH for a folder of images."
        )
    if config.dataset.startswith(FOLDER_PREFIX) and not config.dataset[len(FOLDER_PREFIX):]:
        raise UsageError(
            "--dataset=folder: needs a path, e.g. --dataset=folder:/data/img_align_celeba."
        )
    for name in ("latent_dim", "epochs", "batch_size", "dense_units", "beta_cycles", "image_every",
                 "backup_every_steps", "max_consecutive_skips"):
        _positive_int(name, getattr(config, name))
    for name in ("steps_per_epoch", "validation_steps", "eval_steps", "image_size"):
        _positive_int(name, getattr(config, name), allow_none=True)
    if config.warmup_steps is not None and (
        not isinstance(config.warmup_steps, int) or config.warmup_steps < 0
    ):
        raise UsageError(f"--warmup_steps must be >= 0. Received: {config.warmup_steps!r}.")
    if config.architecture not in ARCHITECTURES:
        raise UsageError(
            f"--model must be one of {', '.join(ARCHITECTURES)}. Received: {config.architecture!r}."
        )
    if config.likelihood not in LIKELIHOODS:
        raise UsageError(
            f"--likelihood must be one of {', '.join(LIKELIHOODS)}. "
            f"Received: {config.likelihood!r}."
        )
    if config.beta_schedule not in BETA_SCHEDULES:
        raise UsageError(
            f"--beta_schedule must be one of {', '.join(BETA_SCHEDULES)}. "
            f"Received: {config.beta_schedule!r}."
        )
    for name, choices in (
        ("mixed_precision", MIXED_PRECISION),
        ("jit_compile", JIT_COMPILE),
        ("distribution", DISTRIBUTIONS),
    ):
        if getattr(config, name) not in choices:
            raise UsageError(
                f"--{name} must be one of {', '.join(choices)}. "
                f"Received: {getattr(config, name)!r}."
            )
    if not config.beta >= 0:
        raise UsageError(f"--beta must be >= 0 (1 is the ELBO). Received: {config.beta!r}.")
    if not config.free_bits >= 0:
        raise UsageError(f"--free_bits must be >= 0. Received: {config.free_bits!r}.")
    if not config.learning_rate > 0:
        raise UsageError(f"--learning_rate must be > 0. Received: {config.learning_rate!r}.")
    if not config.gaussian_sigma > 0:
        raise UsageError(f"--gaussian_sigma must be > 0. Received: {config.gaussian_sigma!r}.")
    if not 0 < config.cycle_ratio <= 1:
        raise UsageError(f"--cycle_ratio must be in (0, 1]. Received: {config.cycle_ratio!r}.")
    if config.widths is not None and (
        not config.widths or not all(isinstance(w, int) and w > 0 for w in config.widths)
    ):
        raise UsageError(f"--widths must be positive integers. Received: {config.widths!r}.")
    if config.dataset == "shapes" and config.image_size not in (None, 64):
        raise UsageError(
            f"--image_size={config.image_size} is not available for shapes: its images are "
            "rendered at 64x64. Drop --image_size."
        )
    if config.architecture == "conv" and config.image_size is not None and config.image_size < 8:
        raise UsageError(
            f"--image_size={config.image_size} is too small for --model=conv (needs >= 8): "
            "use a larger size or --model=mlp."
        )
    if config.dataset == "frey_faces" and config.image_size is not None:
        raise UsageError("--image_size is not available for frey_faces (28x20 images). Drop it.")
    return config


def resolve(dataset="shapes", **overrides):
    """The config for `dataset`: defaults, then its preset, then `overrides`.

    Overrides whose value is None are ignored (a flag that was not given).
    """
    base = Config().replace(dataset=dataset)
    if base.preset_name not in PRESETS:
        validate(base)  # raises the unknown-dataset message
    config = base.replace(**PRESETS[base.preset_name])
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    return validate(config)


def default_workdir(dataset, now=None):
    """`runs/<dataset>-<YYYYmmdd-HHMMSS>`; a folder dataset is named after its folder."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    name = dataset
    if dataset.startswith(FOLDER_PREFIX):
        name = "folder-" + os.path.basename(os.path.normpath(dataset[len(FOLDER_PREFIX):]))
    return os.path.join("runs", f"{name}-{stamp}")
