"""Tests of keras_vae.data.strokes: the shapes sprites as pen-move token sequences."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.config import UsageError
from keras_vae.data import pipeline, shapes, strokes, tokens

SQUARE, ELLIPSE, HEART = 0, 1, 2
NUM_DOWN = strokes.NUM_MOVES // 2  # ids 4..51 draw, 52..99 travel


def factors_of(indices):
    return shapes.index_to_factors(np.asarray(indices)).numpy()


def random_factors(count, seed):
    return factors_of(np.random.default_rng(seed).integers(0, shapes.NUM_IMAGES, count))


def extreme_factors():
    """The largest scale of every shape and orientation at the four corner
    positions, the farthest from the canvas centre where the pen starts (480)."""
    return np.array(
        [
            [shape, 5, orientation, x, y]
            for shape in range(3)
            for orientation in range(40)
            for x in (0, 31)
            for y in (0, 31)
        ]
    )


def names(ids):
    return [strokes.VOCABULARY[i] for i in ids if i != tokens.PAD]


def dilate(masks):
    """3x3 binary dilation of bool (B, H, W): within one pixel (Chebyshev)."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)))
    height, width = masks.shape[1:]
    out = np.zeros_like(masks)
    for dy in range(3):
        for dx in range(3):
            out |= padded[:, dy : dy + height, dx : dx + width]
    return out


def boundary_points(factors, upsample=4):
    """Points on the edge of each `shapes.render` mask, in 64-px canvas pixels.

    Midpoints between 4-adjacent pixel centres of an `upsample`x finer mask
    that differ: within 0.5 / upsample px of the true edge.
    """
    masks = shapes.render(factors, image_size=64 * upsample).numpy()[..., 0] > 0
    result = []
    for mask in masks:
        rows, cols = np.nonzero(mask[:, 1:] != mask[:, :-1])
        across = np.stack([cols + 1.0, rows + 0.5], -1)
        rows, cols = np.nonzero(mask[1:] != mask[:-1])
        down = np.stack([cols + 0.5, rows + 1.0], -1)
        result.append(np.concatenate([across, down]) / upsample)
    return result


def point_segment_distances(points, starts, ends):
    """Distance of each point (P, 2) to the nearest segment (S, 2) -> (S, 2): (P,)."""
    direction = ends - starts  # (S, 2)
    offset = points[:, None, :] - starts[None]  # (P, S, 2)
    t = np.clip(np.sum(offset * direction, -1) / np.sum(direction**2, -1), 0.0, 1.0)
    return np.min(np.linalg.norm(offset - t[..., None] * direction, axis=-1), axis=1)


# ---------------------------------------------------------------------------
# Vocabulary and moves


def test_vocabulary_names_and_moves():
    # 4 specials + 2 pens x 16 directions x 3 lengths.
    assert len(strokes.VOCABULARY) == 4 + 2 * 16 * 3 == 100
    assert strokes.VOCABULARY[:4] == tokens.SPECIAL_TOKENS
    assert len(set(strokes.VOCABULARY)) == 100
    assert strokes.VOCABULARY[4] == "d00x1" and strokes.VOCABULARY[99] == "u15x4"
    assert strokes.VOCABULARY[strokes.move_id(True, 3, 1)] == "d03x2"
    assert strokes.VOCABULARY[strokes.move_id(False, 19, 2)] == "u03x4"  # direction mod 16
    # Direction d points d * 22.5 degrees counter-clockwise from +x on screen
    # (y grows downwards), a step of 1, 2 or 4 px.
    ids = [strokes.move_id(True, 4, 1), strokes.move_id(False, 8, 2), strokes.move_id(True, 2, 0)]
    points, drawn = strokes.detokenize(ids)
    diagonal = np.sqrt(0.5)
    expected = [[32, 32], [32, 30], [28, 30], [28 + diagonal, 30 - diagonal]]
    np.testing.assert_allclose(points[0], expected, atol=1e-12)
    np.testing.assert_array_equal(drawn[0], [True, False, True])


def test_axis_aligned_square_golden_tokens():
    # Scale 1: the half-side is 0.135 * 64 = 8.64 px, a side 17.28 px = 4 + 4 +
    # 4 + 4 + 1 px (0.28 px short, within the 0.5 px tolerance). The pen draws
    # counter-clockwise on screen from the top-right corner: left (direction
    # 8), down (12), right (0), up (4). A quarter turn (10 orientation steps)
    # turns every direction by 4.
    for orientation, first in ((0, 8), (10, 12), (20, 0)):
        ids = strokes.tokenize([[SQUARE, 5, orientation, 16, 16]])[0]
        drawn = [name for name in names(ids) if name.startswith("d")]
        expected = []
        for side in range(4):
            direction = (first + 4 * side) % 16
            expected += [f"d{direction:02d}x4"] * 4 + [f"d{direction:02d}x1"]
        assert drawn == expected


# ---------------------------------------------------------------------------
# tokenize


def test_sequences_are_moves_then_eos_then_padding():
    factors = np.concatenate([random_factors(300, seed=1), extreme_factors()])
    ids = strokes.tokenize(factors)
    assert ids.shape == (780, strokes.MAX_LENGTH) and ids.dtype == np.int32
    length = tokens.lengths(ids)  # up to and including EOS
    position = np.arange(strokes.MAX_LENGTH)
    before = position < (length - 1)[:, None]
    np.testing.assert_array_equal(ids[np.arange(len(ids)), length - 1], tokens.EOS)
    assert np.all(ids[position >= length[:, None]] == tokens.PAD)
    assert np.all(ids[before] >= tokens.NUM_SPECIAL) and np.all(ids < len(strokes.VOCABULARY))
    # Pen up (travel) only before the first pen-down move; >= 10 strokes drawn.
    down = before & (ids < tokens.NUM_SPECIAL + NUM_DOWN)
    up = before & ~down
    first_down = np.argmax(down, axis=1)
    assert np.all(up <= (position < first_down[:, None]))
    assert down.sum(1).min() >= 10


def test_round_trip_closes_and_follows_the_outline():
    factors = np.concatenate([random_factors(40, seed=2), extreme_factors()[::40]])
    points, drawn = strokes.detokenize(strokes.tokenize(factors))
    edges = boundary_points(factors)
    worst_vertex = worst_edge = worst_gap = worst_start = 0.0
    true_start = strokes.outline_points(factors, num_points=4)[:, 0]
    for i, edge in enumerate(edges):
        moves = np.flatnonzero(drawn[i])  # contiguous: pen down after the travel
        assert np.all(np.diff(moves) == 1)
        path = points[i, moves[0] : moves[-1] + 2]  # (K + 1, 2) pen-down vertices
        worst_gap = max(worst_gap, np.linalg.norm(path[-1] - path[0]))
        worst_start = max(worst_start, np.linalg.norm(path[0] - true_start[i]))
        vertex_to_edge = np.linalg.norm(path[:, None] - edge[None], axis=-1).min(1)
        worst_vertex = max(worst_vertex, vertex_to_edge.max())
        worst_edge = max(worst_edge, point_segment_distances(edge, path[:-1], path[1:]).max())
    # Closing moves stop once no 1 px move gets closer: within 0.51 px
    # (measured 0.501); the pen-up travel ends within 0.51 px of the start
    # point as well (measured 0.50).
    assert worst_gap <= 0.52
    assert worst_start <= 0.52
    # Every vertex is within 0.5 px of the outline relative to the start
    # point, plus the start offset 0.51 px, plus 0.125 px for the 4x mask's
    # edge: 1.14 px (measured 1.05, a bound, not a statistic). Conversely every
    # point of the mask's edge is that close to the drawn path, so the drawing
    # goes all the way round (measured 1.01).
    assert worst_vertex <= 1.14
    assert worst_edge <= 1.14


def test_max_length_fits_the_extremes_and_a_random_sample():
    # Enumerating all 737,280 combinations gives at most 38 tokens (EOS
    # included; 24 combinations, all squares of scale 1 near a corner) and a
    # mean of 23.0. The farthest positions need the most pen-up moves.
    extremes = tokens.lengths(strokes.tokenize(extreme_factors()))
    assert extremes.max() == strokes.MAX_LENGTH == 38
    sample = tokens.lengths(strokes.tokenize(random_factors(2000, seed=3)))
    assert sample.max() <= strokes.MAX_LENGTH
    assert 21.5 < sample.mean() < 24.5  # all combinations: 23.0


def test_pen_down_tokens_are_translation_and_rotation_equivariant():
    factors = random_factors(64, seed=4)
    down = tokens.NUM_SPECIAL + NUM_DOWN

    def drawn(factors):
        ids = strokes.tokenize(factors)
        return [row[(row >= tokens.NUM_SPECIAL) & (row < down)] for row in ids]

    moved = factors.copy()
    moved[:, 3:] = (factors[:, 3:] + 13) % 32
    for a, b in zip(drawn(factors), drawn(moved), strict=True):
        np.testing.assert_array_equal(a, b)
    # 5 orientation steps = 45 degrees = 2 directions.
    turned = factors.copy()
    turned[:, 2] = (factors[:, 2] + 5) % 40
    for a, b in zip(drawn(factors), drawn(turned), strict=True):
        move = a - tokens.NUM_SPECIAL
        expected = strokes.move_id(True, move // 3 + 2, move % 3)
        np.testing.assert_array_equal(b, expected)


# ---------------------------------------------------------------------------
# render_tokens


def test_rendered_strokes_lie_on_the_shapes_boundary():
    factors = np.concatenate([random_factors(60, seed=5), extreme_factors()[::120]])
    drawn = strokes.render_tokens(strokes.tokenize(factors))[..., 0] > 0
    masks = shapes.render(factors).numpy()[..., 0] > 0
    assert drawn.shape == masks.shape == (64, 64, 64)
    # The mask's edge pixels: inside, with a pixel outside among their 8 neighbours.
    edge = masks & dilate(~masks)
    # Drawn pixels within 1 px of an edge pixel: measured 99.9% overall, 97.6%
    # for the worst example.
    near_edge = (drawn & dilate(edge)).sum((1, 2)) / drawn.sum((1, 2))
    assert near_edge.mean() >= 0.98 and near_edge.min() >= 0.93
    # Edge pixels within 1 px of a drawn pixel: measured 99.9% overall, 96.3%
    # for the worst example (a small ellipse).
    covered = (edge & dilate(drawn)).sum((1, 2)) / edge.sum((1, 2))
    assert covered.mean() >= 0.98 and covered.min() >= 0.9
    # And the drawing is an outline, not a filled shape: at most 66% of the
    # mask's pixels (the smallest ellipse), measured.
    assert np.all(drawn.sum((1, 2)) < 0.8 * masks.sum((1, 2)))


def test_render_tokens_golden_lines():
    right = strokes.move_id(True, 0, 2)  # d00x4: 4 px to the right
    cases = [
        # From the centre (32, 32), along pixel row 32: columns 32..36.
        ((right, tokens.EOS, right), 32, 36),
        # PAD, UNK and BOS do not move the pen: columns 32..40.
        ((tokens.BOS, right, tokens.PAD, tokens.UNK, right), 32, 40),
        # A pen-up move is not drawn: columns 36..40.
        ((strokes.move_id(False, 0, 2), right), 36, 40),
        # Off the canvas: clipped after column 63.
        ((right,) * 30, 32, 63),
    ]
    for ids, first, last in cases:
        image = strokes.render_tokens([ids])[0, ..., 0]
        rows, cols = np.nonzero(image)
        np.testing.assert_array_equal(rows, 32)
        np.testing.assert_array_equal(cols, np.arange(first, last + 1))
    # Scaled to 128 px: every coordinate doubles.
    image = strokes.render_tokens([[right]], image_size=128)[0, ..., 0]
    np.testing.assert_array_equal(np.nonzero(image)[1], np.arange(64, 73))


def test_render_tokens_accepts_garbage():
    rng = np.random.default_rng(6)
    garbage = [
        rng.integers(-1000, 1000, (16, 60)),
        rng.integers(0, len(strokes.VOCABULARY), (16, 60)),
        np.full((2, 5), np.iinfo(np.int64).max),
        np.zeros((3, 0), np.int64),
        rng.integers(tokens.NUM_SPECIAL, len(strokes.VOCABULARY), 200),  # one long sequence
    ]
    for ids in garbage:
        images = strokes.render_tokens(ids)
        assert images.dtype == np.float32 and images.shape[1:] == (64, 64, 1)
        assert images.shape[0] == (1 if ids.ndim == 1 else ids.shape[0])
        assert images.min() >= 0.0 and images.max() <= 1.0
    # Valid random moves do draw something.
    assert strokes.render_tokens(garbage[1]).sum() > 0


# ---------------------------------------------------------------------------
# make_source


def test_source_info_determinism_and_labels():
    source = strokes.make_source("validation")
    assert source.info == pipeline.DatasetInfo(
        name="strokes",
        split="validation",
        image_shape=(38,),
        num_examples=36_864,
        label_names=shapes.FACTOR_NAMES,
        binary=False,
        vocabulary=strokes.VOCABULARY,
    )
    assert source.info.is_sequence
    assert source.examples.cardinality().numpy() == 36_864
    positions = tf.constant([0, 5, 36_863, 17], tf.int64)
    ids, labels = source.render(positions)
    again, _ = source.render(positions)
    np.testing.assert_array_equal(ids.numpy(), again.numpy())
    factors = shapes.index_to_factors(shapes.split_to_index("validation", positions)).numpy()
    for axis, name in enumerate(shapes.FACTOR_NAMES):
        assert labels[name].dtype == tf.int64
        np.testing.assert_array_equal(labels[name].numpy(), factors[:, axis])
    np.testing.assert_array_equal(ids.numpy(), strokes.tokenize(factors))


def test_batches_through_the_pipeline_tail():
    def batches(max_length=None):
        source = strokes.make_source("test", max_length=max_length)
        ds = pipeline.tail(
            source,
            batch_size=8,
            shuffle=True,
            seed=0,
            repeat=False,
            drop_remainder=False,
            binarize=False,
            with_labels=True,
            cache=False,
        )
        assert ds.element_spec[0] == tf.TensorSpec((None, source.info.image_shape[0]), tf.int32)
        return [(ids.numpy(), labels) for ids, labels in ds.take(2)]

    first, second = batches(), batches()
    for (ids, labels), (ids_again, _) in zip(first, second, strict=True):
        assert ids.shape == (8, 38) and ids.dtype == np.int32
        np.testing.assert_array_equal(ids, ids_again)  # the seed fixes the stream
        factors = np.stack([labels[name].numpy() for name in shapes.FACTOR_NAMES], -1)
        np.testing.assert_array_equal(ids, strokes.tokenize(factors))
    # A longer max_length pads with PAD.
    (longer, _), _ = batches(max_length=48)
    assert longer.shape == (8, 48)
    np.testing.assert_array_equal(longer[:, :38], first[0][0])
    assert np.all(longer[:, 38:] == tokens.PAD)


def test_usage_errors():
    with pytest.raises(UsageError, match=r"max_length >= 38 .* Received: max_length=37"):
        strokes.make_source("train", max_length=37)
    with pytest.raises(UsageError, match="max_length >= 38"):
        strokes.tokenize([[0, 0, 0, 0, 0]], max_length=20)
    with pytest.raises(UsageError, match="Expected split"):
        strokes.make_source("holdout")
