"""Image grids, as pure NumPy functions: the tiling of a batch of images into
one picture, for the figures written by `evaluate.py` and the image summaries
of the TensorBoard callback (the latent walks they show: `keras_vae.walks`).

Conventions:
- inputs and outputs are NumPy arrays; callers convert tensors with
  `np.asarray` (no TensorFlow, Keras or plotting library here);
- images are NHWC, float in [0, 1] or `uint8`;
- latent codes are 1-D `(D,)`, walks are `(steps, D)` and grids of codes are
  flattened row-major so that `tile(decode(codes), rows=R, cols=K)` draws them
  in the intended order.

Tile layout: `pad` pixels of `pad_value` *between* cells only, no outer border,
so a grid of `rows x cols` cells of `H x W` pixels is
`(rows * H + (rows - 1) * pad, cols * W + (cols - 1) * pad, C)`. Add a border
with `np.pad` if wanted.
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------
# Validation helpers.


def _check_images(images, name="images") -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(
            f"Expected `{name}` to be a 4-D array (N, H, W, C). "
            f"Received: {name}.shape={images.shape}"
        )
    if images.dtype != np.uint8 and not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"Expected `{name}` to be float (values in [0, 1]) or uint8. "
            f"Received: {name}.dtype={images.dtype}"
        )
    return images


def _check_positive_int(value, name) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Expected `{name}` to be a positive integer or None. Received: {name}={value!r}"
        )
    return int(value)


# ----------------------------------------------------------------------------
# Tiling.


def grid_shape(n, rows=None, cols=None) -> tuple[int, int]:
    """The `(rows, cols)` layout `tile` uses for `n` images.

    With neither given the layout is near-square: `cols = ceil(sqrt(n))`,
    `rows = ceil(n / cols)` (n=7 -> 3 x 3, n=13 -> 4 x 4, n=5 -> 2 x 3). With
    one given the other is `ceil(n / given)`. With both given they are used
    as they are and must hold all `n` images.

    Args:
        n: number of images, >= 1.
        rows: number of rows, or None.
        cols: number of columns, or None.

    Returns:
        `(rows, cols)` with `rows * cols >= n`.

    Raises:
        ValueError: `n < 1`, non-positive `rows`/`cols`, or `rows * cols < n`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Expected at least one image. Received: n={n!r}")
    n = int(n)
    rows = _check_positive_int(rows, "rows")
    cols = _check_positive_int(cols, "cols")
    if rows is None and cols is None:
        cols = math.isqrt(n - 1) + 1  # ceil(sqrt(n)) without float error
    if rows is None:
        rows = -(-n // cols)
    elif cols is None:
        cols = -(-n // rows)
    if rows * cols < n:
        raise ValueError(
            f"Expected rows * cols >= number of images ({n}). Received: rows={rows}, cols={cols}"
        )
    return rows, cols


def tile(images, rows=None, cols=None, pad=1, pad_value=1.0) -> np.ndarray:
    """Tiles a batch of images into one image, row-major.

    Image `i` goes to row `i // cols`, column `i % cols`. Cells are separated
    by `pad` pixels of `pad_value`; there is no outer border. Cells beyond the
    last image are filled with `pad_value`.

    Args:
        images: `(N, H, W, C)` float in [0, 1] or uint8.
        rows: number of rows, or None to derive it (see `grid_shape`).
        cols: number of columns, or None to derive it (see `grid_shape`).
        pad: separator width in pixels, >= 0.
        pad_value: separator and empty-cell value on the [0, 1] scale (1.0 is
            white). For uint8 images it is mapped to `round(255 * pad_value)`.

    Returns:
        `(rows * H + (rows - 1) * pad, cols * W + (cols - 1) * pad, C)`, the
        dtype of `images`.

    Raises:
        ValueError: not a 4-D float/uint8 array, N = 0, a bad layout or pad.
    """
    images = _check_images(images)
    n, height, width, channels = images.shape
    rows, cols = grid_shape(n, rows, cols)
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"Expected `pad` to be an integer >= 0. Received: pad={pad!r}")
    if images.dtype == np.uint8:
        if not 0.0 <= pad_value <= 1.0:
            raise ValueError(
                "Expected `pad_value` in [0, 1] (it is scaled by 255 for uint8 images). "
                f"Received: pad_value={pad_value!r}"
            )
        fill = np.uint8(math.floor(255.0 * pad_value + 0.5))
    else:
        fill = pad_value
    canvas = np.full(
        (rows * height + (rows - 1) * pad, cols * width + (cols - 1) * pad, channels),
        fill,
        dtype=images.dtype,
    )
    for i in range(n):
        top = (i // cols) * (height + pad)
        left = (i % cols) * (width + pad)
        canvas[top : top + height, left : left + width] = images[i]
    return canvas


def tile_rows(rows_of_images, pad=1, pad_value=1.0) -> np.ndarray:
    """Tiles R rows of K images each into an R x K grid.

    For interpolation and traversal figures: row `r` of the output shows
    `rows_of_images[r]` from left to right.

    Args:
        rows_of_images: `(R, K, H, W, C)` array, or a sequence of R arrays of
            shape `(K, H, W, C)` (all the same shape).
        pad: separator width in pixels (see `tile`).
        pad_value: separator value (see `tile`).

    Returns:
        `(R * H + (R - 1) * pad, K * W + (K - 1) * pad, C)`.

    Raises:
        ValueError: rows of different shapes, or not 5-D once stacked.
    """
    if isinstance(rows_of_images, np.ndarray):
        stacked = rows_of_images
    else:
        rows_list = [np.asarray(row) for row in rows_of_images]
        shapes = {row.shape for row in rows_list}
        if len(shapes) != 1:
            raise ValueError(
                "Expected at least one row, all rows of the same shape (K, H, W, C). "
                f"Received: row shapes={[row.shape for row in rows_list]}"
            )
        stacked = np.stack(rows_list)
    if stacked.ndim != 5 or stacked.shape[0] == 0 or stacked.shape[1] == 0:
        raise ValueError(
            "Expected `rows_of_images` of shape (R, K, H, W, C) with R, K >= 1. "
            f"Received: rows_of_images.shape={stacked.shape}"
        )
    num_rows, per_row = stacked.shape[:2]
    flat = stacked.reshape((num_rows * per_row,) + stacked.shape[2:])  # (R*K, H, W, C)
    return tile(flat, rows=num_rows, cols=per_row, pad=pad, pad_value=pad_value)


def to_uint8(images) -> np.ndarray:
    """Converts float images in [0, 1] to uint8, rounding half up and clipping.

    `k / 255` maps back to exactly `k`; values round to the nearest level with
    halves going up (`floor(255 * x + 0.5)`, as torchvision's `save_image`);
    values outside [0, 1] are clipped. uint8 input is returned as a copy.

    Args:
        images: float array of any shape, or uint8.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: a non-float, non-uint8 dtype, or NaN values.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images.copy()
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"Expected float images in [0, 1] or uint8. Received: images.dtype={images.dtype}"
        )
    scaled = images.astype(np.float64) * 255.0
    if np.isnan(scaled).any():
        raise ValueError("Expected images without NaN. Received: images with NaN values")
    return np.clip(np.floor(scaled + 0.5), 0.0, 255.0).astype(np.uint8)


__all__ = ["grid_shape", "tile", "tile_rows", "to_uint8"]
