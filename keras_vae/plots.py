"""Matplotlib figures and PNG grids of the evaluation: arrays in, PNG files out.

    from keras_vae import plots
    plots.save_grid_png("grid.png", grid)                 # pixel for pixel
    plots.labelled_grid_figure("walk.png", grid, cell_shape=(28, 28), row_labels=...)
    plots.kl_figure("kl.png", kl_per_dim, variances, threshold=0.01)

No model and no TensorFlow here: `keras_vae.report` computes the images and
numbers, this module draws them.

Plain grids (`save_grid_png`) are the `(h, w, C)` arrays of `keras_vae.grids`
written as 8-bit PNG files, one pixel per array element. The other figures are
matplotlib figures drawn with the Agg canvas (no pyplot, no global backend
change; matplotlib is imported on first use) at `DPI` dots per inch. Image
grids inside them are placed pixel for pixel (`Figure.figimage`, upscaled by
an integer factor for small images, see `display_scale`), so the saved PNG is
exactly `grid + margins` pixels; the labels are drawn on a transparent axes
laid over the grid.

Everything is written atomically (`keras_vae.files`: temporary file + rename).
"""

from __future__ import annotations

import math

import numpy as np

from keras_vae import files as files_lib
from keras_vae import grids, walks

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
# `prior_comparison_figure`: inches per run (column), and the height.
PRIOR_COLUMN_WIDTH, PRIOR_HEIGHT = 4.0, 12.5


def display_scale(cell_height):
    """Integer upscaling of small images in the matplotlib figures (28 px -> 2x)."""
    return max(1, 64 // int(cell_height))


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
    order = walks.order_by_kl(kl)
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


def scatter_figure(path, points, dims, colours=None, colour_name=None, ranked_by="KL"):
    """Scatter of latent means on two dimensions, coloured by a label if given.

    Up to 10 distinct label values get a legend (tab10 colours), more a
    colour bar. Size `SCATTER_FIGSIZE * DPI`.

    Args:
        path: PNG file.
        points: `(N, 2)` coordinates (`(N, 1)` is drawn against zero).
        dims: the two latent indices shown (for the axis labels).
        colours: optional `(N,)` int labels.
        colour_name: the label's name for the legend title.
        ranked_by: what chose the two dimensions, for the title.
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
        f"Posterior means of {len(points)} test images (top-2 dimensions by {ranked_by})",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.12, right=0.95, bottom=0.1, top=0.92)
    _save(fig, path)


# ---------------------------------------------------------------------------
# The labelled figures of one run (`keras_vae.report.write_run_figures`).


def manifold_figure(path, grid, *, cell_shape, axis):
    """The decoded 2-D manifold with z1 / z2 ticks at `axis` (its Gaussian quantiles)."""
    return labelled_grid_figure(
        path,
        grid,
        cell_shape=cell_shape,
        row_labels=[f"{v:.2f}" for v in axis[::-1]],  # z2 grows upwards
        col_labels=[f"{v:.2f}" for v in axis],
        title="Decoded 2-D latent manifold at Gaussian quantiles 0.05 .. 0.95",
        xlabel="z1",
        ylabel="z2",
    )


def neighbourhood_figure(path, image, recon, samples, radii, index):
    """One row per radius R: the input, its reconstruction, the samples at R.

    Args:
        path: PNG file.
        image, recon: `(H, W, C)` the test image and its reconstruction.
        samples: `(len(radii), S, H, W, C)` decoded z = E_q[z|x] + R * eps.
        radii: the radii R, one per row.
        index: the test image's index, for the title.
    """
    rows = [np.concatenate([image[None], recon[None], row]) for row in samples]
    return labelled_grid_figure(
        path,
        grids.tile_rows(rows),
        cell_shape=image.shape[:2],
        row_labels=[f"R = {r:g}" for r in radii],
        col_labels=["input", "recon."] + [f"s{j + 1}" for j in range(samples.shape[1])],
        title=f"Samples z = E_q[z|x] + R * eps around test image {index}",
    )


def directions_figure(path, decoded, sds, steps, num_codes, decoded_as=None):
    """One row per principal direction, from -3 to +3 standard deviations.

    Args:
        path: PNG file.
        decoded: `(k, len(steps), H, W, C)` images along each direction.
        sds: `(k,)` standard deviation of the codes along each direction.
        steps: the offsets in standard deviations (0 is the mean code).
        num_codes: how many test codes the directions come from.
        decoded_as: a conditional model's label of every code, in words.
    """
    given = f", decoded as {decoded_as}" if decoded_as else ""
    return labelled_grid_figure(
        path,
        grids.tile_rows(decoded),
        cell_shape=decoded.shape[2:4],
        row_labels=[f"PC{i + 1} (sd {s:.2f})" for i, s in enumerate(sds)],
        col_labels=[f"{t:+g} sd" if t else "mean" for t in steps],
        title=f"Principal directions of {num_codes} test codes, from their mean code{given}",
    )


def attribute_figure(path, inputs, decoded, *, row_labels, strengths, title):
    """Rows of a test image followed by z + s * v decoded at each strength s.

    Args:
        path: PNG file.
        inputs: `(R, H, W, C)` the test images.
        decoded: `(R, len(strengths), H, W, C)`.
        row_labels: one per image.
        strengths: the strengths s.
        title: the figure title (what v is).
    """
    rows = [np.concatenate([x[None], row]) for x, row in zip(inputs, decoded, strict=True)]
    return labelled_grid_figure(
        path,
        grids.tile_rows(rows),
        cell_shape=inputs.shape[1:3],
        row_labels=row_labels,
        col_labels=["input"] + [f"{s:+g}" if s else "0" for s in strengths],
        title=title,
    )


# ---------------------------------------------------------------------------
# The comparison of runs (`keras_vae.report.compare_runs`).


def latent_size_figure(path, rows, pca):
    """Reconstruction and KL against latent_dim, one line per network, with PCA.

    Left: the runs' reconstruction term -E_q log p(x|z) and, dashed, the PCA
    baseline with k = latent_dim components in the same units (see
    `keras_vae.baselines.pca_baseline`), one line per likelihood. Right: the
    runs' KL. Size `LATENT_SIZE_FIGSIZE * DPI`.

    Args:
        path: PNG file.
        rows: dicts with `name`, `network`, `latent_dim`, `reconstruction`, `kl`
            (None for a model without one, e.g. the autoencoder: not drawn)
            and optionally `variant` (default `vae`): one line per variant
            and network.
        pca: `{label: pca_baseline(...)}`.
    """
    fig = _figure(LATENT_SIZE_FIGSIZE[0] * DPI, LATENT_SIZE_FIGSIZE[1] * DPI)
    ax_rec, ax_kl = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    lines = sorted({(r.get("variant", "vae"), r["network"]) for r in rows})
    for i, (variant, arch) in enumerate(lines):  # one colour per line in both panels
        group = sorted(
            (r for r in rows if (r.get("variant", "vae"), r["network"]) == (variant, arch)),
            key=lambda r: r["latent_dim"],
        )
        for ax, key in ((ax_rec, "reconstruction"), (ax_kl, "kl")):
            points = [r for r in group if r.get(key) is not None]
            if not points:
                continue
            xs, ys = [r["latent_dim"] for r in points], [r[key] for r in points]
            ax.plot(xs, ys, "o-", color=f"C{i}", label=f"{variant.upper()} {arch}")
            for r in points:  # name each point: several runs may share a latent size
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
        if ax.get_legend_handles_labels()[0]:  # none when no run has a KL
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax_rec.set_ylabel("-E_q log p(x|z) [nats / image]")
    ax_rec.set_title("Reconstruction (test); PCA: -log p(x | PCA recon.)", fontsize=9)
    ax_kl.set_ylabel("KL(q(z|x) || p(z)) [nats / image]")
    ax_kl.set_title("KL (test)", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    _save(fig, path)


def prior_comparison_figure(path, panels):
    """Why decoding z ~ N(0, I) needs q(z) near N(0, I): one column per run.

    Rows: prior samples; linear interpolations between test codes; samples of
    the aggregate posterior q(z) = E_x q(z|x) (an autoencoder's codes) on z0,
    z1 over the N(0, I) circles at 1, 2, 3 sd; the mean +- sd of q(z) per
    dimension over the N(0, 1) band. Size `(PRIOR_COLUMN_WIDTH * n,
    PRIOR_HEIGHT) * DPI` for n runs.

    Args:
        path: PNG file.
        panels: dicts with `label`; `samples`, `interpolation` (grids `(h, w,
            C)` in [0, 1]); `z` `(N, D)` samples of q(z); `mean`, `variance`
            `(D,)` of q(z); `kl` (nats) of N(mean, diag variance) to N(0, I).
    """
    fig = _figure(PRIOR_COLUMN_WIDTH * len(panels) * DPI, PRIOR_HEIGHT * DPI)
    grid = fig.add_gridspec(
        4, len(panels), height_ratios=(1.0, 0.55, 1.0, 0.6), hspace=0.45, wspace=0.3,
        left=0.06, right=0.98, top=0.93, bottom=0.04,
    )  # fmt: skip
    circle = np.linspace(0.0, 2.0 * np.pi, 200)
    for j, panel in enumerate(panels):
        for row, key, title in ((0, "samples", f"{panel['label']}\nprior samples, z ~ N(0, I)"),
                                (1, "interpolation", "linear interpolation, test codes")):
            ax = fig.add_subplot(grid[row, j])
            ax.imshow(_rgb(panel[key]), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(title, fontsize=9)
        z = np.asarray(panel["z"], dtype=np.float64)
        z = z if z.shape[1] > 1 else np.concatenate([z, np.zeros_like(z)], axis=1)
        ax = fig.add_subplot(grid[2, j])
        ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.4, linewidths=0, label=f"q(z), {len(z)} codes")
        for r in (1, 2, 3):
            ax.plot(r * np.cos(circle), r * np.sin(circle), "--", color="tab:red", lw=0.8,
                    label="N(0, I): 1, 2, 3 sd" if r == 1 else None)  # fmt: skip
        lim = 1.1 * max(3.5, float(np.percentile(np.abs(z[:, :2]), 99.5)))
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal", xlabel="z0", ylabel="z1")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title("aggregate posterior q(z) of test images", fontsize=9)
        ax = fig.add_subplot(grid[3, j])
        dims = np.arange(len(panel["mean"]))
        ax.axhspan(-1.0, 1.0, color="0.88", label="N(0, 1): 0 +- 1")
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.errorbar(dims, panel["mean"], yerr=np.sqrt(panel["variance"]), fmt="o", ms=3,
                    capsize=2, label="q(z): mean +- sd")  # fmt: skip
        step = max(1, math.ceil(len(dims) / 16))
        ax.set_xticks(dims[::step], [f"z{d}" for d in dims[::step]], fontsize=7)
        ax.legend(fontsize=7, loc="best", framealpha=0.7)
        ax.set_title(f"KL(N(mean, var) || N(0, I)) = {panel['kl']:.1f} nats", fontsize=9)
    fig.text(0.5, 0.995, "Decoding the prior works only where q(z) covers N(0, I)",
             ha="center", va="top", fontsize=11)  # fmt: skip
    _save(fig, path)
