"""TensorBoard beyond images: the Projector, HParams and step scalars (callbacks)."""

import json
import math
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import (
    data_provider,
    event_accumulator,
    plugin_event_multiplexer,
)
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import metadata as hp_metadata
from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin
from test_checkpoint import _weights as _checkpoint_weights
from werkzeug import test as werkzeug_test

import keras_vae
from keras_vae import callbacks, config, data, training

TENSOR = "latent_mean/.ATTRIBUTES/VARIABLE_VALUE"


def _tiny_vae(side=8, latent_dim=2, condition_size=0):
    keras.utils.set_random_seed(0)
    kwargs = dict(image_shape=(side, side, 1), latent_dim=latent_dim, network="mlp",
                  widths=(16,), condition_size=condition_size)
    encoder, decoder = keras_vae.build_encoder(**kwargs), keras_vae.build_decoder(**kwargs)
    if condition_size:
        vae = keras_vae.models.get("cvae")(encoder, decoder, condition_size=condition_size, seed=0)
    else:
        vae = keras_vae.VAE(encoder, decoder, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    return vae


def _images(n, side=8, seed=0):
    return np.random.default_rng(seed).uniform(size=(n, side, side, 1)).astype(np.float32)


def _scalars(log_dir):
    """`{tag: [(step, value), ...]}` of every scalar in `log_dir`, in file order."""
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars":
            out[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
    return out


def _projector_app(logdir):
    """The Projector plugin's HTTP routes over `logdir`, as TensorBoard serves them."""
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    plugin = ProjectorPlugin(
        base_plugin.TBContext(logdir=logdir, data_provider=provider, multiplexer=mux)
    )
    apps = plugin.get_plugin_apps()

    def get(route, **args):
        query = "&".join(f"{k}={v}" for k, v in args.items())
        response = werkzeug_test.Client(apps[route]).get(f"{route}?{query}")
        assert response.status_code == 200, response.get_data()
        return response.get_data()

    return get


# -- the Projector -------------------------------------------------------------


def test_projector_holds_the_models_means_labels_and_sprite(tmp_path):
    vae = _tiny_vae()
    images = _images(10)
    metadata = {"shape": ["square"] * 5 + ["heart"] * 5, "scale": list(range(10))}
    run = str(tmp_path / "logs" / "held_out")  # a new folder: no event file yet
    paths = callbacks.write_latent_projector(vae, run, images, metadata)

    # The checkpoint's variable is the model's encoding of the images.
    stored = tf.train.load_checkpoint(paths["checkpoint"]).get_tensor(TENSOR)
    np.testing.assert_allclose(stored, np.asarray(vae.encode(images)[0]), rtol=0, atol=1e-6)
    # A header (two columns) and one row per image.
    with open(paths["metadata"]) as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    assert rows[0] == ["shape", "scale"] and len(rows) == 1 + 10
    assert rows[6] == ["heart", "5"]
    # 10 images -> ceil(sqrt(10)) = 4 cells a side of 8 px; the 11th cell on is black.
    sprite = np.asarray(Image.open(paths["sprite"]))
    assert sprite.shape == (32, 32)
    np.testing.assert_array_equal(sprite[8:16, 8:16], np.round(images[5, ..., 0] * 255))
    assert not sprite[16:24, 16:].any() and not sprite[24:].any()

    # What TensorBoard serves: the folder is a run (write_projector gave it an
    # event file), with the embedding's shape, metadata and sprite size.
    get = _projector_app(str(tmp_path / "logs"))
    assert json.loads(get("/runs")) == ["held_out"]
    info = json.loads(get("/info", run="held_out"))
    (embedding,) = info["embeddings"]
    assert embedding["tensorShape"] == [10, 2] and embedding["metadataPath"] == "metadata.tsv"
    assert embedding["sprite"]["singleImageDim"] == [8, 8]
    tensor = np.frombuffer(get("/tensor", run="held_out", name=TENSOR), np.float32)
    np.testing.assert_array_equal(tensor.reshape(10, 2), stored)
    assert get("/metadata", run="held_out", name=TENSOR).decode().count("\n") == 11


def test_a_folder_without_event_file_is_not_a_projector_run(tmp_path):
    # Why write_projector writes an event file: without one TensorBoard does
    # not list the folder as a run and the Projector never looks into it.
    paths = callbacks.write_projector(str(tmp_path / "logs" / "run"), np.eye(3, 2))
    (event_file,) = [f for f in os.listdir(tmp_path / "logs" / "run") if "tfevents" in f]
    os.remove(tmp_path / "logs" / "run" / event_file)
    assert json.loads(_projector_app(str(tmp_path / "logs"))("/runs")) == []
    assert "metadata" not in paths and "sprite" not in paths  # none given


def test_single_column_metadata_has_no_header(tmp_path):
    metadata = {"digit": [7, 1, 7]}
    paths = callbacks.write_projector(str(tmp_path), np.zeros((3, 2)), metadata=metadata)
    with open(paths["metadata"]) as f:
        assert f.read() == "7\n1\n7\n"


def test_sprite_atlas_sizes():
    # 1,024 images of 64 x 64 (a run's projector on shapes): 32 x 32 cells.
    atlas, cell = callbacks.sprite_atlas(np.zeros((1024, 64, 64, 1), np.uint8))
    assert atlas.shape == (2048, 2048, 1) and cell == (64, 64)
    # Too large for the limit: each cell shrinks to fit. 5 images -> 3 cells a
    # side; 3 * 16 > 30, so 10 x 10 cells (area-averaged: a flat image stays flat).
    atlas, cell = callbacks.sprite_atlas(np.full((5, 16, 16, 3), 0.5, np.float32), max_side=30)
    assert atlas.shape == (30, 30, 3) and cell == (10, 10)
    # Row by row: cells 0-2, then 3-4 and a black one, then black (128 = 0.5 * 255).
    assert np.all(atlas[:10] == 128) and np.all(atlas[10:20, :20] == 128)
    assert not atlas[10:20, 20:].any() and not atlas[20:].any()


def test_metadata_columns_per_dataset():
    shapes = callbacks.metadata_columns(
        {"shape": np.array([0, 2]), "scale": np.array([5, 0]), "pos_x": np.array([31, 1])}, "shapes"
    )
    assert shapes == {"shape": ["square", "heart"], "scale": [5, 0], "pos_x": [31, 1]}
    assert callbacks.metadata_columns({"label": np.array([3])}, "mnist") == {"digit": [3]}
    assert callbacks.metadata_columns({"label": np.array([3])}, "cifar10") == {"label": [3]}
    celeba = {name: np.array([1, 0]) for name in config.CELEBA_ATTRIBUTES}
    assert list(callbacks.metadata_columns(celeba, "celeb_a")) == list(config.CELEBA_ATTRIBUTES)


def test_conditional_model_encodes_with_its_labels(tmp_path):
    cvae = _tiny_vae(condition_size=3)
    images = _images(6)
    labels = {"shape": np.array([0, 1, 2, 0, 1, 2]), "scale": np.arange(6)}
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
    paths = callbacks.write_held_out_projector(cvae, str(tmp_path), ds, "shapes", "shape")
    stored = tf.train.load_checkpoint(paths["checkpoint"]).get_tensor(TENSOR)
    given = np.asarray(cvae.encode(images, labels=labels["shape"])[0])
    np.testing.assert_allclose(stored, given, rtol=0, atol=1e-6)
    other = np.asarray(cvae.encode(images, labels=(labels["shape"] + 1) % 3)[0])
    assert np.abs(stored - other).max() > 1e-3  # the labels did enter
    with open(paths["metadata"]) as f:
        assert f.readline() == "shape\tscale\n" and f.readline() == "square\t0\n"


# -- HParams -------------------------------------------------------------------


def _session(log_dir):
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0})
    acc.Reload()

    def content(tag):
        return acc.SummaryMetadata(tag).plugin_data.content

    start = hp_metadata.parse_session_start_info_plugin_data(
        content(hp_metadata.SESSION_START_INFO_TAG)
    )
    experiment = hp_metadata.parse_experiment_plugin_data(content(hp_metadata.EXPERIMENT_TAG))
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    return values, metrics, [h.name for h in experiment.hparam_infos]


def test_hparams_session_holds_the_config_and_the_metric_list(tmp_path):
    cfg = config.resolve("shapes", model="ae", beta=4.0, widths=(8, 16), latent_dim=6)
    callbacks.write_hparams(str(tmp_path), cfg)
    values, metrics, names = _session(str(tmp_path))
    watch_only = callbacks.hparams.WATCH_ONLY_FIELDS
    expected = {k: v for k, v in cfg.to_dict().items() if k not in watch_only}
    # Every field is listed; a None (warmup_steps, condition, ...) has no value.
    assert names == list(expected) and expected["warmup_steps"] is None
    expected = {k: v for k, v in expected.items() if v is not None}
    expected["widths"] = "8,16"
    assert values == expected
    assert (values["beta"], values["latent_dim"], values["model"]) == (4.0, 6, "ae")
    assert "image_every" not in names and values["steps_per_epoch"] == 500  # the preset's
    # The same metrics for every model and dataset (the dashboard reads one run's list).
    assert {("validation", "epoch_loss"), ("validation", "epoch_elbo"), ("", "test/elbo"),
            ("", "test/iwae_nll"), ("", "disentanglement/mig")} <= metrics


def test_final_metrics_are_written_for_the_dashboard(tmp_path):
    callbacks.write_final_metrics(
        str(tmp_path), {"test/iwae_nll": 85.25, "disentanglement/mig": 0.5, "x": None}, step=7
    )
    callbacks.write_final_metrics(str(tmp_path), {"test/iwae_nll": 84.0}, step=7)  # replaces
    scalars = _scalars(str(tmp_path))
    assert scalars["disentanglement/mig"] == [(7, 0.5)] and "x" not in scalars
    assert scalars["test/iwae_nll"][-1] == (7, 84.0)


# -- step scalars --------------------------------------------------------------


class _PerStepLoss(keras.callbacks.Callback):
    """Each step's own training loss, recovered from Keras' running means:
    with n finite steps since the epoch began, step t's loss is
    n_t * m_t - n_{t-1} * m_{t-1} (a skipped step changes neither)."""

    def __init__(self):
        super().__init__()
        self.losses = {}  # global step -> loss, finite steps only

    def on_epoch_begin(self, epoch, logs=None):
        self.previous = (0, 0.0)  # (finite steps, their running mean)
        self.skips = int(np.asarray(self.model.skipped_steps))

    def on_train_batch_end(self, batch, logs=None):
        step = int(np.asarray(self.model.kl_step))
        finite = batch + 1 - (int(np.asarray(self.model.skipped_steps)) - self.skips)
        if finite > self.previous[0]:
            n, mean = self.previous
            self.losses[step] = finite * float(logs["loss"]) - n * mean
        self.previous = (finite, float(logs["loss"]))


def _expected_windows(losses, every, last):
    out = {}
    for end in range(every, last + 1, every):
        window = [v for s, v in losses.items() if end - every < s <= end]
        if window:
            out[end] = np.mean(window)
    return out


@pytest.mark.parametrize("exact", [True, False])  # trackers' totals, or the logs only
def test_step_scalars_are_window_means_on_the_global_step_across_fits(tmp_path, exact):
    vae = _tiny_vae()
    x = _images(40)  # 5 steps of 8 per epoch; points every 3 steps span epoch ends
    per_step = _PerStepLoss()
    scalars = callbacks.StepScalars(str(tmp_path), every=3, exact=exact)
    fit = dict(batch_size=8, shuffle=False, verbose=0, callbacks=[scalars, per_step])
    vae.fit(x, epochs=2, **fit)
    vae.fit(x, initial_epoch=2, epochs=4, **fit)  # a second fit, as a resumed run makes
    written = _scalars(str(tmp_path))
    # Each fit writes its own event file; TensorBoard reads them in file-name
    # order, where a writer counter of 10 sorts before 3, so order by step.
    points = sorted(written["step/loss"])
    assert [s for s, _ in points] == [3, 6, 9, 12, 15, 18]  # steps 1..20, each once
    expected = _expected_windows(per_step.losses, 3, 20)
    np.testing.assert_allclose(
        [v for _, v in points], [expected[s] for s in sorted(expected)], rtol=1e-5
    )
    assert {"step/elbo", "step/kl", "step/reconstruction", "step/beta"} <= set(written)


def test_skipped_step_is_left_out_of_its_window(tmp_path):
    vae = _tiny_vae()
    x = _images(32)
    x[8:16] = np.nan  # the second batch of each epoch is skipped
    per_step = _PerStepLoss()
    scalars = callbacks.StepScalars(str(tmp_path), every=2)
    vae.fit(x, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[scalars, per_step])
    assert sorted(per_step.losses) == [1, 3, 4, 5, 7, 8]
    written = dict(_scalars(str(tmp_path))["step/loss"])
    expected = _expected_windows(per_step.losses, 2, 8)
    assert sorted(written) == [2, 4, 6, 8]
    for step, value in written.items():
        assert math.isclose(value, expected[step], rel_tol=1e-5), (step, value, expected[step])


def test_log_every_steps_is_checked_and_operational():
    with pytest.raises(config.UsageError, match="--log_every_steps must be a positive integer"):
        config.resolve("shapes", log_every_steps=0)
    assert "log_every_steps" in config.OPERATIONAL_FIELDS  # may change when resuming


# -- a run -----------------------------------------------------------------------

_RUN = dict(
    epochs=2, steps_per_epoch=4, validation_steps=1, eval_steps=1, batch_size=8, latent_dim=2,
    widths=(8, 8, 16, 16), dense_units=16, export=False, deterministic=True, log_every_steps=2,
)


class _SigtermAt(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(np.asarray(self.model.kl_step)) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("straight"))
    results = training.train_and_evaluate(config.resolve("shapes", **_RUN), workdir, verbose=0)
    return workdir, results


def test_a_run_writes_projector_hparams_and_step_scalars(straight_run):
    workdir, results = straight_run
    tensorboard = os.path.join(workdir, "tensorboard")
    validation = os.path.join(tensorboard, "validation")
    cfg = config.resolve("shapes", **_RUN)
    # The Projector: the first 1,024 validation images, encoded by the saved model.
    ds, _ = data.load_for_config(cfg, "validation", shuffle=False, repeat=False, with_labels=True)
    images, labels = next(iter(ds.unbatch().batch(1024)))
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    stored = tf.train.load_checkpoint(os.path.join(validation, "latent_mean.ckpt-1"))
    np.testing.assert_allclose(
        stored.get_tensor(TENSOR), np.asarray(model.encode(images)[0]), rtol=0, atol=1e-6
    )
    with open(os.path.join(validation, "metadata.tsv")) as f:
        rows = f.read().splitlines()
    assert rows[0] == "shape\tscale\torientation\tpos_x\tpos_y" and len(rows) == 1025
    first = [str(int(labels[k][0])) for k in ("scale", "orientation", "pos_x", "pos_y")]
    shape = data.shapes.SHAPE_NAMES[int(labels["shape"][0])]
    assert rows[1].split("\t") == [shape, *first]
    assert Image.open(os.path.join(validation, "sprite.png")).size == (2048, 2048)
    assert json.loads(_projector_app(tensorboard)("/runs")) == ["validation"]
    # HParams: the session is tensorboard/ itself; the test metrics at the last step.
    values, _, _ = _session(tensorboard)
    assert (values["latent_dim"], values["model"], values["widths"]) == (2, "vae", "8,8,16,16")
    final = _scalars(tensorboard)
    assert final["test/elbo"] == [(8, pytest.approx(results["elbo"], rel=1e-6))]
    assert final["test/bits_per_dim"] == [(8, pytest.approx(results["bits_per_dim"], rel=1e-6))]
    # Step scalars every 2 steps of the 8, next to Keras' epoch scalars: two
    # windows of 2 steps make an epoch of 4, whose mean Keras writes.
    train = _scalars(os.path.join(tensorboard, "train"))
    steps, windows = zip(*train["step/loss"], strict=True)
    assert steps == (2, 4, 6, 8)
    epochs = [v for _, v in train["epoch_loss"]]
    np.testing.assert_allclose(epochs, [np.mean(windows[:2]), np.mean(windows[2:])], rtol=1e-5)


def test_step_axis_continues_after_a_stop_and_resume(tmp_path, straight_run):
    # Also the vae's case of tests/test_checkpoint.py's
    # test_every_model_resumes_exactly_after_sigterm (the same runs there but
    # for log_every_steps, which changes what is logged, not what is trained):
    # its exit code, step counts and exact weights are checked here too.
    straight = _scalars(os.path.join(straight_run[0], "tensorboard", "train"))["step/loss"]
    cfg = config.resolve("shapes", **_RUN)
    workdir = str(tmp_path / "stopped")
    with pytest.raises(config.Interrupted, match="the run up to step 6 is saved") as info:
        # SIGTERM after step 5: the handler backs up at the end of step 6.
        training.train_and_evaluate(cfg, workdir, verbose=0, callbacks=[_SigtermAt(5)])
    assert info.value.exit_code == 128 + signal.SIGTERM
    train = os.path.join(workdir, "tensorboard", "train")
    assert [s for s, _ in _scalars(train)["step/loss"]] == [2, 4, 6]  # on disk before the stop
    results = training.train_and_evaluate(cfg, workdir, verbose=0)
    assert results["resumed_from_step"] == 6 and results["steps"] == 8
    resumed = _scalars(train)["step/loss"]
    # The second process goes on at step 8, with the points of a run never
    # stopped (deterministic ops: the same losses).
    assert [s for s, _ in resumed] == [2, 4, 6, 8]
    np.testing.assert_allclose([v for _, v in resumed], [v for _, v in straight], rtol=1e-6)
    # ... and ends with the weights and optimizer state of that run, exactly.
    for a, b in zip(_checkpoint_weights(workdir), _checkpoint_weights(straight_run[0]),
                    strict=True):
        np.testing.assert_array_equal(a, b)
