"""Tests for keras_vae.export with a conditional VAE: every signature takes a
`label` (a class id, or a CelebA-style attribute vector), reloaded in a
TensorFlow-only process and compared with the in-process model."""


import keras
import numpy as np
import pytest
import tensorflow as tf
from test_export import run_plain_tf

import keras_vae
from keras_vae import export

IMAGE_SHAPE = (16, 16, 1)
LATENT = 4
CLASSES = 3  # the one-hot model
ATTRIBUTES = 5  # the multi-hot model


def make_cvae(condition_size, multi_hot=False):
    """A tiny CVAE after two Adam steps on random images and labels."""
    keras.utils.set_random_seed(0)
    common = dict(
        image_shape=IMAGE_SHAPE,
        latent_dim=LATENT,
        network="conv",
        widths=(8, 16),
        dense_units=32,
        condition_size=condition_size,
    )
    encoder = keras_vae.build_encoder(**common)
    decoder = keras_vae.build_decoder(**common)
    model = keras_vae.models.CVAE(
        encoder, decoder, condition_size=condition_size, multi_hot=multi_hot, seed=0
    )
    model.compile(keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(8, *IMAGE_SHAPE)).astype("float32")
    if multi_hot:
        labels = rng.integers(0, 2, size=(8, condition_size)).astype("int32")
    else:
        labels = rng.integers(0, condition_size, size=(8,)).astype("int32")
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)  # 2 steps
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`{"onehot": (model, dir), "multihot": (model, dir)}`, exported once."""
    root = tmp_path_factory.mktemp("cvae_export")
    out = {}
    for name, size, multi_hot in (("onehot", CLASSES, False), ("multihot", ATTRIBUTES, True)):
        model = make_cvae(size, multi_hot)
        out[name] = (model, export.export_saved_model(model, str(root / name)))
    return out


# Runs in a fresh interpreter with TensorFlow only (no PYTHONPATH, cwd outside
# the repo: keras_vae is not importable), as a TF Serving client would.
LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf

onehot_dir, multihot_dir, inputs_path, outputs_path = sys.argv[1:5]
inputs = np.load(inputs_path)
ids, images, pixels, z = (tf.constant(inputs[k]) for k in ("ids", "images", "pixels", "z"))
out, errors, specs = {}, {}, {}


def error(name, call):
    try:
        call()
        errors[name] = None
    except Exception as e:
        errors[name] = f"{type(e).__name__}: {e}"


def sample_sig(m, **kw):
    kw = dict(count=tf.constant(4), temperature=tf.constant(1.0),
              seed=tf.constant(0, tf.int64), **kw)
    return m.signatures["sample"](**kw)["images"].numpy()


m = tf.saved_model.load(onehot_dir)
for name, fn in m.signatures.items():
    specs[name] = {k: [v.dtype.name, v.shape.as_list()]
                   for k, v in fn.structured_input_signature[1].items()}
enc = m.encode(images, label=ids)
out["mean"], out["log_var"] = enc["mean"].numpy(), enc["log_var"].numpy()
out["mean_uint8"] = m.encode_uint8(pixels, label=ids)["mean"].numpy()
out["decoded"] = m.decode(z, label=ids)["images"].numpy()
out["decoded_sig"] = m.signatures["decode"](z=z, label=ids)["images"].numpy()
out["reconstructed"] = m.reconstruct(images, label=ids)["images"].numpy()
out["reconstructed_uint8"] = m.reconstruct_uint8(pixels, label=ids)["images"].numpy()
out["serving_default"] = m.signatures["serving_default"](images=images, label=ids)["images"].numpy()
for label in (0, 2):
    out[f"sample_{label}"] = m.sample(4, 1.0, 0, label)["images"].numpy()  # positional
out["sample_2_again"] = m.sample(count=4, temperature=1.0, seed=0, label=2)["images"].numpy()
out["sample_2_sig"] = sample_sig(m, label=tf.constant(2))
out["sample_empty"] = m.sample(count=0, temperature=1.0, seed=0, label=1)["images"].numpy()
out["decode_empty"] = m.signatures["decode"](
    z=tf.zeros([0, z.shape[1]]), label=tf.zeros([0], tf.int32))["images"].numpy()
out["encode_empty"] = m.encode(images[:0], label=ids[:0])["mean"].numpy()
error("sample_3", lambda: m.sample(count=4, temperature=1.0, seed=0, label=3))
error("sample_minus_1_sig", lambda: sample_sig(m, label=tf.constant(-1)))
error("decode_ids", lambda: m.signatures["decode"](z=z, label=tf.constant([0, 5, 1, -2])))
error("reconstruct_ids", lambda: m.reconstruct(images, label=tf.constant([0, 1, 2, 3])))
error("decode_batch", lambda: m.signatures["decode"](z=z, label=ids[:3]))
error("decode_rank", lambda: m.signatures["decode"](z=z, label=ids[:, None]))
error("sample_vector", lambda: sample_sig(m, label=tf.constant([1, 2])))
error("missing_label", lambda: m.decode(z))

m = tf.saved_model.load(multihot_dir)
for name, fn in m.signatures.items():
    specs["multihot_" + name] = {k: [v.dtype.name, v.shape.as_list()]
                                 for k, v in fn.structured_input_signature[1].items()}
attributes = tf.constant(inputs["attributes"])  # (5,) float32
rows = tf.constant(inputs["attribute_rows"])  # (4, 5) float32
out["mh_sample"] = m.sample(count=4, temperature=1.0, seed=0, label=attributes)["images"].numpy()
out["mh_sample_sig"] = sample_sig(m, label=attributes)
ints = [int(v) for v in inputs["attributes"]]
out["mh_sample_list"] = m.sample(count=4, temperature=1.0, seed=0, label=ints)["images"].numpy()
out["mh_sample_none"] = m.sample(
    count=4, temperature=1.0, seed=0, label=tf.zeros([5]))["images"].numpy()
out["mh_decoded"] = m.decode(z, label=rows)["images"].numpy()
out["mh_reconstructed"] = m.reconstruct(images, label=rows)["images"].numpy()
error("mh_minus_1", lambda: sample_sig(m, label=2.0 * attributes - 1.0))  # CelebA's -1/1
error("mh_nan", lambda: sample_sig(m, label=tf.fill([5], float("nan"))))
error("mh_decode_width", lambda: m.signatures["decode"](z=z, label=rows[:, :4]))
np.savez(outputs_path, **out)
print(json.dumps({"keras_vae_imported": "keras_vae" in sys.modules,
                  "errors": errors, "specs": specs}))
"""


@pytest.fixture(scope="module")
def served(exported, tmp_path_factory):
    """The loader's `(inputs, outputs, report)`, one subprocess for all tests."""
    tmp = tmp_path_factory.mktemp("cvae_served")
    rng = np.random.default_rng(1)
    inputs = {
        "ids": np.array([0, 2, 1, 2], np.int32),
        "images": rng.uniform(size=(4, *IMAGE_SHAPE)).astype("float32"),
        "pixels": rng.integers(0, 256, size=(4, *IMAGE_SHAPE), dtype=np.uint8),
        "z": rng.normal(size=(4, LATENT)).astype("float32"),
        "attributes": np.array([1, 0, 1, 1, 0], np.float32),
        "attribute_rows": rng.integers(0, 2, size=(4, ATTRIBUTES)).astype("float32"),
    }
    np.savez(tmp / "inputs.npz", **inputs)
    dirs = [exported["onehot"][1], exported["multihot"][1]]
    report = run_plain_tf(
        LOADER, *dirs, str(tmp / "inputs.npz"), str(tmp / "outputs.npz"), cwd=tmp
    )
    return inputs, dict(np.load(tmp / "outputs.npz")), report


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _noise(count, seed):
    """The export's prior draw: stateless_normal([count, D], seed=[seed, 0])."""
    return tf.random.stateless_normal([count, LATENT], seed=tf.constant([seed, 0], tf.int64))


def test_signatures_take_a_label(served):
    _, _, report = served
    assert report["keras_vae_imported"] is False
    specs = report["specs"]
    image = [None, *IMAGE_SHAPE]
    # One-hot: int32 class ids, one per image or code; one id for `sample`.
    for name in ("encode", "reconstruct", "serving_default"):
        assert specs[name] == {"images": ["float32", image], "label": ["int32", [None]]}, name
    for name in ("encode_uint8", "reconstruct_uint8"):
        assert specs[name] == {"images": ["uint8", image], "label": ["int32", [None]]}, name
    assert specs["decode"] == {"z": ["float32", [None, LATENT]], "label": ["int32", [None]]}
    assert specs["sample"] == {
        "count": ["int32", []],
        "temperature": ["float32", []],
        "seed": ["int64", []],
        "label": ["int32", []],
    }
    # Multi-hot: float32 attribute vectors.
    assert specs["multihot_decode"]["label"] == ["float32", [None, ATTRIBUTES]]
    assert specs["multihot_reconstruct_uint8"]["label"] == ["float32", [None, ATTRIBUTES]]
    assert specs["multihot_sample"]["label"] == ["float32", [ATTRIBUTES]]


def test_served_graph_matches_the_model(exported, served):
    model, _ = exported["onehot"]
    inputs, out, _ = served
    ids, images, z = inputs["ids"], inputs["images"], inputs["z"]

    expected = _np(model.decode(z, labels=ids))
    np.testing.assert_allclose(out["decoded"], expected, atol=1e-5)
    np.testing.assert_allclose(out["decoded_sig"], expected, atol=1e-5)
    # The label reaches the decoder: the same codes with other classes differ.
    other = _np(model.decode(z, labels=(ids + 1) % CLASSES))
    assert np.abs(out["decoded"] - other).max() > 1e-4

    mean, log_var = (_np(t) for t in model.encode(images, labels=ids))
    np.testing.assert_allclose(out["mean"], mean, atol=1e-5)
    np.testing.assert_allclose(out["log_var"], log_var, atol=1e-5)
    np.testing.assert_allclose(
        out["mean_uint8"], _np(model.encode(inputs["pixels"], labels=ids)[0]), atol=1e-5
    )
    expected = _np(model.reconstruct(images, labels=ids))
    np.testing.assert_allclose(out["reconstructed"], expected, atol=1e-5)
    np.testing.assert_allclose(out["serving_default"], expected, atol=1e-5)
    np.testing.assert_allclose(
        out["reconstructed_uint8"],
        _np(model.reconstruct(inputs["pixels"], labels=ids)),
        atol=1e-5,
    )


def test_sample_draws_the_chosen_class(exported, served):
    model, _ = exported["onehot"]
    _, out, _ = served
    # sample(count, temperature, seed, label) = decode(temperature *
    # stateless_normal([count, D], seed=[seed, 0]), label repeated count times).
    for label in (0, 2):
        expected = _np(model.decode(_noise(4, 0), labels=np.full(4, label, np.int32)))
        np.testing.assert_allclose(out[f"sample_{label}"], expected, atol=1e-5)
    assert out["sample_2"].shape == (4, *IMAGE_SHAPE)
    np.testing.assert_array_equal(out["sample_2"], out["sample_2_again"])
    np.testing.assert_array_equal(out["sample_2"], out["sample_2_sig"])
    # Same seed, same noise; another class, other images.
    assert np.abs(out["sample_0"] - out["sample_2"]).max() > 1e-4


def test_empty_batches(served):
    _, out, _ = served
    assert out["sample_empty"].shape == (0, *IMAGE_SHAPE)
    assert out["decode_empty"].shape == (0, *IMAGE_SHAPE)
    assert out["encode_empty"].shape == (0, LATENT)


def test_bad_labels_fail_with_a_clear_message(served):
    _, _, report = served
    errors = report["errors"]
    for name in ("sample_3", "sample_minus_1_sig"):
        assert errors[name] and errors[name].startswith("InvalidArgumentError"), errors[name]
        assert "sample: expected label class ids in [0, 3); received" in errors[name]
    assert "[3]" in errors["sample_3"] and "[-1]" in errors["sample_minus_1_sig"]
    # The offending ids, not the whole batch.
    assert "decode: expected label class ids in [0, 3); received] [5 -2]" in errors["decode_ids"]
    assert "reconstruct: expected label class ids in [0, 3)" in errors["reconstruct_ids"]
    assert (
        "decode: expected one label per code; received labels] [3] [for codes] [4]"
        in errors["decode_batch"]
    ), errors["decode_batch"]
    # A wrong rank: the runtime shape check (the signature does not check it).
    for name in ("decode_rank", "sample_vector"):
        assert errors[name] and errors[name].startswith("InvalidArgumentError"), errors[name]
        assert "Shape of tensor label" in errors[name], errors[name]
    assert "[4,1] is not compatible with expected shape [?]" in errors["decode_rank"]
    assert "[2] is not compatible with expected shape []" in errors["sample_vector"]
    assert errors["missing_label"] is not None  # the object API wants the label


def test_multi_hot_attributes(exported, served):
    model, _ = exported["multihot"]
    inputs, out, report = served
    attributes, rows = inputs["attributes"], inputs["attribute_rows"]
    expected = _np(model.decode(_noise(4, 0), labels=np.tile(attributes, (4, 1))))
    np.testing.assert_allclose(out["mh_sample"], expected, atol=1e-5)
    np.testing.assert_array_equal(out["mh_sample"], out["mh_sample_sig"])
    np.testing.assert_array_equal(out["mh_sample"], out["mh_sample_list"])  # 0/1 ints work
    assert np.abs(out["mh_sample"] - out["mh_sample_none"]).max() > 1e-4
    np.testing.assert_allclose(
        out["mh_decoded"], _np(model.decode(inputs["z"], labels=rows)), atol=1e-5
    )
    np.testing.assert_allclose(
        out["mh_reconstructed"], _np(model.reconstruct(inputs["images"], labels=rows)), atol=1e-5
    )
    errors = report["errors"]
    message = "sample: expected label attribute values in [0, 1] (1 = present, 0 = absent)"
    assert message in errors["mh_minus_1"] and "received] [-1 -1]" in errors["mh_minus_1"]
    assert message in errors["mh_nan"], errors["mh_nan"]
    assert (
        "decode: expected label of shape (batch, 5); received shape] [4 4]"
        in errors["mh_decode_width"]
    ), errors["mh_decode_width"]


def test_export_workdir_reloads_a_saved_cvae(exported, tmp_path):
    """`python -m keras_vae.export`'s path: model.keras -> a conditional export."""
    model, _ = exported["onehot"]
    model.save(tmp_path / "model.keras")
    export_dir = export.export_workdir(str(tmp_path))
    loaded = tf.saved_model.load(export_dir)
    images = loaded.sample(count=2, temperature=1.0, seed=3, label=1)["images"].numpy()
    expected = _np(model.decode(_noise(2, 3), labels=np.ones(2, np.int32)))
    np.testing.assert_allclose(images, expected, atol=1e-5)
