"""Tests for keras_vae.plots: PNG sizes to the pixel, grids placed pixel for pixel.

matplotlib only (no model): each figure takes well under a second.
"""

import numpy as np
import pytest
from PIL import Image

from keras_vae import grids, plots, walks


def _png(path):
    """`(width, height)` and the RGB pixels `(height, width, 3)` uint8 of a PNG."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size, np.asarray(image.convert("RGB"))


def _cells(count, side, channels=1, seed=0):
    """`count` random `side x side` float images whose pixels are exact 8-bit levels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, side, side, channels)).astype(np.float64) / 255.0


@pytest.mark.parametrize("cell, scale", [(28, 2), (32, 2), (64, 1), (16, 4), (100, 1), (20, 3)])
def test_display_scale(cell, scale):
    assert plots.display_scale(cell) == scale  # 64 // cell, at least 1


@pytest.mark.parametrize("channels", [1, 3])
def test_save_grid_png_is_pixel_for_pixel(tmp_path, channels):
    grid = grids.tile(_cells(6, 5, channels), cols=3)  # (2 * 5 + 1, 3 * 5 + 2, C) = (11, 17, C)
    path = tmp_path / "grid.png"
    plots.save_grid_png(str(path), grid)
    with Image.open(path) as image:
        assert image.size == (17, 11) and image.mode == ("L" if channels == 1 else "RGB")
        pixels = np.asarray(image)
    expected = grids.to_uint8(grid)
    np.testing.assert_array_equal(pixels, expected[..., 0] if channels == 1 else expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary file left


def test_labelled_grid_figure_size_and_placement(tmp_path):
    # 2 x 3 cells of 28 px, 1 px apart: a (57, 86) grid, shown at scale 64 // 28 = 2.
    grid = grids.tile_rows(_cells(6, 28, seed=1).reshape(2, 3, 28, 28, 1))
    assert grid.shape == (57, 86, 1)
    path = tmp_path / "labelled.png"
    size = plots.labelled_grid_figure(
        str(path), grid, cell_shape=(28, 28), row_labels=["a", "b"],
        col_labels=["x", "y", "z"], title="title", xlabel="z1", ylabel="z2",
    )  # fmt: skip
    m = plots.GRID_MARGINS
    assert size == (2 * 86 + m["left"] + m["right"], 2 * 57 + m["top"] + m["bottom"])  # (358, 202)
    png_size, pixels = _png(path)
    assert png_size == size
    # The grid sits at (left, top), upscaled by pixel repetition: no resampling.
    inside = pixels[m["top"] : m["top"] + 114, m["left"] : m["left"] + 172]
    upscaled = np.repeat(np.repeat(grids.to_uint8(grid), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(inside, np.repeat(upscaled, 3, axis=-1))


def test_block_figure_size(tmp_path):
    block = grids.tile(_cells(16, 32, 3), cols=4)  # (131, 131, 3), shown at scale 2
    blocks = [("first\nrun", block), ("second", block), ("third", block)]
    width = 2 * plots.BLOCK_MARGIN + 3 * 262 + 2 * plots.BLOCK_GAP_PX
    height = 2 * plots.BLOCK_MARGIN + plots.BLOCK_TITLE + 262
    size = plots.block_figure(str(tmp_path / "a.png"), blocks, cell_height=32)
    assert size == (width, height) == (838, 322)
    assert _png(tmp_path / "a.png")[0] == size
    titled = plots.block_figure(str(tmp_path / "b.png"), blocks, cell_height=32, title="t")
    assert titled == (width, height + plots.FIGURE_TITLE)
    assert _png(tmp_path / "b.png")[0] == titled


def test_fixed_size_figures(tmp_path):
    """kl, scatter and latent size figures: their figsize * DPI, whatever they show."""
    assert plots.DPI == 100
    kl = np.array([0.1, 3.0, 0.0, 1.5])
    plots.kl_figure(str(tmp_path / "kl.png"), kl, [0.001, 0.5, 0.0, 0.2], threshold=0.01)
    rng = np.random.default_rng(0)
    points, labels = rng.standard_normal((200, 2)), rng.integers(0, 3, 200)
    plots.scatter_figure(str(tmp_path / "scatter.png"), points, [1, 3], labels, "shape")
    many = rng.integers(0, 40, 200)  # more than 10 values: a colour bar
    plots.scatter_figure(str(tmp_path / "colour_bar.png"), points[:, :1], [0], many, "label")
    rows = [
        dict(name=f"r{d}", network=n, latent_dim=d, reconstruction=100.0 / d, kl=float(d))
        for n in ("mlp", "conv")
        for d in (2, 8, 32)
    ]
    pca = {"bernoulli": {"sizes": [2, 8, 32], "nll": [90.0, 40.0, 20.0]}}
    plots.latent_size_figure(str(tmp_path / "latent_size.png"), rows, pca)
    expected = {
        "kl.png": (700, 400),  # KL_FIGSIZE (7, 4)
        "scatter.png": (600, 500),  # SCATTER_FIGSIZE (6, 5)
        "colour_bar.png": (600, 500),
        "latent_size.png": (1100, 450),  # LATENT_SIZE_FIGSIZE (11, 4.5)
    }
    for name, size in expected.items():
        png_size, pixels = _png(tmp_path / name)
        assert png_size == size, name
        assert pixels.std() > 5.0, name  # something drawn on the white page


def test_run_figures_layout(tmp_path):
    """The labelled figures of a run: one row per radius / direction / image."""
    m = plots.GRID_MARGINS

    def expected(rows, cols, side=16, scale=4):
        grid_h, grid_w = rows * side + rows - 1, cols * side + cols - 1
        return grid_w * scale + m["left"] + m["right"], grid_h * scale + m["top"] + m["bottom"]

    sizes = {}
    image = _cells(1, 16)[0]
    samples = _cells(3 * 8, 16, seed=2).reshape(3, 8, 16, 16, 1)
    sizes["n.png"] = size = plots.neighbourhood_figure(
        str(tmp_path / "n.png"), image, image, samples, (0.25, 0.5, 1.0), 7
    )
    assert size == expected(3, 10)  # input, reconstruction, 8 samples
    decoded = _cells(2 * 7, 16, seed=3).reshape(2, 7, 16, 16, 1)
    sizes["d.png"] = size = plots.directions_figure(
        str(tmp_path / "d.png"), decoded, [1.0, 0.5], np.arange(-3.0, 4.0), 100
    )
    assert size == expected(2, 7)
    decoded = _cells(4 * 5, 16, seed=4).reshape(4, 5, 16, 16, 1)
    sizes["a.png"] = size = plots.attribute_figure(
        str(tmp_path / "a.png"), _cells(4, 16), decoded, row_labels=list("abcd"),
        strengths=np.linspace(-2.0, 2.0, 5), title="v",
    )  # fmt: skip
    assert size == expected(4, 6)  # the input, then 5 strengths
    sizes["m.png"] = size = plots.manifold_figure(
        str(tmp_path / "m.png"), grids.tile(_cells(9, 16), cols=3), cell_shape=(16, 16),
        axis=walks.manifold_axis(3),
    )  # fmt: skip
    assert size == expected(3, 3)
    for name, size in sizes.items():
        assert _png(tmp_path / name)[0] == size, name
