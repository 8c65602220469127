"""A conditional model's image grids: each grid is decoded with the right labels.

Every check compares pixels with a direct `model.decode` / `reconstruct` call
made with the labels the grid should use, and also checks that the same call
with another label gives a clearly different picture, so a grid decoded with
the wrong labels fails.
"""

import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import keras_vae
from keras_vae import callbacks, config, grids, latent_grids, training, walks

SIDE = 16  # 16x16x1 images
STEP = SIDE + 1  # a cell and its 1-pixel separator (grids.tile, pad=1)
# tf.summary.image stores uint8 PNG: a pixel differs from the float grid by
# at most one level (plus float noise).
PNG_ATOL = 1.01 / 255
# Much more than PNG rounding. A wrong label moves every cell by at least
# ~0.19 with `_tiny_cvae`'s decoder (measured for latent codes drawn from
# N(0, I)), so a check like this can fail.
WRONG_LABEL_MIN = 0.05


def _tiny_cvae(condition_size=3, multi_hot=False, latent_dim=4, seed=0):
    keras.utils.set_random_seed(seed)
    kwargs = dict(
        image_shape=(SIDE, SIDE, 1), latent_dim=latent_dim, network="conv", widths=(8, 16),
        dense_units=32, condition_size=condition_size,
    )  # fmt: skip
    encoder, decoder = keras_vae.build_encoder(**kwargs), keras_vae.build_decoder(**kwargs)
    # At initialisation the label moves the decoded pixels by ~0.01 (~2 PNG
    # levels). Scaling its weights in the decoder's first dense layer (the
    # condition's rows come after z's) makes a wrong label show clearly.
    dense = next(layer for layer in decoder.layers if isinstance(layer, keras.layers.Dense))
    kernel, bias = dense.get_weights()  # kernel (latent_dim + K, units)
    kernel[latent_dim:] *= 20.0
    dense.set_weights([kernel, bias])
    return keras_vae.models.CVAE(
        encoder, decoder, condition_size=condition_size, multi_hot=multi_hot, seed=seed
    )


def _images(n, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, SIDE, SIDE, 1)).astype(np.float32)


def _read(log_dir):
    """`({tag: (H, W, C) float in [0, 1]}, {tag: description})` written at step 0."""
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    images, descriptions = {}, {}
    for tag in acc.Tags()["tensors"]:
        metadata = acc.SummaryMetadata(tag)
        if metadata.plugin_data.plugin_name != "images":
            continue
        (event,) = acc.Tensors(tag)
        # TF2 image summaries: [width, height, png_0] as strings.
        png = tf.make_ndarray(event.tensor_proto)[2]
        images[tag] = tf.io.decode_png(png).numpy().astype(np.float32) / 255.0
        descriptions[tag] = metadata.summary_description
    return images, descriptions


def _cells(grid, row, cols):
    """The `cols` cells of grid row `row`: `(cols, SIDE, SIDE, C)`."""
    top = row * STEP
    return np.stack([grid[top : top + SIDE, c * STEP : c * STEP + SIDE] for c in range(cols)])


def _decode(model, codes, labels):
    return np.clip(np.asarray(model.decode(np.asarray(codes, np.float32), labels=labels)), 0, 1)


def _assert_labelled(actual, expected, wrong, atol, what):
    """`actual` matches `expected` and every cell is far from `wrong`."""
    np.testing.assert_allclose(actual, expected, atol=atol, rtol=0, err_msg=what)
    actual = actual.reshape((-1,) + actual.shape[-3:])
    wrong = wrong.reshape(actual.shape)
    per_cell = np.abs(actual - wrong).max(axis=(1, 2, 3))
    assert per_cell.min() > WRONG_LABEL_MIN, (what, per_cell.min())


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 3-class CVAE's summaries of 8 held-out images, written at step 0."""
    log_dir = str(tmp_path_factory.mktemp("cvae_logs"))
    model = _tiny_cvae()
    images = _images(8)
    condition = np.arange(8, dtype=np.int64) % 3  # 0, 1, 2, 0, 1, 2, 0, 1
    summaries = callbacks.LatentSummaries(log_dir, images, condition=condition)
    summaries.set_model(model)
    summaries.write(0)
    grids_, descriptions = _read(log_dir)
    return model, images, condition, summaries, grids_, descriptions


def test_samples_per_class_rows_are_the_same_noise_as_each_class(written):
    model, _, _, summaries, grids_, descriptions = written
    grid = grids_["images/samples_per_class"]
    # 3 classes x 8 columns (the callback's `columns`; 16 noise vectors).
    assert grid.shape == (3 * SIDE + 2, 8 * SIDE + 7, 1)  # (50, 135, 1)
    noise = summaries.prior_noise(model.latent_dim)[:8]  # (8, 4), temperature 1
    for r in range(3):
        _assert_labelled(
            _cells(grid, r, 8),
            _decode(model, noise, [r] * 8),
            _decode(model, noise, [(r + 1) % 3] * 8),
            PNG_ATOL,
            f"row {r}",
        )
    assert descriptions["images/samples_per_class"].startswith("Rows: classes 0, 1, 2. ")


def test_reconstructions_use_each_images_own_label(written):
    model, images, condition, _, grids_, descriptions = written
    grid = grids_["images/reconstructions"]
    assert grid.shape == (2 * SIDE + 1, 8 * SIDE + 7, 1)  # inputs row, reconstructions row
    np.testing.assert_allclose(_cells(grid, 0, 8), images, atol=PNG_ATOL)
    _assert_labelled(
        _cells(grid, 1, 8),
        np.clip(np.asarray(model.reconstruct(images, labels=condition)), 0, 1),
        np.clip(np.asarray(model.reconstruct(images, labels=(condition + 1) % 3)), 0, 1),
        PNG_ATOL,
        "reconstructions",
    )
    assert "each image's own label" in descriptions["images/reconstructions"]
    assert "the first class (0)" in descriptions["images/traversal_origin"]
    assert "start (left) image" in descriptions["images/interpolation"]


def test_every_grid_decodes_with_its_labels(tmp_path):
    # latent_dim 2 for the manifold; floats from `summary_images` (no PNG).
    model = _tiny_cvae(latent_dim=2, seed=1)
    images = _images(8, seed=1)
    # Pairs (0, 1), (2, 3) join different labels; image 1 (traversed) is not class 0.
    condition = np.array([2, 1, 1, 2, 0, 2, 2, 1])
    summaries = callbacks.LatentSummaries(
        str(tmp_path), images, condition=condition, num_pairs=2, traversal_index=1,
        manifold_size=3,
    )  # fmt: skip
    summaries.set_model(model)
    stats = summaries.latent_statistics()
    out = summaries.summary_images(stats)
    mean = stats["mean"]  # (8, 2), encoded with `condition`
    np.testing.assert_allclose(mean, model.encode(images, labels=condition)[0], atol=1e-6)
    atol = 1e-5  # one batched decode against separate calls

    def check(tag, codes, labels, wrong, rows, cols):
        """Grid `tag`'s first `rows` x `cols` cells against `codes` decoded with `labels`."""
        actual = np.stack([_cells(out[tag], r, cols) for r in range(rows)])
        shape = (rows, cols, SIDE, SIDE, 1)
        expected = _decode(model, codes, labels).reshape(shape)
        _assert_labelled(actual, expected, _decode(model, codes, wrong).reshape(shape), atol, tag)

    # Samples, first block (t = 1): 16 noise vectors, 2 x 8, the classes in turn.
    noise = summaries.prior_noise(2)
    in_turn = np.arange(16) % 3
    check("images/samples", noise, in_turn, (in_turn + 1) % 3, 2, 8)
    # Interpolation, linear block: pairs (0, 1), (2, 3), each row with its
    # start image's label (2, then 1), also in the end image's column.
    codes = np.concatenate([walks.interpolate(mean[i], mean[j], 10, "linear") for i, j in
                            summaries.pairs])  # fmt: skip
    starts = np.repeat(condition[summaries.pairs[:, 0]], 10)
    ends = np.repeat(condition[summaries.pairs[:, 1]], 10)
    check("images/interpolation", codes, starts, ends, 2, 10)
    # Traversals: around image 1's code with its label (1), not the first
    # class; around z = 0 (and the manifold) with the first class, not image 1's.
    values = walks.traversal_values(-3.0, 3.0, 9)
    dims = stats["traversal_dims"]
    codes = walks.traversal(mean[1], dims, values).reshape(-1, 2)
    check("images/traversal", codes, [1] * 18, [0] * 18, 2, 9)
    codes = walks.traversal(np.zeros(2, np.float32), dims, values).reshape(-1, 2)
    check("images/traversal_origin", codes, [0] * 18, [1] * 18, 2, 9)
    check("images/manifold", walks.manifold_grid(3), [0] * 9, [1] * 9, 3, 3)
    # The same grids as `samples_per_class` tiled (what evaluate.py reuses).
    cells, rows = latent_grids.samples_per_class(model, noise[:8])
    assert rows == [0, 1, 2] and cells.shape == (3, 8, SIDE, SIDE, 1)
    np.testing.assert_allclose(out["images/samples_per_class"], grids.tile_rows(cells), atol=atol)


def test_multi_hot_rows_switch_one_attribute_on_at_a_time(tmp_path):
    model = _tiny_cvae(condition_size=5, multi_hot=True)
    images = _images(6, seed=2)
    condition = np.random.default_rng(2).integers(0, 2, size=(6, 5))
    summaries = callbacks.LatentSummaries(str(tmp_path), images, condition=condition)
    summaries.set_model(model)
    summaries.write(0)
    grids_, descriptions = _read(str(tmp_path))
    # Rows: the all-zero vector, then 1 + min(5, max_classes=10) - 1 = 5 attributes.
    grid = grids_["images/samples_per_class"]
    assert grid.shape == (6 * SIDE + 5, 8 * SIDE + 7, 1)  # (101, 135, 1)
    noise = summaries.prior_noise(model.latent_dim)[:8]
    vectors = np.concatenate([np.zeros((1, 5)), np.eye(5)]).astype(np.int32)  # (6, 5)
    for r in range(6):
        _assert_labelled(
            _cells(grid, r, 8),
            _decode(model, noise, np.repeat(vectors[r : r + 1], 8, axis=0)),
            _decode(model, noise, np.repeat(vectors[(r + 1) % 6 : (r + 1) % 6 + 1], 8, axis=0)),
            PNG_ATOL,
            f"row {r}",
        )
    assert descriptions["images/samples_per_class"].startswith(
        "Rows: no attribute (all-zero vector), then attributes 0, 1, 2, 3, 4 (of 5) "
    )
    # Reconstructions use each image's own attribute vector.
    recon = _cells(grids_["images/reconstructions"], 1, 6)
    expected = np.clip(np.asarray(model.reconstruct(images, labels=condition)), 0, 1)
    np.testing.assert_allclose(recon, expected, atol=PNG_ATOL)
    # A cap below the attribute count: the all-zero row and the first 2.
    cells, rows = latent_grids.samples_per_class(model, noise[:3], max_classes=2)
    assert rows == [None, 0, 1] and cells.shape == (3, 3, SIDE, SIDE, 1)


def test_class_rows_take_evenly_spaced_classes_beyond_the_cap():
    def fake(size, multi_hot=False):
        return types.SimpleNamespace(condition_size=size, multi_hot=multi_hot)

    # shapes' 32 x positions, 10 rows: floor(i * 31 / 9), first and last included.
    labels, rows = latent_grids.class_rows(fake(32))
    assert rows == [0, 3, 6, 10, 13, 17, 20, 24, 27, 31]
    np.testing.assert_array_equal(labels, rows)
    assert latent_grids.describe_class_rows(fake(32), rows).endswith("(10 of 32, evenly spaced)")
    assert latent_grids.class_rows(fake(10))[1] == list(range(10))  # all, at the cap
    assert latent_grids.class_rows(fake(3), max_classes=1)[1] == [0]
    # CelebA's 40 attributes: none, then attributes 0..9 alone.
    labels, rows = latent_grids.class_rows(fake(40, multi_hot=True))
    assert rows == [None, *range(10)]
    assert labels.shape == (11, 40)
    np.testing.assert_array_equal(labels[1:, :10], np.eye(10))
    assert labels.sum() == 10
    with pytest.raises(ValueError, match="max_classes"):
        latent_grids.class_rows(fake(3), max_classes=0)


def test_condition_errors(tmp_path):
    images = _images(4)
    for bad in (np.zeros(3, np.int64), np.zeros((4, 2, 1)), np.zeros((5, 3))):
        with pytest.raises(ValueError, match=r"Expected `condition` of shape \(4,\)"):
            callbacks.LatentSummaries(str(tmp_path), images, condition=bad)
    model = _tiny_cvae()
    summaries = callbacks.LatentSummaries(str(tmp_path), images)
    with pytest.raises(ValueError, match="Received: condition=None"):
        summaries.set_model(model)
    stats = latent_grids.latent_statistics(model, images, labels=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="Received: condition=None"):
        latent_grids.image_grids(
            model, images, stats, noise=np.zeros((2, 4), np.float32), pairs=np.array([[0, 1]])
        )


def test_unconditional_model_ignores_condition(tmp_path):
    keras.utils.set_random_seed(0)
    kwargs = dict(image_shape=(SIDE, SIDE, 1), latent_dim=2, network="mlp", widths=(16,))
    vae = keras_vae.VAE(keras_vae.build_encoder(**kwargs), keras_vae.build_decoder(**kwargs))
    images = _images(4)
    plain = callbacks.LatentSummaries(str(tmp_path), images)
    given = callbacks.LatentSummaries(str(tmp_path), images, condition=[0, 1, 2, 0])
    plain.set_model(vae)
    given.set_model(vae)
    a, b = plain.summary_images(), given.summary_images()
    assert set(a) == set(b) == set(latent_grids.IMAGE_TAGS) - {"images/samples_per_class"}
    for tag in a:
        np.testing.assert_array_equal(a[tag], b[tag], err_msg=tag)


def test_train_and_evaluate_cvae_writes_samples_per_class(tmp_path):
    # --model=cvae on shapes conditions on `shape` (3 classes) by default.
    # No SavedModel (~2 s): the test reads the TensorBoard files.
    cfg = config.resolve(
        "shapes", model="cvae", epochs=1, steps_per_epoch=3, validation_steps=1, eval_steps=1,
        batch_size=16, latent_dim=2, widths=(8, 8, 16, 16), dense_units=32, export=False,
    )  # fmt: skip
    workdir = str(tmp_path / "run")
    training.train_and_evaluate(cfg, workdir, verbose=0)
    grids_, descriptions = _read(os.path.join(workdir, "tensorboard", "validation"))
    # 3 classes x 8 columns of 64x64 cells; the manifold too (latent_dim 2).
    assert grids_["images/samples_per_class"].shape == (3 * 64 + 2, 8 * 64 + 7, 1)
    assert set(grids_) == set(latent_grids.IMAGE_TAGS)
    assert descriptions["images/samples_per_class"].startswith("Rows: classes 0, 1, 2. ")
    assert "Decoded with the first class (0)." in descriptions["images/manifold"]
