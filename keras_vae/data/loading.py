"""`load`: one entry point for every dataset, one pipeline shape for all.

Each source module makes an unbatched `pipeline.Source` of one split;
`pipeline.tail` shuffles, caches, repeats, batches and converts it.
"""

from __future__ import annotations

import tensorflow as tf

from keras_vae.config import UsageError
from keras_vae.data import folder, frey, pipeline, shapes, tfds_sources

# The known dataset names; `folder:PATH` and `text:PATH` are accepted as well.
# `strokes`, `imdb_reviews` and `text:PATH` are token sequences (`data.tokens`).
SEQUENCE_DATASETS = ("strokes", "imdb_reviews")
DATASETS = ("shapes", *tfds_sources.TFDS_DATASETS, "frey_faces", *SEQUENCE_DATASETS)
TEXT_PREFIX = "text:"
SPLITS = ("train", "validation", "test")


def _check_positive_int(name: str, value, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")


def load(
    name: str,
    split: str,
    *,
    batch_size: int,
    image_size: int | None = None,
    binarize: bool = False,
    shuffle: bool = True,
    seed: int = 0,
    data_dir: str | None = None,
    download: bool = False,
    strict: bool = False,
    with_labels: bool = False,
    repeat: bool = False,
    drop_remainder: bool = False,
    channels: int | None = None,
    cache: bool | str = True,
    tokens: str = "char",
    max_length: int | None = None,
    vocab_size: int = 10000,
) -> tuple[tf.data.Dataset, pipeline.DatasetInfo]:
    """Loads one split of a dataset as batches of float32 images in [0, 1].

    Every dataset goes through the same pipeline (`pipeline.tail`): parallel
    decode and resize, a uint8 cache, a seeded shuffle that changes every
    epoch, batching, then conversion to float32 (exactly k/255 for 8-bit
    sources) or dynamic binarization, and prefetching. The `shapes` data is
    rendered per batch from shuffled positions instead of decoded and cached.

    Args:
        name: `"shapes"`, `"mnist"`, `"fashion_mnist"`, `"cifar10"`,
            `"celeb_a"`, `"svhn_cropped"`, `"frey_faces"` or `"folder:PATH"`.
        split: `"train"`, `"validation"` or `"test"`. Datasets without a
            validation split hold one out of their training data, so nothing
            trains on `test`.
        batch_size: Examples per batch.
        image_size: Output side in pixels; None for the dataset's own size
            (shapes 64, mnist / fashion_mnist 28, cifar10 / svhn_cropped 32,
            celeb_a 64, folders 64, frey_faces its native 28 x 20).
        binarize: Replace each pixel x by a fresh Bernoulli(x) draw every
            epoch (seeded): dynamic binarization.
        shuffle: Shuffle with `seed`, in a new order every epoch.
        seed: Seed of the shuffle order and of the binarization draws.
        data_dir: TFDS data directory, and where `frey_rawface.mat` is looked
            for; None for the TFDS default.
        download: Let TFDS download a dataset that is not in `data_dir`.
        strict: Folders: an unreadable file raises `DataError` instead of
            being skipped with a warning.
        with_labels: Yield `(images, labels)`, labels a dict of int64 (B,)
            tensors named by `DatasetInfo.label_names` (empty for folders and
            frey_faces).
        repeat: Repeat forever (training with `steps_per_epoch`).
        drop_remainder: Drop the last, smaller batch.
        channels: Folders only: 1 (gray) or 3 (RGB, the default).
        cache: True caches the decoded, resized uint8 images in memory (CelebA
            train at 64 x 64: 2.0 GB); a str caches them in files with that
            path prefix (the dataset, split and shape are appended); False
            decodes every epoch again.
        tokens: `text:PATH`: `"char"` or `"word"` tokens (`imdb_reviews`: words).
        max_length: Sequence datasets: tokens per example with the end token
            (None: the dataset's default).
        vocab_size: Text: the most frequent tokens kept, the rest are UNK.

    Sequence datasets (`strokes`, `imdb_reviews`, `text:PATH`) yield int32
    token ids `(B, max_length)` instead of images (`info.vocabulary` names
    them), through the same tail.

    Returns:
        `(dataset, info)`: batches of float32 images (B, H, W, C) with static
        H, W, C (or `(images, labels)`), and a `DatasetInfo`.

    Raises:
        UsageError: Unknown dataset or split, or a bad argument.
        DatasetNotFoundError: The dataset is not on disk (and not downloaded).
        DataError: A folder or file that is missing, empty or unreadable.
    """
    is_text = isinstance(name, str) and name.startswith(TEXT_PREFIX)
    if not isinstance(name, str) or (
        name not in DATASETS and not name.startswith(folder.PREFIX) and not is_text
    ):
        known = ", ".join(DATASETS)
        raise UsageError(
            f"Unknown dataset {name!r}. Expected one of: {known}, folder:PATH or text:PATH."
        )
    sequences = is_text or name in SEQUENCE_DATASETS
    if sequences and (image_size is not None or binarize):
        raise UsageError(
            f"{name} holds token sequences, not images: drop image_size and binarize."
        )
    if split not in SPLITS:
        raise UsageError(
            f"Expected split to be one of {', '.join(SPLITS)}. Received: split={split!r}"
        )
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("image_size", image_size, allow_none=True)
    is_folder = name.startswith(folder.PREFIX)
    if is_folder and not name[len(folder.PREFIX) :].strip():
        raise UsageError(
            f"Expected folder:PATH with the path of an image folder. Received: {name!r}"
        )
    if channels is not None and not is_folder:
        raise UsageError(
            f"Expected channels only with a folder:PATH dataset. Received: channels={channels} "
            f"for {name!r}"
        )
    if not isinstance(cache, (bool, str)):
        raise UsageError(f"Expected cache to be a bool or a file prefix. Received: cache={cache!r}")

    if name == "shapes":
        source = shapes.make_source(split, image_size=image_size)
    elif name == "strokes":
        from keras_vae.data import strokes

        source = strokes.make_source(split, max_length=max_length)
    elif sequences:
        from keras_vae.data import text

        lengths = {} if max_length is None else {"max_length": max_length}
        if is_text:
            path = name[len(TEXT_PREFIX):]
            if not path.strip():
                raise UsageError(
                    f"Expected text:PATH with the path of a text file. Received: {name!r}"
                )
            source = text.make_source(
                path, split, tokens=tokens, vocab_size=vocab_size, **lengths
            )
        else:
            source = text.make_tfds_source(
                name, split, tokens="word", vocab_size=vocab_size, data_dir=data_dir,
                download=download, **lengths,
            )
    elif is_folder:
        source = folder.make_source(
            name,
            split,
            image_size=image_size,
            channels=channels,
            strict=strict,
            order_seed=seed if shuffle else None,
        )
    elif name == "frey_faces":
        source = frey.make_source(split, image_size=image_size, data_dir=data_dir)
    else:
        source = tfds_sources.make_source(
            name, split, image_size=image_size, data_dir=data_dir, download=download
        )
    ds = pipeline.tail(
        source,
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        repeat=repeat,
        drop_remainder=drop_remainder,
        binarize=binarize,
        with_labels=with_labels,
        cache=cache,
    )
    return ds, source.info


def condition_labels(labels, condition):
    """A cvae's labels from a batch's labels dict (`with_labels=True`).

    Args:
        labels: dict of int64 `(B,)` tensors named by `DatasetInfo.label_names`.
        condition: `Config.condition`: a label name (class ids), or
            `"attributes"` for all of CelebA's attributes at once.

    Returns:
        int64 `(B,)` class ids, or for `"attributes"` `(B, 40)` 0/1 vectors in
        the sorted order of the names (`keras_vae.config.CELEBA_ATTRIBUTES`).
    """
    if condition == "attributes":
        return tf.stack([labels[name] for name in sorted(labels)], axis=-1)
    if condition not in labels:
        raise UsageError(
            f"The data has no label {condition!r} to condition on (its labels: "
            f"{', '.join(sorted(labels)) or 'none'})."
        )
    return labels[condition]


def load_for_config(
    config,
    split,
    *,
    shuffle,
    repeat,
    drop_remainder=False,
    with_labels=False,
    with_condition=False,
):
    """`load` with the data settings of a `keras_vae.config.Config`.

    The one place where a run's config becomes a pipeline: training,
    evaluation and figures all read a run's data through it. With
    `with_condition`, batches are `(images, labels)` with the labels a cvae
    is conditioned on (`config.condition`, see `condition_labels`).
    """
    ds, info = load(
        config.dataset,
        split,
        batch_size=config.batch_size,
        image_size=config.image_size,
        binarize=config.binarize,
        shuffle=shuffle,
        seed=config.seed,
        data_dir=config.data_dir,
        download=config.download,
        strict=config.strict_data,
        with_labels=with_labels or with_condition,
        repeat=repeat,
        drop_remainder=drop_remainder,
        **sequence_options(config),
    )
    if with_condition and not with_labels:
        ds = ds.map(
            lambda images, labels: (images, condition_labels(labels, config.condition)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return ds, info


def sequence_options(config):
    """`load`'s sequence arguments from a config (none for image data)."""
    if not config.is_sequence:
        return {}
    return {"tokens": config.tokens, "max_length": config.max_length,
            "vocab_size": config.vocab_size}
