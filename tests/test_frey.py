"""Tests of keras_vae.data.frey: Frey faces from a small generated .mat file."""

import numpy as np
import pytest
from data_helpers import assert_k_over_255, images_of, write_frey

from keras_vae import data


def test_frey_faces_from_a_small_mat(tmp_path):
    frames = np.arange(200)[:, None, None] * np.ones((1, 28, 20), np.int64)
    frames[0] = (np.arange(560) % 256).reshape(28, 20)  # frame 0: row-major ramp
    write_frey(tmp_path / "frey_faces", frames)  # the second place looked at
    ds, info = data.load(
        "frey_faces", "train", batch_size=64, shuffle=False, data_dir=str(tmp_path)
    )
    assert info == data.DatasetInfo(
        name="frey_faces",
        split="train",
        image_shape=(28, 20, 1),
        num_examples=170,
        label_names=(),
        binary=False,
    )
    images = images_of(ds)
    assert images.shape == (170, 28, 20, 1)
    assert_k_over_255(images)
    pixels = np.round(images * 255).astype(int)
    # Frame 0 keeps its layout: pixel (r, c) is value r * 20 + c (mod 256).
    np.testing.assert_array_equal(pixels[0, ..., 0], (np.arange(560) % 256).reshape(28, 20))
    # Contiguous split of 200 frames: train 0..169, validation 170..179, test 180..199.
    np.testing.assert_array_equal(pixels[1:, 0, 0, 0], np.arange(1, 170))
    for split, first, count in [("validation", 170, 10), ("test", 180, 20)]:
        split_ds, split_info = data.load(
            "frey_faces", split, batch_size=64, shuffle=False, data_dir=str(tmp_path)
        )
        values = np.round(images_of(split_ds)[:, 0, 0, 0] * 255).astype(int)
        assert split_info.num_examples == count
        np.testing.assert_array_equal(values, np.arange(first, first + count))
    resized, resized_info = data.load(
        "frey_faces", "test", batch_size=64, image_size=32, data_dir=str(tmp_path)
    )
    assert resized_info.image_shape == (32, 32, 1)
    assert images_of(resized).shape == (20, 32, 32, 1)


def test_frey_faces_missing_file_message(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as caught:
        data.load("frey_faces", "train", batch_size=8, data_dir=str(tmp_path))
    message = str(caught.value)
    assert "\n" not in message
    assert str(tmp_path / "frey_rawface.mat") in message
    assert str(tmp_path / "frey_faces" / "frey_rawface.mat") in message
    assert "https://cs.nyu.edu/~roweis/data/frey_rawface.mat" in message
