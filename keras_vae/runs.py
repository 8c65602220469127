"""A run folder: its file names, its `config.json` and `model.keras`, and their checks.

    from keras_vae import runs
    config, model = runs.load_run("runs/x")        # checked: complete, finite, this run's
    test_ds, info = runs.load_split(config, "test")

What `evaluate.py`, `python -m keras_vae.export` and `--compare` read of a
run (DESIGN.md section 1), and the checks that make a broken folder end in one
line naming the file and the fix before any long work starts: no model, a
truncated or corrupt `model.keras`, non-finite weights (a diverged run), a
`model.keras` that another run wrote, a folder that cannot be written.

The model is inspected through its public face only (DESIGN.md section 2):
`latent_dim`, `image_shape`, `likelihood`, the objective's settings, a
conditional model's condition (`condition_size`, `multi_hot`) and the number
of its trained weights, which `networks.estimate_size` predicts exactly from
a config.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
import zlib

import keras
import numpy as np

from keras_vae import data as data_lib
from keras_vae import likelihoods, networks
from keras_vae.config import Config, UserError
from keras_vae.models import VAE

# The files of a run folder (DESIGN.md section 1); training writes the first
# three, evaluate.py the results and figures, export the SavedModel.
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
BACKUP_DIR = "backup"
RESULTS_FILE = "results.json"
FIGURES_DIR = "figures"
EXPORT_DIR = "export"
HISTORY_FILE = "history.json"
SUMMARY_FILE = "train_summary.json"  # test metrics; its presence marks a finished run
TENSORBOARD_DIR = "tensorboard"

# The config fields that shape the networks beyond latent_dim, likelihood and
# the image shape: a model that differs in one of them has another number of
# weights, but which one differs cannot be told from outside the model.
NETWORK_FIELDS = ("network", "widths", "dense_units", "per_channel_scale")
# The `Config` field (and `VAE` attribute) that holds each likelihood option.
_OPTION_FIELDS = {"sigma": "gaussian_sigma"}


# ---------------------------------------------------------------------------
# Folders.


def makedirs(path):
    """`os.makedirs(path, exist_ok=True)`, or a UserError naming the folder."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"Cannot write to {path!r} ({e.strerror}): choose a folder you can write to."
        ) from e


def check_writable(folder, fix="or copy the run to a folder you can write to"):
    """Raises a UserError unless a file can be created in `folder` (if it exists).

    Tries for real: `os.access` answers yes to root on a read-only mount.
    Called before a long evaluation, so that it does not end in a write error.

    Args:
        folder: the folder to write into.
        fix: the end of the message, after "make it writable (...), ".
    """
    if not os.path.exists(folder):
        return
    if not os.path.isdir(folder):
        raise UserError(f"Cannot write into {folder}: it is a file; remove it or move it away.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(
            f"Cannot write to {folder} ({e.strerror}): make it writable (chmod u+w, or "
            f"remount it read-write), {fix}."
        ) from e


# ---------------------------------------------------------------------------
# config.json and model.keras.


def read_config(workdir):
    """The `Config` of the run in `workdir`; needs `model.keras` there too.

    Raises:
        UserError: no `model.keras` or no readable `config.json` in `workdir`.
    """
    if not os.path.isfile(os.path.join(workdir, MODEL_FILE)):
        raise UserError(
            f"Cannot evaluate {workdir}: no {MODEL_FILE} in {workdir}: train first with "
            f"python train.py --workdir={workdir}"
        )
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(
            f"Cannot evaluate {workdir}: no {CONFIG_FILE} next to its {MODEL_FILE}; "
            "point --workdir at a folder written by train.py."
        )
    try:
        return Config.from_json_file(path)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"Cannot read {path} ({type(e).__name__}: {e}).") from e
    except UserError as e:  # an unknown key: written by another version
        raise UserError(f"{path} does not match this keras_vae: {e}") from e


def check_finite(model, what, fix):
    """Raises a UserError `"{what} not finite (...): {fix}"` if a weight is NaN/Inf.

    Args:
        model: a `VAE`.
        what: the start of the message, naming the file or the export.
        fix: what to do about it.
    """
    bad = model.nonfinite_variables()
    if bad:
        raise UserError(
            f"{what} not finite (NaN or Inf in {len(bad)} variable(s), e.g. {bad[0]}): {fix}"
        )


def retrain_hint(workdir, lower_learning_rate=False):
    """How to get a good model.keras back into `workdir`: resume or retrain."""
    lower = " with a lower --learning_rate" if lower_learning_rate else ""
    flag = " --learning_rate=LOWER" if lower_learning_rate else ""
    backup = os.path.join(workdir, BACKUP_DIR)
    resume = (
        f"rerun its training command{lower} to resume from {backup}, or "
        if os.path.isdir(backup)
        else ""
    )
    return (
        f"{resume}retrain it: python train.py --workdir={workdir} --restart{flag} "
        f"with the {'other ' if flag else ''}flags of its {CONFIG_FILE}."
    )


def _damaged(path):
    """True if `path` is not a complete zip archive (what a .keras file is)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is not None  # the first member with a bad CRC
    except (zipfile.BadZipFile, EOFError, zlib.error):
        return True


def load_model(path):
    """The `VAE` saved at `path` (a `.keras` file), checked to be usable.

    Raises:
        UserError: a truncated, corrupt or foreign file, or non-finite weights;
            the message names `path` and the fix.
    """
    workdir = os.path.dirname(path) or "."
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:
        # Keras reports a damaged zip as "File not found": say what it is.
        if _damaged(path):
            raise UserError(
                f"{path} is corrupt or truncated (not a complete .keras zip archive), e.g. "
                f"cut short by a full disk or an interrupted copy: {retrain_hint(workdir)}"
            ) from e
        raise UserError(
            f"Cannot load {path} ({type(e).__name__}: {e}); {retrain_hint(workdir)}"
        ) from e
    if not isinstance(model, VAE):
        raise UserError(
            f"{path} holds a {type(model).__name__}, not a keras_vae VAE: point --workdir "
            "at a folder written by train.py."
        )
    check_finite(
        model,
        f"The weights in {path} are",
        f"the run diverged; {retrain_hint(workdir, lower_learning_rate=True)}",
    )
    return model


# ---------------------------------------------------------------------------
# Does model.keras belong to config.json?


def network_weights(model):
    """The number of weights of `model`'s encoder and decoder
    (`VAE.network_parameters`): what `config.json`'s networks predict. A
    variant's own weights (e.g. a flow's) and the model's counters apart."""
    return int(model.network_parameters)


def _condition_of(model):
    """`(condition_size, multi_hot)` of a conditional model (the shape of
    `Config.condition_spec`), None for an unconditional one."""
    return (int(model.condition_size), bool(model.multi_hot)) if model.conditional else None


def _expected_weights(config, model):
    """What `networks.estimate_size` gives for `config`'s networks at the
    model's latent size, likelihood, image shape and condition size (the
    condition is compared on its own); None if they cannot be built."""
    condition = _condition_of(model)
    if getattr(model, "is_sequence", False):  # small RNNs: build them and count
        from keras_vae.sequence_networks import build_sequence_networks

        try:
            encoder, decoder = build_sequence_networks(
                config, int(model.max_length), int(model.vocab_size)
            )
        except (ValueError, AttributeError):
            return None
        return encoder.count_params() + decoder.count_params()
    try:
        params, _ = networks.estimate_size(
            tuple(model.image_shape),
            int(model.latent_dim),
            network=config.network,
            likelihood=model.likelihood,
            widths=config.widths,
            dense_units=config.dense_units,
            per_channel_scale=config.per_channel_scale,
            condition_size=0 if condition is None else condition[0],
        )
    except ValueError:  # e.g. a network this version does not know
        return None
    return params


def model_differences(config, model):
    """`[(field, value in the model, value in the config)]` where they disagree.

    Compares what the loaded model shows of itself: latent_dim, likelihood,
    its options (gaussian_sigma), the objective, image_size, the `condition`
    (`(size, multi_hot)` of a conditional model against `config.condition_spec`,
    None for none) and, as `weights`, the number of weights of its networks
    against the number `config`'s `NETWORK_FIELDS` give at the model's latent
    size, likelihood, images and condition size (None when they describe no
    network this version can build).
    """
    found = {
        "latent_dim": (int(model.latent_dim), config.latent_dim),
        "likelihood": (model.likelihood, config.likelihood),
        "beta": (model.beta, config.beta),
        "beta_schedule": (model.beta_schedule, config.beta_schedule),
        "free_bits": (model.free_bits, config.free_bits),
        "seed": (model.seed, config.seed),
        "condition": (_condition_of(model), config.condition_spec),
    }
    if config.likelihood == model.likelihood:  # options mean something within one likelihood
        for option in likelihoods.get(model.likelihood).options:
            field = _OPTION_FIELDS[option]
            found[field] = (getattr(model, field), getattr(config, field))
    if config.image_size is not None:
        found["image_size"] = (model.image_shape[:2], (config.image_size, config.image_size))
    if getattr(model, "is_sequence", False):
        found["word_dropout"] = (model.word_dropout, config.word_dropout)
    found["weights"] = (network_weights(model), _expected_weights(config, model))
    return [(k, m, c) for k, (m, c) in found.items() if m != c]


def describe_difference(field, in_model, in_config):
    """One `model_differences` entry as a phrase, e.g. "latent_dim 3 in the
    model, 2 in config.json"."""
    if field == "weights":
        expected = "none" if in_config is None else in_config
        return (
            f"network weights {in_model} in the model, {expected} from {CONFIG_FILE}'s "
            f"{', '.join(NETWORK_FIELDS)}"
        )
    if field == "condition":
        return (
            f"condition {_describe_condition(in_model)} in the model, "
            f"{_describe_condition(in_config)} from {CONFIG_FILE}'s condition"
        )
    return f"{field} {in_model!r} in the model, {in_config!r} in {CONFIG_FILE}"


def _describe_condition(spec):
    """`(size, multi_hot)` or None as words: "3 classes", "40 attributes", "none"."""
    if spec is None:
        return "none"
    size, multi_hot = spec
    return f"{size} attributes (multi-hot)" if multi_hot else f"{size} classes"


def _mixed_runs(path, workdir, differences):
    """The UserError for a model.keras that another run wrote; `differences`
    are phrases like "latent_dim 3 in the model, 2 in config.json"."""
    listing = "; ".join(differences)
    return UserError(
        f"{path} does not match {os.path.join(workdir, CONFIG_FILE)} ({listing}): the folder "
        f"mixes two runs. Retrain with python train.py --workdir={workdir} --restart and the "
        f"flags of its {CONFIG_FILE}, or point --workdir at the folder of the run that wrote "
        "this model."
    )


def check_image_shape(workdir, model, image_shape):
    """Raises the mixed-runs UserError if `model` was built for other images
    than the run's data gives (`info.image_shape`)."""
    if tuple(model.image_shape) != tuple(image_shape):
        difference = (
            f"image shape {tuple(model.image_shape)} in the model, {tuple(image_shape)} "
            f"from {CONFIG_FILE}'s data"
        )
        raise _mixed_runs(os.path.join(workdir, MODEL_FILE), workdir, [difference])


def load_run(workdir):
    """`(config, model)` of the run in `workdir`: its `config.json` and `model.keras`.

    The model is checked: a complete file (not truncated), finite weights (not
    a diverged run) and the networks and objective that config.json describes.

    Raises:
        UserError: a missing, unreadable, corrupt or diverged model, or one
            that belongs to another run (the message names the file and the fix).
    """
    config = read_config(workdir)
    path = os.path.join(workdir, MODEL_FILE)
    model = load_model(path)
    differences = model_differences(config, model)
    if differences:
        raise _mixed_runs(path, workdir, [describe_difference(*d) for d in differences])
    return config, model


# ---------------------------------------------------------------------------
# The run's data.


def load_split(config, split, *, with_labels=False, with_condition=False):
    """One split of the run's data, unshuffled, not repeated: images, or
    `(images, labels dict)` with `with_labels`, or `(images, labels)` with
    `with_condition`, the labels a cvae is conditioned on (`config.condition`,
    see `keras_vae.data.load_for_config`)."""
    return data_lib.load_for_config(
        config,
        split,
        shuffle=False,
        repeat=False,
        with_labels=with_labels,
        with_condition=with_condition,
    )


def first_examples(dataset, count):
    """The first `count` examples of a batched dataset: `(images, labels)`.

    `images` is `(n, H, W, C)` float32 with n <= count; `labels` a dict of
    `(n,)` int64 arrays (empty without labels).
    """
    images, labels, n = [], {}, 0
    for batch in dataset:
        x, y = (batch, {}) if not isinstance(batch, tuple) else (batch[0], batch[1] or {})
        x = np.asarray(x, dtype=np.float32)[: count - n]
        images.append(x)
        for key, value in y.items():
            labels.setdefault(key, []).append(np.asarray(value)[: len(x)])
        n += len(x)
        if n >= count:
            break
    if not images:
        raise UserError("The test split is empty: nothing to draw.")
    return np.concatenate(images), {k: np.concatenate(v) for k, v in labels.items()}
