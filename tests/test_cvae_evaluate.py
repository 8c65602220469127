"""evaluate.py on a conditional VAE (`--model=cvae`) run, end to end: results.json
bounds log p(x|y), every figure encodes and decodes with the images' labels,
samples_per_class.png, and --compare of a cvae with a vae.

The runs are tiny shapes runs trained in-process (as tests/test_report.py's,
whose settings and helpers these reuse); evaluate.py runs as the real script.
"""

import json
import math
import os

import keras
import numpy as np
import pytest
from evaluate_helpers import bound_references, check_bounds, check_printed_table
from PIL import Image
from test_report import SMALL, SMALL_IMAGES, TINY, _grid, _labelled, _run

from keras_vae import config as config_lib
from keras_vae import data as data_lib
from keras_vae import evaluation, grids, latent_grids, plots, report, runs, training
from keras_vae.report import run_figures

LATENT = 3
SIDE = 64  # shapes images are 64 x 64 x 1
SHAPE_NAMES = ["square", "ellipse", "heart"]  # keras_vae.data.shapes.SHAPE_NAMES


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A cvae conditioned on `shape` (the default on shapes) and a vae, latent_dim 3."""
    root = tmp_path_factory.mktemp("runs")
    workdirs = {}
    for model in ("cvae", "vae"):
        workdirs[model] = str(root / model)
        cfg = config_lib.resolve("shapes", model=model, latent_dim=LATENT, export=False, **TINY)
        training.train_and_evaluate(cfg, workdirs[model], verbose=0)
    return workdirs


# test_report's quick settings (the bounds on 256 images with K = 8), with the
# disentanglement metrics on 100 points and 50 FactorVAE votes instead of 500
# and 500 (~9 of evaluate.py's 25 s): these tests check MIG's range and the
# factors scored, not the metrics' values (test_report.py checks 500 and 500).
CVAE_SMALL = [arg for arg in SMALL if not arg.startswith("--mig_points=")] + [
    "--mig_points=100", "--factor_vae_votes=50",
]  # fmt: skip


@pytest.fixture(scope="module")
def evaluated(trained):
    """The real evaluate.py on the cvae run (figures included)."""
    proc = _run([f"--workdir={trained['cvae']}", *CVAE_SMALL])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(trained["cvae"], "results.json")) as f:
        return json.load(f), proc


@pytest.mark.slow
def test_results_json_bounds_log_p_x_given_y(evaluated, trained):
    results, proc = evaluated
    assert results["num_examples"] == SMALL_IMAGES and results["iwae_samples"] == 8
    for key in ("elbo", "iwae_nll", "kl", "elbo_bits_per_dim", "iwae_bits_per_dim"):
        assert math.isfinite(results[key]), key
    assert results["elbo"] < 0 < results["iwae_nll"]
    assert -results["elbo"] == pytest.approx(results["reconstruction"] + results["kl"], rel=1e-6)
    # The bounds against precise references of log p(x|y) on the same 256
    # test images with their labels (test_report.check_bounds); with other
    # labels, the references would be other numbers.
    config, model = runs.load_run(trained["cvae"])
    ds, _ = runs.load_split(config, "test", with_condition=True)
    batches = list(ds.take(SMALL_IMAGES // config.batch_size))
    images = np.concatenate([np.asarray(x) for x, _ in batches])
    labels = np.concatenate([np.asarray(y) for _, y in batches])
    check_bounds(results, bound_references(model, images, labels))
    check_printed_table(proc.stdout, results)
    # What the bound is on, in results.json and on stdout.
    assert results["conditional"] is True and results["conditioned_on"] == "shape"
    assert results["note"] == evaluation.CONDITIONAL_NOTE
    assert "ELBO (<= log p(x|y)) [nats]" in proc.stdout
    assert "IWAE NLL (-log p(x|y)) [nats]" in proc.stdout and "log p(x))" not in proc.stdout
    # MIG scores the factors the label does not give.
    assert 0.0 <= results["mig"] <= 1.0
    assert results["mig_factors"] == ["scale", "orientation", "pos_x", "pos_y"]


@pytest.mark.slow
def test_figures_of_a_cvae(evaluated, trained):
    figures = os.path.join(trained["cvae"], "figures")
    # Those of a vae with latent_dim 3 (no manifold), plus samples_per_class.png.
    assert sorted(os.listdir(figures)) == sorted(
        [
            "reconstructions.png", "samples.png", "interpolation.png", "traversal.png",
            "traversal_origin.png", "latent_scatter.png", "kl_per_dim.png",
            "neighbourhood.png", "principal_directions.png", "attribute_vector.png",
            "samples_per_class.png",
        ]
    )  # fmt: skip
    # A row per shape (3 classes) x the first 8 prior codes, with row labels:
    # (519 + 170 + 16, 194 + 40 + 48) pixels.
    with Image.open(os.path.join(figures, "samples_per_class.png")) as image:
        assert image.size == _labelled(_grid(3, run_figures.SAMPLES_PER_CLASS)) == (705, 282)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 5.0  # not blank


def _amplified(workdir, factor=1000.0):
    """The run's model with the decoder's weights from the condition scaled by
    `factor`: a tiny run's decoder hardly depends on the label, this one does,
    so a figure decoded with the wrong label shows it (measured, prior samples
    of two classes: 1.3 grey levels apart on average unscaled, 28-36 at 1000)."""
    config, model = runs.load_run(workdir)
    decoder = model.decoder
    names = [layer.name for layer in decoder.layers]
    # The first Dense after the concatenation of [z, condition] (networks.py).
    dense = next(
        layer
        for layer in decoder.layers[names.index("with_condition") + 1 :]
        if isinstance(layer, keras.layers.Dense)
    )
    kernel, bias = dense.get_weights()  # kernel (latent_dim + 3, units): z rows, then c rows
    kernel[LATENT:] *= factor
    dense.set_weights([kernel, bias])
    return config, model


def _png(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.int64)


def _decode(model, codes, labels):
    """uint8 images `(n, H, W)` of `model.decode(codes, labels)`, as the figures have them."""
    images = np.clip(np.asarray(model.decode(codes, labels=labels)), 0.0, 1.0)
    return grids.to_uint8(images)[..., 0].astype(np.int64)


@pytest.mark.slow
def test_figures_decode_with_the_labels_of_their_images(evaluated, trained, tmp_path):
    results, _ = evaluated
    config, model = _amplified(trained["cvae"])
    out = str(tmp_path / "figures")
    report.write_run_figures(model, config, out, results=results, max_batches=1, seed=0)
    # samples_per_class.png: row r is the first 8 prior codes decoded as class r.
    noise = latent_grids.prior_noise(16, LATENT, 0)[: run_figures.SAMPLES_PER_CLASS]
    panel = _png(os.path.join(out, "samples_per_class.png"))
    top, left = plots.GRID_MARGINS["top"], plots.GRID_MARGINS["left"]
    rows = []
    for r in range(3):
        expected = _decode(model, noise, np.full(len(noise), r))  # (8, 64, 64)
        for j, cell in enumerate(expected):
            y, x = top + r * (SIDE + 1), left + j * (SIDE + 1)
            got = panel[y : y + SIDE, x : x + SIDE]
            assert np.abs(got - cell).max() <= 1, (r, j)  # rounding of one batch vs another
        rows.append(expected)
    # The rows differ: a figure decoded with one label for all would fail above.
    assert np.abs(rows[0] - rows[1]).mean() > 5 and np.abs(rows[1] - rows[2]).mean() > 5
    # reconstructions.png: cell j of row 2 is test image j decoded from
    # E_q[z | x_j, y_j] with its own label y_j (its shape).
    test_ds, _ = runs.load_split(config, "test", with_labels=True)
    images, labels = runs.first_examples(test_ds, 8)
    shape = np.asarray(data_lib.condition_labels(labels, "shape"))  # (8,)
    assert len(set(shape.tolist())) > 1  # several classes among them
    mean, _ = model.encode(images, labels=shape)
    expected = _decode(model, mean, shape)
    wrong = _decode(model, mean, (shape + 1) % 3)
    grid = _png(os.path.join(out, "reconstructions.png"))
    for j in range(8):
        got = grid[SIDE + 1 : 2 * SIDE + 1, j * (SIDE + 1) : j * (SIDE + 1) + SIDE]
        assert np.abs(got - expected[j]).max() <= 1, j
        assert np.abs(got - wrong[j]).mean() > 1, j


@pytest.mark.slow
def test_compare_cvae_with_vae(evaluated, trained, tmp_path):
    out = tmp_path / "compare"
    proc = _run(["--compare", trained["cvae"], trained["vae"], f"--output={out}",
                 "--max_batches=1", "--pca_images=64"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "compare.json") as f:
        cvae, vae = json.load(f)["rows"]
    assert (cvae["variant"], vae["variant"]) == ("cvae", "vae")
    assert (cvae["condition"], vae["condition"]) == ("shape", None)
    assert cvae["source"] == "results.json" and vae["source"] == "computed"
    assert math.isfinite(cvae["elbo"]) and math.isfinite(vae["elbo"])
    assert cvae["note"] == evaluation.CONDITIONAL_NOTE and vae["note"] is None
    assert cvae["aggregate_posterior"]["images"] == 1000
    assert math.isfinite(cvae["aggregate_posterior"]["kl_to_prior"])
    # The table names both variants, one row each, and why the cvae's bound differs.
    table = [line for line in (out / "compare.md").read_text().splitlines() if line[:1] == "|"]
    assert table[0].startswith("| run | variant |")
    assert table[2].startswith("| cvae | cvae | conv | 3 |")
    assert table[3].startswith("| vae | vae | conv | 3 |")
    assert f"- cvae: {evaluation.CONDITIONAL_NOTE}" in proc.stdout
    with Image.open(out / "compare_samples.png") as image:
        assert image.size[0] > image.size[1]  # two blocks side by side


def test_class_names():
    class Model:  # what `_class_name` reads of a model
        def __init__(self, multi_hot=False):
            self.multi_hot = multi_hot

    def names(dataset, condition, rows, multi_hot=False):
        config = config_lib.resolve(dataset, model="cvae", condition=condition)
        return [run_figures._class_name(Model(multi_hot), config, r) for r in rows]

    assert names("shapes", "shape", [0, 1, 2]) == SHAPE_NAMES
    assert names("shapes", "scale", [0, 5]) == ["scale 0", "scale 5"]
    assert names("mnist", "label", [0, 9]) == ["digit 0", "digit 9"]
    assert names("cifar10", "label", [3]) == ["label 3"]
    assert names("celeb_a", "Smiling", [0, 1]) == ["not Smiling", "Smiling"]
    assert names("celeb_a", "attributes", [None, 0, 31], multi_hot=True) == [
        "no attribute", "5_o_Clock_Shadow", "Smiling",
    ]  # fmt: skip
