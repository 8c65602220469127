"""Precision, XLA and tf.distribute: same numbers on 1 or N replicas, in any precision.

Strategies need TensorFlow configured before it starts (logical devices,
TF_CONFIG), so those tests run their own Python processes.
"""

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import textwrap
from unittest import mock

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import config as config_lib
from keras_vae import training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code, env=None, timeout=600, args=()):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO, **(env or {}))
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=REPO,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


MIRRORED = """
import json, sys
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, keras_vae

strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def largest_change(a, b):
    return max(float(np.max(np.abs(u.numpy() - v.numpy()))) for u, v in zip(a, b))


def one_case(name, shape, network, widths, options):
    shape, widths = tuple(shape), tuple(widths)
    # A conditional model (cvae) takes its condition size from the options and
    # trains on (images, labels).
    classes = options.get("condition_size", 0)

    def make():
        keras.utils.set_random_seed(1)
        nets = dict(network=network, widths=widths, dense_units=16, condition_size=classes)
        enc = keras_vae.build_encoder(shape, 3, **nets)
        dec = keras_vae.build_decoder(shape, 3, **nets)
        model = keras_vae.models.get(name)(enc, dec, seed=0, **options)
        # z = mean (eps = 0): the update is then a deterministic function of the
        # batch, so the two runs can be compared (the replicas would draw other
        # noise than one device).
        model.sampling.deterministic = True
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        return model

    x = (np.random.default_rng(0).random((16, *shape)) > 0.5).astype("float32")
    labels = np.arange(16) % max(classes, 1)
    # One global batch of 16.
    batch = tf.data.Dataset.from_tensors((x, labels) if classes else x)
    plain = make()
    plain_logs = plain.fit(batch, epochs=1, verbose=0).history
    with strategy.scope():
        mirrored = make()
    mirrored_logs = mirrored.fit(batch, epochs=1, verbose=0).history
    fresh = make()
    # With free bits, the KL per dimension at the start, for the global batch
    # and each replica's half (the clamp acts on a batch mean).
    kl_per_dim = None
    if options.get("free_bits"):
        kl = np.asarray(keras_vae.likelihoods.gaussian_kl_per_dim(*fresh.encode(x)))
        kl_per_dim = [kl.mean(0).tolist(), kl[:8].mean(0).tolist(), kl[8:].mean(0).tolist()]
    # A variant's own weights (e.g. IAF's flow), beside the encoder's and decoder's.
    nets = plain.encoder.weights + plain.decoder.weights
    own = [i for i, w in enumerate(plain.trainable_weights) if not any(w is v for v in nets)]
    return {
        "replicas": strategy.num_replicas_in_sync,
        "weights": len(plain.trainable_weights),
        "diff": largest_change(plain.trainable_weights, mirrored.trainable_weights),
        "moved": largest_change(plain.trainable_weights, fresh.trainable_weights),
        "own_moved": largest_change([plain.trainable_weights[i] for i in own],
                                    [fresh.trainable_weights[i] for i in own]) if own else None,
        "loss": [plain_logs["loss"][0], mirrored_logs["loss"][0]],
        "kl_per_dim": kl_per_dim,
    }


def beta_tcvae_per_replica():
    # tests/test_beta_tcvae.py's check, run here: each replica estimates MI,
    # TC and DWKL on its own half of the global batch.
    from keras_vae.models.beta_tcvae import BetaTCVAE

    def make():
        keras.utils.set_random_seed(1)
        enc = keras_vae.build_encoder((16, 16, 1), 3, "mlp", widths=(32,))
        dec = keras_vae.build_decoder((16, 16, 1), 3, "mlp", widths=(32,))
        model = BetaTCVAE(enc, dec, dataset_size=64, seed=0)
        model.sampling.deterministic = True  # z = mean: the replicas draw no noise
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        return model

    x = (np.random.default_rng(0).random((16, 16, 16, 1)) > 0.7).astype("float32")
    plain = make()
    halves = [plain.objective(plain.compute_terms(h), 1.0)[1] for h in (x[:8], x[8:])]
    whole = plain.objective(plain.compute_terms(x), 1.0)[1]
    with strategy.scope():
        mirrored = make()
    batch = tf.data.Dataset.from_tensors(x)  # one global batch of 16: 8 per replica
    first = mirrored.fit(batch, epochs=1, verbose=0).history
    more = mirrored.fit(batch.repeat(20), epochs=1, verbose=0).history
    return {"replicas": strategy.num_replicas_in_sync,
            "first": {k: first[k][0] for k in ("mi", "tc", "dwkl", "loss")},
            "halves": {k: float(np.mean([h[k] for h in halves])) for k in ("mi", "tc", "dwkl")},
            "whole": {k: float(whole[k]) for k in ("mi", "tc", "dwkl")},
            "more": {k: more[k][0] for k in ("mi", "tc", "dwkl", "loss")},
            "skipped": int(mirrored.skipped_steps.numpy())}


def fused_adam_and_adam():
    # tests/test_fast_paths.py's check, run here: FusedAdam and Adam under the
    # strategy, 4 steps of a dense layer each.
    from keras_vae.models.loss_scaling import FusedAdam

    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    y = x @ np.arange(15, dtype="float32").reshape(5, 3)
    weights = {}
    for name, cls in (("adam", keras.optimizers.Adam), ("fused", FusedAdam)):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
            model.compile(cls(1e-2), "mse")
        model.fit(x, y, batch_size=16, epochs=4, verbose=0)
        weights[name] = [w.numpy().tolist() for w in model.weights]
    return weights


# Every check that needs 2 logical CPUs in one process (one start of
# TensorFlow, not one per case); each builds its models from the same seed as
# it would alone.
print(json.dumps({
    "cases": [one_case(*case) for case in json.loads(sys.argv[1])],
    "beta_tcvae": beta_tcvae_per_replica(),
    "fused_adam": fused_adam_and_adam(),
}))
"""

# (name, shape, network, widths, options) of each model on the seam.
MIRRORED_CASES = [
    ("vae", (16, 16, 1), "conv", (4, 8), {}),
    ("ae", (16, 16, 1), "conv", (4, 8), {}),
    ("iwae", (8, 8, 1), "mlp", (16,), {"k": 3}),
    ("iaf", (8, 8, 1), "mlp", (16,), {"flow_steps": 2, "flow_units": 8}),
    ("cvae", (16, 16, 1), "conv", (4, 8), {"condition_size": 3}),
    # Free bits of 0.006 nats: see the test's end.
    ("vae", (16, 16, 1), "conv", (4, 8), {"free_bits": 0.006}),
]


@pytest.mark.slow
def test_mirrored_two_cpus_one_step_equals_no_strategy():
    # Every model on the seam; beta_tcvae is not here: each replica estimates
    # q(z) on its own half of the batch, so its update differs by design
    # (checked below). The cases, and the checks of beta_tcvae's per-replica
    # estimates and of FusedAdam under the strategy (formerly in
    # tests/test_beta_tcvae.py and tests/test_fast_paths.py), run in one Python
    # process (one start of TensorFlow with 2 logical CPUs) and are checked
    # one by one.
    proc = _python(MIRRORED, args=[json.dumps(MIRRORED_CASES)])
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    results = json.loads(out.strip().splitlines()[-1])
    assert len(results["cases"]) == len(MIRRORED_CASES)
    for (name, _, _, _, options), result in zip(MIRRORED_CASES, results["cases"], strict=True):
        _check_mirrored_case(name, options, result)
    _check_beta_tcvae_estimates_per_replica(results["beta_tcvae"])
    _check_fused_adam_updates_as_adam(results["fused_adam"])


def _check_beta_tcvae_estimates_per_replica(out):
    # Each replica estimates MI, TC and DWKL from its own 8 codes, so the
    # logged values are the mean of the two halves' estimates, not the
    # estimate on all 16 codes (q(z_i) never sees the other replica's codes):
    # the update differs from one device's, unlike the VAE's (above).
    assert out["replicas"] == 2 and out["skipped"] == 0
    for key in ("mi", "tc", "dwkl"):
        np.testing.assert_allclose(out["first"][key], out["halves"][key], rtol=1e-4, atol=1e-4)
    assert abs(out["halves"]["mi"] - out["whole"]["mi"]) > 1e-3, out
    assert all(np.isfinite(v) for v in out["more"].values()), out
    assert out["more"]["loss"] < out["first"]["loss"], out


def _check_fused_adam_updates_as_adam(weights):
    # Two replicas: each updates its own copy of the variables and moments
    # (`ResourceApplyAdam` on the replica's handle); 4 steps at lr 1e-2 move
    # the weights ~4e-2, float32 rounding of the moment rates (see
    # tests/test_fast_paths.py) allows 1e-5.
    for a, b in zip(weights["adam"], weights["fused"], strict=True):
        np.testing.assert_allclose(np.array(b), np.array(a), rtol=0, atol=1e-5)
    assert np.max(np.abs(np.array(weights["adam"][1]))) > 1e-2  # the bias moved from 0


def _check_mirrored_case(name, options, result):
    case = (name, options, result)
    assert result["replicas"] == 2, case
    # The step really moved the weights, and identically on 1 and 2 replicas:
    # without the loss / num_replicas scaling the update would be 2x (seen:
    # diff 1.5e-8 for iwae, 6e-8 for ae), with the same logged loss.
    assert result["moved"] > 1e-3, case
    assert result["diff"] < 1e-5, case
    assert result["loss"][0] == pytest.approx(result["loss"][1], rel=1e-6), case
    if name == "iaf":  # 10 network weights and 2 flow steps of 7; the flow moved too
        assert result["weights"] == 10 + 2 * 7 and result["own_moved"] > 1e-3, case
    if options.get("free_bits"):
        # The clamp max(free_bits, batch mean of KL_d) is active on some
        # dimensions and not on others, and one replica's half of the batch
        # sits on the other side of it than the global batch for some d
        # (seen: global 0.0047 0.0065 0.0075, halves 0.0043 0.0045 0.0051 and
        # 0.0051 0.0084 0.0099 nats): a clamp on each replica's own mean
        # would then give another update than one device (seen with that
        # clamp: diff 4.3e-3, loss 177.4645 vs 177.4657; with the global
        # batch's mean all-reduced first: diff 6e-8, the same loss).
        fb = options["free_bits"]
        whole, *halves = (np.asarray(m) > fb for m in result["kl_per_dim"])
        assert whole.any() and not whole.all(), case
        assert any((half != whole).any() for half in halves), case


WORKER = """
import json, os, sys
import numpy as np
import keras
from keras_vae import config as config_lib, training

out, workdir, distribution = sys.argv[1:4]

class Dump(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        # z = mean (eps = 0), read when train_step is traced (at its first
        # call, after this): each worker would draw the same noise for its
        # half of the batch as the other, one process other noise for all 8.
        self.model.sampling.deterministic = True
        self.start = [np.array(w) for w in self.model.trainable_weights]

    def on_train_end(self, logs=None):
        np.savez(out, *[np.asarray(w) for w in self.model.trainable_weights])
        np.savez(out + "-start", *self.start)

# Free bits of 3e-5 nats: at the start the first batch's KL per dimension is
# 3.8e-5 and 1.2e-5 nats (one clamped, one not), and 1.8e-5 on worker 0's
# half for the first: a clamp of each worker's own mean would differ.
config = config_lib.resolve(
    "shapes", epochs=1, steps_per_epoch=2, validation_steps=1, eval_steps=1, batch_size=8,
    latent_dim=2, widths=(4, 4, 8, 8), dense_units=8, distribution=distribution,
    free_bits=3e-5, export=False)
results = training.train_and_evaluate(config, workdir, verbose=0, callbacks=[Dump()])
print(json.dumps({"steps": results["steps"], "replicas": results["replicas"]}))
"""


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _worker(tmp_path, name, distribution, env=None):
    out, run = str(tmp_path / name), str(tmp_path / f"run-{name}")
    code = f"import sys; sys.argv = ['w', {out!r}, {run!r}, {distribution!r}]\n" + WORKER
    return _python(code, env=env)


def _worker_in_this_process(tmp_path, name, distribution):
    """The WORKER program run here, for the run without a strategy (which needs
    no TensorFlow set-up before it starts, unlike the workers): its last
    output line, as JSON."""
    out, run = str(tmp_path / name), str(tmp_path / f"run-{name}")
    printed = io.StringIO()
    with mock.patch.object(sys, "argv", ["w", out, run, distribution]), \
            contextlib.redirect_stdout(printed):
        exec(compile(textwrap.dedent(WORKER), "<worker>", "exec"), {"__name__": "worker"})
    return json.loads(printed.getvalue().strip().splitlines()[-1])


def _weights(path):
    with np.load(path) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow
def test_multi_worker_two_processes_equal_one_process_update_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = {}
    for index in range(2):
        task = {"type": "worker", "index": index}
        env = {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}
        procs[f"w{index}"] = _worker(tmp_path, f"w{index}", "multi_worker", env)
    # The same 2 global batches of 8 on one process, no strategy: this one,
    # while the workers run (a fresh interpreter would only add its start).
    try:
        outputs = {"one": _worker_in_this_process(tmp_path, "one", "none")}
    except BaseException:
        for proc in procs.values():
            proc.kill()
        raise
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (name, err[-3000:])
        outputs[name] = json.loads(out.strip().splitlines()[-1])
    # The workers trained the 2 planned steps on 2 replicas (one each).
    assert outputs == {
        "w0": {"steps": 2, "replicas": 2},
        "w1": {"steps": 2, "replicas": 2},
        "one": {"steps": 2, "replicas": 1},
    }
    w0, w1, one = (_weights(tmp_path / f"{name}.npz") for name in ("w0", "w1", "one"))
    start = _weights(tmp_path / "one-start.npz")
    assert len(w0) == len(w1) == len(one) == len(start) > 0
    # The workers agree exactly (the gradients are all-reduced) ...
    for a, b in zip(w0, w1, strict=True):
        np.testing.assert_array_equal(a, b)
    # ... the two steps moved the weights (two Adam steps of 1e-3: seen 2.0e-3) ...
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(one, start, strict=True)) > 1e-3
    # ... and the update is one process's on the same global batches (each
    # worker trained on its half of each, the free-bits clamp acted on the
    # global batch's KL), up to float sums in another order (seen: 1.3e-7;
    # with each worker clamping its own half's mean: 9.7e-4). Adam is about
    # blind to a gradient's scale: the loss / replicas scaling is checked
    # with SGD above.
    for a, b in zip(w0, one, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    # Only the chief (worker 0) wrote its workdir.
    chief = sorted(os.listdir(tmp_path / "run-w0"))
    assert {"config.json", "model.keras", "history.json", training.SUMMARY_FILE} <= set(chief)
    assert not (tmp_path / "run-w1").exists()


def _twenty_steps(policy):
    """The loss after 20 Adam steps on fixed data, under a dtype policy."""
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(3)
        enc = keras_vae.build_encoder((16, 16, 1), 4, "conv", widths=(8, 16), dense_units=32)
        dec = keras_vae.build_decoder((16, 16, 1), 4, "conv", widths=(8, 16), dense_units=32)
        vae = keras_vae.VAE(enc, dec, seed=0)
        vae.compile(optimizer=keras.optimizers.Adam(1e-3))
        x = (np.random.default_rng(0).random((64, 16, 16, 1)) > 0.5).astype("float32")
        history = vae.fit(x, batch_size=16, epochs=5, shuffle=False, verbose=0)  # 20 steps
        return history.history["loss"], vae
    finally:
        keras.config.set_dtype_policy("float32")


def test_low_precision_20_steps_finite_and_within_5_percent():
    # Both 16-bit policies against one float32 reference run (the same for
    # both: fixed seed and data).
    reference, _ = _twenty_steps("float32")
    for policy in ("mixed_float16", "mixed_bfloat16"):
        losses, vae = _twenty_steps(policy)
        assert vae.dtype_policy.name == policy
        # The hidden layers really ran in 16 bits.
        assert vae.encoder.layers[1].compute_dtype in ("float16", "bfloat16"), policy
        assert np.all(np.isfinite(losses)), policy
        assert int(np.asarray(vae.skipped_steps)) == 0, policy
        np.testing.assert_allclose(losses[-1], reference[-1], rtol=0.05, err_msg=policy)


def test_jit_compile_gives_the_same_loss():
    x = (np.random.default_rng(0).random((32, 16, 16, 1)) > 0.5).astype("float32")
    losses = []
    for jit in (False, True):
        keras.utils.set_random_seed(3)
        enc = keras_vae.build_encoder((16, 16, 1), 4, "conv", widths=(8, 16), dense_units=32)
        dec = keras_vae.build_decoder((16, 16, 1), 4, "conv", widths=(8, 16), dense_units=32)
        vae = keras_vae.VAE(enc, dec, seed=0)
        # z = mean: XLA may draw eps with another random algorithm, which
        # alone moved the loss by 2.5e-4 (relative) in 6 steps.
        vae.sampling.deterministic = True
        vae.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
        losses.append(vae.fit(x, batch_size=16, epochs=3, shuffle=False, verbose=0).history["loss"])
    # Same weights, same data: XLA reorders and fuses float sums, nothing more.
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_runtime_resolution_on_cpu():
    runtime = training.make_runtime(config_lib.resolve("shapes"))
    try:
        assert runtime.kind == "none" and runtime.is_chief
        assert runtime.policy == "float32" and runtime.jit_compile is False
        runtime = training.make_runtime(
            config_lib.resolve("shapes", mixed_precision="bfloat16", jit_compile="true")
        )
        assert runtime.policy == "mixed_bfloat16" and runtime.jit_compile is True
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    finally:
        keras.config.set_dtype_policy("float32")
    with pytest.raises(config_lib.UsageError, match="--distribution must be one of"):
        config_lib.resolve("shapes", distribution="horovod")
