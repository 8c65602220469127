"""Helpers shared by the tests of keras_vae.data (imported, not collected)."""

import os

import numpy as np


def batches(ds):
    """All elements of one pass over `ds`, as NumPy."""
    return list(ds.as_numpy_iterator())


def images_of(ds):
    """One pass over a dataset of image batches, concatenated: (N, H, W, C)."""
    return np.concatenate(batches(ds))


def assert_k_over_255(x):
    """Every value is exactly float32(k) / 255 for an integer k in [0, 255]."""
    k = np.round(x * 255.0)
    assert k.min() >= 0 and k.max() <= 255
    np.testing.assert_array_equal(x, k.astype(np.float32) / np.float32(255.0))


def write_frey(directory, frames):
    """frames (n, 28, 20) uint8 -> `ff` (560, n), one frame per column."""
    import scipy.io

    os.makedirs(directory, exist_ok=True)
    ff = np.asarray(frames, np.uint8).reshape(len(frames), 560).T
    scipy.io.savemat(os.path.join(directory, "frey_rawface.mat"), {"ff": ff})
