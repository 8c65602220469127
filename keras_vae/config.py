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

# What a cvae can be conditioned on, per dataset (re-exported).
from keras_vae.labels import CELEBA_ATTRIBUTES, CONDITIONS  # noqa: F401


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


# The registries' keys (keras_vae.models.MODELS, keras_vae.networks.NETWORKS,
# keras_vae.likelihoods.LIKELIHOODS), listed here so config stays at the
# bottom of the house; tests/test_config.py keeps them in sync.
MODELS = ("vae", "ae", "beta_tcvae", "iwae", "iaf", "cvae", "sequence_vae")
NETWORKS = ("mlp", "conv", "gru", "lstm")
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned", "discretized_logistic", "categorical")
# Token sequences (the sequence VAE's data), not images; `text:PATH` is one too.
SEQUENCE_DATASETS = ("strokes", "imdb_reviews")
SEQUENCE_NETWORKS, TOKENS = ("gru", "lstm"), ("char", "word")
TEXT_PREFIX = "text:"
BETA_SCHEDULES = ("constant", "linear", "cyclical")
TC_ESTIMATORS = ("mws", "mss")

# Datasets with a preset; `folder:PATH` uses the `folder` preset.
DATASETS = ("shapes", "mnist", "fashion_mnist", "cifar10", "celeb_a", "svhn_cropped", "frey_faces",
            *SEQUENCE_DATASETS)
FOLDER_PREFIX = "folder:"


def _field(default, help):
    """A Config field with its help text: the one place a setting is described
    (train.py's flags are generated from it, keras_vae.cli)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a run. Resolved = default <- preset <- flags."""

    # Data.
    dataset: str = _field("shapes", "shapes (built in), mnist, fashion_mnist, cifar10, "
                          "svhn_cropped, celeb_a, frey_faces, or folder:PATH (your images); "
                          "token sequences: strokes (built in), imdb_reviews, or text:PATH "
                          "(a text file, one sequence per line)")
    data_dir: str | None = _field(None, "TensorFlow Datasets data_dir; also where "
                                  "frey_rawface.mat is looked for")
    download: bool = _field(False, "let tfds download a missing dataset (needs network)")
    strict_data: bool = _field(False, "folder datasets: stop on a corrupt image instead of "
                               "skipping it")
    image_size: int | None = _field(None, "resize images to this square size (default: the "
                                    "dataset's own)")
    binarize: bool = _field(False, "dynamic binarization: a fresh Bernoulli draw every epoch")
    tokens: str = _field("char", "text data: char or word tokens")
    max_length: int | None = _field(None, "sequence data: tokens per sequence with its end "
                                    "token; longer ones are cut (default: the dataset's)")
    vocab_size: int = _field(10000, "text data: most frequent tokens kept (the rest are <unk>)")
    # Model.
    model: str = _field("vae", f"the model variant: {', '.join(MODELS)}")
    network: str = _field("conv", "the networks: mlp (fully connected) or conv; gru or lstm "
                          "for sequences")
    latent_dim: int = _field(10, "size of the latent code z")
    widths: tuple[int, ...] | None = _field(None, "layer widths, e.g. 32,64,128 (conv: one "
                                            "stride-2 layer each) or 512,256 (mlp)")
    dense_units: int = _field(256, "conv: width of the dense layer next to z")
    rnn_units: int = _field(256, "gru/lstm: width of the encoder's and decoder's RNN")
    embedding_dim: int = _field(64, "gru/lstm: width of the token embedding")
    bidirectional: bool = _field(True, "gru/lstm: the encoder reads the sequence both ways")
    likelihood: str = _field("bernoulli", "bernoulli, gaussian (fixed --gaussian_sigma), "
                             "gaussian_learned (sigma-VAE) or discretized_logistic (8-bit, "
                             "exact bits/dim); categorical for token sequences")
    gaussian_sigma: float = _field(0.1, "gaussian likelihood: its fixed sigma, in [0, 1] pixel "
                                   "units")
    per_channel_scale: bool = _field(False, "gaussian_learned: one sigma per channel")
    # Objective.
    beta: float = _field(1.0, "KL weight: 1 is the ELBO, > 1 a beta-VAE")
    beta_schedule: str = _field("constant", "constant, linear (warm-up over --warmup_steps) or "
                                "cyclical (Fu et al. 2019)")
    warmup_steps: int | None = _field(None, "linear schedule: steps to reach --beta (default: "
                                      "a quarter of training)")
    beta_cycles: int = _field(4, "cyclical schedule: cycles over the whole run")
    cycle_ratio: float = _field(0.5, "cyclical schedule: fraction of each cycle spent rising")
    free_bits: float = _field(0.0, "nats per latent dimension not penalised (0 = off)")
    # Variants' own settings (used by the --model they name).
    iwae_k: int = _field(5, "iwae: importance samples K of the training bound (K = 1 is the VAE)")
    tc_weight: float = _field(6.0, "beta_tcvae: weight of the total correlation (Chen et al.'s "
                              "beta; the mutual information and dimension-wise KL keep weight 1)")
    tc_estimator: str = _field("mws", "beta_tcvae: minibatch-weighted (mws) or minibatch-"
                               "stratified (mss) sampling estimate of log q(z)")
    iaf_steps: int = _field(2, "iaf: inverse autoregressive flow steps T (0 is the VAE's "
                            "Gaussian posterior)")
    iaf_units: int = _field(64, "iaf: hidden width of each flow step's MADE")
    word_dropout: float = _field(0.0, "sequence_vae: fraction of the decoder's input tokens "
                                 "replaced by <unk> in training (Bowman et al. 2016)")
    condition: str | None = _field(
        None,
        "cvae: the label the model is conditioned on: label "
        "(mnist, fashion_mnist, cifar10, svhn_cropped), shape, scale, "
        "orientation, pos_x or pos_y (shapes), attributes (celeb_a's "
        "40, multi-hot) or one celeb_a attribute, e.g. Smiling. "
        "Default: label, shape on shapes, attributes on celeb_a",
    )
    # Optimisation.
    epochs: int = _field(5, "training epochs (of --steps_per_epoch steps when set)")
    steps_per_epoch: int | None = _field(None, "steps per epoch (default: one pass over the "
                                         "training split)")
    validation_steps: int | None = _field(None, "validation batches per epoch (default: all)")
    eval_steps: int | None = _field(None, "test batches for the final summary (default: all)")
    batch_size: int = _field(64, "global batch size")
    learning_rate: float = _field(1e-3, "Adam learning rate (may change when a run resumes)")
    seed: int = _field(0, "seeds weights, sampling and data order")
    deterministic: bool = _field(False, "TensorFlow op determinism: the same seed gives the "
                                 "same losses (slower)")
    # Hardware.
    mixed_precision: str = _field("auto", "auto (float16 on GPU, none on CPU), float16, "
                                  "bfloat16 or none")
    jit_compile: str = _field("auto", "XLA: auto (GPU only; slower on CPU), true or false")
    distribution: str = _field("auto", "auto, none, mirrored (local GPUs), multi_worker (from "
                               "TF_CONFIG) or tpu")
    # Logging, saving, fault tolerance.
    image_every: int = _field(1, "TensorBoard image grids every N epochs (and at the end)")
    log_every_steps: int | None = _field(
        None,
        "TensorBoard step/ scalars (the mean of the "
        "training logs over the last N steps) every N steps "
        "(default: about 100 points per run)",
    )
    backup_every_steps: int = _field(200, "resume state every N steps (and each epoch); a "
                                     "killed run rerun with the same command continues from it")
    max_consecutive_skips: int = _field(20, "stop after N non-finite steps in a row")
    export: bool = _field(True, "write the SavedModel to WORKDIR/export at the end")

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
        if self.dataset.startswith(FOLDER_PREFIX):
            return "folder"
        return "text" if self.dataset.startswith(TEXT_PREFIX) else self.dataset

    @property
    def is_sequence(self):
        """True when the data are token sequences (the sequence VAE's)."""
        return self.preset_name in (*SEQUENCE_DATASETS, "text")

    @property
    def condition_spec(self):
        """`(size, multi_hot)` of `condition` on this dataset (see `CONDITIONS`),
        or None for a model without one."""
        if self.condition is None:
            return None
        return CONDITIONS[self.dataset][self.condition]

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
        if "architecture" in values:
            raise UsageError(
                "This config.json was written by an earlier keras_vae (it names the network "
                "'architecture'; now --network, and --model is the variant): retrain the run "
                "with --restart."
            )
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
OPERATIONAL_FIELDS = frozenset(
    {
        "data_dir",
        "download",
        "strict_data",
        "validation_steps",
        "eval_steps",
        "image_every",
        "log_every_steps",
        "backup_every_steps",
        "max_consecutive_skips",
        "export",
        "mixed_precision",
        "jit_compile",
        "distribution",
        "learning_rate",
    }
)
MIXED_PRECISION = ("auto", "float16", "bfloat16", "none")
JIT_COMPILE = ("auto", "true", "false")
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker", "tpu")

# Presets override the defaults above, nothing else: keep them short.
PRESETS = {
    # Built in, no download (dSprites-like): beta-VAE conv nets (Burgess et al. 2018).
    "shapes": dict(network="conv", latent_dim=10, likelihood="bernoulli",
                   epochs=10, steps_per_epoch=500, validation_steps=20, eval_steps=40),
    # Dynamically binarized MNIST, the classic benchmark (Burda et al. 2015).
    "mnist": dict(network="mlp", latent_dim=32, likelihood="bernoulli", binarize=True,
                  epochs=30),
    "fashion_mnist": dict(network="conv", latent_dim=32, likelihood="bernoulli",
                          binarize=True, epochs=30),
    # 8-bit colour data: the discretized logistic gives exact bits/dim.
    "cifar10": dict(network="conv", latent_dim=128, likelihood="discretized_logistic",
                    epochs=50),
    "svhn_cropped": dict(network="conv", latent_dim=64, likelihood="discretized_logistic",
                         epochs=30),
    "celeb_a": dict(network="conv", latent_dim=128, image_size=64,
                    likelihood="discretized_logistic", epochs=20),
    # Kingma & Welling's Frey faces: 2-D latent for the manifold figure.
    "frey_faces": dict(network="mlp", latent_dim=2, likelihood="gaussian_learned",
                       batch_size=100, epochs=200),
    "folder": dict(network="conv", latent_dim=128, image_size=64,
                   likelihood="discretized_logistic", epochs=20),
    # Token sequences: Bowman et al.'s VAE-RNN with KL annealing and word dropout.
    "strokes": dict(model="sequence_vae", network="gru", likelihood="categorical",
                    latent_dim=16, rnn_units=128, embedding_dim=32, epochs=15,
                    steps_per_epoch=200, validation_steps=10, eval_steps=40,
                    learning_rate=3e-3, beta_schedule="linear", word_dropout=0.5),
    "text": dict(model="sequence_vae", network="gru", likelihood="categorical", latent_dim=32,
                 max_length=64, epochs=20, beta_schedule="linear", word_dropout=0.25),
    "imdb_reviews": dict(model="sequence_vae", network="gru", likelihood="categorical",
                         latent_dim=32, tokens="word", max_length=40, epochs=10,
                         beta_schedule="linear", word_dropout=0.25),
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
            f"{FOLDER_PREFIX}PATH for a folder of images or {TEXT_PREFIX}PATH for a text file."
        )
    if config.dataset.startswith(FOLDER_PREFIX) and not config.dataset[len(FOLDER_PREFIX):]:
        raise UsageError(
            "--dataset=folder: needs a path, e.g. --dataset=folder:/data/img_align_celeba."
        )
    for name in ("latent_dim", "epochs", "batch_size", "dense_units", "beta_cycles", "image_every",
                 "backup_every_steps", "max_consecutive_skips", "iwae_k", "iaf_units"):
        _positive_int(name, getattr(config, name))
    for name in ("steps_per_epoch", "validation_steps", "eval_steps", "image_size",
                 "log_every_steps", "max_length"):
        _positive_int(name, getattr(config, name), allow_none=True)
    if config.warmup_steps is not None and (
        not isinstance(config.warmup_steps, int) or config.warmup_steps < 0
    ):
        raise UsageError(f"--warmup_steps must be >= 0. Received: {config.warmup_steps!r}.")
    if config.model in NETWORKS:
        raise UsageError(
            f"--model names the model variant now ({', '.join(MODELS)}); the network is "
            f"--network={config.model}."
        )
    if config.network not in NETWORKS:
        raise UsageError(
            f"--network must be one of {', '.join(NETWORKS)}. Received: {config.network!r}."
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
    if not isinstance(config.iaf_steps, int) or config.iaf_steps < 0:
        raise UsageError(f"--iaf_steps must be >= 0. Received: {config.iaf_steps!r}.")
    if config.tc_estimator not in TC_ESTIMATORS:
        raise UsageError(
            f"--tc_estimator must be one of {', '.join(TC_ESTIMATORS)}. "
            f"Received: {config.tc_estimator!r}."
        )
    _check_condition(config)
    _check_sequence(config)
    if config.model == "iwae" and (
        config.beta != 1 or config.free_bits > 0 or config.beta_schedule != "constant"
    ):
        raise UsageError(
            "--model=iwae trains the importance-weighted bound, which has no KL term to weight, "
            "anneal or floor: drop --beta, --beta_schedule and --free_bits (received beta="
            f"{config.beta!r}, beta_schedule={config.beta_schedule!r}, "
            f"free_bits={config.free_bits!r})."
        )
    if config.model == "beta_tcvae" and config.free_bits > 0:
        raise UsageError(
            "--free_bits does not apply to --model=beta_tcvae (its KL is split into mutual "
            "information, total correlation and dimension-wise KL): drop it."
        )
    if config.model == "beta_tcvae" and config.batch_size < 2:
        raise UsageError(
            "--model=beta_tcvae estimates q(z) from the other images of a batch: use "
            "--batch_size of 2 or more (64 or more for good estimates)."
        )
    for name, low, high, bound in (("tc_weight", 0, math.inf, ">= 0"),
                                   ("free_bits", 0, math.inf, ">= 0"),
                                   ("word_dropout", 0, 1, "in [0, 1]")):
        if not low <= getattr(config, name) <= high:
            raise UsageError(f"--{name} must be {bound}. Received: {getattr(config, name)!r}.")
    for name in ("learning_rate", "gaussian_sigma"):
        if not getattr(config, name) > 0:
            raise UsageError(f"--{name} must be > 0. Received: {getattr(config, name)!r}.")
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
    if config.network == "conv" and config.image_size is not None and config.image_size < 8:
        raise UsageError(
            f"--image_size={config.image_size} is too small for --network=conv (needs >= 8): "
            "use a larger size or --network=mlp."
        )
    if config.dataset == "frey_faces" and config.image_size is not None:
        raise UsageError("--image_size is not available for frey_faces (28x20 images). Drop it.")
    return config


def _check_sequence(config):
    """Token sequences go with the sequence VAE, its RNNs and `categorical`; images
    with the rest."""
    if not config.is_sequence:
        for name, value, bad in (
            ("model", config.model, ("sequence_vae",)),
            ("network", config.network, SEQUENCE_NETWORKS),
            ("likelihood", config.likelihood, ("categorical",)),
        ):
            if value in bad:
                raise UsageError(
                    f"--{name}={value} is for token sequences, and {config.dataset} holds "
                    f"images: use --dataset=strokes, imdb_reviews or text:PATH, or another "
                    f"--{name}."
                )
        return
    if config.dataset.startswith(TEXT_PREFIX) and not config.dataset[len(TEXT_PREFIX):]:
        raise UsageError("--dataset=text: needs a path, e.g. --dataset=text:/data/lines.txt.")
    if config.model != "sequence_vae":
        raise UsageError(
            f"--model={config.model} works on images; {config.dataset} holds token sequences: "
            "use --model=sequence_vae (the preset's)."
        )
    for name, value, allowed in (
        ("network", config.network, SEQUENCE_NETWORKS),
        ("likelihood", config.likelihood, ("categorical",)),
        ("tokens", config.tokens, TOKENS),
    ):
        if value not in allowed:
            raise UsageError(
                f"--{name}={value} does not apply to token sequences: use "
                f"{' or '.join(allowed)}."
            )
    for name in ("vocab_size", "rnn_units", "embedding_dim"):
        _positive_int(name, getattr(config, name))
    if config.max_length == 1:
        raise UsageError("--max_length must be >= 2 (a token and the end token). Received: 1.")


def _check_condition(config):
    if config.model != "cvae":
        if config.condition is not None:
            raise UsageError(
                f"--condition={config.condition} applies to --model=cvae only (received "
                f"--model={config.model}): add --model=cvae or drop --condition."
            )
        return
    known = CONDITIONS.get(config.dataset)
    if not known:
        raise UsageError(
            f"--model=cvae needs labels, and {config.dataset} has none: use "
            f"{', '.join(CONDITIONS)}, or another --model."
        )
    if config.condition not in known:
        names = ", ".join(known) if len(known) <= 6 else "attributes or one attribute, e.g. Smiling"
        raise UsageError(
            f"--condition={config.condition} is not a label of {config.dataset}: use {names}."
        )


def resolve(dataset="shapes", **overrides):
    """The config for `dataset`: defaults, then its preset, then `overrides`.

    Overrides whose value is None are ignored (a flag that was not given).
    """
    base = Config().replace(dataset=dataset)
    if base.preset_name not in PRESETS:
        validate(base)  # raises the unknown-dataset message
    config = base.replace(**PRESETS[base.preset_name])
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    if config.model == "cvae" and config.condition is None and CONDITIONS.get(config.dataset):
        config = config.replace(condition=next(iter(CONDITIONS[config.dataset])))
    return validate(config)


def default_workdir(dataset, now=None):
    """`runs/<dataset>-<YYYYmmdd-HHMMSS>`; a folder (text file) dataset is named after
    its folder (file)."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    name = dataset
    for prefix in (FOLDER_PREFIX, TEXT_PREFIX):
        if dataset.startswith(prefix):
            path = os.path.normpath(dataset[len(prefix):])
            name = prefix[:-1] + "-" + os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}-{stamp}")
