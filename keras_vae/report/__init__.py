"""What `evaluate.py` does: a run's metrics, results.json and figures; run comparisons.

    from keras_vae import report
    out = report.evaluate_workdir("runs/x")                       # all of evaluate.py
    out = report.evaluate_workdir("runs/x", protocol="paper")     # the published protocol
    summary = report.compare_runs(["runs/a", "runs/b"], "runs/compare")

or step by step, with the run checked by `keras_vae.runs`:

    config, model = runs.load_run("runs/x")
    test_ds, info = runs.load_split(config, "test")
    results = report.evaluate_run(model, config, test_ds, iwae_samples=100)
    paths = report.write_run_figures(model, config, "runs/x/figures", results=results)

The room has five files: this one (one run's metrics, results.json and its
TensorBoard entries), `protocol` (how much is evaluated, the plan and its
time estimate), `tables` (the printed table), `run_figures` (the figures of
one run, listed there) and `compare` (the comparison of runs: table,
side-by-side grids, latent size against a PCA baseline). Units: nats per
image (DESIGN.md section 4). Everything written is atomic.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging

from keras_vae import callbacks, evaluation, runs, sequence_evaluation
from keras_vae import disentanglement as disentanglement_lib
from keras_vae.callbacks.hparams import evaluate_metrics
from keras_vae.report.compare import COMPARE_COLUMNS_TABLE, compare_runs, format_compare_table
from keras_vae.report.protocol import (
    PROTOCOLS,
    STANDARD,
    Protocol,
    dequantizes,
    describe,
    make_plan,
    resolve_protocol,
)
from keras_vae.report.run_figures import (
    GRID_FILES,
    check_neighbourhood,
    parse_attribute,
    parse_radii,
    write_run_figures,
)
from keras_vae.report.tables import format_table

__all__ = [
    "COMPARE_COLUMNS_TABLE",
    "GRID_FILES",
    "PROTOCOLS",
    "Protocol",
    "check_neighbourhood",
    "compare_runs",
    "dequantizes",
    "describe",
    "evaluate_run",
    "evaluate_workdir",
    "format_compare_table",
    "format_table",
    "make_plan",
    "parse_attribute",
    "parse_radii",
    "resolve_protocol",
    "write_run_figures",
]
# Where evaluate.py's Projector embedding goes: a TensorBoard run of its own
# next to `train` and `validation`, with the first test images.
TEST_PROJECTOR_DIR = os.path.join(runs.TENSORBOARD_DIR, "test")


def evaluate_workdir(
    workdir,
    *,
    protocol="standard",
    test_images=None,
    iwae_images=None,
    iwae_samples=None,
    max_batches=None,
    disentanglement=True,
    disentanglement_points=None,
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
    """Evaluates the run in `workdir`: results.json, TensorBoard entries, figures.

    Everything that can fail without a long computation is checked first:
    the run (`runs.load_run`), the folders to write, the images the data
    gives, the figure options. Then the plan and its estimated time are
    shown (`protocol.describe`) before the metrics (`evaluate_run`) are
    computed and written to WORKDIR/results.json, and the table shown is
    made from that file, so the numbers printed are the ones written. Then
    TensorBoard's Projector gets the codes of the first 1,024 test images
    (`tensorboard/test`) and the HParams session the test metrics
    (`callbacks.hparams.evaluate_metrics`, at the run's last step); last,
    the figures (WORKDIR/figures/).

    Args:
        workdir: a run folder written by train.py.
        protocol: "standard" (minutes) or "paper" (`protocol.PROTOCOLS`).
        test_images, iwae_images, iwae_samples, max_batches,
            disentanglement_points, factor_vae_votes: override the
            protocol's (None: the protocol's); see `Protocol`.
        disentanglement, seed: as `evaluate_run`.
        figures: also write the figures (`write_run_figures`).
        attribute: `parse_attribute`'s spec, e.g. "Smiling" or "label:3".
        neighbourhood_of, num_directions, figure_examples: as `write_run_figures`.
        radius: the neighbourhood radii, numbers or strings (`parse_radii`).
        echo: called with each text for the user as soon as it is ready (the
            plan, the metrics table, then where things went), e.g. `print`;
            None: the plan is logged, the rest not shown.

    Returns:
        dict: `results` (as written), `results_file`, `plan`, `figures`
        (paths), `projector` (`callbacks.write_projector`'s paths).

    Raises:
        UserError: a broken run or folder; UsageError: bad options.
    """
    shown = echo is not None
    echo = echo or (lambda text: None)
    protocol = resolve_protocol(
        protocol,
        test_images=test_images,
        iwae_images=iwae_images,
        iwae_samples=iwae_samples,
        max_batches=max_batches,
        disentanglement_points=disentanglement_points,
        factor_vae_votes=factor_vae_votes,
    )
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
    dequantize = dequantizes(config)
    plan = make_plan(
        model, config, test_ds, info.num_examples, protocol, disentanglement=disentanglement,
        figures=figures, figure_examples=figure_examples, dequantize=dequantize,
    )  # fmt: skip
    text = describe(plan)
    if shown:
        echo(text)
    else:
        logging.info("%s", text)
    start = time.perf_counter()
    results = evaluate_run(
        model,
        config,
        test_ds,
        iwae_samples=protocol["iwae_samples"],
        max_batches=protocol["max_batches"],
        max_examples=protocol["test_images"],
        iwae_examples=protocol["iwae_images"],
        disentanglement=disentanglement,
        disentanglement_points=protocol["disentanglement_points"],
        factor_vae_votes=protocol["factor_vae_votes"],
        seed=seed,
        dequantize=dequantize,
    )
    view = results.pop("views", None)  # a sequence model's (token ids)
    results["protocol"] = protocol
    results["timing"] = {
        "estimated_seconds": round(plan["total_seconds"], 1),
        "metrics_seconds": round(time.perf_counter() - start, 1),
    }
    results_file = os.path.join(workdir, runs.RESULTS_FILE)
    evaluation.write_results(results_file, results)
    with open(results_file) as f:  # what is printed is what was written
        results = json.load(f)
    echo(format_table(results, disentanglement_lib.TABLE_ROWS + sequence_evaluation.TABLE_ROWS))
    echo(f"Results written to {results_file}")
    projector = _write_tensorboard(model, config, workdir, results, info)
    echo(
        f"TensorBoard: the Projector's test codes in {os.path.dirname(projector['config'])}, "
        f"the HParams test metrics in {os.path.join(workdir, runs.TENSORBOARD_DIR)}"
    )
    paths = []
    if figures and view is not None:  # sequences: drawings or text, no image grids
        written = _write_sequence_views(model, view, out_dir, results_file)
        paths = [os.path.join(out_dir, name) for name in written.values()]
        echo(f"{len(paths)} figures written to {out_dir}")
    elif figures:
        paths = write_run_figures(
            model,
            config,
            out_dir,
            results=results,
            attribute=attribute,
            neighbourhood_of=neighbourhood_of,
            radii=radii,
            num_directions=num_directions,
            max_batches=protocol["max_batches"],
            figure_examples=figure_examples,
            seed=seed,
        )
        echo(f"{len(paths)} figures written to {out_dir}")
    elapsed = time.perf_counter() - start
    echo(f"Evaluated in {elapsed / 60:.1f} min (estimated {plan['total_seconds'] / 60:.1f} min).")
    return {
        "results": results,
        "results_file": results_file,
        "plan": plan,
        "figures": paths,
        "projector": projector,
    }


def _write_sequence_views(model, view, out_dir, results_file):
    """A sequence model's views as figures (strokes) or text, listed in results.json."""
    entries = sequence_evaluation.write_views(model, view, out_dir)
    with open(results_file) as f:
        results = json.load(f)
    results.update(entries)
    evaluation.write_results(results_file, results)
    return entries["figures"]


def _write_tensorboard(model, config, workdir, results, info):
    """The Projector's embedding of the first test images and the HParams
    session's test metrics, at the run's last training step."""
    labelled = bool(info.label_names)
    ds, _ = runs.load_split(config, "test", with_labels=labelled)
    paths = callbacks.write_held_out_projector(
        model, os.path.join(workdir, TEST_PROJECTOR_DIR), ds, config.dataset, config.condition
    )
    step = 0
    summary = os.path.join(workdir, runs.SUMMARY_FILE)
    if os.path.isfile(summary):
        with open(summary) as f:
            step = int(json.load(f).get("steps") or 0)
    callbacks.write_final_metrics(
        os.path.join(workdir, runs.TENSORBOARD_DIR), evaluate_metrics(results), step
    )
    return paths


def evaluate_run(
    model,
    config,
    test_ds,
    *,
    iwae_samples=STANDARD.iwae_samples,
    max_batches=None,
    max_examples=STANDARD.test_images,
    iwae_examples=STANDARD.iwae_images,
    disentanglement=True,
    disentanglement_points=STANDARD.disentanglement_points,
    factor_vae_votes=STANDARD.factor_vae_votes,
    seed=None,
    dequantize=None,
    progress=True,
):
    """`evaluation.evaluate_model` on the test split, plus the disentanglement metrics on `shapes`.

    The defaults are the standard protocol's (`protocol.STANDARD`). On shapes
    (the only dataset with ground-truth factors) and latent_dim >= 2: MIG,
    SAP and DCI of one draw of codes and the FactorVAE score
    (`disentanglement.evaluate_on_shapes`, which gives their times).
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
        max_batches, max_examples: evaluate at most this many batches and
            test images, the first ones (None: all).
        iwae_examples: the IWAE bound on the first this many (None: all).
        disentanglement: compute the disentanglement metrics (skipped with an
            info log off shapes or for latent_dim < 2).
        disentanglement_points: disentanglement_lib's `num_train` (10,000):
            MIG's points, SAP's and DCI's train points (with half as many test
            points) and the FactorVAE score's variance points.
        factor_vae_votes: the FactorVAE score's training votes (evaluation
            votes: half; disentanglement_lib: 10,000).
        seed: seed of the evaluation's draws; None is the run's seed.
        dequantize: score dequantized images with 8-bit bits/dim
            (`evaluation.evaluate_model`); None: `dequantizes(config)`.
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
        max_examples=max_examples,
        iwae_examples=iwae_examples,
        dequantize=dequantizes(config) if dequantize is None else dequantize,
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
    if model.is_sequence:  # per token, perplexity, greedy reconstructions
        results = sequence_evaluation.per_token(results, test_ds, max_batches)
        view, accuracy = sequence_evaluation.views_of(model, test_ds, seed=seed)
        results.update(accuracy)
        results["views"] = view
    return results
