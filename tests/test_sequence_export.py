"""Tests for keras_vae.sequence_export: a sequence VAE's SavedModel reloaded
with plain TensorFlow (no keras_vae), its token and text outputs against the
model's own, seeded sampling, out-of-range token ids, and no text for strokes."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_export import run_plain_tf
from test_sequence_vae import CHARS, LENGTH, make_model, np_, random_sequences

from keras_vae import export
from keras_vae.data import text
from keras_vae.data.tokens import EOS, PAD, vocabulary_with_specials

LATENT = 4
SIGNATURES = {"reconstruct", "encode", "decode", "sample", "serving_default"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny character model (separator ""), trained 60 steps so that its
    reconstructions and samples differ, exported once for the module."""
    model = make_model(units=16, embedding_dim=8, latent_dim=LATENT, word_dropout=0.5, beta=0.5)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_sequences(32)
    ds = tf.data.Dataset.from_tensor_slices(x).repeat().batch(32)
    model.fit(ds, steps_per_epoch=60, epochs=1, shuffle=False, verbose=0)
    export_dir = str(tmp_path_factory.mktemp("sequence_export") / "export")
    export.export_saved_model(model, export_dir)
    return model, export_dir


# Runs in a fresh interpreter with TensorFlow only (no keras_vae on the path).
LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf

export_dir, inputs_path, outputs_path = sys.argv[1:4]
inputs = np.load(inputs_path)
m = tf.saved_model.load(export_dir)
sig = m.signatures
tokens, z = tf.constant(inputs["tokens"]), tf.constant(inputs["z"])
calls = {
    "reconstruct": m.reconstruct(tokens),
    "serving_default": sig["serving_default"](tokens=tokens),
    "decode": m.decode(z),
    "sample_a": m.sample(count=5, temperature=0.8, seed=7),
    "sample_b": sig["sample"](count=tf.constant(5), temperature=tf.constant(0.8),
                              seed=tf.constant(7, tf.int64)),
    "sample_c": m.sample(count=5, temperature=0.8, seed=8),
}
out, texts = {}, {}
for name, result in calls.items():
    out[name] = result["tokens"].numpy()
    texts[name] = [t.decode("utf-8") for t in result["text"].numpy().tolist()]
encoded = m.encode(tokens)
out["mean"], out["log_var"] = encoded["mean"].numpy(), encoded["log_var"].numpy()
bad = inputs["tokens"].copy()
bad[1, 2] = int(inputs["vocab_size"][0])  # one past the last id
negative = inputs["tokens"].copy()
negative[0, 0] = -1
errors = {}
for name, call in {
    "reconstruct": lambda: m.reconstruct(tf.constant(bad)),
    "encode": lambda: sig["encode"](tokens=tf.constant(negative)),
    "serving_default": lambda: sig["serving_default"](tokens=tf.constant(bad)),
    "decode": lambda: sig["decode"](z=tf.zeros([2, 7])),
}.items():
    try:
        call()
        errors[name] = None
    except Exception as e:
        errors[name] = f"{type(e).__name__}: {e}"
np.savez(outputs_path, **out)
print(json.dumps({
    "keras_vae_imported": "keras_vae" in sys.modules,
    "signatures": sorted(sig),
    "outputs": {name: sorted(sig[name].structured_outputs) for name in sig},
    "texts": texts,
    "errors": errors,
}))
"""


def test_plain_tensorflow_serves_the_models_tokens_and_text(exported, tmp_path):
    model, export_dir = exported
    x = random_sequences(6, seed=11)
    z = (1.5 * np.random.default_rng(0).standard_normal((8, LATENT))).astype("float32")
    np.savez(tmp_path / "inputs.npz", tokens=x, z=z, vocab_size=np.array([len(CHARS)]))
    report = run_plain_tf(
        LOADER, export_dir, str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"),
        cwd=tmp_path,
    )
    out = np.load(tmp_path / "outputs.npz")
    texts = report["texts"]

    assert report["keras_vae_imported"] is False
    assert set(report["signatures"]) == SIGNATURES
    for name in ("reconstruct", "serving_default", "decode", "sample"):
        assert report["outputs"][name] == ["text", "tokens"], name
    assert report["outputs"]["encode"] == ["log_var", "mean"]

    # The served graph computes what the model computes, token for token,
    # and its text is `detokenize` of those tokens (characters joined by "").
    expected = {
        "reconstruct": np_(model.reconstruct(x)),
        "decode": np_(model.decode(z)),
        "sample_a": np_(model.decode(
            0.8 * tf.random.stateless_normal([5, LATENT], seed=tf.constant([7, 0], tf.int64))
        )),
    }
    expected["serving_default"] = expected["reconstruct"]
    for name, tokens in expected.items():
        assert out[name].dtype == np.int32, name
        np.testing.assert_array_equal(out[name], tokens, err_msg=name)
        assert texts[name] == text.detokenize(tokens, CHARS, "char"), name
    mean, log_var = (np_(t) for t in model.encode(x))
    np.testing.assert_allclose(out["mean"], mean, atol=1e-5)
    np.testing.assert_allclose(out["log_var"], log_var, atol=1e-5)
    # Not a degenerate case: the codes decode to several texts of letters.
    assert len(set(texts["decode"])) >= 3, texts["decode"]
    assert any(len(t) >= 2 and t.isalpha() for t in texts["decode"]), texts["decode"]
    assert texts["reconstruct"] != [""] * 6
    # Each row: one EOS, then PAD.
    for name in ("reconstruct", "decode", "sample_a"):
        np.testing.assert_array_equal((out[name] == EOS).sum(axis=1), 1, err_msg=name)
        after = np.arange(LENGTH) > (out[name] == EOS).argmax(axis=1)[:, None]
        assert np.all(out[name][after] == PAD), name

    # sample: stateless, a seed reproduces (object API and signature agree),
    # another seed gives other sequences.
    np.testing.assert_array_equal(out["sample_a"], out["sample_b"])
    assert texts["sample_a"] == texts["sample_b"]
    assert out["sample_a"].shape == (5, LENGTH)
    assert np.any(out["sample_a"] != out["sample_c"])

    # An id outside [0, V) fails with a message naming the endpoint and the id.
    errors = report["errors"]
    assert "reconstruct: expected token ids in [0, 12); received" in errors["reconstruct"], errors
    assert "[12]" in errors["reconstruct"], errors["reconstruct"]
    assert "encode: expected token ids in [0, 12); received" in errors["encode"], errors
    assert "[-1]" in errors["encode"], errors["encode"]
    assert "reconstruct: expected token ids" in errors["serving_default"], errors
    assert "decode: expected z of shape (batch, 4)" in errors["decode"], errors["decode"]


def test_strokes_like_model_has_no_text_output(tmp_path):
    # Strokes are drawn, not read: separator None, so tokens only.
    moves = vocabulary_with_specials(tuple(f"{pen}{i}" for pen in "du" for i in range(4)))
    model = make_model(units=8, embedding_dim=4, latent_dim=LATENT, vocabulary=moves,
                       separator=None)
    export_dir = str(tmp_path / "export")
    export.export_saved_model(model, export_dir)
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    loaded = tf.saved_model.load(export_dir)
    assert set(loaded.signatures) == SIGNATURES
    for name in ("reconstruct", "decode", "sample", "serving_default"):
        assert sorted(loaded.signatures[name].structured_outputs) == ["tokens"], name
    x = random_sequences(3, vocab_size=len(moves), seed=2)
    served = loaded.reconstruct(tf.constant(x))
    assert sorted(served) == ["tokens"]
    np.testing.assert_array_equal(served["tokens"].numpy(), np_(model.reconstruct(x)))
