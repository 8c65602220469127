"""Tests for experiments/readme_pictures.py: the README's four pictures from a
tiny trained run, their sizes, byte-identical on a rerun, and the fresh-clone
path that trains the default run first."""

import importlib.util
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from keras_vae import latent_grids, plots

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "readme_pictures.py")
# The shapes preset's conv net (latent_dim 10) with narrow layers, 3 training steps.
TINY = dict(
    epochs=1, steps_per_epoch=3, validation_steps=1, eval_steps=1, batch_size=16,
    widths=(8, 8, 16, 16), dense_units=32, export=False,
)  # fmt: skip


def _load_script():
    spec = importlib.util.spec_from_file_location("readme_pictures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grid(rows, cols, side=64, pad=1):
    """(width, height) of `rows x cols` cells of `side` px, `pad` px between (grids.tile)."""
    return cols * side + (cols - 1) * pad, rows * side + (rows - 1) * pad


def _labelled(size):
    """(width, height) of `plots.labelled_grid_figure` around a grid (scale 1 at 64 px)."""
    m = plots.GRID_MARGINS
    return size[0] + m["left"] + m["right"], size[1] + m["top"] + m["bottom"]


# (width, height) of each PNG; all <= 800 px wide.
EXPECTED = {
    # 16 test images over their reconstructions, 8 per row: 4 rows of cells.
    "reconstructions.png": _labelled(_grid(4, 8)),  # (705, 347)
    # 16 prior samples at temperature 1: 2 x 8.
    "samples.png": _labelled(_grid(2, 8)),  # (705, 217)
    # One pair, 8 steps: the linear row over the slerp row, BLOCK_GAP between.
    "interpolation.png": _labelled((_grid(1, 8)[0], 2 * 64 + latent_grids.BLOCK_GAP)),  # (705, 220)
    # The 8 dimensions of most KL (of 10), 9 values from -3 to +3.
    "traversal.png": _labelled(_grid(8, 9)),  # (770, 607)
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from keras_vae import config, training

    workdir = str(tmp_path_factory.mktemp("runs") / "tiny")
    training.train_and_evaluate(config.resolve("shapes", **TINY), workdir, verbose=0)
    return workdir


@pytest.fixture(scope="module")
def script():
    return _load_script()


def _read(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in EXPECTED}


def test_four_pictures_sized_and_identical_on_rerun(tiny_run, script, tmp_path, caplog):
    first, second = tmp_path / "first", tmp_path / "second"
    assert script.main([f"--workdir={tiny_run}", f"--out={first}"]) == 0
    assert sorted(os.listdir(first)) == sorted(EXPECTED)
    for name, size in EXPECTED.items():
        with Image.open(first / name) as image:
            assert image.size == size, name
            assert size[0] <= 800
            # Greyscale (no colour in these figures), with black cells and white paper.
            assert image.mode == "L", name
            pixels = np.asarray(image)
        assert pixels.min() == 0 and pixels.max() == 255, name
        assert os.path.getsize(first / name) < 60_000, name
    # The tiny run is not the default one: the captions would not describe it.
    assert "is not the default shapes run" in caplog.text
    # Fixed seeds, the unshuffled test split: the same bytes again.
    assert script.main([f"--workdir={tiny_run}", f"--out={second}"]) == 0
    assert _read(first) == _read(second)


def test_trains_the_default_run_when_missing(tiny_run, script, tmp_path, monkeypatch):
    workdir = str(tmp_path / "fresh")
    command = script.train_command(workdir)
    assert command == [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={workdir}"]
    trained = []

    def fake_train(path):  # the tiny run stands in for the 7-minute default run
        trained.append(path)
        shutil.copytree(tiny_run, path)

    monkeypatch.setattr(script, "train", fake_train)
    out = tmp_path / "docs"
    assert script.main([f"--workdir={workdir}", f"--out={out}"]) == 0
    assert trained == [workdir]
    assert sorted(os.listdir(out)) == sorted(EXPECTED)
    # A finished run is not trained again.
    assert script.main([f"--workdir={workdir}", f"--out={out}"]) == 0
    assert trained == [workdir]
