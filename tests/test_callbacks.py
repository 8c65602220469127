"""LatentSummaries: tags, exact grid sizes, steps, fixed noise, KL ordering, and its
latent statistics against the model's (KL per dimension, active units)."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import keras_vae
from keras_vae import callbacks, config, training

# Grid sizes below follow grids.tile: r x c cells of h x w pixels with 1-pixel
# separators are (r*h + r-1, c*w + c-1); row blocks of one image are stacked
# with latent_grids.BLOCK_GAP = 4 pixels between them.


def _grid(rows, cols, side):
    return (rows * side + rows - 1, cols * side + cols - 1)


def _read(log_dir):
    """Everything written to `log_dir`, through TensorBoard's own reader.

    Returns:
        `(images, values)`: `{(tag, step): (H, W, C) uint8}` for the
        `images` plugin and `{(tag, step): ndarray}` for scalars/histograms.
    """
    acc = event_accumulator.EventAccumulator(
        log_dir, size_guidance={"images": 0, "tensors": 0, "scalars": 0, "histograms": 0}
    )
    acc.Reload()
    images, values = {}, {}
    for tag in acc.Tags()["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        for event in acc.Tensors(tag):
            array = tf.make_ndarray(event.tensor_proto)
            if plugin == "images":
                # TF2 image summaries: [width, height, png_0, ...] as strings.
                assert array.shape == (3,), (tag, array.shape)
                image = tf.io.decode_png(array[2]).numpy()
                assert (int(array[0]), int(array[1])) == (image.shape[1], image.shape[0])
                images[(tag, event.step)] = image
            else:
                values[(tag, event.step)] = array
    return images, values


def _tiny_vae(image_shape=(16, 16, 1), latent_dim=3, seed=0):
    keras.utils.set_random_seed(seed)
    kwargs = dict(image_shape=image_shape, latent_dim=latent_dim, network="mlp", widths=(32,))
    vae = keras_vae.VAE(
        keras_vae.build_encoder(**kwargs), keras_vae.build_decoder(**kwargs), seed=seed
    )
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    return vae


def _random_images(n, side=16, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, side, side, 1)).astype(np.float32)


def test_train_and_evaluate_writes_every_tag_with_exact_sizes(tmp_path):
    # No SavedModel (~2 s): the test reads the TensorBoard files.
    cfg = config.resolve(
        "shapes", epochs=2, steps_per_epoch=5, validation_steps=2, eval_steps=1,
        batch_size=16, latent_dim=2, widths=(8, 8, 16, 16), dense_units=32, export=False,
    )  # fmt: skip
    workdir = str(tmp_path / "run")
    training.train_and_evaluate(cfg, workdir, verbose=0)
    images, values = _read(os.path.join(workdir, "tensorboard", "validation"))

    # 64 held-out 64x64x1 images, latent_dim 2, the callback's defaults.
    expected = {
        # 32 inputs + 32 reconstructions, 8 per row, alternating: 8 x 8 cells.
        "images/reconstructions": _grid(8, 8, 64),  # (519, 519)
        # 16 samples per temperature in 2 x 8 blocks (129 high), 2 blocks + gap.
        "images/samples": (2 * 129 + 4, 519),  # (262, 519)
        # 4 pairs x 10 steps per block (259 high), linear + slerp blocks + gap.
        "images/interpolation": (2 * 259 + 4, _grid(1, 10, 64)[1]),  # (522, 649)
        # One row per latent dimension (2), 9 values from -3 to 3.
        "images/traversal": _grid(2, 9, 64),  # (129, 584)
        "images/traversal_origin": _grid(2, 9, 64),
        "images/manifold": _grid(15, 15, 64),  # (974, 974)
    }
    for step in (0, 1):
        for tag, size in expected.items():
            assert images[(tag, step)].shape == size + (1,), (tag, step)
        assert values[("latent/kl_per_dim", step)].ndim == 2  # histogram buckets
        # Keras' own validation scalars share the directory (another event file).
        assert ("epoch_loss", step) in values
    assert {step for _, step in images} == {0, 1}
    # The last epoch's latent statistics are those of the saved model on the
    # held-out images (the first 64 validation images): recomputed here, the
    # KL of each dimension (float32 rounding of another batching: 1e-5 rel)
    # and the active units, Var_x(E_q[z_d]) > 0.01 (Burda et al. 2015). A
    # callback that counted on other images, another axis or another
    # threshold would write other numbers.
    from keras_vae import evaluation, runs

    model = runs.load_run(workdir)[1]
    held_out, _ = runs.first_examples(runs.load_split(cfg, "validation")[0], 64)
    kl = evaluation.kl_per_dimension(model, tf.data.Dataset.from_tensor_slices(held_out).batch(64))
    for d in (0, 1):
        written = float(values[(f"latent/kl_dim_{d:02d}", 1)])
        assert written == pytest.approx(kl[d], rel=1e-4, abs=1e-6), d
    count, variances = evaluation.active_units(np.asarray(model.encode(held_out)[0]))
    # No dimension is within 2% of the threshold, where rounding could flip it.
    # (Seen: variances 3e-4 and 8e-5, 0 active units, after 10 steps; the
    # next test counts on a model with active units.)
    assert np.all(np.abs(variances - 0.01) > 2e-4), variances
    assert float(values[("latent/active_units", 1)]) == count


def test_active_units_and_kl_scalars_of_a_model_with_known_codes(tmp_path):
    """Probabilistic PCA as a VAE (tests/test_evaluation.py), exact posterior:
    mean_d = w_d . (x - b) / M_d with M_d = |w_d|^2 + sigma^2, so on its own
    data Var_x(mean_d) = |w_d|^2 / M_d = 1 / 1.04 = 0.96, 0.36 / 0.40 = 0.90
    and 0 (the third column of W is 0): 2 active units of 3, whatever the
    sample noise of 64 images (~18% relative)."""
    from test_evaluation import ppca_data, ppca_vae

    from keras_vae import evaluation

    model, held_out = ppca_vae(), ppca_data(64)
    summaries = callbacks.LatentSummaries(str(tmp_path), held_out)
    summaries.set_model(model)
    summaries.write(0)
    _, values = _read(str(tmp_path))
    count, variances = evaluation.active_units(np.asarray(model.encode(held_out)[0]))
    assert count == 2 and variances[2] == pytest.approx(0.0, abs=1e-10)
    np.testing.assert_allclose(variances[:2], [0.96, 0.90], rtol=0.5)
    assert float(values[("latent/active_units", 0)]) == 2
    kl = evaluation.kl_per_dimension(model, tf.data.Dataset.from_tensor_slices(held_out).batch(16))
    written = [float(values[(f"latent/kl_dim_{d:02d}", 0)]) for d in range(3)]
    np.testing.assert_allclose(written, kl, rtol=1e-5, atol=1e-6)
    assert kl[2] == pytest.approx(0.0, abs=1e-6) and kl[0] > kl[1] > 0.5


def test_every_and_end_of_training_steps_without_manifold(tmp_path):
    # every=2 over epochs 0, 1, 2: written after epoch 1 ((1 + 1) % 2 == 0),
    # not after epoch 2, then at the end of training with step 2 (the last
    # epoch, not yet written). latent_dim 3: no manifold.
    vae = _tiny_vae(latent_dim=3)
    held_out = _random_images(8, seed=1)
    summaries = callbacks.LatentSummaries(str(tmp_path), held_out, every=2)
    vae.fit(_random_images(16), batch_size=8, epochs=3, callbacks=[summaries], verbose=0)
    images, values = _read(str(tmp_path))

    assert {step for _, step in images} == {1, 2}
    assert {step for tag, step in values if tag == "latent/active_units"} == {1, 2}
    assert not any(tag == "images/manifold" for tag, _ in images)
    expected = {
        # 8 images: 1 input row + 1 reconstruction row of 8.
        "images/reconstructions": _grid(2, 8, 16),  # (33, 135)
        "images/samples": (2 * 33 + 4, 135),  # 2 blocks of 2 x 8
        # 4 pairs from 8 images; blocks of 4 x 10 (67 high).
        "images/interpolation": (2 * 67 + 4, 169),
        "images/traversal": _grid(3, 9, 16),  # (50, 152)
        "images/traversal_origin": _grid(3, 9, 16),
    }
    for step in (1, 2):
        assert {tag for tag, s in images if s == step} == set(expected)
        for tag, size in expected.items():
            assert images[(tag, step)].shape == size + (1,), (tag, step)


def test_every_step_already_written_at_end_is_not_repeated(tmp_path):
    # every=2 over 2 epochs: written after epoch 1 only; on_train_end adds nothing.
    vae = _tiny_vae()
    summaries = callbacks.LatentSummaries(str(tmp_path), _random_images(4), every=2)
    vae.fit(_random_images(8), batch_size=8, epochs=2, callbacks=[summaries], verbose=0)
    images, _ = _read(str(tmp_path))
    assert sorted(step for tag, step in images if tag == "images/samples") == [1]


def test_samples_fixed_across_epochs_until_the_weights_change(tmp_path):
    vae = _tiny_vae()
    held_out = _random_images(6, seed=2)
    summaries = callbacks.LatentSummaries(str(tmp_path), held_out)
    summaries.set_model(vae)
    summaries.on_epoch_end(0)
    summaries.on_epoch_end(1)
    vae.fit(_random_images(8), batch_size=8, epochs=1, verbose=0)  # changes the weights
    summaries.on_epoch_end(2)
    summaries.on_train_end()
    images, _ = _read(str(tmp_path))

    for tag in ("images/samples", "images/reconstructions", "images/traversal"):
        np.testing.assert_array_equal(images[(tag, 0)], images[(tag, 1)], err_msg=tag)
        assert not np.array_equal(images[(tag, 1)], images[(tag, 2)]), tag
    # The noise comes from the seed alone: a new callback draws the same eps.
    again = callbacks.LatentSummaries(str(tmp_path / "other"), held_out)
    np.testing.assert_array_equal(again.prior_noise(3), summaries.prior_noise(3))
    assert again.prior_noise(3).shape == (16, 3)


def _planted_vae(scales, side=8):
    """A VAE whose dimension d has posterior mean scales[d] * (mean pixel - 0.5).

    log_var is 0, so KL_d = 0.5 * mean_d^2 exactly. The decoder's logits of
    image row d are 10 * z_d (other rows 0): a traversal row shows which
    dimension it varies.
    """
    latent_dim = len(scales)
    scales = np.asarray(scales, dtype=np.float32)
    pixels = side * side
    images = keras.Input((side, side, 1))
    flat = keras.layers.Flatten()(images)
    mean = keras.layers.Dense(latent_dim)(flat)
    log_var = keras.layers.Dense(latent_dim)(flat)
    encoder = keras.Model(images, [mean, log_var])
    encoder.layers[2].set_weights([np.ones((pixels, latent_dim)) * scales / pixels, -0.5 * scales])
    encoder.layers[3].set_weights([np.zeros((pixels, latent_dim)), np.zeros(latent_dim)])

    z = keras.Input((latent_dim,))
    logits = keras.layers.Dense(pixels, use_bias=False)(z)
    decoder = keras.Model(z, keras.layers.Reshape((side, side, 1))(logits))
    kernel = np.zeros((latent_dim, side, side), dtype=np.float32)
    for d in range(latent_dim):
        kernel[d, d, :] = 10.0
    decoder.layers[1].set_weights([kernel.reshape(latent_dim, pixels)])
    return keras_vae.VAE(encoder, decoder)


def test_traversal_rows_follow_descending_kl(tmp_path):
    scales = [0.1, 3.0, 0.5, 2.0, 0.0]
    # Image i is constant c_i = i / 15: mean_d = scales[d] * (c_i - 0.5).
    c = np.linspace(0.0, 1.0, 16)
    held_out = np.broadcast_to(c[:, None, None, None], (16, 8, 8, 1)).astype(np.float32)
    summaries = callbacks.LatentSummaries(str(tmp_path), held_out, max_traversal_dims=3)
    summaries.set_model(_planted_vae(scales))
    stats = summaries.latent_statistics()

    # KL_d = 0.5 * scales[d]^2 * mean_i (c_i - 0.5)^2.
    spread = np.mean((c - 0.5) ** 2)
    np.testing.assert_allclose(
        stats["kl_per_dim"], 0.5 * np.square(scales) * spread, rtol=1e-5, atol=1e-9
    )
    np.testing.assert_array_equal(stats["order"], [1, 3, 2, 0, 4])
    np.testing.assert_array_equal(stats["traversal_dims"], [1, 3, 2])
    # Var(mean_d) = scales[d]^2 * Var(c); for n = 16 points i / (n - 1) the
    # variance (ddof=0) is (n + 1) / (12 (n - 1)) = 17 / 180 = 0.0944:
    # 0.00094, 0.85, 0.024, 0.38, 0 -> 3 above 0.01.
    np.testing.assert_allclose(stats["mean_variance"], np.square(scales) * 17 / 180, rtol=1e-4)
    assert stats["active_units"] == 3

    # In the picture: grid row r (8 pixels high + 1 separator) of the origin
    # traversal varies, from column to column, only image row dims[r].
    grid = summaries.summary_images(stats)["images/traversal_origin"]
    assert grid.shape == (_grid(3, 9, 8)) + (1,)
    for r, dim in enumerate([1, 3, 2]):
        cells = np.stack([grid[r * 9 : r * 9 + 8, k * 9 : k * 9 + 8, 0] for k in range(9)])
        varying = np.flatnonzero(np.ptp(cells, axis=0).max(axis=1) > 0.1)
        np.testing.assert_array_equal(varying, [dim])


def test_large_latent_caps_traversal_rows_and_kl_scalars(tmp_path):
    # latent_dim 40 > MAX_KL_SCALARS (32) and > max_traversal_dims (16); RGB.
    vae = _tiny_vae(image_shape=(8, 8, 3), latent_dim=40)
    rng = np.random.default_rng(3)
    summaries = callbacks.LatentSummaries(str(tmp_path), rng.uniform(size=(6, 8, 8, 3)))
    summaries.set_model(vae)
    summaries.on_epoch_end(0)
    images, values = _read(str(tmp_path))
    assert images[("images/traversal", 0)].shape == _grid(16, 9, 8) + (3,)  # (143, 80, 3)
    assert images[("images/traversal_origin", 0)].shape == _grid(16, 9, 8) + (3,)
    # 6 images: 3 interpolation pairs per block of 3 x 10 (26 high).
    assert images[("images/interpolation", 0)].shape == (2 * 26 + 4, 89, 3)
    assert not any(tag.startswith("latent/kl_dim_") for tag, _ in values)
    assert values[("latent/kl_per_dim", 0)].ndim == 2


def test_not_chief_writes_nothing(tmp_path):
    vae = _tiny_vae()
    log_dir = tmp_path / "logs"
    summaries = callbacks.LatentSummaries(str(log_dir), _random_images(4), chief=False)
    summaries.set_model(vae)
    summaries.on_epoch_end(0)
    summaries.on_train_end()
    assert not log_dir.exists()


def test_argument_errors():
    with pytest.raises(ValueError, match="Expected `every` to be an integer >= 1"):
        callbacks.LatentSummaries("x", _random_images(4), every=0)
    with pytest.raises(ValueError, match="C in"):
        callbacks.LatentSummaries("x", np.zeros((4, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="N >= 2"):
        callbacks.LatentSummaries("x", _random_images(1))
    with pytest.raises(ValueError, match="labels"):
        callbacks.LatentSummaries("x", _random_images(4), labels=[0, 1])
