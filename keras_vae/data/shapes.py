"""`shapes`: a procedural dSprites, rendered on the fly inside tf.data.

dSprites (Matthey et al. 2017, https://github.com/deepmind/dsprites-dataset)
holds every combination of five factors exactly once: shape {square, ellipse,
heart} x scale (6 values in [0.5, 1]) x orientation (40 values) x position x
(32 values in [0, 1]) x position y (32 values in [0, 1]) = 737,280 binary
64x64 images. Image `index` has the factor indices of the mixed-radix
decomposition in that order (pos_y fastest), as in dSprites.

Instead of shipping the 3 GB array, each batch is rendered from its integer
indices with TensorFlow ops over the pixel grid: pixel centres are moved into
the sprite's frame (translate, rotate, divide by the size) and an implicit
inside-test decides each pixel. The source yields positions only
(`make_source`); the shared tail shuffles them with an O(1)-memory permutation
(`pipeline.index_shuffle`) and renders whole batches, so memory stays O(batch).

Conventions (differences to the published dSprites are on purpose):
  * Orientation: `linspace(0, 2*pi, 40, endpoint=False)`, 9 degrees apart.
    dSprites used the endpoint-inclusive `linspace(0, 2*pi, 40)`, whose first
    and last values give the same image. Without the duplicate, a rotation by
    a symmetry angle is a whole number of steps (square: 10, ellipse: 20).
    The angle turns the sprite counter-clockwise as seen on screen.
  * Position: `pos_x` grows -> the sprite moves right (column index grows);
    `pos_y` grows -> the sprite moves down (row index grows), as an image is
    displayed. The sprite centre spans [0.2, 0.8] of the frame.
  * Size: at scale 1 the square is ~17 px wide and every shape fits a circle
    of radius 12.2 px around its centre, so sprites never leave the frame at
    any orientation (the dSprites geometry is not published; these sizes
    follow its images approximately). The ellipse has axes 2:1; the heart is
    the curve (x^2 + y^2 - 1)^3 = x^2 y^3, lobes up at orientation 0, rotated
    about its centroid and scaled to the square's area.

Held-out split (fixed forever, the same on every machine): positions
0..737,279 of one fixed pseudorandom permutation of the indices (a stateless
`index_shuffle` with seed `_SPLIT_SEED`); positions [0, 626,688) are `train`
(85%), the next 36,864 (5%) `validation` and the last 73,728 (10%) `test`.
`tests/test_shapes.py` pins the first indices of each split.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vae.config import UsageError
from keras_vae.data import pipeline

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = 737_280  # = prod(FACTOR_SIZES)
IMAGE_SIZE = 64

SHAPE_NAMES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40, endpoint=False)
POSITIONS = np.linspace(0.0, 1.0, 32)

SPLIT_SIZES = {"train": 626_688, "validation": 36_864, "test": 73_728}
_SPLIT_OFFSETS = {"train": 0, "validation": 626_688, "test": 663_552}
# The split permutation's seed. Changing it changes every split: never do.
_SPLIT_SEED = (20170301, 737280)

# Geometry, in units of the frame width (the frame is [0, 1] x [0, 1]).
_CENTER_LOW, _CENTER_HIGH = 0.2, 0.8
# Half the square's side at scale 1. Every shape fits a circle of radius
# sqrt(2) half-sides (12.2 px at 64 px), which must stay below _CENTER_LOW.
_HALF_SIZE = 0.135
_ELLIPSE_AXES = (1.4, 0.7)  # semi-axes in half-sides
# Heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 = 0: area 3.662, centroid y = 0.2935
# (both measured on a fine grid). Dividing by 1.045 scales its area to the
# square's 4; its farthest point from the centroid is then 1.35 half-sides.
_HEART_SCALE = 1.045
_HEART_CENTROID_Y = 0.2935


def index_to_factors(index) -> tf.Tensor:
    """Factor indices of dataset indices (mixed radix, `pos_y` fastest).

    Args:
        index: Integer tensor of any shape, values in [0, NUM_IMAGES).

    Returns:
        int64 tensor of shape `index.shape + (5,)`, in `FACTOR_NAMES` order.
    """
    rest = tf.cast(tf.convert_to_tensor(index), tf.int64)
    digits = []
    for size in reversed(FACTOR_SIZES):
        digits.append(rest % size)
        rest = rest // size
    return tf.stack(digits[::-1], axis=-1)


def factors_to_index(factors) -> tf.Tensor:
    """Dataset indices of factor indices; the inverse of `index_to_factors`.

    Args:
        factors: Integer tensor of shape (..., 5) in `FACTOR_NAMES` order.

    Returns:
        int64 tensor of shape (...).
    """
    factors = tf.cast(tf.convert_to_tensor(factors), tf.int64)
    index = tf.zeros_like(factors[..., 0])
    for axis, size in enumerate(FACTOR_SIZES):
        index = index * size + factors[..., axis]
    return index


def render(factors, image_size: int = IMAGE_SIZE) -> tf.Tensor:
    """Renders sprites from factor indices.

    Args:
        factors: Integer tensor of shape (..., 5): indices of shape, scale,
            orientation, pos_x, pos_y (`FACTOR_NAMES` order), each in
            [0, FACTOR_SIZES[i]).
        image_size: Side of the square image in pixels (dSprites: 64). The
            geometry is resolution independent.

    Returns:
        float32 tensor of shape (..., image_size, image_size, 1), values in
        {0, 1}; row 0 is the top of the image.
    """
    factors = tf.cast(tf.convert_to_tensor(factors), tf.int64)
    shape_id = factors[..., 0][..., None, None]  # (..., 1, 1)
    scale = tf.gather(tf.constant(SCALES, tf.float32), factors[..., 1])
    angle = tf.gather(tf.constant(ORIENTATIONS, tf.float32), factors[..., 2])
    positions = tf.constant(POSITIONS, tf.float32)
    span = _CENTER_HIGH - _CENTER_LOW
    center_x = _CENTER_LOW + span * tf.gather(positions, factors[..., 3])
    center_y = _CENTER_LOW + span * tf.gather(positions, factors[..., 4])

    # Pixel centres in frame units, (S,).
    coords = (tf.range(image_size, dtype=tf.float32) + 0.5) / image_size
    # Offsets from the sprite centre with y pointing up: dx (..., 1, S) and
    # dy (..., S, 1) broadcast to the pixel grid (..., S, S).
    dx = coords[None, :] - center_x[..., None, None]
    dy = center_y[..., None, None] - coords[:, None]
    cos = tf.cos(angle)[..., None, None]
    sin = tf.sin(angle)[..., None, None]
    size = (_HALF_SIZE * scale)[..., None, None]
    # Rotate the offsets by -angle (so the sprite turns by +angle,
    # counter-clockwise on screen) and measure them in half-sides.
    x = (cos * dx + sin * dy) / size  # (..., S, S)
    y = (cos * dy - sin * dx) / size

    square = tf.maximum(tf.abs(x), tf.abs(y)) <= 1.0
    ellipse = tf.square(x / _ELLIPSE_AXES[0]) + tf.square(y / _ELLIPSE_AXES[1]) <= 1.0
    heart_x = x / _HEART_SCALE
    heart_y = y / _HEART_SCALE + _HEART_CENTROID_Y
    radial = tf.square(heart_x) + tf.square(heart_y) - 1.0
    heart = radial * radial * radial - tf.square(heart_x) * heart_y * heart_y * heart_y <= 0.0

    inside = tf.where(shape_id == 0, square, tf.where(shape_id == 1, ellipse, heart))
    return tf.cast(inside, tf.float32)[..., None]


def split_to_index(split: str, position) -> tf.Tensor:
    """Dataset indices of the examples at `position` in a split's fixed order.

    Args:
        split: `"train"`, `"validation"` or `"test"`.
        position: int tensor (B,), values in [0, SPLIT_SIZES[split]).

    Returns:
        int64 tensor (B,) of indices into the 737,280 images.
    """
    position = tf.cast(tf.convert_to_tensor(position), tf.int64)
    return pipeline.index_shuffle(
        position + _SPLIT_OFFSETS[split],
        seed=tf.constant(_SPLIT_SEED, tf.int64),
        max_index=NUM_IMAGES - 1,
    )


def make_source(split: str, *, image_size: int | None = None) -> pipeline.Source:
    """The `shapes` split as an indexed source: positions, rendered per batch.

    An example is its position in the split's fixed order (see the module
    docstring); `pipeline.tail` permutes the positions per epoch, batches
    them and renders each batch in one call. Nothing is cached: rendering a
    batch costs less than reading it back. Binarization is a no-op on binary
    pixels and is skipped.

    Args:
        split: `"train"`, `"validation"` or `"test"`.
        image_size: Image side in pixels; None for dSprites' 64.

    Returns:
        The `Source`: int64 scalar positions, and a `render` of a batch of
        positions to images (B, S, S, 1) and the five factor indices, int64
        (B,) each.
    """
    if split not in SPLIT_SIZES:
        raise UsageError(
            f"Expected split to be one of {tuple(SPLIT_SIZES)}. Received: split={split!r}"
        )
    size = image_size or IMAGE_SIZE
    info = pipeline.DatasetInfo(
        name="shapes",
        split=split,
        image_shape=(size, size, 1),
        num_examples=SPLIT_SIZES[split],
        label_names=FACTOR_NAMES,
        binary=True,
    )

    def render_positions(positions):
        # positions: int64 (B,)
        factors = index_to_factors(split_to_index(split, positions))  # (B, 5)
        images = render(factors, size)  # (B, S, S, 1)
        return images, {name: factors[:, axis] for axis, name in enumerate(FACTOR_NAMES)}

    return pipeline.Source(
        examples=tf.data.Dataset.range(info.num_examples), info=info, render=render_positions
    )
