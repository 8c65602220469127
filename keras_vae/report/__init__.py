"""What `evaluate.py` does: a run's metrics, results.json and figures; run comparisons.

    from keras_vae import report
    out = report.evaluate_workdir("runs/x", iwae_samples=1000)   # all of evaluate.py
    summary = report.compare_runs(["runs/a", "runs/b"], "runs/compare")

or step by step, with the run checked by `keras_vae.runs`:

    config, model = runs.load_run("runs/x")
    test_ds, info = runs.load_split(config, "test")
    results = report.evaluate_run(model, config, test_ds, iwae_samples=1000)
    paths = report.write_run_figures(model, config, "runs/x/figures", results=results)

The room has three files: this one (one run's metrics and results.json),
`run_figures` (the figures of one run, listed there) and `compare` (the
comparison of runs: table, side-by-side grids, latent size against a PCA
baseline). Units: nats per image (DESIGN.md section 4). Everything written
is atomic.
"""

from __future__ import annotations

import os

from absl import logging

from keras_vae import disentanglement as disentanglement_lib
from keras_vae import evaluation, runs
from keras_vae.report.compare import COMPARE_COLUMNS_TABLE, compare_runs, format_compare_table
from keras_vae.report.run_figures import (
    GRID_FILES,
    check_neighbourhood,
    parse_attribute,
    parse_radii,
    write_run_figures,
)

__all__ = [
    "COMPARE_COLUMNS_TABLE",
    "GRID_FILES",
    "check_neighbourhood",
    "compare_runs",
    "evaluate_run",
    "evaluate_workdir",
    "format_compare_table",
    "parse_attribute",
    "parse_radii",
    "write_run_figures",
]


def evaluate_workdir(
    workdir,
    *,
    iwae_samples=1000,
    max_batches=None,
    disentanglement=True,
    disentanglement_points=disentanglement_lib.REFERENCE_POINTS,
    factor_vae_votes=None,
    seed=None,
    figures=True,
    attribute=None,
    neighbourhood_of=0,
    radius=(0.5,),
    num_directions=4,
    figure_examples=5000,
    echo=None,
):
    """Evaluates the run in `workdir`: WORKDIR/results.json and WORKDIR/figures/.

    Everything that can fail without a long computation is checked first:
    the run (`runs.load_run`), the folders to write, the images the data
    gives, the figure options.

    Args:
        workdir: a run folder written by train.py.
        iwae_samples, max_batches, disentanglement, disentanglement_points,
            factor_vae_votes, seed: as `evaluate_run`.
        figures: also write the figures (`write_run_figures`).
        attribute: `parse_attribute`'s spec, e.g. "Smiling" or "label:3".
        neighbourhood_of, num_directions, figure_examples: as `write_run_figures`.
        radius: the neighbourhood radii, numbers or strings (`parse_radii`).
        echo: called with each text for the user as soon as it is ready (the
            metrics table first, then where things went), e.g. `print`.

    Returns:
        dict: `results` (`evaluate_run`'s), `results_file`, `figures` (paths).

    Raises:
        UserError: a broken run or folder; UsageError: bad figure options.
    """
    echo = echo or (lambda text: None)
    config, model = runs.load_run(workdir)
    # A folder we cannot write to fails now, not after a long evaluation.
    runs.check_writable(workdir)
    out_dir = os.path.join(workdir, runs.FIGURES_DIR)
    if figures:
        runs.check_writable(out_dir)
    # A conditional model's batches carry the labels it is conditioned on.
    test_ds, info = runs.load_split(config, "test", with_condition=model.conditional)
    runs.check_image_shape(workdir, model, info.image_shape)
    if figures:  # bad figure options fail now, not after a long evaluation
        attribute = parse_attribute(attribute, info.label_names)
        radii = parse_radii(radius)
        check_neighbourhood(neighbourhood_of, info)
    results = evaluate_run(
        model,
        config,
        test_ds,
        iwae_samples=iwae_samples,
        max_batches=max_batches,
        disentanglement=disentanglement,
        disentanglement_points=disentanglement_points,
        factor_vae_votes=factor_vae_votes,
        seed=seed,
    )
    results_file = os.path.join(workdir, runs.RESULTS_FILE)
    evaluation.write_results(results_file, results)
    echo(evaluation.format_table(results, disentanglement_lib.TABLE_ROWS))
    if results.get("disentanglement_note"):
        echo(f"note: {results['disentanglement_note']}")
    echo(f"Results written to {results_file}")
    paths = []
    if figures:
        paths = write_run_figures(
            model,
            config,
            out_dir,
            results=results,
            attribute=attribute,
            neighbourhood_of=neighbourhood_of,
            radii=radii,
            num_directions=num_directions,
            max_batches=max_batches,
            figure_examples=figure_examples,
            seed=seed,
        )
        echo(f"{len(paths)} figures written to {out_dir}")
    return {"results": results, "results_file": results_file, "figures": paths}


def evaluate_run(
    model,
    config,
    test_ds,
    *,
    iwae_samples=1000,
    max_batches=None,
    disentanglement=True,
    disentanglement_points=disentanglement_lib.REFERENCE_POINTS,
    factor_vae_votes=None,
    seed=None,
    progress=True,
):
    """`evaluation.evaluate_model` on the test split, plus the disentanglement metrics on `shapes`.

    On shapes (the only dataset with ground-truth factors) and latent_dim >=
    2: MIG, SAP and DCI of one draw of codes and the FactorVAE score
    (`disentanglement.evaluate_on_shapes`, which gives their times: at the
    defaults ~17 min on 2 busy CPU cores, most of it DCI's trees).
    `disentanglement_samples` in the results lists the sample counts and
    `disentanglement_note` says where they are below disentanglement_lib's.

    A conditional model (the cvae) is evaluated given the labels it is
    conditioned on: its bounds are on log p(x|y) (`conditioned_on` names y),
    and its disentanglement metrics score the factors other than y
    (`mig_factors` lists them).

    Args:
        model: the run's `VAE`.
        config: its `Config`.
        test_ds: its test split, e.g. `runs.load_split(config, "test")`, with
            `with_condition=True` for a conditional model.
        iwae_samples: K of the IWAE bound (0 skips it).
        max_batches: evaluate at most this many batches (None: all).
        disentanglement: compute the disentanglement metrics (skipped with an
            info log off shapes or for latent_dim < 2).
        disentanglement_points: disentanglement_lib's `num_train` (10,000):
            MIG's points, SAP's and DCI's train points (with half as many test
            points) and the FactorVAE score's variance points.
        factor_vae_votes: the FactorVAE score's training votes (evaluation
            votes: half); None: 1,000, or `disentanglement_points` if fewer
            (`disentanglement.EVALUATE_FACTOR_VAE_VOTES`; the reference casts
            10,000).
        seed: seed of the evaluation's draws; None is the run's seed.
        progress: show a progress bar.

    Returns:
        The dict of `evaluate_model`, plus on shapes `mig`, `sap`,
        `dci_disentanglement`, `dci_completeness`, `dci_informativeness`,
        `factor_vae_score` (and their details), `mig_points`, `mig_factors`,
        `disentanglement_samples`; `dataset`, `network`, `likelihood`,
        `split`, `seed` and, for a conditional model, `conditioned_on`.
    """
    seed = config.seed if seed is None else seed
    results = evaluation.evaluate_model(
        model,
        test_ds,
        iwae_samples=iwae_samples,
        max_batches=max_batches,
        seed=seed,
        progress=progress,
    )
    if disentanglement:
        if config.dataset != "shapes":
            logging.info(
                "Disentanglement metrics need ground-truth factors: only on shapes, skipped on %s.",
                config.dataset,
            )
        elif model.latent_dim < 2:
            logging.info("Disentanglement metrics need latent_dim >= 2: skipped.")
        else:
            condition = config.condition if model.conditional else None
            results.update(
                disentanglement_lib.evaluate_on_shapes(
                    model,
                    num_points=disentanglement_points,
                    factor_vae_votes=factor_vae_votes,
                    seed=seed,
                    condition=condition,
                )
            )
    results.update(
        dataset=config.dataset,
        network=config.network,
        likelihood=config.likelihood,
        split="test",
        seed=int(seed),
    )
    if model.conditional:
        results["conditioned_on"] = config.condition
    return results
