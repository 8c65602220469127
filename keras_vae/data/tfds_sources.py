"""TensorFlow Datasets sources: mnist, fashion_mnist, cifar10, svhn_cropped, celeb_a.

Splits: nothing ever trains on `test`. Datasets without a validation split
hold out the last 5,000 examples of `train` as `validation` (10% for a train
split under 50,000 examples; all built-ins have at least 50,000). TFDS
shuffled the examples when it generated the files, so the last 5,000 are a
random sample, and the slice is the same on every machine. CelebA has its own
official train / validation / test split.

CelebA follows the usual VAE recipe: the central 148 x 148 crop of the
218 x 178 aligned faces, resized (antialiased) to `image_size`, 64 by default.

TFDS is imported lazily: it costs seconds and only these datasets need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

import tensorflow as tf

from keras_vae.data import image_ops, pipeline

# Held out of `train` as `validation` for datasets without one.
VALIDATION_HOLDOUT = 5_000


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How one TFDS dataset becomes images.

    Attributes:
        image_shape: (H, W, C) of the stored images.
        default_size: Output side when `image_size` is None; None keeps the
            stored size.
        train_examples: Size of the TFDS `train` split when the dataset has no
            validation split (it is carved out of `train`); None when the
            dataset has its own.
        crop: Side of the central square crop taken before resizing; None for
            no crop.
        label_key: The feature holding the labels: an int class label, or a
            dict of bool attributes (one label per key).
    """

    image_shape: tuple[int, int, int]
    default_size: int | None
    train_examples: int | None
    crop: int | None
    label_key: str


TFDS_DATASETS = {
    "mnist": TfdsSpec((28, 28, 1), None, 60_000, None, "label"),
    "fashion_mnist": TfdsSpec((28, 28, 1), None, 60_000, None, "label"),
    "cifar10": TfdsSpec((32, 32, 3), None, 50_000, None, "label"),
    "svhn_cropped": TfdsSpec((32, 32, 3), None, 73_257, None, "label"),
    "celeb_a": TfdsSpec((218, 178, 3), 64, None, 148, "attributes"),
}


def split_string(train_examples: int | None, split: str) -> str:
    """The TFDS split string of one of our splits of a dataset whose `train`
    has `train_examples` (None: it has its own validation split), e.g.
    `"train[:55000]"`: the last `VALIDATION_HOLDOUT` training examples (10%
    of a train split under 50,000) are `validation`."""
    if train_examples is None or split == "test":
        return split
    holdout = VALIDATION_HOLDOUT if train_examples >= 50_000 else train_examples // 10
    boundary = train_examples - holdout
    return f"train[:{boundary}]" if split == "train" else f"train[{boundary}:]"


def tfds_split(name: str, split: str) -> str:
    """The TFDS split string of one of our splits, e.g. `"train[:55000]"`."""
    return split_string(TFDS_DATASETS[name].train_examples, split)


IMAGES_FALLBACK = "train on a folder of the extracted images with --dataset=folder:PATH"


def missing_message(
    name: str, data_dir_root: str, version_dir: str, reason: str = "", fallback=IMAGES_FALLBACK
) -> str:
    """The one-line message of a dataset that is not on disk; `fallback` is the
    other way to train that it ends with."""
    if reason:
        # An exception text can span lines; the message must not.
        reason = " ".join(reason.split())[:300]
        problem = (
            f"Downloading TFDS dataset {name!r} into data_dir {data_dir_root} failed ({reason})."
        )
    else:
        problem = (
            f"TFDS dataset {name!r} is not in data_dir {data_dir_root} "
            f"(looked for {version_dir}) and downloading is off."
        )
    return (
        f"{problem} Either download it on a machine with internet: "
        f"`tfds build {name} --data_dir={data_dir_root}` (or `python -m "
        f"tensorflow_datasets.scripts.download_and_prepare --datasets={name} "
        f"--data_dir={data_dir_root}`), then copy {data_dir_root}/{name} here, "
        f"or rerun train.py with --download there; or {fallback}."
    )


class _BelowError(logging.Filter):
    """Drops TFDS's own INFO/WARNING records (emitted through absl)."""

    def filter(self, record):
        return record.levelno >= logging.ERROR or "tensorflow_datasets" not in record.pathname


@contextlib.contextmanager
def _quiet_tfds():
    """Probing a missing dataset makes TFDS log "Variant folder ... has no
    dataset_info.json" and "Constructing tf.data.Dataset ..." lines; our own
    one-line DatasetNotFoundError says it better."""
    handlers = logging.getLogger().handlers
    quiet = _BelowError()
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def make_source(
    name: str,
    split: str,
    *,
    image_size: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
) -> pipeline.Source:
    """A TFDS dataset as a stream of uint8 images; see `keras_vae.data.load`.

    Returns:
        The `Source`: `(image, labels)` in the order of the TFDS files.

    Raises:
        DatasetNotFoundError: The dataset is not prepared in `data_dir` and
            `download` is False, or the download failed.
    """
    import tensorflow_datasets as tfds

    spec = TFDS_DATASETS[name]
    ds, num_examples, builder = open_split(name, tfds_split(name, split), data_dir, download)
    height, width, channels = spec.image_shape
    if spec.crop:
        height = width = spec.crop
    size = image_size or spec.default_size
    out_height, out_width = (size, size) if size else (height, width)
    label_feature = builder.info.features[spec.label_key]
    if isinstance(label_feature, tfds.features.FeaturesDict):
        label_names = tuple(sorted(label_feature.keys()))  # CelebA: 40 attributes
    else:
        label_names = (spec.label_key,)
    info = pipeline.DatasetInfo(
        name=name,
        split=split,
        image_shape=(out_height, out_width, channels),
        num_examples=num_examples,
        label_names=label_names,
        binary=False,
    )

    def prepare(example):
        image = example["image"]  # uint8 (H, W, C), decoded by TFDS in parallel
        if spec.crop:
            image = image_ops.center_crop(image, spec.crop, spec.crop)
        if (out_height, out_width) != (height, width):
            image = image_ops.resize_to_uint8(image, out_height, out_width)
        image = tf.ensure_shape(image, info.image_shape)
        raw = example[spec.label_key]
        if isinstance(raw, dict):  # CelebA attributes: bool -> 0 / 1
            labels = {key: tf.cast(raw[key], tf.int64) for key in label_names}
        else:
            labels = {spec.label_key: tf.cast(raw, tf.int64)}
        return image, labels

    ds = ds.map(prepare, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
    return pipeline.Source(examples=ds, info=info)


def open_split(name, split, data_dir=None, download=False, fallback=IMAGES_FALLBACK):
    """One TFDS split string of `name` as `(dataset, num_examples, builder)`.

    Downloads it first if asked; reads in a fixed order (`shuffle_files=False`:
    the tail's seeded shuffle alone decides the order) without autocache (the
    tail caches after resizing).

    Raises:
        DatasetNotFoundError: not prepared in `data_dir` and `download` is
            False, or the download failed (the message ends with `fallback`).
    """
    import tensorflow_datasets as tfds

    def missing(builder, reason=""):
        message = missing_message(
            name, str(builder.data_dir_root), builder.data_dir, reason, fallback
        )
        return pipeline.DatasetNotFoundError(message)

    with _quiet_tfds():
        builder = tfds.builder(name, data_dir=data_dir)
        if download and not builder.is_prepared():
            try:
                builder.download_and_prepare()
            except Exception as error:  # Any failure (network, quota, disk) ends in one message.
                raise missing(builder, f"{type(error).__name__}: {error}") from error
        try:
            ds = builder.as_dataset(
                split=split, shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False)
            )
        except AssertionError:
            # TFDS 4.9.10 says "Dataset mnist: could not find data in ..."
            # this way, for a data_dir without the dataset. `is_prepared()`
            # is only asked after `as_dataset` failed: under
            # `tfds.testing.mock_data` it is False, yet `as_dataset` works.
            if builder.is_prepared():
                raise
            raise missing(builder) from None
    # The cardinality first: under `tfds.testing.mock_data`, `info.splits` is
    # empty (tfds 4.9.10), while the mocked dataset knows its length.
    num_examples = int(ds.cardinality())
    if num_examples < 0:
        num_examples = builder.info.splits[split].num_examples
    return ds, num_examples, builder
