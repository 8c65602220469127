"""Comparison of trained runs of one dataset (`compare_runs`).

A table of ELBO, reconstruction, KL, bits/dim, active units (and the IWAE NLL
where a run has `results.json`), `compare_samples.png`,
`compare_reconstructions.png` (one labelled block per run),
`latent_size.png`, reconstruction and KL against latent_dim with a PCA
baseline (`keras_vae.baselines`), and `compare_prior.png`: prior samples,
interpolations and the aggregate posterior q(z) against N(0, I), which shows
why an autoencoder (`--model=ae`) cannot be sampled and a VAE can. A run that
bounds no likelihood (the autoencoder) has '-' for ELBO, KL, IWAE and
bits/dim, and its `note` under the table. A conditional run (the cvae) is
evaluated, encoded and decoded with the labels it is conditioned on (each
run's own `Config.condition` of the same test images; prior samples: its
`class_labels`, the classes in turn); its bounds are on log p(x|y), which its
`note` under the table says. Units: nats per image.

The models are used through their public methods only (`encode`, `decode`,
`compute_terms` for q(z), a conditional model's `class_labels`).
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
from absl import logging

from keras_vae import baselines, evaluation, grids, latent_grids, likelihoods, plots, runs, walks
from keras_vae import data as data_lib
from keras_vae import files as files_lib
from keras_vae.config import UsageError
from keras_vae.report.protocol import dequantizes

COMPARE_IMAGES = 16  # cells per block of the comparison grids, 4 x 4
COMPARE_COLUMNS = 4
PRIOR_CODES = 1000  # test images whose q(z) samples compare_prior.png shows
INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 4, 8  # compare_prior.png's interpolation grid
COMPARE_COLUMNS_TABLE = (
    # key, header, format
    ("name", "run", "{}"),
    ("variant", "variant", "{}"),
    ("network", "model", "{}"),
    ("latent_dim", "latent", "{:d}"),
    ("likelihood", "likelihood", "{}"),
    ("elbo", "ELBO [nats]", "{:.2f}"),
    ("reconstruction", "recon. [nats]", "{:.2f}"),
    ("kl", "KL [nats]", "{:.2f}"),
    ("elbo_bits_per_dim", "-ELBO [bits/dim]", "{:.4f}"),
    ("iwae_nll", "IWAE NLL [nats]", "{:.2f}"),
    ("iwae_bits_per_dim", "IWAE [bits/dim]", "{:.4f}"),
    ("active_units", "active units", "{:d}"),
    ("num_examples", "test images", "{:d}"),
    ("source", "from", "{}"),
)
# The metrics of a run that a row of the comparison shows.
_ROW_METRICS = (
    "elbo",
    "reconstruction",
    "reconstruction_per_dim",
    "kl",
    "elbo_bits_per_dim",
    "iwae_nll",
    "iwae_bits_per_dim",
    "iwae_samples",
    "active_units",
    "num_examples",
    "note",
)


def format_compare_table(rows):
    """A Markdown table of the compared runs (missing values are '-')."""
    header = [h for _, h, _ in COMPARE_COLUMNS_TABLE]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [
            fmt.format(row[key]) if row.get(key) is not None else "-"
            for key, _, fmt in COMPARE_COLUMNS_TABLE
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(rows):
    """The `note` of each run that has one (no likelihood bound, or a bound on
    log p(x|y)): Markdown list items after a blank line, or "" when no run has one."""
    notes = [f"- {row['name']}: {row['note']}\n" for row in rows if row.get("note")]
    return "\n" + "".join(notes) if notes else ""


def aggregate_posterior(model, images, seed, batch_size=256, labels=None):
    """Samples of q(z) = E_x q(z|x) and their fit to N(0, I).

    One z ~ q(z|x) per image through the model's own `compute_terms` with
    seeded eps (an autoencoder ignores eps: its codes); a conditional model's
    q(z) = E_(x,y) q(z|x, y), each image with its label.

    Args:
        model: a `VAE` or variant.
        images: `(N, H, W, C)` float32 test images.
        seed: seed of eps.
        batch_size: images per `compute_terms` call.
        labels: a conditional model's labels of `images`, `(N,)` or `(N, K)`;
            else None.

    Returns:
        dict: `z` `(N, D)`; `mean`, `variance` `(D,)` per dimension; `kl`,
        KL(N(mean, diag variance) || N(0, I)) =
        1/2 sum_d (variance_d + mean_d^2 - 1 - log variance_d), nats: 0 for
        a q(z) whose first two moments match the prior's.
    """
    rng = np.random.default_rng([seed, 2])
    eps = rng.standard_normal((len(images), model.latent_dim)).astype(np.float32)
    z = []
    for i in range(0, len(images), batch_size):
        part = slice(i, i + batch_size)
        # Labels only for a model given them (`VAE.conditional`).
        given = {} if labels is None else {"labels": labels[part]}
        terms = model.compute_terms(images[part], eps=eps[part], **given)
        z.append(np.asarray(terms["z"], dtype=np.float64))
    z = np.concatenate(z)  # (N, D)
    mean, variance = z.mean(axis=0), z.var(axis=0)
    # A dimension with no spread at all: KL infinite; floored to stay finite.
    log_var = np.log(np.maximum(variance, 1e-30))
    kl = 0.5 * float(np.sum(variance + mean**2 - 1.0 - log_var))
    return {"z": z, "mean": mean, "variance": variance, "kl": kl}


def _run_labels(model, config, input_labels, code_labels):
    """A conditional run's labels (`data.condition_labels` of its condition)
    of the compared inputs and of the q(z) images, and `class_labels` of its
    `COMPARE_IMAGES` prior samples; three Nones for an unconditional run."""
    if not model.conditional:
        return None, None, None
    return (
        np.asarray(data_lib.condition_labels(input_labels, config.condition)),
        np.asarray(data_lib.condition_labels(code_labels, config.condition)),
        np.asarray(model.class_labels(COMPARE_IMAGES)),
    )


def _run_name(workdir):
    return os.path.basename(os.path.normpath(workdir)) or workdir


def _check_comparable(workdirs, configs):
    datasets = {c.dataset for c in configs}
    if len(datasets) > 1:
        listing = ", ".join(
            f"{_run_name(w)}={c.dataset}" for w, c in zip(workdirs, configs, strict=True)
        )
        raise UsageError(
            f"--compare needs runs on one dataset; these differ ({listing}): "
            "compare runs of the same --dataset."
        )
    sizes = {c.image_size for c in configs}
    if len(sizes) > 1:
        raise UsageError(
            f"--compare needs runs at one image size; these differ ({sorted(map(str, sizes))})."
        )


def compare_runs(workdirs, output, *, max_batches=None, pca_images=2000, seed=0, progress=True):
    """Compares trained runs of one dataset: a table, side-by-side grids, latent size.

    For each run the test metrics come from its `results.json` when present
    (written by `evaluate.py`, with the IWAE NLL), else they are computed
    here: ELBO only (one draw), over `max_batches` test batches. Writes
    into `output`:

    - `compare.json`: the rows, the PCA baseline and what is plotted;
    - `compare.md`: `format_compare_table` of the rows;
    - `compare_samples.png`: 16 prior samples per run (seeded noise), one
      labelled block per run (`plots.block_figure`);
    - `compare_reconstructions.png`: the first 16 test images, then one block
      of their reconstructions per run;
    - `latent_size.png`: `plots.latent_size_figure`, with the PCA baseline
      fitted on the first `pca_images` train images and scored on the first
      `pca_images` test images;
    - `compare_prior.png`: `plots.prior_comparison_figure`, per run its prior
      samples, interpolations between test codes and `aggregate_posterior`
      of the first `PRIOR_CODES` test images (also in the rows).

    A run without a likelihood bound (the autoencoder) has no ELBO, KL, IWAE
    or bits/dim ('-'); its `note` follows the table (`format_notes`).

    Args:
        workdirs: run folders (with `config.json` and `model.keras`).
        output: folder to write to (created).
        max_batches: batch limit of the computed metrics (None: all).
        pca_images: train (and test) images of the PCA baseline.
        seed: seed of the prior samples and the computed ELBO.
        progress: progress bars while computing.

    Returns:
        dict: `rows` (one dict per run), `pca` (by likelihood), `files`,
        `table` (the Markdown table and notes, as printed).

    Raises:
        UsageError: runs on different datasets or image sizes.
        UserError: a folder without a trained run.
    """
    configs = [runs.read_config(w) for w in workdirs]  # before any model is loaded
    _check_comparable(workdirs, configs)
    runs.makedirs(output)
    runs.check_writable(output, "or pass another --output")  # before the work, not after
    names = [_run_name(w) for w in workdirs]
    if len(set(names)) < len(names):  # same folder names under different parents
        names = [os.path.normpath(w) for w in workdirs]

    # With labels: a conditional run takes its own condition of the same images.
    test_ds, info = runs.load_split(configs[0], "test", with_labels=True)
    inputs, input_labels = runs.first_examples(test_ds, COMPARE_IMAGES)
    code_images, code_labels = runs.first_examples(test_ds, PRIOR_CODES)
    pairs = latent_grids.choose_pairs(len(inputs), INTERPOLATION_PAIRS)
    tile = dict(cols=COMPARE_COLUMNS)
    sample_blocks, recon_blocks = [], [("test images\n(inputs)", grids.tile(inputs, **tile))]
    rows, prior_panels = [], []
    for workdir, name, config in zip(workdirs, names, configs, strict=True):
        _, model = runs.load_run(workdir)
        runs.check_image_shape(workdir, model, info.image_shape)
        results_path = os.path.join(workdir, runs.RESULTS_FILE)
        if os.path.isfile(results_path):
            with open(results_path) as f:
                metrics = json.load(f)
            source = runs.RESULTS_FILE
        else:
            run_ds, _ = runs.load_split(config, "test", with_condition=model.conditional)
            metrics = evaluation.evaluate_model(
                model,
                run_ds,
                iwae_samples=0,
                max_batches=max_batches,
                dequantize=dequantizes(config),
                seed=seed,
                progress=progress,
            )
            source = "computed"
        row = {
            "name": name,
            "variant": config.model,
            "workdir": workdir,
            "network": config.network,
            "latent_dim": int(model.latent_dim),
            "likelihood": config.likelihood,
            "gaussian_sigma": config.gaussian_sigma,
            "beta": config.beta,
            "condition": config.condition if model.conditional else None,
            "source": source,
        }
        row.update({key: metrics.get(key) for key in _ROW_METRICS})
        rows.append(row)
        label = f"{name}\n{config.network}, latent_dim {row['latent_dim']}"
        if model.conditional:
            label += f", given {config.condition}"
        # A conditional run's labels: of the inputs, of the q(z) images, of
        # its prior samples (the classes in turn); None for the others.
        given, given_codes, given_samples = _run_labels(model, config, input_labels, code_labels)
        noise = latent_grids.prior_noise(COMPARE_IMAGES, row["latent_dim"], seed)
        samples = latent_grids.decode_codes(model, noise, labels=given_samples)
        sample_blocks.append((label, grids.tile(samples, **tile)))
        mean, _ = model.encode(inputs) if given is None else model.encode(inputs, labels=given)
        recon = latent_grids.decode_codes(model, np.asarray(mean), labels=given)
        recon_blocks.append((label, grids.tile(recon, **tile)))
        # compare_prior.png: interpolations between test codes, q(z) against N(0, I).
        codes = np.asarray(mean, dtype=np.float32)
        walk = np.stack(
            [walks.interpolate(codes[i], codes[j], INTERPOLATION_STEPS) for i, j in pairs]
        )
        # Each row with its start image's label (as `latent_grids.image_grids`).
        walk_labels = None if given is None else np.repeat(given[pairs[:, 0]], walk.shape[1], 0)
        interpolation = latent_grids.decode_codes(
            model, walk.reshape(-1, codes.shape[1]), labels=walk_labels
        )
        prior = aggregate_posterior(model, code_images, seed, labels=given_codes)
        row["aggregate_posterior"] = {
            "images": len(code_images),
            "mean": prior["mean"].tolist(),
            "variance": prior["variance"].tolist(),
            "kl_to_prior": prior["kl"],
        }
        prior_panels.append(
            dict(
                prior,
                label=name if name == config.model else f"{name} ({config.model})",
                samples=grids.tile(samples, **tile),
                interpolation=grids.tile_rows(
                    interpolation.reshape(walk.shape[:2] + interpolation.shape[1:])
                ),
            )
        )
        del model
        keras.backend.clear_session()  # the next run's layers start from a clean graph

    files = {
        "compare_samples": os.path.join(output, "compare_samples.png"),
        "compare_reconstructions": os.path.join(output, "compare_reconstructions.png"),
    }
    plots.block_figure(
        files["compare_samples"],
        sample_blocks,
        cell_height=inputs.shape[1],
        title=f"Prior samples (temperature 1, seed {seed})",
    )
    plots.block_figure(
        files["compare_reconstructions"],
        recon_blocks,
        cell_height=inputs.shape[1],
        title="Reconstructions (decoded posterior means) of the same test images",
    )

    # PCA at the runs' latent sizes, in the units of each likelihood present,
    # one baseline per likelihood and options (e.g. "gaussian sigma=0.1").
    sizes = sorted({r["latent_dim"] for r in rows})
    train_ds, _ = runs.load_split(configs[0], "train")
    train, _ = runs.first_examples(train_ds, pca_images)
    test, _ = runs.first_examples(test_ds, pca_images)
    pca = {}
    for config in configs:
        lik = likelihoods.get(config.likelihood, sigma=config.gaussian_sigma)
        key = " ".join([lik.name] + [f"{o}={getattr(lik, o):g}" for o in lik.options])
        if key not in pca:
            pca[key] = baselines.pca_baseline(
                train, test, sizes, config.likelihood, config.gaussian_sigma
            )
    if len(pca) > 1:
        logging.warning(
            "The runs use different likelihoods (%s): their reconstruction terms "
            "are in different units.",
            ", ".join(pca),
        )
    files["latent_size"] = os.path.join(output, "latent_size.png")
    plots.latent_size_figure(files["latent_size"], rows, pca)
    files["compare_prior"] = os.path.join(output, "compare_prior.png")
    plots.prior_comparison_figure(files["compare_prior"], prior_panels)

    # The table and, for runs without a likelihood bound, why they have no ELBO.
    notes = format_notes(rows)
    table = format_compare_table(rows) + ("\n" + notes.rstrip("\n") if notes else "")
    clip = baselines.BERNOULLI_CLIP
    summary = {
        "dataset": configs[0].dataset,
        "rows": rows,
        "pca": pca,
        "latent_size_png": (
            "Left: each run's test reconstruction term -E_q log p(x|z) in nats per image "
            "against latent_dim (one line per network); dashed: PCA with k = latent_dim "
            "components fitted on the first train images, scored on the first test images "
            "as -log p(x | PCA reconstruction) under the runs' likelihood (bernoulli: "
            f"probabilities clipped to [{clip:g}, {1 - clip:g}]; gaussian: "
            "the run's sigma; gaussian_learned / discretized_logistic: one scale fitted on "
            "the train images). Right: each run's test KL in nats per image (none for a "
            "model without a KL, e.g. the autoencoder)."
        ),
        "compare_prior_png": (
            f"One column per run. Prior samples (the same {COMPARE_IMAGES} z ~ N(0, I) for "
            f"every run); linear interpolations between the codes (encoder means) of "
            f"{len(pairs)} pairs of test images; one z ~ q(z|x) for each of the first "
            f"{len(code_images)} test images (for an autoencoder its code), i.e. samples of "
            "the aggregate posterior q(z), on z0, z1 over the N(0, I) circles at 1, 2, 3 sd; "
            "per dimension the mean +- sd of those samples over the N(0, 1) band, titled with "
            "KL(N(mean, diag var) || N(0, I)). Where q(z) misses N(0, I), decoded prior "
            "samples are codes the decoder never saw (rows: aggregate_posterior)."
        ),
        "files": files,
    }
    files["compare_md"] = os.path.join(output, "compare.md")
    files["compare_json"] = os.path.join(output, "compare.json")
    files_lib.atomic_write_text(
        files["compare_md"],
        f"# Comparison on {configs[0].dataset}\n\n{table}\n",
    )
    evaluation.write_results(files["compare_json"], summary)
    summary["table"] = table
    return summary
