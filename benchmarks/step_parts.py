"""One training step in parts, keras_vae against its PyTorch replica (issue 16).

    python benchmarks/step_parts.py                 # the mnist row (~1 min)
    python benchmarks/step_parts.py --row=cifar10

Times each part of a step on its own, on one batch of 64 (`vs_pytorch.py`'s
data): loops of `--calls` calls, best and median of `--repeats` loops, ms
per call.

- keras_vae (this process, TensorFlow at its defaults): the model's
  `train_step` in a `tf.function`; the forward and backward pass alone
  (`_batch_terms` + `objective` under a tape, its gradients); the finiteness
  check on those gradients (`loss_scaling._all_finite`); FusedAdam's update
  alone; and an empty `tf.function` call, the fixed cost in each of the
  others.
- PyTorch (a spawned process without TensorFlow, tuned as `vs_pytorch.py
  --tuning=tuned`: glibc malloc thresholds raised, denormals flushed): the
  eager step (`zero_grad / loss / backward / step`), the forward and
  backward pass, `optimizer.step()`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import vs_pytorch  # noqa: E402


def _loops(fn, calls, repeats, sync=lambda out: None):
    for _ in range(10):
        out = fn()
    sync(out)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        sync(out)
        times.append((time.perf_counter() - start) / calls * 1000)
    return {"best_ms": min(times), "median_ms": statistics.median(times)}


def keras_parts(spec, batches, calls, repeats):
    import keras
    import tensorflow as tf

    from keras_vae import config as config_lib
    from keras_vae import training as training_lib
    from keras_vae.models import loss_scaling

    keras.utils.set_random_seed(0)
    dataset, model_name = vs_pytorch.ROWS[spec["row"]]
    config = config_lib.resolve(dataset, batch_size=spec["batch_size"], model=model_name)
    model = training_lib.build_model(
        config, tuple(spec["image_shape"]), steps_per_epoch=spec["steps_per_epoch"],
        jit_compile=False, vocabulary=tuple(spec.get("vocabulary", ())),
    )  # fmt: skip
    x = tf.constant(batches[0])
    weights = model.trainable_weights
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            terms = model._batch_terms(model._as_images(x), None, training=True)
            loss, _ = model.objective(terms, model.current_beta())
        return loss, tape.gradient(loss, weights)

    loss, grads = forward_backward(x)
    check = tf.function(lambda: loss_scaling._all_finite(loss, grads))
    apply = tf.function(lambda: optimizer.apply(grads, weights))
    step = tf.function(lambda: model.train_step(x))
    empty = tf.function(lambda: tf.constant(0.0))

    def sync(out):
        for t in tf.nest.flatten(out)[:1]:
            if t is not None:  # FusedAdam's apply returns nothing
                t.numpy()

    parts = {
        "train_step": step,
        "forward + backward": lambda: forward_backward(x)[0],
        "finiteness check": check,
        "FusedAdam update": apply,
        "empty tf.function call": empty,
    }
    return {name: _loops(fn, calls, repeats, sync) for name, fn in parts.items()}


def _torch_child(spec, batches, calls, repeats, conn):
    import torch

    from benchmarks import torch_replicas

    torch.set_num_threads(vs_pytorch.usable_cores())
    torch.set_flush_denormal(True)
    trainer = torch_replicas.Trainer(spec, list(batches))
    x = trainer.batches[0]

    def forward_backward():
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.model.loss(x, 0).backward()

    parts = {
        "step": trainer.step,
        "forward + backward": forward_backward,
        "Adam step": trainer.optimizer.step,
    }
    conn.send({name: _loops(fn, calls, repeats) for name, fn in parts.items()})


def torch_parts(spec, batches, calls, repeats):
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=_torch_child, args=(spec, batches, calls, repeats, child))
    vs_pytorch.start_with_env(process, vs_pytorch.MALLOC_TUNED)
    result = parent.recv()
    process.join()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--row", default="mnist", choices=sorted(vs_pytorch.ROWS))
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    spec = vs_pytorch.row_spec(args.row)
    batches = vs_pytorch.make_batches(spec)
    results = {"torch (tuned)": torch_parts(spec, batches, args.calls, args.repeats)}
    results["keras_vae"] = keras_parts(spec, batches, args.calls, args.repeats)
    print(f"\n{args.row}: {spec['description']}, batch {spec['batch_size']}; "
          f"ms per call, best / median of {args.repeats} loops of {args.calls}")  # fmt: skip
    for side, parts in results.items():
        for name, t in parts.items():
            print(f"  {side:14s} {name:24s} {t['best_ms']:7.3f} / {t['median_ms']:7.3f}")


if __name__ == "__main__":
    main()
