"""`strokes`: the `shapes` sprites drawn as pen moves, a token sequence dataset.

Each example is the outline of one procedural dSprites sprite (`shapes`: the
same five factors, the same 737,280 combinations and the same fixed train /
validation / test split) drawn by a pen on the 64x64 canvas, as in the
sketch-RNN data (Ha & Eck 2017) but tokenized for a VAE-RNN (Bowman et al.
2016). An example is int32 `(max_length,)`: move tokens, `EOS`, then `PAD`
(ids of `keras_vae.data.tokens`; `BOS` never appears in the data).

Move tokens (ids 4..99; 100 with the specials, `VOCABULARY`):
    id = 4 + (16 * pen + direction) * 3 + length_index, where `pen` is 0 for
    pen down (draws) and 1 for pen up (travels), `direction` d in 0..15 points
    at d * 22.5 degrees counter-clockwise from +x as seen on screen (d = 4 is
    up), and the step is `STEP_UNITS[length_index]` = 1, 2 or 4 units of
    `UNIT_PIXELS` = 1 px. Names read `d03x2`: pen down, direction 3, 2 units.

Drawing a sprite (the pen starts at the canvas centre, (32, 32) px):
  1. Pen up, from the centre to the outline's start point: each move is the
     one that brings the pen closest to the start point, aimed from the pen's
     actual position, while one still brings it closer; this stops within
     0.51 px of the point (a 1 px move at most 11.25 degrees off helps while
     the distance exceeds 1 / (2 cos 11.25 deg)). Up to 11 moves.
  2. Pen down, once around the outline counter-clockwise (on screen) from its
     start point: the square's corner at (+1, +1) in the sprite's frame, the
     ellipse's major-axis end at (+1.4, 0), the heart's lower tip; the start
     point turns with the sprite. Each move is the one that advances farthest
     along the outline such that its end lies within `_TRACE_TOLERANCE`
     (0.5 px) of the outline and the outline it passes stays within that
     distance of the stroke. Every move is aimed from the pen's actual
     quantized position, so errors never add up, and the last one ends within
     0.5 px of the start point (should no move fit near the end, closing moves
     as in 1 finish the loop, within 0.51 px). 10 to 26 moves.
  3. `EOS`.

The pen-down moves are traced relative to the start point, not from the
pen's position after step 1: they depend on (shape, scale, orientation) only,
so a sprite draws with the same pen-down tokens at every position (position
lives in the pen-up prefix alone), at the price of shifting the whole outline
by the travel's error, at most 0.51 px. Turning the sprite by 5 orientation
steps (45 degrees) adds 2 to every direction exactly, so the 720 outlines
come from 90, traced once on first use (0.25 s).

Sequence lengths over all 737,280 combinations (enumerated): 11 to 38 tokens
with `EOS`, mean 23.0; `MAX_LENGTH` = 38 is the default example length.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from keras_vae.config import UsageError
from keras_vae.data import pipeline, shapes, tokens

# The sprite geometry of `shapes` (private there, one source of truth).
from keras_vae.data.shapes import (
    _CENTER_HIGH,
    _CENTER_LOW,
    _ELLIPSE_AXES,
    _HALF_SIZE,
    _HEART_CENTROID_Y,
    _HEART_SCALE,
)

IMAGE_SIZE = 64  # canvas side in pixels; coordinates below are in its pixels
UNIT_PIXELS = 1.0  # one length unit, in pixels
NUM_DIRECTIONS = 16
STEP_UNITS = (1, 2, 4)  # step lengths, in units
PEN_NAMES = ("d", "u")  # pen down (draws), pen up (travels)

VOCABULARY = tokens.vocabulary_with_specials(
    f"{pen}{direction:02d}x{units}"
    for pen in PEN_NAMES
    for direction in range(NUM_DIRECTIONS)
    for units in STEP_UNITS
)
NUM_MOVES = len(VOCABULARY) - tokens.NUM_SPECIAL  # 96

# The longest sequence over every factor combination, EOS included; pinned by
# tests/test_strokes.py.
MAX_LENGTH = 38

# Pen-down moves stay within this distance (px) of the outline, and it of them.
_TRACE_TOLERANCE = 0.5
# Points per outline in the tracer: 0.13 px apart on average (at most 0.27) at scale 1.
_OUTLINE_POINTS = 512
# Outline start points, as polar angles about the sprite's own centre (the
# heart's: the origin of its curve), in the sprite frame before rotation.
_START_ANGLES = (np.pi / 4, 0.0, -np.pi / 2)
# A bound on the pen-up moves (11 reach the farthest start point, 39.4 px away).
_MAX_TRAVEL_MOVES = 16


def _move_table():
    """Per token id: the pen-down flag (V,) and the step in pixels (V, 2).

    Steps are (x, y) in image coordinates (y grows downwards); the specials
    are not moves (zero step, not drawn).
    """
    pen, direction, length = np.meshgrid(
        np.arange(len(PEN_NAMES)),
        np.arange(NUM_DIRECTIONS),
        np.arange(len(STEP_UNITS)),
        indexing="ij",
    )
    angle = 2.0 * np.pi * direction.ravel() / NUM_DIRECTIONS
    step = UNIT_PIXELS * np.asarray(STEP_UNITS)[length.ravel()]
    steps = np.zeros((len(VOCABULARY), 2))
    steps[tokens.NUM_SPECIAL :] = np.stack([step * np.cos(angle), -step * np.sin(angle)], -1)
    down = np.zeros(len(VOCABULARY), bool)
    down[tokens.NUM_SPECIAL :] = pen.ravel() == 0
    return down, steps


_PEN_DOWN, _STEPS = _move_table()
_DOWN_IDS = np.arange(tokens.NUM_SPECIAL, tokens.NUM_SPECIAL + NUM_MOVES // 2)
_UP_IDS = _DOWN_IDS + NUM_MOVES // 2


def move_id(pen_down: bool, direction, length_index):
    """Token id(s) of moves; arguments broadcast (NumPy ints or arrays)."""
    pen = 0 if pen_down else 1
    direction = np.asarray(direction) % NUM_DIRECTIONS
    return tokens.NUM_SPECIAL + (NUM_DIRECTIONS * pen + direction) * len(STEP_UNITS) + length_index


def _frame_outline(shape: int, num_points: int) -> np.ndarray:
    """A closed outline in the sprite frame (half-sides, y up), counter-clockwise.

    Args:
        shape: 0 square, 1 ellipse, 2 heart (`shapes.SHAPE_NAMES`).
        num_points: Polar samples (a multiple of 4, so corners and cusps are
            samples).

    Returns:
        float (num_points + 1, 2); the last point repeats the start point.
    """
    phi = _START_ANGLES[shape] + np.linspace(0.0, 2.0 * np.pi, num_points + 1)
    cos, sin = np.cos(phi), np.sin(phi)
    if shape == 0:  # max(|x|, |y|) = 1
        radius = 1.0 / np.maximum(np.abs(cos), np.abs(sin))
        return radius[:, None] * np.stack([cos, sin], -1)
    if shape == 1:  # (x / a)^2 + (y / b)^2 = 1
        a, b = _ELLIPSE_AXES
        radius = 1.0 / np.sqrt(np.square(cos / a) + np.square(sin / b))
        return radius[:, None] * np.stack([cos, sin], -1)
    # Heart (x^2 + y^2 - 1)^3 = x^2 y^3 in polar form: (r^2 - 1)^3 = r^5 c with
    # c = cos^2 sin^3. For r in (0, 2) the left side minus the right rises
    # through zero once (c <= 0.186), so bisection finds the radius.
    c = np.square(cos) * sin**3
    low, high = np.zeros_like(phi), np.full_like(phi, 2.0)
    for _ in range(60):
        mid = 0.5 * (low + high)
        inside = (np.square(mid) - 1.0) ** 3 - mid**5 * c <= 0.0
        low, high = np.where(inside, mid, low), np.where(inside, high, mid)
    radius = 0.5 * (low + high)
    # Heart coordinates -> sprite frame, as `shapes.render` maps them.
    x, y = radius * cos, radius * sin
    return _HEART_SCALE * np.stack([x, y - _HEART_CENTROID_Y], -1)


def _sprite_points(frame_points, scale, orientation):
    """Sprite-frame points -> pixel offsets from the sprite centre.

    Args:
        frame_points: float (..., 2), half-sides, y up.
        scale: Scale index(es), broadcasting with `frame_points[..., 0]`.
        orientation: Orientation index(es), the same.

    Returns:
        float (..., 2): (x, y) offsets in pixels, y down. The inverse of the
        transform in `shapes.render` (rotate by +angle, times the half-side).
    """
    size = _HALF_SIZE * shapes.SCALES[scale] * IMAGE_SIZE
    angle = shapes.ORIENTATIONS[orientation]
    x, y = frame_points[..., 0], frame_points[..., 1]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.stack([size * (cos * x - sin * y), -size * (sin * x + cos * y)], -1)


def _sprite_centers(factors) -> np.ndarray:
    """Pixel (x, y) of the sprite centres, (B, 5) int factors -> (B, 2)."""
    span = (_CENTER_HIGH - _CENTER_LOW) * IMAGE_SIZE
    low = _CENTER_LOW * IMAGE_SIZE
    return low + span * shapes.POSITIONS[factors[:, 3:5]]


def outline_points(factors, num_points: int = _OUTLINE_POINTS) -> np.ndarray:
    """The true outlines the pen traces, in pixels, from their start points.

    Args:
        factors: int (B, 5) factor indices (`shapes.FACTOR_NAMES` order).
        num_points: Samples per outline (a multiple of 4).

    Returns:
        float (B, num_points + 1, 2): (x, y) pixel coordinates, y down; the
        last point repeats the first (the start point).
    """
    factors = np.asarray(factors, np.int64)
    frames = np.stack([_frame_outline(shape, num_points) for shape in range(3)])
    offsets = _sprite_points(
        frames[factors[:, 0]], factors[:, 1, None], factors[:, 2, None]
    )  # (B, N + 1, 2)
    return _sprite_centers(factors)[:, None, :] + offsets


def _greedy_moves(pen, target, move_ids):
    """Greedy moves to `target`: the one that gets closest, while one gets closer.

    Steps 1 and 2 (closing) of the module docstring, for a batch.

    Args:
        pen: float (B, 2) pen positions.
        target: float (B, 2) targets.
        move_ids: int (M,) the candidate move tokens (all pen-down or all up).

    Returns:
        `(ids, pen)`: int (B, _MAX_TRAVEL_MOVES) move tokens, PAD after the
        last move of each row, and the final pen positions (B, 2).
    """
    steps = _STEPS[move_ids]  # (M, 2)
    ids = np.zeros((len(pen), _MAX_TRAVEL_MOVES), np.int32)
    pen = np.array(pen, float)
    for column in range(_MAX_TRAVEL_MOVES + 1):
        error = target - pen  # (B, 2)
        after = np.linalg.norm(error[:, None, :] - steps[None], axis=-1)  # (B, M)
        best = np.argmin(after, axis=1)
        # A 1e-9 px margin keeps float noise from adding a useless move.
        moving = after[np.arange(len(pen)), best] < np.linalg.norm(error, axis=-1) - 1e-9
        if not moving.any():
            return ids, pen
        if column == _MAX_TRAVEL_MOVES:
            raise AssertionError("Pen-up travel needs more than _MAX_TRAVEL_MOVES moves.")
        ids[:, column] = np.where(moving, move_ids[best], tokens.PAD)
        pen += np.where(moving[:, None], steps[best], 0.0)
    raise AssertionError("unreachable")


def _segment_distances(pen, ends, points):
    """Distances of points to the segments pen -> ends[m], (M, A)."""
    direction = ends - pen  # (M, 2)
    offset = points - pen  # (A, 2)
    t = np.clip((direction @ offset.T) / np.sum(np.square(direction), -1)[:, None], 0.0, 1.0)
    return np.hypot(
        offset[:, 0] - t * direction[:, :1], offset[:, 1] - t * direction[:, 1:]
    )  # (M, A)


def _trace(points: np.ndarray) -> list[int]:
    """Pen-down move tokens that trace a closed polyline (step 2 of the docstring).

    Args:
        points: float (N + 1, 2) outline in pixels, relative to its start
            point; `points[N] == points[0]`.

    Returns:
        The move token ids, in order.
    """
    steps = _STEPS[_DOWN_IDS]  # (M, 2)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=-1))])
    # No move reaches farther along the outline than this (a bound, in px).
    window = 1.5 * np.max(np.abs(steps)) + 2.0 * _TRACE_TOLERANCE
    pen, index, moves = points[0].copy(), 0, []
    last = len(points) - 1
    while index < last:
        ahead = points[index : np.searchsorted(arc, arc[index] + window) + 1]  # (A, 2)
        ends = pen + steps  # (M, 2)
        # A move may stop at ahead[j] if its end is within the tolerance of it
        # and every outline point up to it is within the tolerance of the move.
        near = np.maximum.accumulate(_segment_distances(pen, ends, ahead), axis=1)
        end_error = np.hypot(*(ends[:, None, :] - ahead[None]).transpose(2, 0, 1))  # (M, A)
        allowed = (near <= _TRACE_TOLERANCE) & (end_error <= _TRACE_TOLERANCE)
        allowed[:, 0] = False
        if not allowed.any():
            # No move fits: the outline ahead stays near the pen (its end, or a
            # bend tighter than the shortest move). Skip what stays near.
            near_pen = np.maximum.accumulate(np.linalg.norm(ahead - pen, axis=-1))
            skip = int(np.sum(near_pen <= _TRACE_TOLERANCE)) - 1
            if skip >= 1:
                index += skip
                continue
            if near_pen[-1] > 2 * _TRACE_TOLERANCE:
                raise AssertionError(f"The tracer is stuck at outline point {index}.")
            break  # at the end: the closing moves below finish it
        # Farthest point each move may stop at, then the farthest move, the
        # most accurate among those.
        reach = np.where(allowed.any(1), allowed.shape[1] - 1 - np.argmax(allowed[:, ::-1], 1), 0)
        error = np.where(reach == reach.max(), end_error[np.arange(len(steps)), reach], np.inf)
        best = int(np.argmin(error))
        moves.append(int(_DOWN_IDS[best]))
        pen, index = ends[best], index + int(reach[best])
    closing, _ = _greedy_moves(pen[None], points[-1][None], _DOWN_IDS)
    return moves + [int(i) for i in closing[0] if i != tokens.PAD]


@functools.cache
def _outline_table():
    """Pen-down tokens of every (shape, scale, orientation), traced once.

    Returns:
        `(ids, lengths)`: int32 (3, 6, 40, L) pen-down move tokens padded with
        PAD, and int (3, 6, 40) their numbers.
    """
    period = len(shapes.ORIENTATIONS) // 8  # orientation steps per 45 degrees
    traced = {}
    for shape in range(len(shapes.SHAPE_NAMES)):
        frame = _frame_outline(shape, _OUTLINE_POINTS)
        for scale in range(len(shapes.SCALES)):
            for orientation in range(period):
                pixels = _sprite_points(frame, scale, orientation)
                traced[shape, scale, orientation] = _trace(pixels - pixels[0])
    longest = max(len(moves) for moves in traced.values())
    ids = np.zeros(shapes.FACTOR_SIZES[:3] + (longest,), np.int32)
    lengths = np.zeros(shapes.FACTOR_SIZES[:3], np.int64)
    for (shape, scale, orientation), moves in traced.items():
        move = np.asarray(moves) - tokens.NUM_SPECIAL
        direction = move // len(STEP_UNITS) % NUM_DIRECTIONS
        length_index = move % len(STEP_UNITS)
        for turns in range(8):  # +45 degrees each: +2 directions exactly
            rotated = move_id(True, direction + 2 * turns, length_index)
            ids[shape, scale, orientation + period * turns, : len(moves)] = rotated
            lengths[shape, scale, orientation + period * turns] = len(moves)
    return ids, lengths


def _check_length(max_length):
    """`max_length` or MAX_LENGTH; a UsageError when some sequence would not fit."""
    length = MAX_LENGTH if max_length is None else max_length
    if not isinstance(length, (int, np.integer)) or length < MAX_LENGTH:
        raise UsageError(
            f"Expected an integer max_length >= {MAX_LENGTH} for the strokes dataset (its longest "
            f"sequence, EOS included). Received: max_length={max_length!r}"
        )
    return int(length)


def tokenize(factors, *, max_length: int | None = None) -> np.ndarray:
    """Token sequences of sprites (pen up to the start, trace the outline, EOS).

    Args:
        factors: int (B, 5) factor indices in `shapes.FACTOR_NAMES` order, as
            `shapes.index_to_factors` returns them.
        max_length: Example length, >= MAX_LENGTH; None for MAX_LENGTH.

    Returns:
        int32 (B, max_length): move tokens, EOS, then PAD.
    """
    length = _check_length(max_length)
    factors = np.asarray(factors, np.int64).reshape(-1, len(shapes.FACTOR_SIZES))
    bad = np.any((factors < 0) | (factors >= np.asarray(shapes.FACTOR_SIZES)), axis=1)
    if np.any(bad):
        raise ValueError(
            f"Expected factor indices in [0, {shapes.FACTOR_SIZES}). "
            f"Received: {factors[bad][0].tolist()}"
        )
    table, table_lengths = _outline_table()
    start = outline_points(factors, num_points=4)[:, 0]  # (B, 2)
    center = np.full_like(start, IMAGE_SIZE / 2)
    travel, _ = _greedy_moves(center, start, _UP_IDS)  # (B, U)
    sprite = (factors[:, 0], factors[:, 1], factors[:, 2])  # shape, scale, orientation
    outline = table[sprite]  # (B, L)
    eos = np.full((len(factors), 1), tokens.EOS, np.int32)
    # Moves of each row to the front (stable), then EOS, then PAD.
    joined = np.concatenate([travel, outline, eos], axis=1)
    order = np.argsort(joined == tokens.PAD, axis=1, kind="stable")
    joined = np.take_along_axis(joined, order, axis=1)
    used = (travel != tokens.PAD).sum(1) + table_lengths[sprite]
    if np.any(used + 1 > length):
        raise AssertionError(f"A sequence of {used.max() + 1} tokens exceeds MAX_LENGTH.")
    result = np.zeros((len(factors), length), np.int32)
    width = min(length, joined.shape[1])
    result[:, :width] = joined[:, :width]
    return result


def detokenize(token_ids) -> tuple[np.ndarray, np.ndarray]:
    """The pen's path of token sequences, from the canvas centre.

    Any integers are accepted: ids outside the vocabulary count as UNK; PAD,
    UNK and BOS do not move the pen; nothing moves after the first EOS.

    Args:
        token_ids: int (B, T), or (T,) for one sequence.

    Returns:
        `(points, drawn)`: float (B, T + 1, 2) pen positions (x, y) in pixels
        of the 64x64 canvas (y down) before the first and after every token,
        and bool (B, T), True where a token draws (pen down, before EOS).
    """
    ids = np.atleast_2d(token_ids)
    ids = ids.reshape(int(np.prod(ids.shape[:-1])), ids.shape[-1]).astype(np.int64)
    ids = np.where((ids >= 0) & (ids < len(VOCABULARY)), ids, tokens.UNK)
    before_eos = np.cumsum(ids == tokens.EOS, axis=1) == 0  # (B, T)
    steps = _STEPS[ids] * before_eos[..., None]  # (B, T, 2)
    start = np.full((len(ids), 1, 2), IMAGE_SIZE / 2)
    points = np.concatenate([start, start + np.cumsum(steps, axis=1)], axis=1)
    return points, _PEN_DOWN[ids] & before_eos


def render_tokens(token_ids, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """Draws token sequences: pen-down moves as 1-2 px lines on black.

    Args:
        token_ids: int (B, T) (or (T,)), any values; see `detokenize`.
            Strokes off the canvas are clipped.
        image_size: Side of the image; the 64x64 canvas is scaled to it.

    Returns:
        float32 (B, image_size, image_size, 1) in {0, 1}; row 0 is the top.
    """
    points, drawn = detokenize(token_ids)
    points = points * (image_size / IMAGE_SIZE)
    start, end = points[:, :-1], points[:, 1:]  # (B, T, 2)
    # Samples at most half a pixel apart along every segment.
    longest = np.max(np.abs(_STEPS)) * image_size / IMAGE_SIZE
    t = np.linspace(0.0, 1.0, int(np.ceil(2.0 * longest)) + 1)[:, None]  # (K, 1)
    samples = start[:, :, None] + t * (end - start)[:, :, None]  # (B, T, K, 2)
    # Pixel (row, col) covers [col, col + 1) x [row, row + 1), as shapes.render.
    pixel = np.floor(samples).clip(-1, image_size).astype(np.int64)
    on = (
        drawn[..., None] & np.all(pixel >= 0, axis=-1) & np.all(pixel < image_size, axis=-1)
    )  # (B, T, K)
    batch = np.broadcast_to(np.arange(len(points))[:, None, None], on.shape)
    images = np.zeros((len(points), image_size, image_size, 1), np.float32)
    images[batch[on], pixel[..., 1][on], pixel[..., 0][on], 0] = 1.0
    return images


def make_source(split: str, *, max_length: int | None = None) -> pipeline.Source:
    """The `strokes` split as an indexed source: positions, tokenized per batch.

    Args:
        split: `"train"`, `"validation"` or `"test"` (the `shapes` split).
        max_length: Example length, >= MAX_LENGTH; None for MAX_LENGTH.

    Returns:
        The `Source`: int64 scalar positions, and a `render` of a batch of
        positions to token ids int32 (B, max_length) and the five factor
        indices, int64 (B,) each.
    """
    if split not in shapes.SPLIT_SIZES:
        raise UsageError(
            f"Expected split to be one of {tuple(shapes.SPLIT_SIZES)}. Received: split={split!r}"
        )
    length = _check_length(max_length)
    info = pipeline.DatasetInfo(
        name="strokes",
        split=split,
        image_shape=(length,),
        num_examples=shapes.SPLIT_SIZES[split],
        label_names=shapes.FACTOR_NAMES,
        binary=False,
        vocabulary=VOCABULARY,
    )
    tokenize_batch = functools.partial(tokenize, max_length=length)

    def render_positions(positions):
        # positions: int64 (B,)
        factors = shapes.index_to_factors(shapes.split_to_index(split, positions))  # (B, 5)
        ids = tf.numpy_function(tokenize_batch, [factors], tf.int32, stateful=False)
        ids = tf.ensure_shape(ids, (None, length))  # (B, max_length)
        return ids, {name: factors[:, axis] for axis, name in enumerate(shapes.FACTOR_NAMES)}

    return pipeline.Source(
        examples=tf.data.Dataset.range(info.num_examples), info=info, render=render_positions
    )
