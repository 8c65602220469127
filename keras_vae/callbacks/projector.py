"""TensorBoard's Embedding Projector: the latent means of held-out images.

`write_projector` puts into one TensorBoard run folder what the Projector
plugin reads:

- `projector_config.pbtxt`: the embedding, its metadata and sprite
  (`visualize_embeddings`);
- `checkpoint`, `latent_mean.ckpt-1.*`: the codes `(N, D)`, a
  `tf.train.Checkpoint` of one variable;
- `metadata.tsv`: one row per image, its labels or factors (a header row
  when there is more than one column);
- `sprite.png`: the images, row by row in a square atlas of at most
  8192 px a side.

The plugin lists only folders that TensorBoard knows as runs, i.e. that hold
an event file: `train_and_evaluate` writes into `tensorboard/validation`
(where the held-out images come from), and `write_projector` writes a short
text summary into a folder that has no event file yet. One embedding per
folder: a second call replaces the first.

`metadata_columns` turns a batch's labels (`keras_vae.data.load(...,
with_labels=True)`) into columns a user colours the points by: on shapes
`shape` (its name), `scale`, `orientation`, `pos_x`, `pos_y` (factor
indices); on mnist and svhn_cropped `digit`; on CelebA the 40 attributes
(0/1); on the other labelled datasets `label`.
"""

from __future__ import annotations

import glob
import math
import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins import projector

from keras_vae import files, sequence_views
from keras_vae.data import condition_labels, shapes
from keras_vae.latent_grids import encode_means

EMBEDDING = "latent_mean"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"
MAX_SPRITE_SIDE = 8192  # the Projector's limit for a sprite atlas, in pixels
NUM_IMAGES = 1024  # held-out images of a run's projector (a 2048 px atlas at 64 x 64)

# The label named `label` is a digit on these datasets.
_DIGIT_DATASETS = ("mnist", "svhn_cropped")


def metadata_columns(labels, dataset):
    """The Projector's metadata columns of a batch's labels.

    Args:
        labels: dict of `(N,)` int arrays, the labels of `N` images as
            `keras_vae.data.load(..., with_labels=True)` yields them.
        dataset: the dataset's name (`Config.dataset`).

    Returns:
        `{column: [N values]}` (shapes' `shape` as names, `label` renamed
        `digit` on mnist and svhn_cropped), in the labels' order; `{}` for
        a dataset without labels.
    """
    columns = {}
    for name, values in labels.items():
        values = np.asarray(values).reshape(-1)
        if dataset in ("shapes", "strokes") and name == "shape":
            columns[name] = [shapes.SHAPE_NAMES[int(v)] for v in values]
        elif dataset in _DIGIT_DATASETS and name == "label":
            columns["digit"] = [int(v) for v in values]
        else:
            columns[name] = [v.item() for v in values]
    return columns


def sprite_atlas(images, max_side=MAX_SPRITE_SIDE):
    """The images as one square atlas, row by row, as the Projector reads it.

    Args:
        images: `(N, H, W, C)` floats in [0, 1] (or uint8), C in (1, 3, 4).
        max_side: the atlas's largest side; images are shrunk (area
            averaging) to fit.

    Returns:
        `(atlas, (width, height))`: uint8 `(k*h, k*w, C)` with
        k = ceil(sqrt(N)) cells a side (the cells after the N-th are black),
        and one cell's size, the config's `single_image_dim`.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            "Expected `images` of shape (N, H, W, C) with N >= 1 and C in (1, 3, 4). "
            f"Received: images.shape={images.shape}"
        )
    if images.dtype != np.uint8:
        images = np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)
    n, height, width, channels = images.shape
    cells = math.ceil(math.sqrt(n))
    scale = min(1.0, max_side / (cells * max(height, width)))
    if scale < 1.0:
        height, width = max(1, int(height * scale)), max(1, int(width * scale))
        resized = tf.image.resize(tf.cast(images, tf.float32), (height, width), method="area")
        images = np.round(resized.numpy()).astype(np.uint8)
    atlas = np.zeros((cells * height, cells * width, channels), np.uint8)
    for i, image in enumerate(images):
        row, col = divmod(i, cells)
        atlas[row * height : (row + 1) * height, col * width : (col + 1) * width] = image
    return atlas, (width, height)


def _metadata_text(metadata, n):
    """TSV of `metadata`: a header row only with more than one column (the
    Projector reads a single column as labels without one)."""
    names = list(metadata)
    for name in names:
        if len(metadata[name]) != n:
            raise ValueError(
                f"Expected {n} values (one per code) in metadata column {name!r}. "
                f"Received: {len(metadata[name])}"
            )

    def cell(value):
        return " ".join(str(value).split())  # no tab or newline inside a cell

    rows = [[cell(metadata[name][i]) for name in names] for i in range(n)]
    if len(names) > 1:
        rows.insert(0, [cell(name) for name in names])
    return "".join("\t".join(row) + "\n" for row in rows)


def _ensure_event_file(log_dir, n, columns):
    """TensorBoard lists a folder as a run (and the Projector looks into it)
    only when it holds an event file: write one if there is none."""
    if glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        return
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=0):
        tf.summary.text(
            "projector",
            f"Embedding Projector: the {EMBEDDING} of {n} images"
            + (f", metadata columns {', '.join(columns)}." if columns else "."),
        )
    writer.close()


def write_projector(log_dir, codes, images=None, metadata=None, name=EMBEDDING):
    """Writes an embedding for TensorBoard's Projector into the run folder `log_dir`.

    Args:
        log_dir: a TensorBoard run folder (created if missing; given an event
            file if it has none, so the Projector finds it).
        codes: `(N, D)` the points, e.g. latent means.
        images: optional `(N, H, W, C)` images of the points, floats in
            [0, 1] or uint8, for the sprite (`sprite_atlas`).
        metadata: optional `{column: [N values]}`, e.g. `metadata_columns`.
        name: the embedding's (and the checkpoint variable's) name.

    Returns:
        dict of the written paths: `config`, `checkpoint` (its prefix), and
        `metadata` and `sprite` when given.
    """
    codes = np.asarray(codes, dtype=np.float32)
    if codes.ndim != 2 or codes.shape[0] < 1:
        raise ValueError(f"Expected `codes` of shape (N, D). Received: {codes.shape}")
    n = codes.shape[0]
    if images is not None and len(images) != n:
        raise ValueError(f"Expected {n} images, one per code. Received: {len(images)}")
    os.makedirs(log_dir, exist_ok=True)
    _ensure_event_file(log_dir, n, list(metadata or ()))
    # The Projector finds the latest checkpoint of the folder (the `checkpoint`
    # file written by `save`) and reads every 2-D variable in it.
    checkpoint = tf.train.Checkpoint(**{name: tf.Variable(codes, name=name)})
    paths = {"checkpoint": checkpoint.save(os.path.join(log_dir, f"{name}.ckpt"))}
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    if metadata:
        paths["metadata"] = os.path.join(log_dir, METADATA_FILE)
        files.atomic_write_text(paths["metadata"], _metadata_text(metadata, n))
        embedding.metadata_path = METADATA_FILE  # relative to the config's folder
    if images is not None:
        atlas, (width, height) = sprite_atlas(images)
        png = tf.io.encode_png(atlas).numpy()
        paths["sprite"] = os.path.join(log_dir, SPRITE_FILE)
        files.atomic_save(paths["sprite"], lambda tmp: _write_bytes(tmp, png), suffix=".png")
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([width, height])
    projector.visualize_embeddings(log_dir, config)
    paths["config"] = os.path.join(log_dir, "projector_config.pbtxt")
    return paths


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)


def write_latent_projector(model, log_dir, images, metadata=None, condition=None):
    """Encodes `images` with `model` and writes their means with `write_projector`.

    Args:
        model: a `keras_vae` model (its public `encode`).
        log_dir: the TensorBoard run folder.
        images: `(N, H, W, C)` float32 images in [0, 1].
        metadata: `{column: [N values]}` (`metadata_columns`), or None.
        condition: a conditional model's labels of `images`
            (`keras_vae.data.condition_labels`); None otherwise.

    Returns:
        `write_projector`'s paths.
    """
    labels = condition if getattr(model, "conditional", False) else None
    codes = encode_means(model, images, labels)
    if getattr(model, "is_sequence", False):  # token ids: drawn, or shown as text
        if sequence_views.is_drawing(model):
            images = sequence_views.as_images(images)
        else:
            metadata = {**(metadata or {}), "text": sequence_views.as_text(model, images)}
            images = None
    return write_projector(log_dir, codes, images, metadata)


def write_held_out_projector(model, log_dir, dataset, name, condition=None, num=NUM_IMAGES):
    """`write_latent_projector` on the first `num` images of a split.

    Args:
        model: a `keras_vae` model.
        log_dir: the TensorBoard run folder.
        dataset: batches of images, or of `(images, labels)` with the labels
            dict of `keras_vae.data.load_for_config(..., with_labels=True)`
            (unshuffled: the same images every time).
        name: the dataset's name (`Config.dataset`), for `metadata_columns`.
        condition: a cvae's `Config.condition`: its labels of the images
            are computed from the labels dict (`keras_vae.data.condition_labels`).
        num: how many images (fewer if the split is smaller).

    Returns:
        `write_projector`'s paths.
    """
    batch = next(iter(dataset.unbatch().batch(num)))
    images, labels = (batch[0], batch[1]) if isinstance(batch, tuple) else (batch, {})
    labels_of_model = None
    if condition is not None and getattr(model, "conditional", False):
        labels_of_model = np.asarray(condition_labels(labels, condition))
    metadata = metadata_columns({k: np.asarray(v) for k, v in labels.items()}, name)
    return write_latent_projector(model, log_dir, np.asarray(images), metadata, labels_of_model)
