"""TensorBoard's HParams dashboard: a run's configuration and its final metrics.

A run's TensorBoard folder `workdir/tensorboard` is its HParams *session*:
`write_hparams` writes there the configuration (`hp.hparams`, one
hyperparameter per `Config` field that defines the run, its help text as
description) and the list of metrics the dashboard shows (`hp.hparams_config`).
The dashboard reads each metric as the last value of a scalar tag in the
session folder (group "") or in its subfolder named by the group:

- `epoch_loss`, `epoch_reconstruction` (and `epoch_elbo`, `epoch_kl`),
  group `validation`: Keras' `TensorBoard`, every epoch;
- `test/elbo`, `test/reconstruction`, `test/kl`, `test/bits_per_dim`,
  group "": `train_and_evaluate`, at the end of training;
- `test/iwae_nll`, `test/iwae_bits_per_dim` and, on shapes,
  `disentanglement/mig`, `/sap`, `/dci_disentanglement`, `/dci_completeness`,
  `/dci_informativeness`, `/factor_vae_score`, group "": `evaluate.py`,
  through `write_final_metrics(evaluate_metrics(results))`.

A model that bounds no likelihood (`bounds_likelihood` False, the
autoencoder) writes no ELBO, KL, bits/dim or IWAE but
`test/reconstruction_per_dim`; `disentanglement/mig` exists on shapes only
(the data with known factors). Their cells stay empty.

`tensorboard --logdir=runs` then compares every run under `runs/` (e.g. a
sweep over `--beta`, `--latent_dim`, `--model`) in one table. The dashboard
takes the hyperparameter and metric lists from the first run it finds, so
every run writes the same lists (every field that defines a run, every
metric), whatever its model and dataset.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from keras_vae.config import Config

# Fields that change how a run is watched or saved, not what it trains:
# not hyperparameters worth a column.
WATCH_ONLY_FIELDS = frozenset(
    {
        "data_dir",
        "download",
        "strict_data",
        "image_every",
        "backup_every_steps",
        "max_consecutive_skips",
        "export",
        "log_every_steps",
    }
)
VALIDATION = "validation"  # Keras' TensorBoard subfolder of the validation scalars
# evaluate.py's disentanglement metrics (results.json keys): key, name, what.
DISENTANGLEMENT_METRICS = (
    ("mig", "MIG", "Mutual information gap (Chen et al. 2018) of the latent means and the factors"),
    ("sap", "SAP", "Separated attribute predictability (Kumar et al. 2018)"),
    ("dci_disentanglement", "DCI disentanglement", "Eastwood & Williams 2018"),
    ("dci_completeness", "DCI completeness", "Eastwood & Williams 2018"),
    ("dci_informativeness", "DCI informativeness", "Test accuracy of DCI's trees"),
    ("factor_vae_score", "FactorVAE score", "Kim & Mnih 2018, majority-vote accuracy"),
)


def hparam_values(config):
    """`{field: value}` of the fields of `config` that define the run.

    Values are what the HParams plugin takes (bool, int, float, str): a tuple
    (`widths`) becomes "32,64,128"; a field left at None (its default is
    then derived, e.g. `steps_per_epoch`) is left out, so a field keeps one
    type across the runs of a sweep.
    """
    values = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in WATCH_ONLY_FIELDS or value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        values[field.name] = value
    return values


def metrics():
    """The HParams metrics of every run: `hp.Metric`s (see the module docstring)."""
    nats = "nats per image"
    validation = [
        ("epoch_loss", "loss", "The training objective"),
        ("epoch_reconstruction", "reconstruction", "-log p(x|z)"),
        ("epoch_elbo", "ELBO", "The ELBO (higher is better)"),
        ("epoch_kl", "KL", "KL(q(z|x) || p(z))"),
    ]
    test = [
        ("test/elbo", "test ELBO", f"The ELBO on the test images (higher is better), {nats}."),
        ("test/reconstruction", "test reconstruction", f"-log p(x|z) on the test images, {nats}."),
        ("test/kl", "test KL", f"KL(q(z|x) || p(z)) on the test images, {nats}."),
        ("test/bits_per_dim", "test bits/dim", "-ELBO in bits per dimension on the test images."),
        (
            "test/reconstruction_per_dim",
            "test reconstruction per dim",
            "-log p(x|z) per pixel and channel on the test images, nats (models without an ELBO).",
        ),
        (
            "test/iwae_nll",
            "test IWAE NLL",
            "-log p(x) estimated by importance sampling (the "
            f"IWAE bound) on the test images, {nats}; written by evaluate.py.",
        ),
        (
            "test/iwae_bits_per_dim",
            "test IWAE bits/dim",
            "The IWAE NLL in bits per dimension (of 8-bit data for a Gaussian likelihood); "
            "written by evaluate.py.",
        ),
        *(
            (f"disentanglement/{key}", name, f"{what} (shapes only); written by evaluate.py.")
            for key, name, what in DISENTANGLEMENT_METRICS
        ),
    ]
    return [
        *(
            hp.Metric(
                tag,
                group=VALIDATION,
                display_name=f"validation {name}",
                description=f"{what} on the validation split, {nats} (last epoch).",
            )
            for tag, name, what in validation
        ),
        *(hp.Metric(tag, display_name=name, description=what) for tag, name, what in test),
    ]


def write_hparams(log_dir, config):
    """Writes `config` as an HParams session, with the lists of hyperparameters
    and metrics, into `log_dir`.

    Args:
        log_dir: the run's TensorBoard folder, `workdir/tensorboard` (whose
            `validation` subfolder Keras' `TensorBoard` writes).
        config: the run's resolved `Config`.
    """
    fields = [f for f in dataclasses.fields(Config) if f.name not in WATCH_ONLY_FIELDS]
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hp.hparams_config(
            hparams=[hp.HParam(f.name, description=f.metadata["help"]) for f in fields],
            metrics=metrics(),
        )
        hp.hparams(hparam_values(config))
    writer.close()


def write_final_metrics(log_dir, values, step=0):
    """Writes final metrics as scalars into the run's HParams session folder.

    Args:
        log_dir: the run's TensorBoard folder, `workdir/tensorboard`.
        values: `{tag: number}`, e.g. `{"test/iwae_nll": 85.1,
            "disentanglement/mig": 0.21}`; the tags the HParams dashboard shows
            are those of `metrics`. A None or non-finite value is not written.
        step: the step of the points, e.g. the run's training steps
            (`train_summary.json`'s `steps`); the dashboard shows the value at
            the largest step, and a later write at the same step replaces it.
    """
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=int(step)):
        for tag, value in values.items():
            if value is not None and math.isfinite(float(value)):
                tf.summary.scalar(tag, float(value))
    writer.close()


def final_metrics(results):
    """`test/<key>` values of `train_and_evaluate`'s results (the numbers only)."""
    keys = ("elbo", "reconstruction", "kl", "bits_per_dim", "reconstruction_per_dim")
    return {f"test/{k}": results[k] for k in keys if k in results}


def evaluate_metrics(results):
    """The HParams metrics of evaluate.py's results (results.json): `{tag: value}`
    with `test/iwae_nll`, `test/iwae_bits_per_dim` and the
    `disentanglement/<key>` of `DISENTANGLEMENT_METRICS` that it has."""
    tags = {"iwae_nll": "test/iwae_nll", "iwae_bits_per_dim": "test/iwae_bits_per_dim"}
    tags.update({key: f"disentanglement/{key}" for key, _, _ in DISENTANGLEMENT_METRICS})
    return {tag: results[key] for key, tag in tags.items() if results.get(key) is not None}
