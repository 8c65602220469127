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

from keras_vae import disentanglement, evaluation, runs
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
    mig=True,
    mig_points=10_000,
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
        iwae_samples, max_batches, mig, mig_points, seed: as `evaluate_run`.
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
    test_ds, info = runs.load_split(config, "test")
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
        mig=mig,
        mig_points=mig_points,
        seed=seed,
    )
    results_file = os.path.join(workdir, runs.RESULTS_FILE)
    evaluation.write_results(results_file, results)
    echo(evaluation.format_table(results))
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
    mig=True,
    mig_points=10_000,
    seed=None,
    progress=True,
):
    """`evaluation.evaluate_model` on the test split, plus MIG on `shapes`.

    Args:
        model: the run's `VAE`.
        config: its `Config`.
        test_ds: its test split, e.g. `runs.load_split(config, "test")`.
        iwae_samples: K of the IWAE bound (0 skips it).
        max_batches: evaluate at most this many batches (None: all).
        mig: compute the Mutual Information Gap (only `shapes` has the
            ground-truth factors; skipped elsewhere with an info log).
        mig_points: factor samples for MIG.
        seed: seed of the evaluation's draws; None is the run's seed.
        progress: show a progress bar.

    Returns:
        The dict of `evaluate_model`, plus `mig` and `mig_points` (shapes),
        `dataset`, `network`, `likelihood`, `split` and `seed`.
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
    if mig:
        if config.dataset != "shapes":
            logging.info(
                "MIG needs ground-truth factors: only on shapes, skipped on %s.", config.dataset
            )
        elif model.latent_dim < 2:
            logging.info("MIG needs latent_dim >= 2: skipped.")
        else:
            results["mig"] = disentanglement.compute_mig_on_shapes(
                model, num_points=mig_points, seed=seed
            )
            results["mig_points"] = int(mig_points)
    results.update(
        dataset=config.dataset,
        network=config.network,
        likelihood=config.likelihood,
        split="test",
        seed=int(seed),
    )
    return results
