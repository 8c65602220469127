"""The README's pictures, drawn from a default run: `docs/*.png`.

    python experiments/readme_pictures.py --workdir=runs/readme   # trains it first if missing
    python experiments/readme_pictures.py --workdir=runs/variants/vae --out=/tmp/docs

Loads the run in `--workdir` (a default `python train.py` run: the shapes
preset, 5,000 steps, seed 0) and writes four labelled pictures into `--out`:

- `reconstructions.png`: 16 test images (rows 1, 3) over their reconstructions;
- `samples.png`: 16 prior samples, z ~ N(0, I) from a fixed seed;
- `interpolation.png`: linear and spherical, between the codes of the two of
  those 16 test images that lie farthest apart (of different shapes);
- `traversal.png`: around test image 0's code, one row per latent dimension,
  the 8 of most KL.

Every image comes from the library's own recipes: the grids of
`keras_vae.latent_grids.image_grids` (the TensorBoard and evaluate.py
pictures, one batched decode) on the first 64 test images, labelled by
`keras_vae.plots.labelled_grid_figure`. Fixed seeds and the unshuffled test
split: a rerun writes byte-identical files.

When `--workdir` holds no finished run (no train_summary.json), the default
run is trained there first with `python train.py --workdir=...` (about 7 min
on 2 CPU cores; an interrupted one resumes).
"""

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # run as a script from anywhere: import this checkout's keras_vae
    sys.path.insert(0, REPO)
if __name__ == "__main__":  # an entry point: TensorFlow's start-up lines off stderr
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_VAE_QUIET_IMPORT", "1")

import numpy as np  # noqa: E402
from absl import logging  # noqa: E402

from keras_vae import data as data_lib  # noqa: E402
from keras_vae import files as files_lib  # noqa: E402
from keras_vae import latent_grids, plots, runs, walks  # noqa: E402
from keras_vae.config import UserError, resolve  # noqa: E402
from keras_vae.data import shapes  # noqa: E402

FILES = ("reconstructions.png", "samples.png", "interpolation.png", "traversal.png")
HELD_OUT = 64  # first test images the grids are built on (as evaluate.py's figures)
COLUMNS = 8  # cells per row: with the labels' margins, 705 px wide
NUM_RECONSTRUCTIONS = 16  # 2 rows of inputs, each over its reconstructions
NUM_SAMPLES = 16  # 2 rows, at temperature 1
SEED = 0  # of the prior noise
INTERPOLATION_STEPS = 8
TRAVERSAL_ROWS = 8  # the dimensions of most KL (the default run has 8 active units)
TRAVERSAL_INDEX = 0  # the test image whose code is traversed
TRAVERSAL_VALUES = walks.traversal_values(-3.0, 3.0, 9)  # image_grids' default walk


def train_command(workdir):
    """The default run's training command: `python train.py --workdir=WORKDIR`."""
    return [sys.executable, os.path.join(REPO, "train.py"), f"--workdir={workdir}"]


def train(workdir):
    """Trains (or resumes) the default run in `workdir`; its output goes to the terminal."""
    command = train_command(workdir)
    logging.info("No finished run in %s: training it (about 7 min on 2 CPU cores): %s",
                 workdir, " ".join(command))  # fmt: skip
    proc = subprocess.run(command, check=False)
    if proc.returncode != 0:
        raise UserError(f"Training the default run in {workdir} failed (exit {proc.returncode}).")


def _check_default(config):
    """Warns unless `config` is the default run's (the README's captions say so)."""
    given, default = config.to_dict(), resolve("shapes").to_dict()
    differ = [key for key in given if given[key] != default[key]]
    if differ:
        logging.warning(
            "%s is not the default shapes run (%s differ): the README's captions will not "
            "describe these pictures.", config.dataset, ", ".join(differ),
        )  # fmt: skip


def _shape_name(labels, index):
    return shapes.SHAPE_NAMES[int(labels["shape"][index])] if "shape" in labels else None


def _named(index, labels):
    """"test image 3 (heart)", or "test image 3" without shape labels."""
    name = _shape_name(labels, index)
    return f"test image {index}" + (f" ({name})" if name else "")


def farthest_pair(means, labels=None):
    """`(1, 2)` indices of the two codes farthest apart (Euclidean), of
    different labels when `labels` has two; the smaller index first."""
    means = np.asarray(means, dtype=np.float64)  # (n, D)
    distance = np.linalg.norm(means[:, None] - means[None], axis=-1)  # (n, n)
    if labels is not None and len(np.unique(labels)) > 1:
        distance[np.asarray(labels)[:, None] == np.asarray(labels)[None]] = -1.0
    i, j = np.unravel_index(np.argmax(distance), distance.shape)
    return np.array([[min(i, j), max(i, j)]], dtype=np.int64)


def to_greyscale(path):
    """Rewrites the PNG at `path` as 8-bit greyscale when it has no colour and
    no transparency (these figures: black, white, grey), 2-3x smaller."""
    from PIL import Image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGBA"))  # (h, w, 4)
    rgb, alpha = pixels[..., :3], pixels[..., 3]
    if (alpha == 255).all() and (rgb == rgb[..., :1]).all():
        grey = Image.fromarray(np.ascontiguousarray(rgb[..., 0]))
        files_lib.atomic_save(path, lambda tmp: grey.save(tmp, format="PNG", optimize=True))


def draw(workdir, out_dir):
    """Writes `FILES` into `out_dir` from the run in `workdir`; returns their paths."""
    config, model = runs.load_run(workdir)
    _check_default(config)
    dataset, _ = runs.load_split(config, "test", with_labels=True)
    images, labels = runs.first_examples(dataset, HELD_OUT)  # (64, H, W, C), {name: (64,)}
    condition = None  # a cvae's labels of the images (each grid says which it decodes with)
    if model.conditional:
        condition = np.asarray(data_lib.condition_labels(labels, config.condition))
    stats = latent_grids.latent_statistics(
        model, images, max_traversal_dims=TRAVERSAL_ROWS, labels=condition
    )
    # The pair of the reconstructed images whose codes lie farthest apart (of
    # different shapes): the interpolation with the most to show.
    shown = slice(0, NUM_RECONSTRUCTIONS)
    shape_labels = labels["shape"][shown] if "shape" in labels else None
    pairs = farthest_pair(stats["mean"][shown], shape_labels)
    noise = latent_grids.prior_noise(NUM_SAMPLES, stats["mean"].shape[1], SEED)  # (16, D)
    tiles = latent_grids.image_grids(
        model,
        images,
        stats,
        noise=noise,
        pairs=pairs,
        temperatures=(1.0,),
        num_reconstructions=NUM_RECONSTRUCTIONS,
        interpolation_steps=INTERPOLATION_STEPS,
        traversal_steps=len(TRAVERSAL_VALUES),
        traversal_range=float(TRAVERSAL_VALUES[-1]),
        traversal_index=TRAVERSAL_INDEX,
        columns=COLUMNS,
        condition=condition,
    )
    cell = images.shape[1:3]
    runs.makedirs(out_dir)
    paths = [os.path.join(out_dir, name) for name in FILES]
    recon, samples, interp, trav = paths

    plots.labelled_grid_figure(
        recon,
        tiles["images/reconstructions"],
        cell_shape=cell,
        row_labels=["test image", "reconstruction"] * (NUM_RECONSTRUCTIONS // COLUMNS),
        xlabel=f"the first {NUM_RECONSTRUCTIONS} images of the test split (never trained on)",
        title="Held-out test images and their reconstructions, decode(E[z|x])",
    )
    plots.labelled_grid_figure(
        samples,
        tiles["images/samples"],
        cell_shape=cell,
        row_labels=[f"draws {r + 1}-{r + COLUMNS}" for r in range(0, NUM_SAMPLES, COLUMNS)],
        xlabel=f"z ~ N(0, I), numpy seed {SEED}",
        title=f"Samples from the prior: decode(z) of {NUM_SAMPLES} random codes z",
    )
    a, b = (int(i) for i in pairs[0])
    t = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)
    plots.labelled_grid_figure(
        interp,
        tiles["images/interpolation"],
        cell_shape=cell,
        row_labels=["linear", "spherical"],
        col_labels=[f"{v:.2f}".rstrip("0").rstrip(".") for v in t],
        xlabel="t, from the first code (0) to the second (1)",
        title=f"From {_named(a, labels)} to {_named(b, labels)}: their codes interpolated",
    )
    dims = stats["traversal_dims"]
    kl = stats["kl_per_dim"]
    plots.labelled_grid_figure(
        trav,
        tiles["images/traversal"],
        cell_shape=cell,
        row_labels=[
            f"z{d}" + ("" if kl is None else f" (KL {kl[d]:.2f})") for d in dims
        ],
        col_labels=[f"{v:+g}" if v else "0" for v in TRAVERSAL_VALUES],
        xlabel="value given to the row's dimension (the others stay)",
        title=f"Traversal around the code of {_named(TRAVERSAL_INDEX, labels)}, "
        "most KL (nats) first",
    )
    for path in paths:
        to_greyscale(path)
    return paths


def _is_finished(workdir):
    return os.path.isfile(os.path.join(workdir, runs.SUMMARY_FILE))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", default="runs/readme",
        help="a default run (python train.py); trained there first when not finished",
    )  # fmt: skip
    parser.add_argument("--out", default=os.path.join(REPO, "docs"), help="folder of the PNGs")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        if not _is_finished(args.workdir):
            train(args.workdir)
        paths = draw(args.workdir, args.out)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path}  {os.path.getsize(path):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
