"""What `evaluate.py` computes and draws: metrics, PNG figures, run comparisons.

    from keras_vae import figures, training
    config, model = figures.load_run("runs/x")
    test_ds, info = training.load_split(config, "test", shuffle=False, repeat=False)
    results = figures.evaluate_run(model, config, test_ds, iwae_samples=1000)
    paths = figures.write_run_figures(model, config, "runs/x/figures", results=results)
    summary = figures.compare_runs(["runs/a", "runs/b"], "runs/compare")

Figures of one run (`write_run_figures`), into `WORKDIR/figures/`:

| file | what |
| --- | --- |
| `reconstructions.png` | rows alternate: test inputs, their reconstructions (*) |
| `samples.png` | prior samples, a block at temperature 1.0 over one at 0.7 (*) |
| `interpolation.png` | test pairs: linear rows over slerp rows (*) |
| `traversal.png`, `traversal_origin.png` | one row per latent dimension by KL (*) |
| `manifold.png` | the 2-D manifold, latent_dim == 2 only (*) |
| `manifold_axes.png` | the same with z1 / z2 ticks at the Gaussian quantiles |
| `latent_scatter.png` | posterior means, top-2 dimensions by KL, coloured by a label |
| `kl_per_dim.png` | KL per latent dimension, sorted; active units marked |
| `neighbourhood.png` | samples around one test image's code, one row per radius |
| `principal_directions.png` | walks along the top principal axes of the codes |
| `attribute_vector.png` | an attribute vector added to test codes (labelled data only) |

(*) plain grids, the very pictures of the TensorBoard callback, built by the
same code (`keras_vae.callbacks.image_grids`) on the first 64 test images:
cells of H x W pixels, 1 white pixel between cells, no outer border, blocks
stacked with `callbacks.BLOCK_GAP` pixels between them (see `grids.tile`).

The other figures are matplotlib figures drawn with the Agg canvas (no
pyplot, no global backend change; matplotlib is imported on first use) at
`DPI` dots per inch. Image grids inside them are placed pixel for pixel
(`Figure.figimage`, upscaled by an integer factor for small images, see
`display_scale`), so the saved PNG is exactly `grid + margins` pixels; the
labels are drawn on a transparent axes laid over the grid.

Comparison of runs (`compare_runs`): a table of ELBO, reconstruction, KL,
bits/dim, active units (and the IWAE NLL where a run has `results.json`),
`compare_samples.png`, `compare_reconstructions.png` (one labelled block per
run) and `latent_size.png`, reconstruction and KL against latent_dim with a
PCA baseline (`pca_baseline`).

Units: nats per image (DESIGN.md section 4). Everything written is atomic
(temporary file + rename).
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import keras
import numpy as np
from absl import logging

from keras_vae import latent_grids as callbacks, evaluation, grids, likelihoods
from keras_vae import data as data_lib
from keras_vae import export as export_lib
from keras_vae import files as files_lib
from keras_vae.config import Config, UsageError, UserError

DPI = 100
# Margins in pixels around an image grid in a labelled figure: room for the
# row labels (left), the title (top) and the column labels (bottom).
GRID_MARGINS = {"left": 170, "right": 16, "top": 40, "bottom": 48}
# A block figure (`compare_*.png`): outer margin, gap between blocks, and the
# strip above each block for its two-line label, plus the figure title.
BLOCK_MARGIN = 10
BLOCK_GAP_PX = 16
BLOCK_TITLE = 40
FIGURE_TITLE = 30
# Fixed-size matplotlib figures, inches at `DPI`.
KL_FIGSIZE = (7.0, 4.0)
SCATTER_FIGSIZE = (6.0, 5.0)
LATENT_SIZE_FIGSIZE = (11.0, 4.5)

# Grids of one run, as the callback's tags -> file names.
GRID_FILES = {
    "images/reconstructions": "reconstructions.png",
    "images/samples": "samples.png",
    "images/interpolation": "interpolation.png",
    "images/traversal": "traversal.png",
    "images/traversal_origin": "traversal_origin.png",
    "images/manifold": "manifold.png",
}
# Test images the callback grids are built on (as training uses 64 validation images).
HELD_OUT = 64
# Test images kept in memory for the neighbourhood and attribute figures.
KEEP_IMAGES = 256
MANIFOLD_SIZE = 15  # the callback's default
NEIGHBOURHOOD_SAMPLES = 8
DIRECTION_STEPS = np.arange(-3.0, 4.0)  # -3 .. +3 standard deviations
ATTRIBUTE_STRENGTHS = np.linspace(-2.0, 2.0, 5)
ATTRIBUTE_ROWS = 4
COMPARE_IMAGES = 16  # cells per block of the comparison grids, 4 x 4
COMPARE_COLUMNS = 4
# Bernoulli NLL of a PCA reconstruction: probabilities clipped to
# [eps, 1 - eps], since PCA reconstructions leave [0, 1] and p = 0 or 1 on a
# wrong pixel would cost infinitely many nats.
BERNOULLI_CLIP = 1e-3
# Discretized logistic: the one log-scale of the PCA model is chosen on this
# grid, from the minimum the likelihood allows (PixelCNN++) to e^0 = 1.
_LOG_SCALE_GRID = np.linspace(likelihoods.MIN_LOG_SCALE, 0.0, 50)


# ---------------------------------------------------------------------------
# Files and runs.


def _makedirs(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"Cannot write to {path!r} ({e.strerror}): choose a folder you can write to."
        ) from e


def read_config(workdir):
    """The `Config` of the run in `workdir`; needs `model.keras` there too.

    Raises:
        UserError: no `model.keras` or no readable `config.json` in `workdir`.
    """
    if not os.path.isfile(os.path.join(workdir, "model.keras")):
        raise UserError(
            f"Cannot evaluate {workdir}: no model.keras in {workdir}: train first with "
            f"python train.py --workdir={workdir}"
        )
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UserError(
            f"Cannot evaluate {workdir}: no config.json next to its model.keras; "
            "point --workdir at a folder written by train.py."
        )
    try:
        return Config.from_json_file(path)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"Cannot read {path} ({type(e).__name__}: {e}).") from e
    except UserError as e:  # an unknown key: written by another version
        raise UserError(f"{path} does not match this keras_vae: {e}") from e


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


def _network(model):
    """'conv' if the encoder has a convolution, else 'mlp' (as `networks` builds them)."""
    conv = any(isinstance(layer, keras.layers.Conv2D) for layer in model.encoder.layers)
    return "conv" if conv else "mlp"


def _widths(model, network):
    """The hidden widths `networks.build_encoder` was given, read off the encoder."""
    layers = model.encoder.layers
    if network == "conv":
        return tuple(layer.filters for layer in layers if isinstance(layer, keras.layers.Conv2D))
    heads = ("mean", "raw_log_var")
    return tuple(
        layer.units
        for layer in layers
        if isinstance(layer, keras.layers.Dense) and layer.name not in heads
    )


def model_differences(config, model):
    """`[(field, value in the model, value in the config)]` where they disagree.

    Compares what the loaded model shows of itself: its networks (network,
    latent_dim, widths, dense_units, image_size), likelihood and objective.
    """
    from keras_vae import networks

    arch = _network(model)
    found = {
        "network": (arch, config.network),
        "latent_dim": (int(model.latent_dim), config.latent_dim),
        "likelihood": (model.likelihood, config.likelihood),
        "beta": (model.beta, config.beta),
        "beta_schedule": (model.beta_schedule, config.beta_schedule),
        "free_bits": (model.free_bits, config.free_bits),
        "seed": (model.seed, config.seed),
    }
    if config.likelihood == "gaussian":
        found["gaussian_sigma"] = (model.gaussian_sigma, config.gaussian_sigma)
    if config.image_size is not None:
        found["image_size"] = (model.image_shape[:2], (config.image_size, config.image_size))
    if arch == config.network:  # widths only mean something within one network
        widths = config.widths
        if widths is None:
            widths = (
                networks.DEFAULT_MLP_WIDTHS
                if arch == "mlp"
                else networks.default_conv_widths(model.image_shape)
            )
        found["widths"] = (_widths(model, arch), tuple(widths))
        if arch == "conv":  # dense_units: the first Dense, after the convolutions
            layers = model.encoder.layers
            dense = next(layer for layer in layers if isinstance(layer, keras.layers.Dense))
            found["dense_units"] = (dense.units, config.dense_units)
    if config.likelihood == model.likelihood == "gaussian_learned":
        per_channel = model.decoder.get_layer("log_sigma").per_channel
        found["per_channel_scale"] = (per_channel, config.per_channel_scale)
    return [(k, m, c) for k, (m, c) in found.items() if m != c]


def _mixed_runs(path, workdir, differences):
    """The UserError for a model.keras that another run wrote; `differences`
    are strings like "latent_dim 3 in the model, 2 in config.json"."""
    listing = "; ".join(differences)
    return UserError(
        f"{path} does not match {os.path.join(workdir, 'config.json')} ({listing}): the folder "
        f"mixes two runs. Retrain with python train.py --workdir={workdir} --restart and the "
        "flags of its config.json, or point --workdir at the folder of the run that wrote "
        "this model."
    )


def check_image_shape(workdir, model, image_shape):
    """Raises the mixed-runs UserError if `model` was built for other images
    than the run's data gives (`info.image_shape`)."""
    if tuple(model.image_shape) != tuple(image_shape):
        difference = (
            f"image shape {tuple(model.image_shape)} in the model, {tuple(image_shape)} "
            "from config.json's data"
        )
        raise _mixed_runs(os.path.join(workdir, "model.keras"), workdir, [difference])


def load_run(workdir):
    """`(config, model)` of the run in `workdir`: its `config.json` and `model.keras`.

    The model is checked: a complete file (not truncated), finite weights (not
    a diverged run) and the networks and objective that config.json describes.

    Raises:
        UserError: a missing, unreadable, corrupt or diverged model, or one
            that belongs to another run (the message names the file and the fix).
    """
    config = read_config(workdir)
    path = os.path.join(workdir, "model.keras")
    model = export_lib.load_model(path)
    differences = model_differences(config, model)
    if differences:
        raise _mixed_runs(
            path,
            workdir,
            [f"{k} {m!r} in the model, {c!r} in config.json" for k, m, c in differences],
        )
    return config, model


def load_split(config, split, *, with_labels=False):
    """One split of the run's data, unshuffled, not repeated, optionally with labels."""
    return data_lib.load_for_config(
        config, split, shuffle=False, repeat=False, with_labels=with_labels
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


# ---------------------------------------------------------------------------
# Metrics.


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
        test_ds: its test split, e.g. `training.load_split(config, "test",
            shuffle=False, repeat=False)`.
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
            results["mig"] = evaluation.compute_mig_on_shapes(
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


# ---------------------------------------------------------------------------
# Options of the run figures.


def parse_attribute(spec, label_names):
    """Parses `--attribute`: `NAME` (NAME == 1) or `NAME:VALUE` (NAME == VALUE).

    `NAME` suits binary attributes (CelebA's `Smiling`); `NAME:VALUE` one class
    of a class label against all others (`label:3` on MNIST, `shape:2`, the
    hearts, on shapes). None picks the default: `Smiling` when the dataset
    has it, else `<first label>:1`.

    Args:
        spec: the flag value or None.
        label_names: `DatasetInfo.label_names`.

    Returns:
        `(name, value)`, or None when the dataset has no labels.

    Raises:
        UsageError: a malformed spec or a name the dataset does not have.
    """
    if not label_names:
        return None
    if spec is None:
        return ("Smiling", 1) if "Smiling" in label_names else (label_names[0], 1)
    name, _, value = spec.partition(":")
    if name not in label_names:
        raise UsageError(
            f"--attribute={spec}: this dataset has no label {name!r}. "
            f"Use one of {', '.join(label_names)}, as NAME or NAME:VALUE."
        )
    try:
        return name, int(value) if value else 1
    except ValueError:
        raise UsageError(
            f"--attribute={spec}: the value after ':' must be an integer (e.g. {name}:1)."
        ) from None


def parse_radii(values):
    """`--radius` strings -> tuple of floats > 0; UsageError otherwise."""
    try:
        radii = tuple(float(v) for v in values)
    except ValueError:
        raise UsageError(
            f"--radius must be numbers, e.g. 0.25,0.5,1. Received: {values!r}."
        ) from None
    if not radii or not all(r > 0 and math.isfinite(r) for r in radii):
        raise UsageError(f"--radius must be positive numbers. Received: {values!r}.")
    return radii


def check_neighbourhood(index, info):
    """UsageError unless 0 <= index < size of the test split."""
    if not 0 <= index < info.num_examples:
        raise UsageError(
            f"--neighbourhood_of={index} is not an index of the test split "
            f"({info.num_examples} images): use 0..{info.num_examples - 1}."
        )


def display_scale(cell_height):
    """Integer upscaling of small images in the matplotlib figures (28 px -> 2x)."""
    return max(1, 64 // int(cell_height))


# ---------------------------------------------------------------------------
# Drawing.


def _figure(width_px, height_px):
    """An empty matplotlib `Figure` on an Agg canvas of exactly `width_px x height_px`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The canvas truncates figsize * dpi to int: a hundredth of a pixel more
    # keeps e.g. 29 / 100 * 100 = 28.999... from losing a pixel.
    fig = Figure(figsize=((width_px + 0.01) / DPI, (height_px + 0.01) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    return fig


def _save(fig, path):
    files_lib.atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format="png"))


def _rgb(image, scale=1):
    """`(h, w, C)` float [0, 1] or uint8 -> `(h * scale, w * scale, 3)` uint8."""
    image = grids.to_uint8(image)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3]
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def save_grid_png(path, grid):
    """Writes a `(h, w, C)` grid (float in [0, 1]) as an 8-bit PNG, pixel for pixel."""
    from PIL import Image

    pixels = grids.to_uint8(grid)
    pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    files_lib.atomic_save(path, lambda tmp: Image.fromarray(pixels).save(tmp, format="PNG"))


def _cell_centres(count, size, pad, scale):
    """Pixel centres of `count` cells of `size` px with `pad` px between, upscaled."""
    return [(i * (size + pad) + size / 2.0) * scale for i in range(count)]


def labelled_grid_figure(
    path,
    grid,
    *,
    cell_shape,
    pad=1,
    row_labels=(),
    col_labels=(),
    title=None,
    xlabel=None,
    ylabel=None,
):
    """Saves an image grid with row labels on the left and column labels below.

    The grid is drawn pixel for pixel (upscaled by `display_scale`), so the
    PNG is exactly `(gw * s + left + right, gh * s + top + bottom)` pixels
    with `(gh, gw)` the grid's size, `s` the scale and the margins
    `GRID_MARGINS`.

    Args:
        path: PNG file to write.
        grid: `(gh, gw, C)` float in [0, 1], e.g. from `grids.tile_rows`.
        cell_shape: `(H, W)` of one cell, to centre the labels.
        pad: pixels between cells (as in `grids.tile`).
        row_labels: one label per row of cells (or none).
        col_labels: one label per column of cells (or none).
        title: figure title.
        xlabel, ylabel: axis titles.

    Returns:
        `(width, height)` of the PNG in pixels.
    """
    scale = display_scale(cell_shape[0])
    image = _rgb(grid, scale)  # (gh * s, gw * s, 3)
    gh, gw = image.shape[:2]
    m = GRID_MARGINS
    width, height = gw + m["left"] + m["right"], gh + m["top"] + m["bottom"]
    fig = _figure(width, height)
    # figimage offsets are pixels from the bottom-left corner: no resampling.
    fig.figimage(image, xo=m["left"], yo=m["bottom"], origin="upper")
    # A transparent axes exactly over the grid carries the ticks and labels;
    # data coordinates are the grid's pixels, y downwards like the image.
    ax = fig.add_axes([m["left"] / width, m["bottom"] / height, gw / width, gh / height])
    ax.set_xlim(0, gw)
    ax.set_ylim(gh, 0)
    ax.patch.set_alpha(0.0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_xticks(_cell_centres(len(col_labels), cell_shape[1], pad, scale), list(col_labels))
    ax.set_yticks(_cell_centres(len(row_labels), cell_shape[0], pad, scale), list(row_labels))
    ax.tick_params(labelsize=8, length=2)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9)
    if title:
        fig.text(0.5, 1.0 - 10 / height, title, ha="center", va="top", fontsize=10)
    _save(fig, path)
    return width, height


def block_figure(path, blocks, *, cell_height, title=None):
    """Saves image blocks side by side, each under its own label.

    Args:
        path: PNG file to write.
        blocks: list of `(label, image)`, images `(h, w, C)` float in [0, 1]
            of one size; a label may hold a newline (two lines fit).
        cell_height: height of one cell, for `display_scale`.
        title: figure title (a strip of `FIGURE_TITLE` pixels when given).

    Returns:
        `(width, height)` of the PNG: `(2 * BLOCK_MARGIN + n * w * s + (n - 1) *
        BLOCK_GAP_PX, 2 * BLOCK_MARGIN + BLOCK_TITLE + h * s [+ FIGURE_TITLE])`.
    """
    scale = display_scale(cell_height)
    images = [_rgb(image, scale) for _, image in blocks]
    bh, bw = images[0].shape[:2]
    top = BLOCK_TITLE + (FIGURE_TITLE if title else 0)
    width = 2 * BLOCK_MARGIN + len(blocks) * bw + (len(blocks) - 1) * BLOCK_GAP_PX
    height = 2 * BLOCK_MARGIN + top + bh
    fig = _figure(width, height)
    for i, ((label, _), image) in enumerate(zip(blocks, images, strict=True)):
        left = BLOCK_MARGIN + i * (bw + BLOCK_GAP_PX)
        fig.figimage(image, xo=left, yo=BLOCK_MARGIN, origin="upper")
        fig.text(
            (left + bw / 2) / width,
            (BLOCK_MARGIN + bh + 4) / height,
            label,
            ha="center",
            va="bottom",
            fontsize=8,
            linespacing=1.2,
        )
    if title:
        fig.text(0.5, 1.0 - 8 / height, title, ha="center", va="top", fontsize=10)
    _save(fig, path)
    return width, height


def kl_figure(path, kl_per_dim, variances, threshold):
    """Bar chart of the KL of each latent dimension, largest first.

    Bars of active units (Var_x E_q[z_d] > `threshold`, Burda et al. 2015)
    are blue, collapsed ones grey. Size `KL_FIGSIZE * DPI`.
    """
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    active = np.asarray(variances, dtype=np.float64) > threshold
    order = grids.order_by_kl(kl)
    fig = _figure(KL_FIGSIZE[0] * DPI, KL_FIGSIZE[1] * DPI)
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(len(kl))
    colours = ["tab:blue" if active[d] else "0.7" for d in order]
    ax.bar(positions, kl[order], color=colours, width=0.8)
    ax.set_ylim(0.0, 1.3 * max(float(kl.max()), 1e-6))  # headroom for the legend
    step = max(1, math.ceil(len(kl) / 32))  # at most ~32 tick labels
    ax.set_xticks(
        positions[::step],
        [f"z{d}" for d in order[::step]],
        fontsize=7,
        rotation=90 if len(kl) > 12 else 0,
    )
    ax.set_xlabel("latent dimension (sorted by KL)")
    ax.set_ylabel("KL(q(z_d|x) || p(z_d)) [nats]")
    ax.set_title(
        f"KL per dimension: {int(active.sum())} of {len(kl)} units active "
        f"(Var E_q[z_d] > {threshold:g}); total {kl.sum():.2f} nats",
        fontsize=9,
    )
    from matplotlib.patches import Patch

    ax.legend(
        handles=[
            Patch(color="tab:blue", label=f"active (Var > {threshold:g})"),
            Patch(color="0.7", label="inactive"),
        ],
        fontsize=8,
        loc="upper right",
    )
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.2 if len(kl) > 12 else 0.14, top=0.9)
    _save(fig, path)


def scatter_figure(path, points, dims, colours=None, colour_name=None):
    """Scatter of latent means on two dimensions, coloured by a label if given.

    Up to 10 distinct label values get a legend (tab10 colours), more a
    colour bar. Size `SCATTER_FIGSIZE * DPI`.

    Args:
        path: PNG file.
        points: `(N, 2)` coordinates (`(N, 1)` is drawn against zero).
        dims: the two latent indices shown (for the axis labels).
        colours: optional `(N,)` int labels.
        colour_name: the label's name for the legend title.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.shape[1] == 1:
        points = np.concatenate([points, np.zeros_like(points)], axis=1)
    fig = _figure(SCATTER_FIGSIZE[0] * DPI, SCATTER_FIGSIZE[1] * DPI)
    ax = fig.add_subplot(1, 1, 1)
    style = dict(s=6, alpha=0.6, linewidths=0)
    if colours is None:
        ax.scatter(points[:, 0], points[:, 1], color="tab:blue", **style)
    else:
        colours = np.asarray(colours)
        values = np.unique(colours)
        if len(values) <= 10:
            for i, value in enumerate(values):
                mask = colours == value
                ax.scatter(
                    points[mask, 0],
                    points[mask, 1],
                    color=f"C{i}",
                    label=f"{colour_name}={value}",
                    **style,
                )
            ax.legend(fontsize=7, markerscale=2, loc="best")
        else:
            sc = ax.scatter(points[:, 0], points[:, 1], c=colours, cmap="viridis", **style)
            fig.colorbar(sc, ax=ax, label=colour_name)
    ax.set_xlabel(f"E_q[z{dims[0]}]")
    ax.set_ylabel(f"E_q[z{dims[1]}]" if len(dims) > 1 else "(latent_dim 1)")
    ax.set_title(
        f"Posterior means of {len(points)} test images (top-2 dimensions by KL)", fontsize=9
    )
    fig.subplots_adjust(left=0.12, right=0.95, bottom=0.1, top=0.92)
    _save(fig, path)


# ---------------------------------------------------------------------------
# The figures of one run.


def _codes_and_labels(model, dataset, count):
    """Posterior means and labels of the first `max(count, KEEP_IMAGES)` test
    examples and the first `KEEP_IMAGES` images (fewer if the split is smaller).

    Returns:
        `(means (n, D), labels {name: (n,)}, images (m, H, W, C))`.
    """
    total = max(count, KEEP_IMAGES)
    means, labels, kept, n = [], {}, [], 0
    for batch in dataset:
        x, y = batch if isinstance(batch, tuple) else (batch, {})
        x = np.asarray(x, dtype=np.float32)[: total - n]
        mean, _ = model.encode(x)
        means.append(np.asarray(mean, dtype=np.float32))
        for key, value in (y or {}).items():
            labels.setdefault(key, []).append(np.asarray(value)[: len(x)])
        if n < KEEP_IMAGES:
            kept.append(x[: KEEP_IMAGES - n])
        n += len(x)
        if n >= total:
            break
    if n == 0:
        raise UserError("The test split is empty: nothing to draw.")
    return (
        np.concatenate(means),
        {k: np.concatenate(v) for k, v in labels.items()},
        np.concatenate(kept),
    )


def _image_at(dataset, index, kept):
    """Test image `index`: from `kept` when there, else read from `dataset`."""
    if index < len(kept):
        return kept[index]
    ds = dataset.unbatch().skip(index).take(1)
    for element in ds:
        x = element[0] if isinstance(element, tuple) else element
        return np.asarray(x, dtype=np.float32)
    raise UsageError(f"--neighbourhood_of={index} is beyond the test split.")


def write_run_figures(
    model,
    config,
    out_dir,
    *,
    results,
    attribute=None,
    neighbourhood_of=0,
    radii=(0.5,),
    num_directions=4,
    max_batches=None,
    figure_examples=5000,
    seed=None,
):
    """Writes the figures of the module docstring for one run into `out_dir`.

    Args:
        model: the run's `VAE`.
        config: its `Config`.
        out_dir: folder of the PNG files (created).
        results: `evaluate_run`'s dict (for `kl_per_dim`, `latent_variances`).
        attribute: `(name, value)` from `parse_attribute`, or None for its
            default; only used with labelled data.
        neighbourhood_of: index into the test split of the neighbourhood image.
        radii: radii R of the neighbourhood samples z = mean(x) + R * eps.
        num_directions: principal directions drawn (capped at min(N, D)).
        max_batches: the evaluation's batch limit: the latent figures use at
            most the examples evaluated ...
        figure_examples: ... and at most this many.
        seed: seed of the prior and neighbourhood noise (None: the run's).

    Returns:
        list of the paths written.
    """
    seed = config.seed if seed is None else seed
    _makedirs(out_dir)
    dataset, info = load_split(config, "test", with_labels=True)
    label_names = tuple(info.label_names)
    if attribute is None:
        attribute = parse_attribute(None, label_names)
    count = figure_examples
    if max_batches is not None:
        count = min(count, max_batches * config.batch_size)
    count = max(2, min(count, info.num_examples))
    # The latent figures' statistics use the first `count` codes (the
    # evaluated examples); the image grids the first 64 test images whatever
    # --max_batches, like the TensorBoard callback's fixed held-out batch.
    all_means, all_labels, kept = _codes_and_labels(model, dataset, count)
    means = all_means[:count]
    labels = {k: v[:count] for k, v in all_labels.items()}
    latent_dim = means.shape[1]
    cell = kept.shape[1:3]
    written = []

    def out(name):
        path = os.path.join(out_dir, name)
        written.append(path)
        return path

    # The TensorBoard grids, by the callback's own code, on the first 64 test images.
    held_out = kept[:HELD_OUT]
    if len(held_out) < 2:
        raise UserError("The test split has fewer than 2 images: nothing to draw.")
    colour_name = attribute[0] if attribute else None
    colour_labels = labels.get(colour_name) if colour_name else None
    stats = callbacks.latent_statistics(model, held_out)
    held_out_labels = all_labels.get(colour_name) if colour_name else None
    pairs = callbacks.choose_pairs(
        len(held_out), 4, None if held_out_labels is None else held_out_labels[: len(held_out)]
    )
    tiles = callbacks.image_grids(
        model,
        held_out,
        stats,
        noise=callbacks.prior_noise(16, latent_dim, seed),
        pairs=pairs,
        manifold_size=MANIFOLD_SIZE,
    )
    for tag, grid in tiles.items():
        save_grid_png(out(GRID_FILES[tag]), grid)

    if "images/manifold" in tiles:
        axis = grids.manifold_axis(MANIFOLD_SIZE)
        labelled_grid_figure(
            out("manifold_axes.png"),
            tiles["images/manifold"],
            cell_shape=cell,
            row_labels=[f"{v:.2f}" for v in axis[::-1]],  # z2 grows upwards
            col_labels=[f"{v:.2f}" for v in axis],
            title="Decoded 2-D latent manifold at Gaussian quantiles 0.05 .. 0.95",
            xlabel="z1",
            ylabel="z2",
        )

    # Latent scatter: the two dimensions with the largest KL over the test data.
    kl_per_dim = np.asarray(results["kl_per_dim"], dtype=np.float64)
    dims = [int(d) for d in grids.order_by_kl(kl_per_dim)[:2]]
    scatter_figure(out("latent_scatter.png"), means[:, dims], dims, colour_labels, colour_name)

    kl_figure(
        out("kl_per_dim.png"),
        kl_per_dim,
        results["latent_variances"],
        results.get("active_unit_threshold", evaluation.ACTIVE_UNIT_THRESHOLD),
    )

    _neighbourhood_figure(
        model,
        out("neighbourhood.png"),
        _image_at(dataset, neighbourhood_of, kept),
        neighbourhood_of,
        radii,
        seed,
    )
    _directions_figure(model, out("principal_directions.png"), means, num_directions, cell)

    if attribute is None:
        logging.info("%s has no labels: no attribute_vector.png.", config.dataset)
    else:
        path = os.path.join(out_dir, "attribute_vector.png")
        if _attribute_figure(model, path, means, labels, all_means, all_labels, kept, attribute):
            written.append(path)
    logging.info("Wrote %d figures to %s.", len(written), out_dir)
    return written


def _neighbourhood_figure(model, path, image, index, radii, seed):
    """Input, reconstruction and samples z = mean(x) + R * eps, one row per R.

    The same eps ~ N(0, I) for every row, so the rows differ only by R: a
    small R shows how wide the decoder's neighbourhood of the image is.
    """
    mean, _ = model.encode(image[None])
    mean = np.asarray(mean, dtype=np.float32)[0]  # (D,)
    rng = np.random.default_rng([seed, 1])
    eps = rng.standard_normal((NEIGHBOURHOOD_SAMPLES, mean.shape[0])).astype(np.float32)
    codes = np.concatenate([mean[None]] + [mean + r * eps for r in radii])  # (1 + R*S, D)
    decoded = callbacks.decode_codes(model, codes)
    recon, samples = (
        decoded[0],
        decoded[1:].reshape((len(radii), NEIGHBOURHOOD_SAMPLES) + decoded.shape[1:]),
    )
    rows = [np.concatenate([image[None], recon[None], row]) for row in samples]
    labelled_grid_figure(
        path,
        grids.tile_rows(rows),
        cell_shape=image.shape[:2],
        row_labels=[f"R = {r:g}" for r in radii],
        col_labels=["input", "recon."] + [f"s{j + 1}" for j in range(NEIGHBOURHOOD_SAMPLES)],
        title=f"Samples z = E_q[z|x] + R * eps around test image {index}",
    )


def _directions_figure(model, path, means, num_directions, cell):
    """Rows walk from -3 to +3 standard deviations along each principal axis
    of the test codes, from their mean code."""
    k = min(num_directions, means.shape[0], means.shape[1])
    if k < num_directions:
        logging.info("Principal directions: %d asked, %d exist (min(N, D)).", num_directions, k)
    directions = grids.principal_directions(means, k)  # (k, D)
    centre = means.mean(axis=0).astype(np.float64)  # (D,)
    spread = (means - centre) @ directions.T  # (N, k): coordinates on each axis
    sds = spread.std(axis=0)  # (k,)
    codes = (
        centre[None, None]
        + DIRECTION_STEPS[None, :, None] * sds[:, None, None] * directions[:, None, :]
    )  # (k, steps, D)
    decoded = callbacks.decode_codes(model, codes.reshape(-1, means.shape[1]))
    labelled_grid_figure(
        path,
        grids.tile_rows(decoded.reshape((k, len(DIRECTION_STEPS)) + decoded.shape[1:])),
        cell_shape=cell,
        row_labels=[f"PC{i + 1} (sd {s:.2f})" for i, s in enumerate(sds)],
        col_labels=[f"{t:+g} sd" if t else "mean" for t in DIRECTION_STEPS],
        title=f"Principal directions of {len(means)} test codes, from their mean code",
    )


def _attribute_figure(model, path, means, labels, all_means, all_labels, kept, attribute):
    """Adds the attribute vector to a few test codes at strengths -2 .. +2.

    The vector comes from `means` / `labels` (the evaluated examples); the
    rows are the first kept test images without the attribute (adding it
    should show it), then the first with it (subtracting it should remove
    it). Returns False (with a warning) when one of the two groups is empty.
    """
    name, value = attribute
    mask = labels[name] == value
    try:
        vector = grids.attribute_vector(means, mask)  # (D,)
    except ValueError:
        logging.warning(
            "No attribute_vector.png: %d of %d test codes have %s == %d; both groups "
            "must be non-empty (see --attribute).",
            int(mask.sum()),
            len(mask),
            name,
            value,
        )
        return False
    kept_mask = all_labels[name][: len(kept)] == value
    without = np.flatnonzero(~kept_mask)[: ATTRIBUTE_ROWS // 2]
    with_ = np.flatnonzero(kept_mask)[: ATTRIBUTE_ROWS - len(without)]
    rows_index = np.concatenate([without, with_]).astype(int)
    base = all_means[rows_index]  # (R, D)
    codes = base[:, None, :] + ATTRIBUTE_STRENGTHS[None, :, None] * vector[None, None, :]
    decoded = callbacks.decode_codes(model, codes.reshape(-1, means.shape[1]))
    decoded = decoded.reshape((len(rows_index), len(ATTRIBUTE_STRENGTHS)) + decoded.shape[1:])
    rows = [
        np.concatenate([kept[i][None], row]) for i, row in zip(rows_index, decoded, strict=True)
    ]
    labelled_grid_figure(
        path,
        grids.tile_rows(rows),
        cell_shape=kept.shape[1:3],
        row_labels=[f"image {i} ({name}={int(all_labels[name][i])})" for i in rows_index],
        col_labels=["input"] + [f"{s:+g}" if s else "0" for s in ATTRIBUTE_STRENGTHS],
        title=f"z + s * v, v = mean code with {name}={value} ({int(mask.sum())}) minus "
        f"without ({int((~mask).sum())})",
    )
    return True


# ---------------------------------------------------------------------------
# PCA baseline.


def pca_fit(x, num_components):
    """Principal components of `x`, for a linear reconstruction baseline.

    Eigenvectors of the smaller of the two Gram matrices of the centred data
    (N x N when N < P, else the P x P covariance), in float64.

    Args:
        x: `(N, P)` data, N >= 2.
        num_components: components wanted; at most `min(N - 1, P)` exist
            with a non-zero variance and no more are returned.

    Returns:
        `(mean (P,), components (k, P))`, orthonormal rows by decreasing variance.
    """
    x = np.asarray(x, dtype=np.float64)
    num, dim = x.shape
    mean = x.mean(axis=0)
    centred = x - mean
    k = int(min(num_components, num - 1, dim))
    if num < dim:
        gram = centred @ centred.T  # (N, N)
        values, vectors = np.linalg.eigh(gram)
        values, vectors = values[::-1][:k], vectors[:, ::-1][:, :k]
        # Right singular vectors: v_i = X^T u_i / s_i, s_i = sqrt(lambda_i).
        components = (centred.T @ vectors) / np.sqrt(np.maximum(values, 1e-300))
        components = components.T
    else:
        values, vectors = np.linalg.eigh(centred.T @ centred)  # (P, P)
        components = vectors[:, ::-1][:, :k].T
    return mean, components


def pca_reconstruct(x, mean, components, k):
    """Projects `(N, P)` `x` on the first `k` components and back."""
    x = np.asarray(x, dtype=np.float64)
    basis = components[:k]  # (k, P)
    return mean + ((x - mean) @ basis.T) @ basis


def _nll(likelihood, x, recon, log_scale=None, sigma=None):
    """-log p(x | PCA reconstruction) per image, `(N,)` nats, the runs' likelihood."""
    if likelihood == "bernoulli":
        p = np.clip(recon, BERNOULLI_CLIP, 1.0 - BERNOULLI_CLIP)
        value = likelihoods.bernoulli_log_prob(x, np.log(p) - np.log1p(-p))
    elif likelihood == "gaussian":
        # np.float64: a Python float would become a float32 tensor and round log sigma.
        value = likelihoods.gaussian_log_prob(x, recon, np.float64(math.log(sigma)))
    elif likelihood == "gaussian_learned":
        value = likelihoods.gaussian_log_prob(x, recon, np.float64(log_scale))
    else:
        value = likelihoods.discretized_logistic_log_prob(x, recon, np.float64(log_scale))
    return -np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def _fit_log_scale(likelihood, x, recon):
    """The one log-scale of the PCA model that fits `x` best (maximum likelihood).

    gaussian_learned: closed form, sigma^2 = mean squared residual.
    discretized_logistic: the best value on `_LOG_SCALE_GRID`.
    """
    if likelihood == "gaussian_learned":
        return 0.5 * math.log(max(float(np.mean((x - recon) ** 2)), 1e-12))
    scores = [_nll(likelihood, x, recon, log_scale=s).mean() for s in _LOG_SCALE_GRID]
    return float(_LOG_SCALE_GRID[int(np.argmin(scores))])


def pca_baseline(train, test, sizes, likelihood="gaussian", gaussian_sigma=0.1):
    """Reconstruction error of PCA with k components, for each k in `sizes`.

    PCA is fitted on `train`; each test image is projected on the first k
    components and back (`pca_reconstruct`) and scored in the units of the
    runs' reconstruction term -E_q log p(x|z), nats per image, with
    `likelihood`:

    - bernoulli: the Bernoulli NLL of the reconstruction clipped to
      [`BERNOULLI_CLIP`, 1 - `BERNOULLI_CLIP`] as probabilities;
    - gaussian: -log N(x; reconstruction, sigma^2), the run's fixed sigma;
    - gaussian_learned: the same with one sigma fitted by maximum likelihood
      on the train reconstructions (the runs learn one sigma too);
    - discretized_logistic: the discretized logistic NLL around the
      reconstruction with one log-scale fitted on the train reconstructions.

    Also the squared error summed over pixels (`sse`), whatever the likelihood.

    Args:
        train: `(N, H, W, C)` or `(N, P)` images in [0, 1].
        test: `(M, ...)` images of the same shape.
        sizes: numbers of components k (a run's latent_dim).
        likelihood: a name in `keras_vae.likelihoods.LIKELIHOODS`.
        gaussian_sigma: sigma of the `gaussian` likelihood.

    Returns:
        dict: `sizes`, `components_used` (k capped at the number of components
        the train data has), `nll` and `sse` (lists of mean nats / squared
        error per test image, one per size), `log_scale` (the fitted ones, or
        None), `likelihood`, `train_images`, `test_images`.
    """
    train = np.asarray(train, dtype=np.float64).reshape(len(train), -1)
    test = np.asarray(test, dtype=np.float64)
    shape = test.shape
    test = test.reshape(len(test), -1)
    if likelihood not in likelihoods.LIKELIHOODS:
        raise ValueError(
            f"Expected a likelihood in {sorted(likelihoods.LIKELIHOODS)}. "
            f"Received: likelihood={likelihood!r}"
        )
    mean, components = pca_fit(train, max(sizes))
    image_shape = shape[1:] if len(shape) == 4 else (1, 1, shape[1])  # only for the 4-D ops
    out = {
        "sizes": [int(k) for k in sizes],
        "components_used": [],
        "nll": [],
        "sse": [],
        "log_scale": [],
        "likelihood": likelihood,
        "train_images": len(train),
        "test_images": len(test),
    }
    for k in sizes:
        k_used = min(int(k), len(components))
        recon = pca_reconstruct(test, mean, components, k_used)
        as_images = (-1,) + tuple(image_shape)
        log_scale = None
        if likelihood in ("gaussian_learned", "discretized_logistic"):
            train_recon = pca_reconstruct(train, mean, components, k_used)
            log_scale = _fit_log_scale(
                likelihood, train.reshape(as_images), train_recon.reshape(as_images)
            )
        nll = _nll(
            likelihood,
            test.reshape(as_images),
            recon.reshape(as_images),
            log_scale=log_scale,
            sigma=gaussian_sigma,
        )
        out["components_used"].append(k_used)
        out["nll"].append(float(nll.mean()))
        out["sse"].append(float(np.mean(np.sum((test - recon) ** 2, axis=1))))
        out["log_scale"].append(log_scale)
    return out


# ---------------------------------------------------------------------------
# Comparison of runs.


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


COMPARE_COLUMNS_TABLE = (
    # key, header, format
    ("name", "run", "{}"),
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


def latent_size_figure(path, rows, pca):
    """Reconstruction and KL against latent_dim, one line per network, with PCA.

    Left: the runs' reconstruction term -E_q log p(x|z) and, dashed, the PCA
    baseline with k = latent_dim components in the same units (see
    `pca_baseline`), one line per likelihood. Right: the runs' KL. Size
    `LATENT_SIZE_FIGSIZE * DPI`.
    """
    fig = _figure(LATENT_SIZE_FIGSIZE[0] * DPI, LATENT_SIZE_FIGSIZE[1] * DPI)
    ax_rec, ax_kl = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for arch in sorted({r["network"] for r in rows}):
        group = sorted(
            (r for r in rows if r["network"] == arch), key=lambda r: r["latent_dim"]
        )
        xs = [r["latent_dim"] for r in group]
        ax_rec.plot(xs, [r["reconstruction"] for r in group], "o-", label=f"VAE {arch}")
        ax_kl.plot(xs, [r["kl"] for r in group], "o-", label=f"VAE {arch}")
        for r in group:  # name each point: several runs may share a latent size
            for ax, key in ((ax_rec, "reconstruction"), (ax_kl, "kl")):
                ax.annotate(
                    r["name"],
                    (r["latent_dim"], r[key]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
    for name, base in pca.items():
        ax_rec.plot(
            base["sizes"],
            base["nll"],
            "s--",
            color="0.4",
            label=f"PCA, k = latent_dim ({name} NLL)",
        )
    latent = sorted({r["latent_dim"] for r in rows})
    for ax in (ax_rec, ax_kl):
        if latent[-1] >= 8 * latent[0]:
            ax.set_xscale("log", base=2)
        ax.set_xticks(latent, [str(d) for d in latent])
        ax.set_xlabel("latent_dim")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_rec.set_ylabel("-E_q log p(x|z) [nats / image]")
    ax_rec.set_title("Reconstruction (test); PCA: -log p(x | PCA recon.)", fontsize=9)
    ax_kl.set_ylabel("KL(q(z|x) || p(z)) [nats / image]")
    ax_kl.set_title("KL (test)", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    _save(fig, path)


def compare_runs(workdirs, output, *, max_batches=None, pca_images=2000, seed=0, progress=True):
    """Compares trained runs of one dataset: a table, side-by-side grids, latent size.

    For each run the test metrics come from its `results.json` when present
    (written by `evaluate.py`, with the IWAE NLL), else they are computed
    here: ELBO only (one draw), over `max_batches` test batches. Writes
    into `output`:

    - `compare.json`: the rows, the PCA baseline and what is plotted;
    - `compare.md`: `format_compare_table` of the rows;
    - `compare_samples.png`: 16 prior samples per run (seeded noise), one
      labelled block per run (`block_figure`);
    - `compare_reconstructions.png`: the first 16 test images, then one block
      of their reconstructions per run;
    - `latent_size.png`: `latent_size_figure`, with the PCA baseline fitted
      on the first `pca_images` train images and scored on the first
      `pca_images` test images.

    Args:
        workdirs: run folders (with `config.json` and `model.keras`).
        output: folder to write to (created).
        max_batches: batch limit of the computed metrics (None: all).
        pca_images: train (and test) images of the PCA baseline.
        seed: seed of the prior samples and the computed ELBO.
        progress: progress bars while computing.

    Returns:
        dict: `rows` (one dict per run), `pca` (by likelihood), `files`.

    Raises:
        UsageError: runs on different datasets or image sizes.
        UserError: a folder without a trained run.
    """
    configs = [read_config(w) for w in workdirs]  # before any model is loaded
    _check_comparable(workdirs, configs)
    _makedirs(output)
    check_writable(output, "or pass another --output")  # before the work, not after
    names = [_run_name(w) for w in workdirs]
    if len(set(names)) < len(names):  # same folder names under different parents
        names = [os.path.normpath(w) for w in workdirs]

    test_ds, info = load_split(configs[0], "test")
    inputs, _ = first_examples(test_ds, COMPARE_IMAGES)
    cell = inputs.shape[1:3]
    tile = dict(cols=COMPARE_COLUMNS)
    sample_blocks, recon_blocks = [], [("test images\n(inputs)", grids.tile(inputs, **tile))]
    rows = []
    for workdir, name, config in zip(workdirs, names, configs, strict=True):
        _, model = load_run(workdir)
        check_image_shape(workdir, model, info.image_shape)
        results_path = os.path.join(workdir, "results.json")
        if os.path.isfile(results_path):
            with open(results_path) as f:
                metrics = json.load(f)
            source = "results.json"
        else:
            run_ds, _ = load_split(config, "test")
            metrics = evaluation.evaluate_model(
                model,
                run_ds,
                iwae_samples=0,
                max_batches=max_batches,
                seed=seed,
                progress=progress,
            )
            source = "computed"
        row = {
            "name": name,
            "workdir": workdir,
            "network": config.network,
            "latent_dim": int(model.latent_dim),
            "likelihood": config.likelihood,
            "gaussian_sigma": config.gaussian_sigma,
            "beta": config.beta,
            "source": source,
        }
        for key in (
            "elbo",
            "reconstruction",
            "kl",
            "elbo_bits_per_dim",
            "iwae_nll",
            "iwae_bits_per_dim",
            "iwae_samples",
            "active_units",
            "num_examples",
        ):
            row[key] = metrics.get(key)
        rows.append(row)
        label = f"{name}\n{config.network}, latent_dim {row['latent_dim']}"
        noise = callbacks.prior_noise(COMPARE_IMAGES, row["latent_dim"], seed)
        sample_blocks.append((label, grids.tile(callbacks.decode_codes(model, noise), **tile)))
        mean, _ = model.encode(inputs)
        recon = callbacks.decode_codes(model, np.asarray(mean))
        recon_blocks.append((label, grids.tile(recon, **tile)))
        del model
        keras.backend.clear_session()  # the next run's layers start from a clean graph

    files = {}
    files["compare_samples"] = os.path.join(output, "compare_samples.png")
    block_figure(
        files["compare_samples"],
        sample_blocks,
        cell_height=cell[0],
        title=f"Prior samples (temperature 1, seed {seed})",
    )
    files["compare_reconstructions"] = os.path.join(output, "compare_reconstructions.png")
    block_figure(
        files["compare_reconstructions"],
        recon_blocks,
        cell_height=cell[0],
        title="Reconstructions (decoded posterior means) of the same test images",
    )

    # PCA at the runs' latent sizes, in the units of each likelihood present.
    sizes = sorted({r["latent_dim"] for r in rows})
    train_ds, _ = load_split(configs[0], "train")
    train, _ = first_examples(train_ds, pca_images)
    test, _ = first_examples(test_ds, pca_images)
    pca = {}
    for config in configs:
        key = (
            config.likelihood
            if config.likelihood != "gaussian"
            else (f"gaussian sigma={config.gaussian_sigma:g}")
        )
        if key not in pca:
            pca[key] = pca_baseline(train, test, sizes, config.likelihood, config.gaussian_sigma)
    if len(pca) > 1:
        logging.warning(
            "The runs use different likelihoods (%s): their reconstruction terms "
            "are in different units.",
            ", ".join(pca),
        )
    files["latent_size"] = os.path.join(output, "latent_size.png")
    latent_size_figure(files["latent_size"], rows, pca)

    table = format_compare_table(rows)
    summary = {
        "dataset": configs[0].dataset,
        "rows": rows,
        "pca": pca,
        "latent_size_png": (
            "Left: each run's test reconstruction term -E_q log p(x|z) in nats per image "
            "against latent_dim (one line per network); dashed: PCA with k = latent_dim "
            "components fitted on the first train images, scored on the first test images "
            "as -log p(x | PCA reconstruction) under the runs' likelihood (bernoulli: "
            f"probabilities clipped to [{BERNOULLI_CLIP:g}, {1 - BERNOULLI_CLIP:g}]; gaussian: "
            "the run's sigma; gaussian_learned / discretized_logistic: one scale fitted on "
            "the train images). Right: each run's test KL in nats per image."
        ),
        "files": files,
    }
    files["compare_md"] = os.path.join(output, "compare.md")
    files["compare_json"] = os.path.join(output, "compare.json")
    files_lib.atomic_write_text(
        files["compare_md"], f"# Comparison on {configs[0].dataset}\n\n{table}\n"
    )
    evaluation.write_results(files["compare_json"], summary)
    summary["table"] = table
    return summary
