"""The speed paths of issue 16 compute what the plain paths compute.

`FusedAdam` (one `ResourceApplyAdam` kernel per variable) against
`keras.optimizers.Adam`, the XLA-compiled discretized logistic against the
plain function, and `steps_per_execution` in `train_and_evaluate` against
one step per call: same numbers, stated tolerances, and the fast path is
really the one taken.
"""

import json
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_vae import make_vae

from keras_vae import config as config_lib
from keras_vae import likelihoods, training
from keras_vae.models.loss_scaling import FusedAdam
from keras_vae.training import execution


def _adam_pair(w0, gradients, fused_cls=FusedAdam, lr=1e-3):
    """Weights and moments after applying `gradients` with Adam and `fused_cls`
    (in one tf.function, as `fit` does)."""
    plain_w, fused_w = keras.Variable(w0), keras.Variable(w0)
    plain, fused = keras.optimizers.Adam(lr), fused_cls(lr)
    plain.build([plain_w])
    fused.build([fused_w])

    @tf.function
    def step(g):
        plain.apply([g], [plain_w])
        fused.apply([g], [fused_w])

    for g in gradients:
        step(g)
    return (plain_w.numpy(), fused_w.numpy(),
            [v.numpy() for v in (plain._momentums[0], plain._velocities[0])],
            [v.numpy() for v in (fused._momentums[0], fused._velocities[0])])


def test_fused_adam_is_adam_bit_for_bit_in_float64():
    # Same formula (alpha = lr sqrt(1 - b2^t) / (1 - b1^t); m += (g - m)(1 - b1);
    # v += (g^2 - v)(1 - b2); w -= alpha m / (sqrt(v) + eps)), the powers formed
    # as Adam forms them: in float64 nothing is left to round differently.
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(30, 7))
    grads = [tf.constant(rng.normal(size=w0.shape)) for _ in range(20)]
    a, b, moments_a, moments_b = _adam_pair(w0, grads)
    assert np.max(np.abs(a - w0)) > 1e-3  # it moved: 20 steps of ~lr each
    np.testing.assert_array_equal(a, b)
    for x, y in zip(moments_a, moments_b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_fused_adam_matches_adam_in_float32_to_rounding():
    # In float32 the kernel forms 1 - beta from float32 betas: 1 - 0.9f =
    # 0.100000024 and 1 - 0.999f = 0.00099998713, where Adam casts the double
    # 1 - beta (0.1f, 0.001f): relative 2.4e-7 and 1.3e-5 on the moment rates.
    # After 50 steps at lr 1e-3 the weights (moved ~3e-2) differ by 7.2e-7
    # (measured); allowed: 2e-6, i.e. 1e-4 of the motion.
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(300, 70)).astype("float32")
    grads = [tf.constant(rng.normal(size=w0.shape).astype("float32")) for _ in range(50)]
    a, b, _, _ = _adam_pair(w0, grads)
    assert np.max(np.abs(a - w0)) > 2e-2
    np.testing.assert_allclose(b, a, rtol=0, atol=2e-6)


def test_fused_adam_takes_sparse_gradients_as_adam_does():
    # An embedding's gradient is an IndexedSlices with repeated rows, which
    # Adam's ops square slice by slice before summing (v gets 1^2 + 3^2, not
    # (1 + 3)^2): FusedAdam leaves those to Adam's own update; float64, so
    # bit for bit.
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=(10, 4))
    grads = [
        tf.IndexedSlices(tf.constant(rng.normal(size=(3, 4))), tf.constant([1, 4, 4]),
                         tf.constant([10, 4]))
        for _ in range(5)
    ]
    a, b, _, _ = _adam_pair(w0, grads)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], w0[0])  # row 0 never had a gradient


def test_train_runs_fused_adam_and_model_keras_keeps_it(tmp_path):
    config = _tiny_config(epochs=1, steps_per_epoch=2)
    training.train_and_evaluate(config, str(tmp_path), verbose=0)
    model = keras.models.load_model(str(tmp_path / "model.keras"))
    inner = model.optimizer.inner_optimizer  # in the LossScaleOptimizer (skips)
    assert type(inner) is FusedAdam
    assert int(model.optimizer.iterations.numpy()) == 2


# FusedAdam under a MirroredStrategy of 2 CPUs updates as Adam: checked in the
# one 2-CPU process of
# tests/test_distribute.py::test_mirrored_two_cpus_one_step_equals_no_strategy.


def _discretized_logistic_data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (4, 8, 8, 3)) / 255.0
    # Means beyond the pixel range and log-scales down to the floor (-7 - ln 2
    # clamps them): every branch of the function is taken.
    params = np.concatenate(
        [rng.uniform(-0.2, 1.2, x.shape), rng.uniform(-9.0, 1.0, x.shape)], axis=-1
    )
    return tf.constant(x.astype(dtype)), tf.constant(params.astype(dtype))


def _value_and_gradient(fn, x, params):
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = fn(x, params)
    return value, tape.gradient(value, params)


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_compiled_discretized_logistic_equals_the_plain_function(dtype, rtol):
    # Inside a traced function `log_prob` runs XLA-compiled; the plain
    # function is the reference (tests/test_likelihoods.py checks it against
    # NumPy). Measured: float32 values 4.4e-7 relative, gradients 2.4e-4 on
    # entries up to 2.2e3 (1e-7 relative); float64 1e-15.
    likelihood = likelihoods.DiscretizedLogistic()
    x, params = _discretized_logistic_data(dtype)

    def plain(x, params):
        mean, log_scale = likelihood._params(params)
        return likelihoods.discretized_logistic_log_prob(x, mean, log_scale)

    ref_value, ref_grad = tf.function(lambda x, p: _value_and_gradient(plain, x, p))(x, params)
    fast = tf.function(lambda x, p: _value_and_gradient(likelihood.log_prob, x, p))
    value, grad = fast(x, params)
    assert value.dtype == dtype and value.shape == (4,)
    np.testing.assert_allclose(value.numpy(), ref_value.numpy(), rtol=rtol)
    scale = np.max(np.abs(ref_grad.numpy()))
    assert scale > 1.0  # the gradient is not trivially zero
    np.testing.assert_allclose(grad.numpy(), ref_grad.numpy(), rtol=0, atol=rtol * scale)
    # The compiled function is what the traced graph calls.
    graph = fast.get_concrete_function(x, params).graph.as_graph_def()
    must_compile = [f for f in graph.library.function
                    if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b]
    assert must_compile, "log_prob was not XLA-compiled inside tf.function"
    # Eager calls take the plain path: exactly the plain function.
    np.testing.assert_array_equal(likelihood.log_prob(x, params).numpy(),
                                  plain(x, params).numpy())


def test_short_runs_keep_one_step_per_call(monkeypatch):
    monkeypatch.setattr(execution, "MIN_RUN_STEPS", 1000)
    assert execution.run_schedule(_tiny_config(), 10) == (1, 1)  # 20 steps: one per call
    assert execution.run_schedule(config_lib.resolve("shapes"), 500) == (8, 48)  # 5,000 steps


def test_steps_per_execution_divides_every_interval():
    # The largest n <= 8 dividing the intervals callbacks act on.
    assert execution.steps_per_execution(200, 48) == 8  # gcd 8
    assert execution.steps_per_execution(200, 50) == 5  # gcd 50: 5, not 8
    assert execution.steps_per_execution(200, 4) == 4
    assert execution.steps_per_execution(37) == 1
    assert execution.steps_per_execution(200, 48, limit=1) == 1


def _tiny_config(**overrides):
    values = dict(
        epochs=2, steps_per_epoch=10, validation_steps=3, eval_steps=3, batch_size=8,
        latent_dim=2, widths=(8, 8, 16, 16), dense_units=16, export=False,
        deterministic=True, backup_every_steps=8,
    )
    values.update(overrides)
    return config_lib.resolve("shapes", **values)


class _Calls(keras.callbacks.Callback):
    """The number of train-function calls per epoch, counted at the model's
    `train_function` (epoch hooks only: a batch hook would be given one step
    per call)."""

    def __init__(self):
        super().__init__()
        self.per_epoch = []

    def on_epoch_begin(self, epoch, logs=None):
        self.per_epoch.append(0)
        train_function = self.model.train_function
        if not getattr(train_function, "counted", False):

            def counted(iterator):
                self.per_epoch[-1] += 1
                return train_function(iterator)

            counted.counted = True
            self.model.train_function = counted


def _weights(workdir):
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    return [w.numpy() for w in model.weights]


@pytest.fixture(autouse=True)
def _short_runs_too(monkeypatch):
    # The tiny runs here take several steps per call as a long run does.
    monkeypatch.setattr(execution, "MIN_RUN_STEPS", 0)


@pytest.fixture(scope="module")
def one_step_per_call(tmp_path_factory):
    """The reference run: one step per call."""
    workdir = str(tmp_path_factory.mktemp("one_step"))
    calls = _Calls()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execution, "MAX_STEPS_PER_EXECUTION", 1)
        results = training.train_and_evaluate(_tiny_config(), workdir, verbose=0,
                                              callbacks=[calls])
    assert calls.per_epoch == [10, 10]
    return workdir, results


@pytest.mark.slow
def test_several_steps_per_call_train_exactly_as_one(tmp_path, one_step_per_call):
    # Epochs of 10 steps, backups every 8, points every 8 (24 // 100 rounded
    # up to a whole call): 8 steps a call, the epoch's second call only the 2
    # left. With deterministic ops the run ends with the weights, metrics and
    # history of one step per call.
    slow, slow_results = one_step_per_call
    fast = str(tmp_path / "fast")
    calls = _Calls()
    fast_results = training.train_and_evaluate(_tiny_config(), fast, verbose=0, callbacks=[calls])
    assert calls.per_epoch == [2, 2]  # 8 + 2 steps
    assert fast_results["steps"] == slow_results["steps"] == 20
    for key in ("elbo", "reconstruction", "kl", "num_images"):
        assert fast_results[key] == slow_results[key], key
    for a, b in zip(_weights(fast), _weights(slow), strict=True):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(fast, "history.json")) as f, \
            open(os.path.join(slow, "history.json")) as g:
        assert json.load(f) == json.load(g)  # validation on exactly 3 batches in both


class _SigtermInEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_a_signal_stops_at_a_calls_end_and_the_run_resumes_exactly(tmp_path, one_step_per_call):
    # SIGTERM as epoch 2 begins (step 10): the backup is written at the end of
    # its first call, step 18; resumed (the rest of the epoch: one call of 2
    # steps), the run ends as the one-step-per-call run.
    workdir = str(tmp_path / "stopped")
    with pytest.raises(config_lib.Interrupted, match="the run up to step 18 is saved"):
        training.train_and_evaluate(_tiny_config(), workdir, verbose=0,
                                    callbacks=[_SigtermInEpoch(1)])
    results = training.train_and_evaluate(_tiny_config(), workdir, verbose=0)
    assert results["resumed_from_step"] == 18 and results["steps"] == 20
    for a, b in zip(_weights(workdir), _weights(one_step_per_call[0]), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_callers_batch_hook_gets_every_step(tmp_path):
    # A callback with a batch hook is run one step per call, as `fit` would.
    seen = []

    class EveryStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(int(keras.ops.convert_to_numpy(self.model.kl_step)))

    config = _tiny_config(epochs=1, steps_per_epoch=8, validation_steps=1, eval_steps=1)
    training.train_and_evaluate(config, str(tmp_path), verbose=0, callbacks=[EveryStep()])
    assert seen == list(range(1, 9))


def test_split_gru_is_keras_gru_bit_for_bit():
    # The same weights give the same outputs and gradients: one `split` of
    # the recurrent projection instead of three slices of it.
    from keras_vae.sequence_networks import GRU

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(4, 7, 5)).astype("float32"))
    plain = keras.layers.GRU(6, return_sequences=True)
    split = GRU(6, return_sequences=True)
    plain.build(x.shape)
    split.build(x.shape)
    assert [w.shape for w in plain.weights] == [w.shape for w in split.weights]
    for a, b in zip(plain.weights, split.weights, strict=True):
        b.assign(rng.normal(size=a.shape).astype("float32"))
        a.assign(b)

    @tf.function
    def outputs_and_gradients(layer):
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(y**2)
        return y, tape.gradient(loss, layer.weights)

    y_plain, g_plain = outputs_and_gradients(plain)
    y_split, g_split = outputs_and_gradients(split)
    np.testing.assert_array_equal(y_split.numpy(), y_plain.numpy())
    for a, b in zip(g_plain, g_split, strict=True):
        assert np.max(np.abs(a.numpy())) > 0
        np.testing.assert_array_equal(b.numpy(), a.numpy())
    # A Bidirectional wrapper's backward copy steps with the split cell too.
    backward = keras.layers.Bidirectional(GRU(6)).backward_layer
    assert type(backward) is GRU and type(backward.cell).__name__ == "_SplitGRUCell"


def test_auto_xla_is_on_with_a_gpu_only():
    from keras_vae.training.distribute import auto_jit_compile

    assert auto_jit_compile(config_lib.resolve("strokes"), gpu=False) is False
    assert auto_jit_compile(config_lib.resolve("shapes"), gpu=False) is False
    assert auto_jit_compile(config_lib.resolve("celeb_a"), gpu=True) is True


def _trained_weights(monkeypatch, through_loss_scale_optimizer, batches):
    if through_loss_scale_optimizer:  # as under a strategy: the optimizer's own cond
        monkeypatch.setattr(tf.distribute, "has_strategy", lambda: True)
    model = make_vae()
    model.sampling.deterministic = True
    model.compile(optimizer=FusedAdam(1e-2))
    step = tf.function(model.train_step)
    for batch in batches:
        step(batch)
    monkeypatch.undo()
    return model


def test_unscaled_update_equals_the_loss_scale_optimizers_and_skips_alike(monkeypatch):
    # float32: Adam in one `cond` on one finiteness check gives the update
    # the LossScaleOptimizer gives (its scale is 1), bit for bit; a batch
    # with a NaN is skipped by both: weights and Adam's step count unchanged.
    rng = np.random.default_rng(0)
    good = [tf.constant((rng.random((8, 16, 16, 1)) > 0.5).astype("float32")) for _ in range(3)]
    bad = good[0].numpy().copy()
    bad[0, 0, 0, 0] = np.nan
    batches = [*good, tf.constant(bad)]
    lean = _trained_weights(monkeypatch, False, batches)
    wrapped = _trained_weights(monkeypatch, True, batches)
    for model in (lean, wrapped):
        assert int(model.optimizer.iterations.numpy()) == 3
        assert int(model.skipped_steps.numpy()) == 1
    for a, b in zip(lean.weights, wrapped.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    start = make_vae()
    moved = max(float(np.max(np.abs(a.numpy() - b.numpy())))
                for a, b in zip(lean.trainable_weights, start.trainable_weights, strict=True))
    assert moved > 1e-3


def test_steps_per_call_over_several_fits_runs_the_steps_asked():
    # Installed before each `fit` (as training does per phase): every fit runs
    # exactly its steps, in calls of 4 and a last call of the 2 left.
    model = make_vae()
    model.compile(optimizer=FusedAdam(1e-3))
    images = (np.random.default_rng(0).random((64, 16, 16, 1)) > 0.5).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices(images).batch(8).repeat()
    calls = execution.StepsPerCall(4)
    for fit in range(3):
        calls.install(model)
        model.fit(ds, steps_per_epoch=10, epochs=1, verbose=0, callbacks=[calls])
        assert int(model.kl_step.numpy()) == 10 * (fit + 1)
        assert int(model.optimizer.iterations.numpy()) == 10 * (fit + 1)
    # Without `install`, `fit` runs one step per call: still exact.
    model.fit(ds, steps_per_epoch=3, epochs=1, verbose=0, callbacks=[calls])
    assert int(model.kl_step.numpy()) == 33
