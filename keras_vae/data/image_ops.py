"""Per-image crop / resize / convert ops shared by the dataset sources.

All of them take and return one image (H, W, C). Resizing is antialiased
bilinear in float32 and rounds once, back to uint8, so that the cached pixels
stay 8-bit integers (and the model's inputs exactly k/255).
"""

from __future__ import annotations

import tensorflow as tf


def center_crop(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """The central `height` x `width` window (offsets rounded down).

    For CelebA (218 x 178) and 148 x 148 this is rows 35..182, columns
    15..162, as torchvision's `CenterCrop(148)` in the usual recipe.
    """
    shape = tf.shape(image)
    top = (shape[0] - height) // 2
    left = (shape[1] - width) // 2
    return image[top : top + height, left : left + width]


def center_square_crop(image: tf.Tensor) -> tf.Tensor:
    """The largest central square: the short side x the short side."""
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    return center_crop(image, side, side)


def resize_to_uint8(image: tf.Tensor, height: int, width: int) -> tf.Tensor:
    """Antialiased bilinear resize to (height, width), rounded to uint8.

    Args:
        image: (h, w, C) tensor of any real dtype, values in [0, 255].
        height: Output height.
        width: Output width.

    Returns:
        uint8 tensor (height, width, C). A resize to the same size is the
        identity, so 8-bit sources at their native size pass unchanged.
    """
    resized = tf.image.resize(
        tf.cast(image, tf.float32), (height, width), method="bilinear", antialias=True
    )
    return to_uint8(resized)


def to_uint8(image: tf.Tensor) -> tf.Tensor:
    """Rounds float pixels in [0, 255] to uint8 (clipping bilinear overshoot)."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def rgb_to_gray(image: tf.Tensor) -> tf.Tensor:
    """(H, W, 3) -> (H, W, 1) float32 luma (ITU-R 601, as PIL's "L").

    A gray image replicated to RGB comes back unchanged after rounding: the
    weights sum to 0.9999, an error below half a level.
    """
    return tf.image.rgb_to_grayscale(tf.cast(image, tf.float32))
