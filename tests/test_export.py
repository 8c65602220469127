"""Tests for keras_vae.export: the SavedModel reloaded in a TensorFlow-only
process, its signatures as `saved_model_cli` lists them, uint8 and float
inputs, shape errors, the atomic write and `python -m keras_vae.export`."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SHAPE = (8, 8, 3)
LATENT = 3
SIGNATURES = {
    "encode",
    "encode_uint8",
    "decode",
    "sample",
    "reconstruct",
    "reconstruct_uint8",
    "serving_default",
}


def make_vae():
    keras.utils.set_random_seed(0)
    common = dict(image_shape=IMAGE_SHAPE, latent_dim=LATENT, network="conv", widths=(4, 8))
    encoder = keras_vae.build_encoder(**common, dense_units=16)
    decoder = keras_vae.build_decoder(**common, dense_units=16, likelihood="bernoulli")
    return keras_vae.VAE(encoder, decoder, likelihood="bernoulli", seed=0)


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    return env


def run_plain_tf(code, *args, cwd):
    """Runs `code` in a fresh Python without keras_vae on its path (plain
    TensorFlow, as a server would); returns its last stdout line as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_module(args, cwd):
    env = _env()
    env["PYTHONPATH"] = REPO
    return subprocess.run(
        [sys.executable, "-m", "keras_vae.export", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random tiny VAE exported once; the module's tests share it."""
    root = tmp_path_factory.mktemp("export")
    model = make_vae()
    export_dir = os.path.join(root, "export")
    export.export_saved_model(model, export_dir)
    return model, export_dir


# Runs in a fresh interpreter with TensorFlow only: not keras_vae (it is not
# even importable: no PYTHONPATH, cwd outside the repo).
LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf

export_dir, inputs_path, outputs_path = sys.argv[1:4]
inputs = np.load(inputs_path)
m = tf.saved_model.load(export_dir)
out = {}
enc = m.encode(tf.constant(inputs["images"]))
out["mean"], out["log_var"] = enc["mean"].numpy(), enc["log_var"].numpy()
out["mean_uint8"] = m.encode_uint8(tf.constant(inputs["pixels"]))["mean"].numpy()
out["decoded"] = m.decode(tf.constant(inputs["z"]))["images"].numpy()
out["reconstructed"] = m.reconstruct(tf.constant(inputs["images"]))["images"].numpy()
out["reconstructed_uint8"] = m.reconstruct_uint8(tf.constant(inputs["pixels"]))["images"].numpy()
out["reconstructed_pixels_as_float"] = m.reconstruct(
    tf.constant(inputs["pixels"].astype("float32") / 255.0))["images"].numpy()
# The signatures, as TF Serving calls them (keyword arguments, exact dtypes).
sig = m.signatures
out["serving_default"] = sig["serving_default"](
    images=tf.constant(inputs["images"]))["images"].numpy()
out["sample_a"] = m.sample(count=5, temperature=0.8, seed=7)["images"].numpy()
out["sample_b"] = sig["sample"](count=tf.constant(5), temperature=tf.constant(0.8),
                                seed=tf.constant(7, tf.int64))["images"].numpy()
out["sample_c"] = m.sample(count=5, temperature=0.8, seed=8)["images"].numpy()
errors = {}
wrong = tf.zeros([2, 5, 5, 3])
for name, call in {
    "object": lambda: m.reconstruct(wrong),
    "signature": lambda: sig["reconstruct"](images=wrong),
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
    "errors": errors,
}))
"""


def test_reloads_without_keras_vae_and_matches_the_model(exported, tmp_path):
    model, export_dir = exported
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, *IMAGE_SHAPE), dtype=np.uint8)
    images = rng.uniform(size=(6, *IMAGE_SHAPE)).astype("float32")
    z = rng.normal(size=(4, LATENT)).astype("float32")
    np.savez(tmp_path / "inputs.npz", images=images, pixels=pixels, z=z)
    report = run_plain_tf(
        LOADER, export_dir, str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz"),
        cwd=tmp_path,
    )
    out = np.load(tmp_path / "outputs.npz")

    assert report["keras_vae_imported"] is False
    assert set(report["signatures"]) == SIGNATURES

    # The exported graph computes what the in-process model computes.
    mean, log_var = (keras.ops.convert_to_numpy(t) for t in model.encode(images))
    np.testing.assert_allclose(out["mean"], mean, atol=1e-5)
    np.testing.assert_allclose(out["log_var"], log_var, atol=1e-5)
    np.testing.assert_allclose(
        out["decoded"], keras.ops.convert_to_numpy(model.decode(z)), atol=1e-5
    )
    expected = keras.ops.convert_to_numpy(model.reconstruct(images))
    np.testing.assert_allclose(out["reconstructed"], expected, atol=1e-5)
    np.testing.assert_allclose(out["serving_default"], expected, atol=1e-5)
    assert out["reconstructed"].shape == (6, *IMAGE_SHAPE)
    assert out["reconstructed"].dtype == np.float32

    # uint8 pixels k give what float k / 255 gives, in both endpoints.
    np.testing.assert_allclose(
        out["reconstructed_uint8"], out["reconstructed_pixels_as_float"], atol=1e-6
    )
    expected_mean = keras.ops.convert_to_numpy(model.encode(pixels)[0])  # VAE divides by 255
    np.testing.assert_allclose(out["mean_uint8"], expected_mean, atol=1e-5)

    # sample: stateless, so a seed reproduces (object API and signature agree);
    # it is decode(temperature * stateless_normal([count, D], seed=[seed, 0])).
    np.testing.assert_array_equal(out["sample_a"], out["sample_b"])
    assert out["sample_a"].shape == (5, *IMAGE_SHAPE)
    assert np.abs(out["sample_a"] - out["sample_c"]).max() > 1e-3
    noise = tf.random.stateless_normal([5, LATENT], seed=tf.constant([7, 0], tf.int64))
    np.testing.assert_allclose(
        out["sample_a"], keras.ops.convert_to_numpy(model.decode(0.8 * noise)), atol=1e-5
    )

    # A wrong shape fails with a message naming the expected one: the
    # TensorSpec check of the object API, an in-graph check for signatures.
    errors = report["errors"]
    assert "shape=(None, 8, 8, 3)" in errors["object"], errors["object"]
    assert "reconstruct: expected images of shape (batch, 8, 8, 3)" in errors["signature"], errors[
        "signature"
    ]
    assert "[2 5 5 3]" in errors["signature"]
    assert "decode: expected z of shape (batch, 3)" in errors["decode"], errors["decode"]


def test_saved_model_cli_lists_the_signatures_with_shapes(exported):
    _, export_dir = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run(
        [cli, "show", "--all", "--dir", export_dir],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout

    def block(name):
        start = text.index(f"signature_def['{name}']:")
        end = text.find("signature_def[", start + 1)
        return text[start : end if end > 0 else None]

    for name in SIGNATURES:
        assert f"signature_def['{name}']" in text, name
    for name in ("encode", "reconstruct", "serving_default"):
        assert "DT_FLOAT" in block(name) and "shape: (-1, 8, 8, 3)" in block(name)
    for name in ("encode_uint8", "reconstruct_uint8"):
        assert "DT_UINT8" in block(name) and "shape: (-1, 8, 8, 3)" in block(name)
    assert "outputs['mean']" in block("encode") and "shape: (-1, 3)" in block("encode")
    assert "inputs['z']" in block("decode") and "shape: (-1, 3)" in block("decode")
    sample = block("sample")
    for arg, dtype in (("count", "DT_INT32"), ("temperature", "DT_FLOAT"), ("seed", "DT_INT64")):
        assert f"inputs['{arg}']" in sample, arg
        assert dtype in sample.split(f"inputs['{arg}']")[1].split("inputs[")[0], arg
    assert "shape: (-1, 8, 8, 3)" in sample


def test_export_is_atomic(tmp_path, monkeypatch):
    model = make_vae()
    export_dir = str(tmp_path / "export")
    export.export_saved_model(model, export_dir)
    first = os.path.getmtime(os.path.join(export_dir, "saved_model.pb"))
    # Replacing an export: the new one in place, nothing else left behind.
    export.export_saved_model(model, export_dir)
    assert os.listdir(tmp_path) == ["export"]
    assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
    assert os.path.getmtime(os.path.join(export_dir, "saved_model.pb")) >= first
    marker = os.path.join(export_dir, "marker")
    open(marker, "w").close()

    # A crash mid-write leaves the previous export untouched, and no temp dir.
    class Failing:
        def write_out(self, path, verbose=False):
            with open(os.path.join(path, "saved_model.pb"), "w") as f:
                f.write("half")
            raise OSError("disk full")

    monkeypatch.setattr(export, "build_export_archive", lambda model: Failing())
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, export_dir)
    assert os.listdir(tmp_path) == ["export"]
    assert os.path.exists(marker)


def test_module_entry_point(tmp_path):
    # Four fresh interpreters that import TensorFlow: ~12 s on 2 cores.
    workdir = tmp_path / "run"
    workdir.mkdir()
    make_vae().save(workdir / "model.keras")
    proc = _run_module([f"--workdir={workdir}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(workdir / "export" / "saved_model.pb")
    # TensorFlow's INFO lines about the temporary folder are not shown.
    assert "Assets written" not in proc.stderr and "export.tmp-" not in proc.stderr, proc.stderr
    assert proc.stdout.strip().startswith("Exported ")
    assert sorted(os.listdir(workdir)) == ["export", "model.keras"]
    loaded = tf.saved_model.load(str(workdir / "export"))
    assert set(loaded.signatures) == SIGNATURES

    # No model: one clear line, exit code 1.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run_module([f"--workdir={empty}"], cwd=tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "No model at" in lines[0] and "model.keras" in lines[0], proc.stderr
    assert not os.path.exists(empty / "export")

    # No --workdir: a usage error, exit code 2.
    proc = _run_module([], cwd=tmp_path)
    assert proc.returncode == 2
    assert "--workdir is required" in proc.stderr
    proc = _run_module([f"--workdir={workdir}", "--bogus=1"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: Unknown command line flag 'bogus'" in proc.stderr


def test_export_workdir_errors(tmp_path):
    with pytest.raises(keras_vae.config.UserError, match="No model at"):
        export.export_workdir(str(tmp_path))
    (tmp_path / "model.keras").write_text("not a zip")
    with pytest.raises(keras_vae.config.UserError, match="is corrupt or truncated"):
        export.export_workdir(str(tmp_path))
    assert os.listdir(tmp_path) == ["model.keras"]
    # A Keras model, but not a VAE.
    inputs = keras.Input((2,))
    keras.Model(inputs, keras.layers.Dense(1)(inputs)).save(tmp_path / "model.keras")
    with pytest.raises(keras_vae.config.UserError) as info:
        export.export_workdir(str(tmp_path))
    assert str(info.value) == (
        f"{tmp_path / 'model.keras'} holds a Functional, not a keras_vae VAE: point --workdir "
        "at a folder written by train.py."
    )
    assert os.listdir(tmp_path) == ["model.keras"]


def _poison(model):
    """Sets one decoder weight to NaN, as a diverged run leaves them."""
    weight = model.decoder.weights[0]
    value = keras.ops.convert_to_numpy(weight).copy()
    value.flat[0] = np.nan
    weight.assign(value)
    return weight.path


def test_export_refuses_nonfinite_weights(tmp_path):
    model = make_vae()
    path = _poison(model)
    export_dir = tmp_path / "export"
    with pytest.raises(keras_vae.config.UserError) as info:
        export.export_saved_model(model, str(export_dir))
    assert str(info.value) == (
        f"Cannot export to {export_dir}: the model's weights are not finite (NaN or Inf in 1 "
        f"variable(s), e.g. {path}): a diverged model; retrain it with a lower --learning_rate."
    )
    assert os.listdir(tmp_path) == []  # no export, no temporary folder

    # An earlier good export stays as it was.
    good = make_vae()
    export.export_saved_model(good, str(export_dir))
    before = sorted(os.listdir(export_dir))
    mtime = os.path.getmtime(export_dir / "saved_model.pb")
    with pytest.raises(keras_vae.config.UserError, match="not finite"):
        export.export_saved_model(model, str(export_dir))
    assert sorted(os.listdir(export_dir)) == before and os.listdir(tmp_path) == ["export"]
    assert os.path.getmtime(export_dir / "saved_model.pb") == mtime


def test_empty_batches(exported):
    """A batch of 0 gives an empty batch of the right shape, not a oneDNN error."""
    _, export_dir = exported
    loaded = tf.saved_model.load(export_dir)
    images = {
        "images": tf.zeros((0, *IMAGE_SHAPE), tf.float32),
        "pixels": tf.zeros((0, *IMAGE_SHAPE), tf.uint8),
    }
    calls = {
        # name: (input name, input, {output: trailing shape})
        "encode": ("images", images["images"], {"mean": (LATENT,), "log_var": (LATENT,)}),
        "encode_uint8": ("images", images["pixels"], {"mean": (LATENT,), "log_var": (LATENT,)}),
        "decode": ("z", tf.zeros((0, LATENT)), {"images": IMAGE_SHAPE}),
        "reconstruct": ("images", images["images"], {"images": IMAGE_SHAPE}),
        "reconstruct_uint8": ("images", images["pixels"], {"images": IMAGE_SHAPE}),
        "serving_default": ("images", images["images"], {"images": IMAGE_SHAPE}),
    }
    for name, (arg, value, outputs) in calls.items():
        results = {"signature": loaded.signatures[name](**{arg: value})}
        if name != "serving_default":
            results["object"] = getattr(loaded, name)(value)
        for api, out in results.items():
            assert sorted(out) == sorted(outputs), (name, api)
            for key, trailing in outputs.items():
                assert tuple(out[key].shape) == (0, *trailing), (name, api, key)
                assert out[key].dtype == tf.float32
    samples = {
        "object": loaded.sample(count=0, temperature=1.0, seed=0),
        "signature": loaded.signatures["sample"](
            count=tf.constant(0), temperature=tf.constant(1.0), seed=tf.constant(0, tf.int64)
        ),
    }
    for api, out in samples.items():
        assert tuple(out["images"].shape) == (0, *IMAGE_SHAPE), api
    # A non-empty batch still goes through the network.
    out = loaded.encode(tf.fill((2, *IMAGE_SHAPE), 0.5))
    assert tuple(out["mean"].shape) == (2, LATENT) and np.all(np.isfinite(out["mean"].numpy()))
