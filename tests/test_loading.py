"""Tests of keras_vae.data.loading: `load`'s arguments, and sources + one tail."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from data_helpers import write_frey
from PIL import Image

from keras_vae import data
from keras_vae.config import UsageError
from keras_vae.data import folder, frey, pipeline, shapes, tfds_sources


def test_bad_arguments_are_usage_errors():
    with pytest.raises(
        UsageError,
        match="Unknown dataset 'imagenet'. Expected one of: shapes, "
        "mnist, fashion_mnist, cifar10, svhn_cropped, celeb_a, frey_faces, strokes, "
        "imdb_reviews, folder:PATH or text:PATH.",
    ):
        data.load("imagenet", "train", batch_size=8)
    with pytest.raises(UsageError, match="Received: split='valid'"):
        data.load("shapes", "valid", batch_size=8)
    with pytest.raises(UsageError, match="Received: batch_size=0"):
        data.load("shapes", "train", batch_size=0)
    with pytest.raises(UsageError, match="channels"):
        data.load("mnist", "train", batch_size=8, channels=1)
    assert UsageError.exit_code == 2
    assert set(data.DATASETS) == {
        "shapes",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "celeb_a",
        "svhn_cropped",
        "frey_faces",
        "strokes",
        "imdb_reviews",
    }


def test_sources_are_unbatched_and_only_the_tail_batches(tmp_path):
    # Each source yields single examples (no batch dimension), one element per
    # example; `load` (through `pipeline.tail`) is what batches them.
    write_frey(tmp_path, np.zeros((200, 28, 20), np.uint8))
    for i in range(30):
        Image.fromarray(np.full((40, 50, 3), i, np.uint8)).save(tmp_path / f"img{i}.png")
    no_labels = {}
    with tfds.testing.mock_data(num_examples=3):
        cases = [
            (
                frey.make_source("train", data_dir=str(tmp_path)),
                (tf.TensorSpec((28, 20, 1), tf.uint8), no_labels),
                dict(name="frey_faces", data_dir=str(tmp_path)),
            ),
            (
                folder.make_source(f"folder:{tmp_path}", "train", image_size=16),
                (tf.TensorSpec((16, 16, 3), tf.uint8), no_labels),
                dict(name=f"folder:{tmp_path}", image_size=16),
            ),
            (
                tfds_sources.make_source("mnist", "train", data_dir=str(tmp_path)),
                (tf.TensorSpec((28, 28, 1), tf.uint8), {"label": tf.TensorSpec((), tf.int64)}),
                dict(name="mnist", data_dir=str(tmp_path)),
            ),
        ]
        for source, spec, load_args in cases:
            assert isinstance(source, pipeline.Source) and source.render is None
            assert source.examples.element_spec == spec
            assert spec[0].shape == source.info.image_shape
            assert len(list(source.examples)) == source.info.num_examples
            ds, info = data.load(split="train", batch_size=2, shuffle=False, **load_args)
            assert info == source.info
            assert ds.element_spec == tf.TensorSpec((None, *info.image_shape), tf.float32)
            assert len(list(ds)) == -(-info.num_examples // 2)
    # shapes is indexed: its examples are positions, rendered by the tail per batch.
    source = shapes.make_source("validation", image_size=8)
    assert source.examples.element_spec == tf.TensorSpec((), tf.int64)
    assert source.examples.cardinality().numpy() == source.info.num_examples == 36_864
    images, labels = source.render(tf.constant([0, 1, 2], tf.int64))
    assert images.shape == (3, 8, 8, 1) and set(labels) == set(shapes.FACTOR_NAMES)
    ds, _ = data.load("shapes", "validation", batch_size=2, image_size=8, shuffle=False)
    assert ds.element_spec == tf.TensorSpec((None, 8, 8, 1), tf.float32)
