"""Tests for keras_vae.report: the real `evaluate.py` end to end on tiny trained
runs (its plan, results.json against precise references, the table it prints,
TensorBoard's Projector and HParams entries, every figure, --compare), its
errors, and strict JSON out."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from evaluate_helpers import bound_references, check_bounds, check_printed_table
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from keras_vae import baselines, evaluation, latent_grids, plots, report
from keras_vae import runs as runs_lib  # `runs` is the fixture of trained runs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVALUATE = os.path.join(REPO, "evaluate.py")
# Quick settings: 16 batches of 16 test images (256: enough that a K = 8
# bound tells from the ELBO, see `test_results_json`), K = 8, MIG on 500 points.
SMALL = ["--iwae_samples=8", "--max_batches=16", "--mig_points=500"]
SMALL_IMAGES = 256
# The shapes preset's conv net with narrow layers, 3 training steps.
TINY = dict(
    epochs=1, steps_per_epoch=3, validation_steps=1, eval_steps=1, batch_size=16,
    widths=(8, 8, 16, 16), dense_units=32,
)  # fmt: skip
SIDE = 64  # shapes images are 64 x 64 x 1
PAD = 1  # grids.tile's separator, as the callback uses it
GAP = latent_grids.BLOCK_GAP  # between row blocks (sample temperatures, linear / slerp)


def _run(args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, EVALUATE, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _grid(rows, cols, side=SIDE):
    """(height, width) of `rows x cols` cells with PAD between them (grids.tile)."""
    return rows * side + (rows - 1) * PAD, cols * side + (cols - 1) * PAD


def _labelled(grid_hw):
    """(width, height) of `plots.labelled_grid_figure` around a grid (scale 1 at 64 px)."""
    m = plots.GRID_MARGINS
    return grid_hw[1] + m["left"] + m["right"], grid_hw[0] + m["top"] + m["bottom"]


def _one_error_line(proc):
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained shapes runs: latent_dim 2 (has the manifold) and 3."""
    from keras_vae import config, training

    root = tmp_path_factory.mktemp("runs")
    workdirs = {}
    for latent_dim in (2, 3):
        workdir = str(root / f"conv-d{latent_dim}")
        # No SavedModel (~2 s a run): nothing here reads one.
        cfg = config.resolve("shapes", latent_dim=latent_dim, export=False, **TINY)
        training.train_and_evaluate(cfg, workdir, verbose=0)
        workdirs[latent_dim] = workdir
    return workdirs


@pytest.fixture(scope="module")
def evaluated(runs):
    """evaluate.py on the latent_dim-2 run (so --compare finds its results.json)."""
    workdir = runs[2]
    proc = _run([f"--workdir={workdir}", *SMALL, "--radius=0.25,0.5,1", "--attribute=shape:2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


def test_results_json(evaluated):
    workdir, proc = evaluated
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["num_examples"] == SMALL_IMAGES  # --max_batches=16 x batch_size 16
    assert results["iwae_num_examples"] == SMALL_IMAGES
    assert results["iwae_samples"] == 8 and results["latent_dim"] == 2
    assert results["image_shape"] == [64, 64, 1] and results["dataset"] == "shapes"
    # The standard protocol, changed by the flags given; the time it took.
    protocol = results["protocol"]
    assert protocol["name"] == "standard" and protocol["max_batches"] == 16
    assert protocol["overrides"] == ["disentanglement_points", "iwae_samples", "max_batches"]
    assert (protocol["test_images"], protocol["iwae_images"]) == (10_000, 1_000)
    assert protocol["disentanglement_points"] == 500 and protocol["factor_vae_votes"] == 500
    assert results["timing"]["estimated_seconds"] > 0 and results["timing"]["metrics_seconds"] > 0
    # Units: bits/dim = nats / (64 * 64 * 1 * ln 2) (Bernoulli: no dequantization).
    dims_ln2 = 64 * 64 * 1 * math.log(2)
    assert results["elbo_bits_per_dim"] == pytest.approx(-results["elbo"] / dims_ln2, rel=1e-12)
    assert results["iwae_bits_per_dim"] == pytest.approx(results["iwae_nll"] / dims_ln2, rel=1e-12)
    assert "dequantized" not in results and "bits_per_dim_note" not in results
    # ELBO = -(reconstruction + KL); the KL is the sum of its dimensions.
    assert -results["elbo"] == pytest.approx(results["reconstruction"] + results["kl"], rel=1e-6)
    assert len(results["kl_per_dim"]) == 2 and min(results["kl_per_dim"]) >= 0
    assert sum(results["kl_per_dim"]) == pytest.approx(results["kl"], rel=1e-4, abs=1e-5)
    # The bounds against precise references on the same 256 test images.
    _, model = runs_lib.load_run(workdir)
    cfg = runs_lib.read_config(workdir)
    images, _ = runs_lib.first_examples(runs_lib.load_split(cfg, "test")[0], SMALL_IMAGES)
    check_bounds(results, bound_references(model, images))
    assert len(results["latent_variances"]) == 2
    assert results["active_units"] == sum(v > 0.01 for v in results["latent_variances"])
    # Every disentanglement metric, on 500 points (SAP/DCI test points and
    # FactorVAE evaluation votes: half), finite; a 3-step model is far from
    # the ceilings (MIG 0.895, SAP 0.23, DCI 1 on the true factors).
    metrics = ("mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
               "factor_vae_score")  # fmt: skip
    for key in metrics:
        assert np.isfinite(results[key]) and 0.0 <= results[key] <= 1.0, (key, results[key])
    assert results["mig"] < 0.5 and results["dci_disentanglement"] < 0.9, results
    assert results["mig_points"] == 500
    # The table on stdout shows results.json's numbers, after the plan.
    check_printed_table(proc.stdout, results)


def _scalars(log_dir):
    """`{tag: [(step, value), ...]}` of the scalars of one TensorBoard run folder."""
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    return {
        tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


def test_tensorboard_projector_and_hparams_metrics(evaluated):
    """evaluate.py's TensorBoard entries, read back as TensorBoard reads them."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
    from werkzeug import test as werkzeug_test

    workdir, _ = evaluated
    tensorboard = os.path.join(workdir, "tensorboard")
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    # HParams: the session folder's scalars at the run's last step (3 steps),
    # the IWAE NLL and every disentanglement metric, float32 of results.json's.
    final = _scalars(tensorboard)
    expected = {"test/iwae_nll": "iwae_nll", "test/iwae_bits_per_dim": "iwae_bits_per_dim"}
    expected.update({f"disentanglement/{k}": k for k in (
        "mig", "sap", "dci_disentanglement", "dci_completeness", "dci_informativeness",
        "factor_vae_score")})  # fmt: skip
    for tag, key in expected.items():
        assert final[tag] == [(3, pytest.approx(results[key], rel=1e-6, abs=1e-7))], tag
    # train.py's own test metrics stay (same step, other tags).
    assert [step for step, _ in final["test/elbo"]] == [3]
    # The Projector: the first 1,024 test images, their means by the saved
    # model, their factors and sprite; listed as a run next to validation.
    test_dir = os.path.join(tensorboard, "test")
    cfg = runs_lib.read_config(workdir)
    _, model = runs_lib.load_run(workdir)
    images, labels = runs_lib.first_examples(
        runs_lib.load_split(cfg, "test", with_labels=True)[0], 1024
    )
    stored = tf.train.load_checkpoint(os.path.join(test_dir, "latent_mean.ckpt-1"))
    codes = stored.get_tensor("latent_mean/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_allclose(codes, np.asarray(model.encode(images)[0]), rtol=0, atol=1e-5)
    with open(os.path.join(test_dir, "metadata.tsv")) as f:
        rows = f.read().splitlines()
    assert rows[0] == "shape\tscale\torientation\tpos_x\tpos_y" and len(rows) == 1025
    assert rows[1].split("\t")[1:] == [str(int(labels[k][0])) for k in
                                       ("scale", "orientation", "pos_x", "pos_y")]  # fmt: skip
    assert Image.open(os.path.join(test_dir, "sprite.png")).size == (2048, 2048)  # 32 x 64 px
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(tensorboard)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, tensorboard)
    apps = ProjectorPlugin(
        base_plugin.TBContext(logdir=tensorboard, data_provider=provider, multiplexer=mux)
    ).get_plugin_apps()
    listed = werkzeug_test.Client(apps["/runs"]).get("/runs").get_data()
    assert sorted(json.loads(listed)) == ["test", "validation"]


def test_every_figure_with_its_size(evaluated):
    workdir, _ = evaluated
    # Expected (width, height) in pixels.
    expected = {
        # The callback's grids on the first 64 test images (see test_callbacks):
        # 32 inputs + 32 reconstructions, 8 per row, alternating rows: 8 x 8 cells.
        "reconstructions.png": _grid(8, 8)[::-1],  # (519, 519)
        # 16 samples per temperature (1.0, 0.7), 2 x 8 each, GAP between.
        "samples.png": (_grid(2, 8)[1], 2 * _grid(2, 8)[0] + GAP),  # (519, 262)
        # 4 pairs x 10 steps, linear block over slerp block.
        "interpolation.png": (_grid(4, 10)[1], 2 * _grid(4, 10)[0] + GAP),  # (649, 522)
        # One row per latent dimension (2), 9 values.
        "traversal.png": _grid(2, 9)[::-1],  # (584, 129)
        "traversal_origin.png": _grid(2, 9)[::-1],
        "manifold.png": _grid(15, 15)[::-1],  # (974, 974)
        # matplotlib figures: grid + GRID_MARGINS, or figsize * DPI.
        "manifold_axes.png": _labelled(_grid(15, 15)),  # (1160, 1062)
        # 3 radii; input, reconstruction and 8 samples per row.
        "neighbourhood.png": _labelled(_grid(3, 10)),  # (835, 282)
        # min(4, D=2) directions x 7 steps (-3 .. +3 sd).
        "principal_directions.png": _labelled(_grid(2, 7)),  # (640, 217)
        # 2 images without shape 2 + 2 with; input and 5 strengths.
        "attribute_vector.png": _labelled(_grid(4, 6)),  # (575, 347)
        "latent_scatter.png": (600, 500),  # SCATTER_FIGSIZE (6, 5) * 100 dpi
        "kl_per_dim.png": (700, 400),  # KL_FIGSIZE (7, 4) * 100 dpi
    }
    assert plots.DPI == 100
    assert plots.SCATTER_FIGSIZE == (6.0, 5.0) and plots.KL_FIGSIZE == (7.0, 4.0)
    assert sorted(os.listdir(os.path.join(workdir, "figures"))) == sorted(expected)
    for name, size in expected.items():
        with Image.open(os.path.join(workdir, "figures", name)) as image:
            assert image.format == "PNG"
            assert image.size == size, (name, image.size, size)
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        # Not blank: at least two grey levels and some contrast (0..255 scale).
        assert len(np.unique(pixels)) >= 2 and pixels.std() > 5.0, (name, pixels.std())


def test_grid_pngs_show_the_test_images(evaluated, runs):
    """The first input row of reconstructions.png is the first 8 test images, exactly."""
    from keras_vae import config as config_lib

    workdir, _ = evaluated
    cfg = config_lib.Config.from_json_file(os.path.join(workdir, "config.json"))
    images, _ = runs_lib.first_examples(runs_lib.load_split(cfg, "test")[0], 8)  # (8, 64, 64, 1)
    with Image.open(os.path.join(workdir, "figures", "reconstructions.png")) as image:
        grid = np.asarray(image)  # (519, 519), mode L
    for j in range(8):
        cell = grid[:SIDE, j * (SIDE + PAD) : j * (SIDE + PAD) + SIDE]
        # Binary shapes images: 0 or 1 -> 0 or 255 exactly.
        np.testing.assert_array_equal(cell, np.round(images[j, ..., 0] * 255).astype(np.uint8))


def test_compare(evaluated, runs, tmp_path):
    out = tmp_path / "compare"
    proc = _run(["--compare", runs[2], runs[3], f"--output={out}", "--max_batches=1",
                 "--pca_images=64"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "compare.json") as f:
        summary = json.load(f)
    rows = {row["latent_dim"]: row for row in summary["rows"]}
    assert sorted(rows) == [2, 3]
    # The evaluated run is read from its results.json (with the IWAE NLL) ...
    with open(os.path.join(runs[2], "results.json")) as f:
        results = json.load(f)
    assert rows[2]["source"] == "results.json"
    assert rows[2]["elbo"] == results["elbo"] and rows[2]["iwae_nll"] == results["iwae_nll"]
    # ... the other computed here: ELBO only, on --max_batches=1 batch of 16.
    assert rows[3]["source"] == "computed" and rows[3]["iwae_nll"] is None
    assert rows[3]["num_examples"] == 16 and rows[3]["elbo"] < 0
    assert rows[3]["elbo_bits_per_dim"] == pytest.approx(
        -rows[3]["elbo"] / (4096 * math.log(2)), rel=1e-12
    )
    # PCA baseline in Bernoulli nats at k = 2 and 3, fitted on 64 train images.
    pca = summary["pca"]["bernoulli"]
    assert pca["sizes"] == [2, 3] and pca["components_used"] == [2, 3]
    assert pca["train_images"] == 64 and pca["test_images"] == 64
    assert all(0 < v < 4096 * -math.log(baselines.BERNOULLI_CLIP) for v in pca["nll"])
    assert all(v > 0 for v in pca["sse"])
    # The table: stdout and compare.md, header + rule + one line per run.
    with open(out / "compare.md") as f:
        table = [line for line in f.read().splitlines() if line.startswith("|")]
    assert len(table) == 4 and "conv-d2" in table[2] and "conv-d3" in table[3]
    assert table[2] in proc.stdout
    # Blocks of 4 x 4 cells (259 px) with margins, gaps and label strips.
    block = _grid(4, 4)[0]
    height = 2 * plots.BLOCK_MARGIN + plots.BLOCK_TITLE + plots.FIGURE_TITLE + block

    def width(n):
        return 2 * plots.BLOCK_MARGIN + n * block + (n - 1) * plots.BLOCK_GAP_PX

    expected = {
        "compare_samples.png": (width(2), height),  # (554, 349)
        "compare_reconstructions.png": (width(3), height),  # inputs + 2 runs: (829, 349)
        "latent_size.png": (1100, 450),  # LATENT_SIZE_FIGSIZE (11, 4.5) * 100 dpi
    }
    for name, size in expected.items():
        with Image.open(out / name) as image:
            assert image.size == size, (name, image.size, size)
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert len(np.unique(pixels)) >= 2 and pixels.std() > 5.0, name


def test_compare_of_different_datasets_exits_2(runs, tmp_path):
    other = tmp_path / "mnist-run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"dataset": "mnist", "network": "mlp"}))
    (other / "model.keras").write_bytes(b"")  # never loaded: the datasets are checked first
    proc = _run(["--compare", runs[2], str(other), f"--output={tmp_path / 'out'}"])
    assert proc.returncode == 2
    line = _one_error_line(proc)
    assert "one dataset" in line and "conv-d2=shapes" in line and "mnist-run=mnist" in line
    assert not (tmp_path / "out").exists()


def test_empty_workdir_exits_1(tmp_path):
    proc = _run([f"--workdir={tmp_path}"])
    assert proc.returncode == 1
    line = _one_error_line(proc)
    assert line.endswith(
        f"no model.keras in {tmp_path}: train first with python train.py --workdir={tmp_path}"
    )


@pytest.mark.parametrize(
    "args, words",
    [
        ([], "--workdir is required"),
        (["--max_batches=0"], "max_batches"),
        (["--workdir=x", "stray"], "unexpected arguments"),
    ],
)
def test_usage_errors_exit_2(args, words):
    proc = _run(args)
    assert proc.returncode == 2
    assert words in _one_error_line(proc)


@pytest.mark.parametrize(
    "flag, words",
    [
        ("--attribute=label:3", "no label 'label'"),
        ("--radius=0.5,-1", "--radius must be positive"),
        ("--neighbourhood_of=73728", "0..73727"),  # the shapes test split has 73,728 images
    ],
)
def test_bad_figure_flags_exit_2_before_evaluating(runs, flag, words):
    proc = _run([f"--workdir={runs[3]}", *SMALL, flag])
    assert proc.returncode == 2
    assert words in _one_error_line(proc)
    # Checked before the evaluation: nothing was written.
    assert not os.path.exists(os.path.join(runs[3], "results.json"))


def test_parse_attribute():
    names = ("shape", "scale")
    assert report.parse_attribute(None, names) == ("shape", 1)
    assert report.parse_attribute("shape:2", names) == ("shape", 2)
    assert report.parse_attribute("scale", names) == ("scale", 1)
    assert report.parse_attribute(None, ("Bald", "Smiling")) == ("Smiling", 1)
    assert report.parse_attribute("Smiling", ()) is None  # no labels: no attribute
    from keras_vae.config import UsageError

    with pytest.raises(UsageError, match="no label 'label'"):
        report.parse_attribute("label:3", names)
    with pytest.raises(UsageError, match="must be an integer"):
        report.parse_attribute("shape:heart", names)


# ---------------------------------------------------------------------------
# Strict JSON out.


def _strict(text):
    """json.loads that refuses NaN, Infinity and -Infinity."""

    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_write_results_is_strict_json(tmp_path):
    path = tmp_path / "results.json"
    evaluation.write_results(
        str(path), {"elbo": float("nan"), "kl": np.float32("inf"), "values": [1.5, -math.inf]}
    )
    assert _strict(path.read_text()) == {"elbo": None, "kl": None, "values": [1.5, None]}


def test_compare_json_is_strict(runs, tmp_path):
    """A run whose results.json holds NaN (written by an older version): null in compare.json."""
    # A copy of the latent_dim-3 run, which evaluate.py never evaluates here.
    other = str(tmp_path / "other")
    shutil.copytree(runs[3], other)
    results = {"elbo": float("nan"), "reconstruction": 2800.0, "kl": 1.5, "iwae_nll": math.inf,
               "active_units": 0, "num_examples": 16}  # fmt: skip
    with open(os.path.join(other, "results.json"), "w") as f:
        f.write(json.dumps(results))  # NaN and Infinity tokens
    out = tmp_path / "compare"
    report.compare_runs([runs[3], other], str(out), max_batches=1, pca_images=16, progress=False)
    summary = _strict((out / "compare.json").read_text())
    row = summary["rows"][1]
    assert row["source"] == "results.json"
    assert row["elbo"] is None and row["iwae_nll"] is None and row["reconstruction"] == 2800.0
    assert summary["rows"][0]["source"] == "computed" and summary["rows"][0]["elbo"] < 0


# ---------------------------------------------------------------------------
# Runs without a likelihood bound (the autoencoder) in a comparison.


def test_compare_rows_of_a_run_without_a_likelihood_bound(tmp_path):
    from keras_vae.report import compare

    note = evaluation.NO_BOUND_NOTE
    rows = [
        dict(name="ae", variant="ae", network="conv", latent_dim=4, likelihood="bernoulli",
             reconstruction=80.0, kl=None, elbo=None, note=note, num_examples=16),
        dict(name="vae", variant="vae", network="conv", latent_dim=4, likelihood="bernoulli",
             reconstruction=90.0, kl=20.0, elbo=-110.0, num_examples=16),
    ]  # fmt: skip
    table = report.format_compare_table(rows).splitlines()
    assert table[2].startswith("| ae | ae | conv | 4 | bernoulli | - | 80.00 | - |")
    assert compare.format_notes(rows) == f"\n- ae: {note}\n"
    assert compare.format_notes(rows[1:]) == ""
    # The latent-size figure draws the autoencoder's reconstruction, no KL point.
    path = str(tmp_path / "latent_size.png")
    plots.latent_size_figure(path, rows, {})
    with Image.open(path) as image:
        assert image.size == (1100, 450)
