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
inside-test decides each pixel. Shuffling is an O(1)-memory permutation
(`index_shuffle`) of `Dataset.range`, so memory stays O(batch).

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
`tests/test_data.py` pins the first indices of each split.
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

# `tf.random.experimental.index_shuffle` takes a seed of shape [2] and pads it
# to the raw op's [3] with this constant. Its batched form ([n, 2] seeds) pads
# the wrong axis and fails ("Seed must be a vector of size [3] or a matrix of
# size [4, 3] but got [5,2]", TF 2.21), so batched calls use the raw op with
# the same padding: results equal the public function's, element by element.
_INDEX_SHUFFLE_PAD = 498247692


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


def _index_shuffle(index: tf.Tensor, seed: tf.Tensor, max_index: int) -> tf.Tensor:
    """`tf.random.experimental.index_shuffle`, also for a batch of seeds.

    Args:
        index: int64 tensor (B,), values in [0, max_index].
        seed: int64 tensor (2,) shared by all, or (B, 2) one per element.
        max_index: Largest index of the permutation.

    Returns:
        int64 tensor (B,): the position of each index in the permutation.
    """
    seed = tf.cast(seed, tf.int64)
    pad = tf.fill(
        tf.concat([tf.shape(seed)[:-1], [1]], axis=0), tf.constant(_INDEX_SHUFFLE_PAD, tf.int64)
    )
    return tf.raw_ops.RandomIndexShuffle(
        index=index,
        seed=tf.concat([pad, seed], axis=-1),
        max_index=tf.fill(tf.shape(index), tf.constant(max_index, tf.int64)),
        rounds=4,
    )


def split_to_index(split: str, position) -> tf.Tensor:
    """Dataset indices of the examples at `position` in a split's fixed order.

    Args:
        split: `"train"`, `"validation"` or `"test"`.
        position: int tensor (B,), values in [0, SPLIT_SIZES[split]).

    Returns:
        int64 tensor (B,) of indices into the 737,280 images.
    """
    position = tf.cast(tf.convert_to_tensor(position), tf.int64)
    return _index_shuffle(
        position + _SPLIT_OFFSETS[split],
        seed=tf.constant(_SPLIT_SEED, tf.int64),
        max_index=NUM_IMAGES - 1,
    )


def make_dataset(
    split: str,
    *,
    batch_size: int,
    image_size: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
    repeat: bool = False,
    drop_remainder: bool = False,
    with_labels: bool = False,
) -> tuple[tf.data.Dataset, pipeline.DatasetInfo]:
    """The `shapes` pipeline: positions -> (epoch permutation) -> batch -> render.

    Nothing is cached: rendering a batch costs less than reading it back.
    Binarization is a no-op on binary pixels and is skipped.

    Args:
        split: `"train"`, `"validation"` or `"test"`.
        batch_size: Images per batch.
        image_size: Image side in pixels; None for dSprites' 64.
        shuffle: Visit the split in a new seeded permutation every epoch.
        seed: Seed of the epoch permutations.
        repeat: Repeat forever, each epoch in a new order.
        drop_remainder: Drop each epoch's last, smaller batch (with `repeat`,
            batches run across epoch boundaries instead).
        with_labels: Also yield the five factor indices, int64 (B,) each.

    Returns:
        The dataset and its `DatasetInfo`.
    """
    if split not in SPLIT_SIZES:
        raise UsageError(
            f"Expected split to be one of {tuple(SPLIT_SIZES)}. Received: split={split!r}"
        )
    size = image_size or IMAGE_SIZE
    num_examples = SPLIT_SIZES[split]
    info = pipeline.DatasetInfo(
        name="shapes",
        split=split,
        image_shape=(size, size, 1),
        num_examples=num_examples,
        label_names=FACTOR_NAMES,
        binary=True,
    )

    # Elements: (position within the split, epoch key). Each epoch gets a
    # fresh key from a random dataset that draws new keys for every new
    # iterator; the permutation itself is stateless, so a seed reproduces it.
    if shuffle:
        # With `repeat` the stream of keys is fixed by the seed alone, so a
        # new iterator (a resumed run) reads the same infinite stream.
        keys = tf.data.Dataset.random(
            seed=pipeline.derive_seed(seed, "shapes/epoch"), rerandomize_each_iteration=not repeat
        )
        if not repeat:
            keys = keys.take(1)

        def epoch(key):
            return tf.data.Dataset.zip(
                tf.data.Dataset.range(num_examples), tf.data.Dataset.from_tensors(key).repeat()
            )

        ds = keys.flat_map(epoch)
        # flat_map hides the length; Keras' progress bar and `len` want it.
        cardinality = tf.data.INFINITE_CARDINALITY if repeat else num_examples
        ds = ds.apply(tf.data.experimental.assert_cardinality(cardinality))
    else:
        ds = tf.data.Dataset.zip(
            tf.data.Dataset.range(num_examples),
            tf.data.Dataset.from_tensors(tf.constant(0, tf.int64)).repeat(),
        )
        if repeat:
            ds = ds.repeat()

    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def render_batch(positions, keys):
        # positions, keys: int64 (B,)
        if shuffle:
            seeds = tf.stack([keys, tf.zeros_like(keys)], axis=-1)  # (B, 2)
            positions = _index_shuffle(positions, seeds, max_index=num_examples - 1)
        factors = index_to_factors(split_to_index(split, positions))  # (B, 5)
        images = render(factors, size)  # (B, S, S, 1)
        if not with_labels:
            return images
        return images, {name: factors[:, axis] for axis, name in enumerate(FACTOR_NAMES)}

    ds = ds.map(render_batch, num_parallel_calls=pipeline.AUTOTUNE, deterministic=True)
    return pipeline.with_options(ds.prefetch(pipeline.AUTOTUNE)), info
