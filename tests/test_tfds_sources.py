"""Tests of keras_vae.data.tfds_sources: TFDS datasets, mocked.

TFDS datasets run through the real loader under `tfds.testing.mock_data`,
which replaces only the file reading (random or planted examples); no network.
Facts about it that these tests rely on (tfds 4.9.10): it works offline; for
`celeb_a` it yields `image` 218x178x3 uint8 plus `attributes`, `landmarks` and
`identity`; and under it `builder.is_prepared()` is False and `info.splits` is
empty, so the loader takes the number of examples from the dataset itself.
Outside it, `tfds.load(name, download=False)` on an empty data_dir raises
`AssertionError: Dataset mnist: could not find data in ...`.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from data_helpers import assert_k_over_255, batches, images_of

from keras_vae import data
from keras_vae.config import DataError, UserError


def test_mnist_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=12):
        ds, info = data.load(
            "mnist", "train", batch_size=5, shuffle=False, with_labels=True, data_dir=str(tmp_path)
        )
        raw_ds = tfds.load("mnist", split="train[:55000]", data_dir=str(tmp_path))
        raw = batches(raw_ds.batch(12))[0]
        elements = batches(ds)
    assert info == data.DatasetInfo(
        name="mnist",
        split="train",
        image_shape=(28, 28, 1),
        num_examples=12,
        label_names=("label",),
        binary=False,
    )
    assert [images.shape for images, _ in elements] == [
        (5, 28, 28, 1),
        (5, 28, 28, 1),
        (2, 28, 28, 1),
    ]
    images = np.concatenate([images for images, _ in elements])
    labels = np.concatenate([labels["label"] for _, labels in elements])
    assert images.dtype == np.float32 and 0.0 <= images.min() and images.max() <= 1.0
    assert_k_over_255(images)
    # Native size: the pixels are the stored bytes / 255, in the stored order.
    np.testing.assert_array_equal(np.round(images * 255).astype(np.uint8), raw["image"])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, raw["label"])


def test_tfds_validation_is_carved_out_of_train():
    from keras_vae.data import tfds_sources

    assert tfds_sources.tfds_split("mnist", "train") == "train[:55000]"
    assert tfds_sources.tfds_split("mnist", "validation") == "train[55000:]"
    assert tfds_sources.tfds_split("cifar10", "validation") == "train[45000:]"
    assert tfds_sources.tfds_split("svhn_cropped", "train") == "train[:68257]"
    assert tfds_sources.tfds_split("mnist", "test") == "test"
    assert tfds_sources.tfds_split("celeb_a", "validation") == "validation"


def test_cifar10_through_mock_data(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        ds, info = data.load(
            "cifar10", "validation", batch_size=4, with_labels=True, data_dir=str(tmp_path)
        )
        elements = batches(ds)
        resized, resized_info = data.load(
            "cifar10", "test", batch_size=6, image_size=16, data_dir=str(tmp_path)
        )
        small = images_of(resized)
    assert info.image_shape == (32, 32, 3) and info.num_examples == 6
    images = np.concatenate([images for images, _ in elements])
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.float32
    assert_k_over_255(images)
    labels = np.concatenate([labels["label"] for _, labels in elements])
    assert labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < 10
    assert resized_info.image_shape == (16, 16, 3) and small.shape == (6, 16, 16, 3)
    assert_k_over_255(small)


@pytest.mark.parametrize(
    "name, shape",
    [
        ("mnist", (28, 28, 1)),
        ("fashion_mnist", (28, 28, 1)),
        ("cifar10", (32, 32, 3)),
        ("svhn_cropped", (32, 32, 3)),
        ("celeb_a", (64, 64, 3)),
    ],
)
def test_every_tfds_dataset_binarized_with_labels(tmp_path, name, shape):
    with tfds.testing.mock_data(num_examples=3):
        ds, info = data.load(
            name, "test", batch_size=3, binarize=True, with_labels=True, data_dir=str(tmp_path)
        )
        ((images, labels),) = batches(ds)
    assert info.image_shape == shape and images.shape == (3, *shape)
    assert images.dtype == np.float32 and set(np.unique(images)) == {0.0, 1.0}
    assert set(labels) == set(info.label_names) and len(labels) == (40 if name == "celeb_a" else 1)
    for values in labels.values():
        assert values.dtype == np.int64 and values.shape == (3,)


def _planted_celeb_a(num_examples):
    """`_as_dataset` replacement: 218x178 faces, 200 + i inside the crop window, 0 outside."""

    def as_dataset(self, *args, **kwargs):
        def example(i):
            image = np.zeros((218, 178, 3), np.uint8)
            image[35:183, 15:163] = 200 + i  # rows 35..182, columns 15..162
            attributes = {
                name: bool((i + k) % 2)
                for k, name in enumerate(self.info.features["attributes"].keys())
            }
            return {"image": image, "attributes": attributes}

        examples = [example(i) for i in range(num_examples)]
        return tf.data.Dataset.from_tensor_slices(
            {
                "image": np.stack([e["image"] for e in examples]),
                "attributes": {
                    k: [e["attributes"][k] for e in examples] for k in examples[0]["attributes"]
                },
            }
        )

    return as_dataset


def test_celeb_a_crop_148_and_resize_64_planted(tmp_path):
    with tfds.testing.mock_data(as_dataset_fn=_planted_celeb_a(3)):
        ds, info = data.load(
            "celeb_a",
            "train",
            batch_size=3,
            shuffle=False,
            with_labels=True,
            data_dir=str(tmp_path),
        )
        images, labels = batches(ds)[0]
    assert info.image_shape == (64, 64, 3) and info.num_examples == 3
    # The crop is exactly the planted window: an off-by-one row or column of
    # zeros would darken the border pixels of the 64x64 result.
    for i in range(3):
        np.testing.assert_array_equal(images[i], np.float32(200 + i) / np.float32(255))
    assert len(info.label_names) == 40 and "Smiling" in info.label_names
    assert set(labels) == set(info.label_names)
    smiling = info.label_names.index("Smiling")
    np.testing.assert_array_equal(labels["Smiling"], [(i + smiling) % 2 for i in range(3)])
    assert labels["Smiling"].dtype == np.int64


def test_celeb_a_matches_tf_image_ops_on_the_raw_mock_image(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        ds, info = data.load(
            "celeb_a", "validation", batch_size=4, shuffle=False, data_dir=str(tmp_path)
        )
        images = batches(ds)[0]
        raw = batches(tfds.load("celeb_a", split="validation", data_dir=str(tmp_path)).batch(4))[0]
    assert raw["image"].shape == (4, 218, 178, 3)
    crop = raw["image"][:, 35:183, 15:163].astype(np.float32)  # (218 - 148) / 2, (178 - 148) / 2
    expected = tf.image.resize(crop, (64, 64), antialias=True).numpy()
    expected = np.round(np.clip(expected, 0, 255)).astype(np.float32) / np.float32(255)
    assert images.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(images, expected)
    assert_k_over_255(images)


def test_missing_tfds_dataset_message(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("celeb_a", "train", batch_size=8, data_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert "TFDS dataset 'celeb_a' is not in data_dir " + str(tmp_path) in message
    assert "downloading is off" in message
    assert f"`tfds build celeb_a --data_dir={tmp_path}`" in message
    assert "--datasets=celeb_a" in message
    assert "rerun train.py with --download" in message
    assert "--dataset=folder:PATH" in message
    assert isinstance(caught.value, DataError) and isinstance(caught.value, UserError)


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise ConnectionError("no route\nto host")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("mnist", "train", batch_size=8, data_dir=str(tmp_path), download=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"Downloading TFDS dataset 'mnist' into data_dir {tmp_path} failed "
        "(ConnectionError: no route to host)."
    )
    assert "--dataset=folder:PATH" in message
