"""Tests for keras_vae.models.cvae: the condition vector, where labels enter,
the networks' conditional inputs, the config's conditions, the data's labels,
training on (images, labels), saving. TensorBoard grids:
tests/test_cvae_images.py; SavedModel: tests/test_cvae_export.py; evaluate.py:
tests/test_cvae_evaluate.py; exact resume: tests/test_checkpoint.py;
MirroredStrategy: tests/test_distribute.py."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from script_helpers import quick_evaluate_in_process, train_in_process
from test_training import TINY
from test_vae import shape_images

import keras_vae
from keras_vae import config as config_lib
from keras_vae import data
from keras_vae.config import CELEBA_ATTRIBUTES, CONDITIONS, UsageError
from keras_vae.data import shapes
from keras_vae.models import CVAE, VAE
from keras_vae.training import plan

IMAGE_SHAPE = (8, 8, 1)
LATENT = 3
CLASSES = 4


def np_(x):
    return keras.ops.convert_to_numpy(x)


def make_cvae(seed=0, classes=CLASSES, multi_hot=False, network="mlp", **kwargs):
    keras.utils.set_random_seed(seed)
    nets = dict(network=network, widths=(16,) if network == "mlp" else (4, 8), dense_units=16)
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, LATENT, condition_size=classes, **nets)
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, LATENT, condition_size=classes, **nets)
    return CVAE(encoder, decoder, condition_size=classes, multi_hot=multi_hot, seed=seed, **kwargs)


def images(n=16, seed=0):
    return shape_images(n, 8, seed=seed)


def noise(shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


# ---------------------------------------------------------------------------
# The condition and where it enters


def test_condition_one_hot_and_multi_hot():
    model = make_cvae()
    np.testing.assert_array_equal(
        np_(model.condition([2, 0, 3])), [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]
    )
    attributes = make_cvae(multi_hot=True)
    vectors = np.array([[1, 0, 1, 1], [0, 0, 0, 0]])
    np.testing.assert_array_equal(np_(attributes.condition(vectors)), vectors)
    with pytest.raises(ValueError, match="Expected `labels`"):
        model.condition(None)
    with pytest.raises(ValueError, match=r"class ids of shape \(batch,\)"):
        model.condition(vectors)
    with pytest.raises(ValueError, match=r"attribute vectors of shape \(batch, 4\)"):
        attributes.condition([1, 2])


def test_class_labels_cycle_through_the_classes():
    np.testing.assert_array_equal(np_(make_cvae().class_labels(6)), [0, 1, 2, 3, 0, 1])
    assert np_(make_cvae(multi_hot=True).class_labels(3)).shape == (3, CLASSES)


@pytest.mark.parametrize("network", ["mlp", "conv"])
def test_label_changes_the_decoded_images_and_the_code(network):
    # The label enters both networks: other labels, other outputs (random
    # initial weights make the dependence small but far above float noise).
    model = make_cvae(network=network)
    z = noise((4, LATENT))
    a, b = np_(model.decode(z, labels=[0] * 4)), np_(model.decode(z, labels=[1] * 4))
    assert np.abs(a - b).max() > 1e-4
    x = images(4)
    mean_a, _ = model.encode(x, labels=[0] * 4)
    mean_b, _ = model.encode(x, labels=[2] * 4)
    assert np.abs(np_(mean_a) - np_(mean_b)).max() > 1e-4


def test_compute_terms_is_the_vae_on_the_conditional_networks():
    # The CVAE's loss is the VAE's formula with c(y) fed to both networks:
    # rebuild it by hand from the networks and compare.
    model = make_cvae()
    x, y, eps = images(6), np.array([0, 1, 2, 3, 0, 1]), noise((6, LATENT))
    terms = model.compute_terms(x, eps=eps, labels=y)
    c = np.eye(CLASSES, dtype="float32")[y]
    mean, log_var = (np_(t) for t in model.encoder([x, c]))
    z = mean + np.exp(0.5 * log_var) * eps
    params = model.decoder([z, c])
    log_px = np_(model.likelihood_fn.log_prob(x, params))
    np.testing.assert_allclose(np_(terms["log_px"]), log_px, rtol=1e-5)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var)  # closed form, per dimension
    np.testing.assert_allclose(np_(terms["kl_per_dim"]), kl, rtol=1e-5, atol=1e-6)
    elbo = np_(model.elbo(x, labels=y))
    assert elbo.shape == (6,) and np.all(np.isfinite(elbo))


def test_log_weights_pair_each_code_with_its_images_label():
    # K codes per image are decoded in one call (sample-major): each block of
    # B codes must get the labels of the batch again. Column k of log_weights
    # with K = 3 equals the K = 1 weights of the same eps_k; with the labels
    # varying across the batch, repeating instead of tiling them would break it.
    model = make_cvae()
    x, y = images(5), np.array([0, 1, 2, 3, 1])
    eps = noise((3, 5, LATENT))
    together = np_(model.log_weights(x, 3, eps=eps, labels=y))
    for k in range(3):
        alone = np_(model.log_weights(x, 1, eps=eps[k : k + 1], labels=y))[:, 0]
        np.testing.assert_allclose(together[:, k], alone, rtol=1e-5)
    other = np_(model.log_weights(x, 3, eps=eps, labels=(y + 1) % CLASSES))
    assert np.abs(other - together).max() > 1e-4


def test_sample_default_labels_are_the_classes_in_turn():
    model = make_cvae()
    np.testing.assert_allclose(
        np_(model.sample(6, seed=3)),
        np_(model.sample(6, seed=3, labels=[0, 1, 2, 3, 0, 1])),
        atol=1e-7,
    )


def test_unconditional_networks_or_a_wrong_size_are_refused():
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, LATENT, "mlp", widths=(16,))
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, LATENT, "mlp", widths=(16,))
    with pytest.raises(ValueError, match="build_encoder\\(..., condition_size=3\\)"):
        CVAE(encoder, decoder, condition_size=3)
    model = make_cvae()
    with pytest.raises(ValueError, match="condition_size=5"):
        CVAE(model.encoder, model.decoder, condition_size=5)


def test_unconditional_models_ignore_labels():
    keras.utils.set_random_seed(0)
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, LATENT, "mlp", widths=(16,))
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, LATENT, "mlp", widths=(16,))
    vae = VAE(encoder, decoder, seed=0)
    z = noise((3, LATENT))
    assert not vae.conditional and make_cvae().conditional
    np.testing.assert_array_equal(np_(vae.decode(z)), np_(vae.decode(z, labels=[1, 2, 3])))


# ---------------------------------------------------------------------------
# Networks


@pytest.mark.parametrize("network", ["mlp", "conv"])
@pytest.mark.parametrize("condition_size", [0, 3, 40])
def test_estimate_size_counts_the_condition_weights(network, condition_size):
    # The condition adds K inputs to the first dense layer of each network
    # (mlp: K x 16 + K x 16 weights): estimate_size, which runs.py uses to
    # match model.keras with config.json, must count them exactly.
    nets = dict(network=network, widths=(16,) if network == "mlp" else (4, 8), dense_units=16)
    encoder = keras_vae.build_encoder(IMAGE_SHAPE, LATENT, condition_size=condition_size, **nets)
    decoder = keras_vae.build_decoder(IMAGE_SHAPE, LATENT, condition_size=condition_size, **nets)
    params, _ = keras_vae.networks.estimate_size(
        IMAGE_SHAPE, LATENT, condition_size=condition_size, **nets
    )
    assert params == encoder.count_params() + decoder.count_params()
    if network == "mlp" and condition_size:
        plain, _ = keras_vae.networks.estimate_size(IMAGE_SHAPE, LATENT, **nets)
        assert params - plain == 2 * condition_size * 16
    names = [t.name for t in encoder.inputs]
    assert len(names) == (2 if condition_size else 1)


def test_negative_condition_size_is_refused():
    with pytest.raises(ValueError, match="condition_size"):
        keras_vae.build_encoder(IMAGE_SHAPE, LATENT, "mlp", condition_size=-1)


# ---------------------------------------------------------------------------
# Training and saving


def test_fit_on_images_and_labels_lowers_the_loss():
    model = make_cvae()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    x = images(64)
    y = np.arange(64) % CLASSES
    history = model.fit(x, y, batch_size=16, epochs=15, shuffle=False, verbose=0).history["loss"]
    # 60 steps on 64 images (8x8): the epoch loss falls from 45.2 to 35.5
    # nats here (21%); the test asks for 15%.
    assert history[-1] < 0.85 * history[0], history
    with pytest.raises(ValueError, match=r"\(images, labels\) batches"):
        model.fit(x, batch_size=16, epochs=1, verbose=0)


def test_keras_round_trip(tmp_path):
    model = make_cvae(multi_hot=True, beta=2.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = images(16)
    y = (np.random.default_rng(0).random((16, CLASSES)) > 0.5).astype("int64")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "cvae.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, CVAE) and loaded.multi_hot and loaded.condition_size == CLASSES
    z, eps = noise((16, LATENT)), noise((2, 16, LATENT))
    np.testing.assert_array_equal(np_(loaded.decode(z, labels=y)), np_(model.decode(z, labels=y)))
    np.testing.assert_array_equal(np_(loaded((x, y))), np_(model((x, y))))
    np.testing.assert_array_equal(
        np_(loaded.log_weights(x, 2, eps=eps, labels=y)),
        np_(model.log_weights(x, 2, eps=eps, labels=y)),
    )
    assert np.isfinite(loaded.fit(x, y, batch_size=8, epochs=1, verbose=0).history["loss"][0])


# ---------------------------------------------------------------------------
# Config and data


def test_config_picks_the_default_condition_and_refuses_bad_ones():
    assert config_lib.resolve("shapes", model="cvae").condition == "shape"
    assert config_lib.resolve("mnist", model="cvae").condition == "label"
    celeba = config_lib.resolve("celeb_a", model="cvae")
    assert celeba.condition == "attributes" and celeba.condition_spec == (40, True)
    assert config_lib.resolve("celeb_a", model="cvae", condition="Smiling").condition_spec == (
        2,
        False,
    )
    assert config_lib.resolve("shapes").condition is None
    with pytest.raises(UsageError, match="applies to --model=cvae only"):
        config_lib.resolve("shapes", condition="shape")
    with pytest.raises(UsageError, match="not a label of shapes: use shape, scale"):
        config_lib.resolve("shapes", model="cvae", condition="label")
    with pytest.raises(UsageError, match="needs labels, and frey_faces has none"):
        config_lib.resolve("frey_faces", model="cvae")


def test_conditions_match_the_data():
    # The config's table is the data's: shapes' factor sizes, CelebA's sorted
    # attribute names (the order of the multi-hot vector).
    assert {name: size for name, (size, _) in CONDITIONS["shapes"].items()} == dict(
        zip(shapes.FACTOR_NAMES, shapes.FACTOR_SIZES, strict=True)
    )
    assert list(CELEBA_ATTRIBUTES) == sorted(CELEBA_ATTRIBUTES) and len(CELEBA_ATTRIBUTES) == 40


def test_shapes_batches_carry_the_condition():
    config = config_lib.resolve("shapes", model="cvae", condition="pos_x", batch_size=16)
    ds, _ = data.load_for_config(config, "test", shuffle=False, repeat=False, with_condition=True)
    x, y = next(iter(ds))
    labelled, _ = data.load_for_config(
        config, "test", shuffle=False, repeat=False, with_labels=True
    )
    x2, labels = next(iter(labelled))
    np.testing.assert_array_equal(x.numpy(), x2.numpy())
    np.testing.assert_array_equal(y.numpy(), labels["pos_x"].numpy())
    assert y.dtype == tf.int64 and y.shape == (16,) and y.numpy().max() < 32


def test_celeb_a_attributes_are_a_multi_hot_vector_in_sorted_order(tmp_path):
    config = config_lib.resolve("celeb_a", model="cvae", batch_size=4, data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=8):
        ds, info = data.load_for_config(
            config, "train", shuffle=False, repeat=False, with_condition=True
        )
        x, y = next(iter(ds))
        labelled, _ = data.load_for_config(
            config, "train", shuffle=False, repeat=False, with_labels=True
        )
        _, labels = next(iter(labelled))
    assert info.label_names == CELEBA_ATTRIBUTES
    assert y.shape == (4, 40)
    for i, name in enumerate(CELEBA_ATTRIBUTES):
        np.testing.assert_array_equal(y.numpy()[:, i], labels[name].numpy())


def test_build_model_from_config_is_conditional():
    config = config_lib.resolve(
        "shapes", model="cvae", latent_dim=2, widths=(4, 4, 8, 8), dense_units=8
    )
    model = plan.build_model(config, (64, 64, 1), steps_per_epoch=10)
    assert isinstance(model, CVAE) and model.condition_size == 3 and not model.multi_hot
    params, _ = keras_vae.networks.estimate_size(
        (64, 64, 1), 2, "conv", widths=(4, 4, 8, 8), dense_units=8, condition_size=3
    )
    assert model.network_parameters == params


# ---------------------------------------------------------------------------
# The real train.py / evaluate.py / SavedModel path


@pytest.mark.slow
def test_train_py_evaluate_py_and_served_sample(tmp_path):
    # train.py's and evaluate.py's work in this process, from the same flags
    # (script_helpers): this test is about the cvae run, the files it leaves
    # and their evaluation; evaluate.py itself runs on a cvae run in
    # tests/test_cvae_evaluate.py, train.py's exit codes and lines in
    # tests/test_training.py.
    workdir = str(tmp_path / "run")
    train_in_process(workdir, "--model=cvae", *TINY)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["condition"] == "shape"  # the shapes default, resolved and saved
    quick_evaluate_in_process(workdir)
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert np.isfinite(results["elbo"]) and np.isfinite(results["iwae_nll"])
    assert results["iwae_nll"] <= -results["elbo"], results  # the K = 10 bound is tighter

    # The SavedModel draws a chosen shape with plain TensorFlow: its images are
    # the loaded model's decode of the same stateless noise (export.py: seeded
    # with [seed, 0]) with that label, and another label gives other images.
    served = tf.saved_model.load(os.path.join(workdir, "export"))
    loaded = keras.models.load_model(os.path.join(workdir, "model.keras"))
    args = dict(count=tf.constant(4), temperature=tf.constant(1.0), seed=tf.constant(7, tf.int64))
    hearts = served.sample(**args, label=tf.constant(2))["images"].numpy()
    squares = served.sample(**args, label=tf.constant(0))["images"].numpy()
    z = tf.random.stateless_normal((4, loaded.latent_dim), seed=[7, 0])
    np.testing.assert_allclose(hearts, np_(loaded.decode(z, labels=[2] * 4)), atol=1e-5)
    assert np.abs(hearts - squares).max() > 1e-3


@pytest.mark.slow
def test_short_training_draws_the_chosen_position():
    # The issue's check, "samples conditioned on each class are nearer (pixel
    # space) to that class's training mean than to the others' in >= 80% of
    # cases", on the factor where it can decide: the x position. On the shape
    # factor it cannot: shape means over random position, scale and rotation
    # are blurs that differ mostly in mass, and held-out *real* images are
    # nearest their own shape's mean in only 30-54% of cases (measured on 600
    # test images, 5,000-image means), so no generator could pass. Here the
    # real images of classes 0, 10, 21, 31 are nearest their own mean in 100%.
    # latent_dim=2 cannot hold position, scale, rotation and shape at once, so
    # the decoder must take x from the label: 800 steps gave 100% here (with
    # latent_dim=4, where the code can carry x itself, 38-70%).
    config = config_lib.resolve(
        "shapes", model="cvae", condition="pos_x", epochs=1, steps_per_epoch=800,
        batch_size=32, latent_dim=2, widths=(8, 8, 16, 16), dense_units=32,
    )  # fmt: skip
    keras.utils.set_random_seed(0)
    train, info = data.load_for_config(
        config, "train", shuffle=True, repeat=True, drop_remainder=True, with_condition=True
    )
    model = plan.build_model(config, info.image_shape, 800)
    model.fit(train, steps_per_epoch=800, epochs=1, verbose=0)
    reference, _ = data.load_for_config(
        config.replace(batch_size=4000), "train", shuffle=True, repeat=False, with_condition=True
    )
    x, y = (t.numpy() for t in next(iter(reference)))
    classes = np.array([0, 10, 21, 31])
    means = np.stack([x[y == c].mean(axis=0) for c in classes])  # (4, 64, 64, 1)

    def nearest(images):
        distances = ((images[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4))  # (N, 4)
        return classes[distances.argmin(axis=1)]

    for c in classes:  # the criterion decides on real images
        assert np.mean(nearest(x[y == c][:50]) == c) == 1.0
    hits = [
        nearest(np_(model.sample(50, seed=int(c), labels=np.full(50, c)))) == c for c in classes
    ]
    assert np.mean(hits) >= 0.8, [float(np.mean(h)) for h in hits]
