"""Where and how a run computes: strategy, chief, precision, XLA; and the
small loop that replaces `fit` under MultiWorkerMirroredStrategy."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from keras_vae.config import UsageError


class Runtime:
    """Where and how a run computes: strategy, chief, precision, XLA.

    Attributes:
        strategy: the `tf.distribute.Strategy` (the default one for `none`).
        kind: `none`, `mirrored`, `multi_worker` or `tpu`.
        is_chief: whether this process writes checkpoints, summaries, exports.
        policy: the Keras dtype policy name set for the model.
        jit_compile: whether `fit`'s train step is XLA-compiled.
    """

    def __init__(self, strategy, kind, is_chief, policy, jit_compile):
        self.strategy = strategy
        self.kind = kind
        self.is_chief = is_chief
        self.policy = policy
        self.jit_compile = jit_compile

    @property
    def custom_loop(self):
        # Keras 3 `fit` fails under MultiWorkerMirroredStrategy (keras-team/
        # keras#20585, tensorflow/tensorflow#72388, open: two workers fail in
        # Trainer._maybe_symbolic_build, "Attempt to convert a value
        # (PerReplica ...) to a Tensor"): drive `train_step` with
        # `strategy.run` instead, which trains identically on both workers.
        return self.kind == "multi_worker"


def _tf_config_tasks():
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    except ValueError as e:
        raise UsageError(f"TF_CONFIG is not valid JSON ({e}): fix or unset it.") from e
    return sum(len(tasks) for tasks in cluster.values())


def _is_chief(strategy):
    """The chief writes: task `chief`, or worker 0 when the cluster has no chief."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def auto_jit_compile(config, gpu):
    """Whether `--jit_compile=auto` compiles the train step with XLA: with a
    GPU only. On CPU it was slower in every case measured (2 cores, TF 2.21):
    a 64x64 conv VAE at 353 against 784 img/s (XLA's convolutions against
    oneDNN's; Keras' own `jit_compile="auto"` is off on CPU too), and the
    strokes sequence VAE at 878 against 1,053 seq/s although its CPU time per
    step fell (92 -> 75 ms: fewer ops, less of them in parallel). The
    discretized logistic is compiled on its own (`likelihoods`)."""
    return bool(gpu)


def make_runtime(config):
    """Creates the strategy and sets the dtype policy; call before other TF work.

    `MultiWorkerMirroredStrategy` must exist before TensorFlow runs its first
    operation, so `train_and_evaluate` calls this first.

    - mixed_precision `auto`: `mixed_float16` with a GPU, float32 on CPU;
    - jit_compile `auto`: see `auto_jit_compile`;
    - distribution `auto`: multi-worker when TF_CONFIG lists more than one
      task, mirrored over several local GPUs, else none.
    """
    gpus = tf.config.list_physical_devices("GPU")
    kind = config.distribution
    if kind == "auto":
        if _tf_config_tasks() > 1:
            kind = "multi_worker"
        elif len(gpus) > 1:
            kind = "mirrored"
        else:
            kind = "none"
    if kind == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif kind == "mirrored":
        # All local GPUs; without GPUs, every logical CPU device (tests split
        # the CPU into several), which is one replica on a plain machine.
        devices = None if gpus else [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, tf.errors.NotFoundError) as e:
            raise UsageError(
                f"--distribution=tpu but no TPU was found ({e}): run on a TPU host or "
                "drop the flag."
            ) from e
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        strategy = tf.distribute.get_strategy()

    policy = {
        "auto": "mixed_float16" if gpus else "float32",
        "float16": "mixed_float16",
        "bfloat16": "mixed_bfloat16",
        "none": "float32",
    }[config.mixed_precision]
    keras.config.set_dtype_policy(policy)
    jit = {"auto": auto_jit_compile(config, bool(gpus)), "true": True, "false": False}[
        config.jit_compile
    ]
    runtime = Runtime(strategy, kind, _is_chief(strategy), policy, jit)
    return runtime


def distributed_fit(
    model,
    strategy,
    train_ds,
    val_ds,
    *,
    initial_epoch,
    epochs,
    steps,
    validation_steps,
    callbacks,
    verbose,
):
    """`fit` for MultiWorkerMirroredStrategy: `strategy.run(model.train_step)`
    in a `tf.function` over `strategy.experimental_distribute_dataset`, with
    the model and optimizer built in `strategy.scope()`, driving the same
    callbacks (chief only for the writing ones). Keras' `fit` fails there
    (see `Runtime.custom_loop`); two workers on localhost end with identical
    weights this way (tests/test_distribute.py)."""

    @tf.function
    def train_fn(iterator):
        outputs = strategy.run(model.train_step, args=(next(iterator),))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

    callback_list = keras.callbacks.CallbackList(
        callbacks,
        add_progbar=bool(verbose),
        model=model,
        verbose=1 if verbose == "auto" else verbose,
        epochs=epochs,
        steps=steps,
    )
    iterator = iter(strategy.experimental_distribute_dataset(train_ds))
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        logs = {}
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            logs = {k: float(v) for k, v in train_fn(iterator).items()}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        val_logs = distributed_evaluate(model, strategy, val_ds, validation_steps)
        logs.update({f"val_{k}": v for k, v in val_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end()


def distributed_evaluate(model, strategy, dataset, steps):
    """`evaluate` for MultiWorkerMirroredStrategy: `model.test_step` over
    `steps` batches of `dataset`; returns the metrics as floats."""

    @tf.function
    def test_fn(batch):
        outputs = strategy.run(model.test_step, args=(batch,))
        return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

    model.reset_metrics()
    logs = {}
    for batch in strategy.experimental_distribute_dataset(dataset.take(steps)):
        logs = test_fn(batch)
    return {k: float(v) for k, v in logs.items()}
