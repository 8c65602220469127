"""Where `fit`'s per-step time goes, against a bare loop, for every preset network.

    python benchmarks/fit_overhead.py                        # all presets, batch 64 (~6 min)
    python benchmarks/fit_overhead.py --datasets=mnist       # one preset (~1 min)
    python benchmarks/fit_overhead.py --quick                # smoke run (~2 min)

For each preset network (the model `train.py` builds for that dataset):

    shapes    conv 64x64x1, z 10,  Bernoulli
    mnist     MLP 512-256 28x28x1, z 32, Bernoulli
    cifar10   conv 32x32x3, z 128, discretized logistic
    celeb_a   conv 64x64x3, z 128, discretized logistic
    strokes   sequence_vae: biGRU 128 / GRU 128 over 38 tokens, z 16, categorical

the same architecture trained by, in interleaved chunks of ~`--chunk_seconds`
(a multiple of 8 steps), `--repeats` times each:

    bare loop                    tf.function GradientTape step + Adam.apply_gradients
    VAE.train_step               the model's own train_step in a tf.function, manual loop
    VAE.train_step, plain Adam   the same, compiled with a bare Adam (no LossScaleOptimizer)
    fit                          model.fit(verbose=0), as in training.py
    fit, plain Adam              fit of a model compiled with a bare Adam
    fit, steps_per_execution=8   fit of a model compiled with steps_per_execution=8
    fit + NonFiniteGuard         fit with train_and_evaluate's non-finite guard
    fit + run callbacks          NonFiniteGuard, TensorBoard, Backup every 200 steps

The differences attribute the gap between `fit` and the bare loop to the
graph of `train_step` (LossScaleOptimizer, finite checks, metrics), Keras'
per-step Python work in `fit`, and the run's per-step callbacks. Reported
per preset: ms/step as the best and the median chunk (the best is the most
robust to other load on a shared machine) and the best relative to the bare
loop's best; then one summary row per preset: fit / bare (the issue's
target: >= 0.95 for every preset network), what `steps_per_execution=8`
and dropping the LossScaleOptimizer would give, and the load average.

The strokes bare loop: the same encoder and decoder (built by
`keras_vae.sequence_networks`), the model's own teacher-forcing inputs with
word dropout, the `categorical` likelihood, the linear KL warm-up, Adam.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks import training as bench  # noqa: E402

STEPS_PER_EXECUTION = 8
FIT_TARGET = 0.95
DATASETS = ("shapes", "mnist", "cifar10", "celeb_a", "strokes")
FIT = "fit"
BARE = "bare loop"
TRAIN_STEP = "VAE.train_step (tf.function, manual loop)"
TRAIN_STEP_PLAIN = "VAE.train_step, plain Adam (no LossScaleOptimizer)"
FIT_PLAIN = "fit, plain Adam (no LossScaleOptimizer)"
FIT_SPE = f"fit, steps_per_execution={STEPS_PER_EXECUTION}"
FIT_GUARD = "fit + NonFiniteGuard"
FIT_CALLBACKS = "fit + run callbacks (guard, TensorBoard, Backup/200)"


def clocked_fit(model, ds, steps, callbacks=(), steps_per_call=1):
    """ms/step of `model.fit` from its batch-begin clock (first call skipped)."""
    clock = bench._fit_clock()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[*callbacks, clock])
    times = clock.times[:-1]  # batch begins (one per execution)
    calls = len(times) - 1 - bench.SKIP_STEPS
    return 1e3 * (times[-1] - times[bench.SKIP_STEPS]) / (calls * steps_per_call)


def manual_loop(step, iterator, steps):
    """ms/step of a Python loop over a tf.function step (first step skipped)."""
    times = []
    out = None
    for _ in range(steps):
        times.append(time.perf_counter())
        out = step(next(iterator))
    float(out["loss"] if isinstance(out, dict) else out)
    times.append(time.perf_counter())
    return 1e3 * (times[-1] - times[bench.SKIP_STEPS]) / (steps - bench.SKIP_STEPS)


class SequenceBareLoop:
    """The strokes preset's networks trained by a plain `tf.function` GradientTape step."""

    def __init__(self, config, max_length, vocab_size, warmup_steps, model):
        import keras
        import tensorflow as tf

        from keras_vae import likelihoods
        from keras_vae.sequence_networks import build_sequence_networks

        self.encoder, self.decoder = build_sequence_networks(config, max_length, vocab_size)
        self.likelihood = likelihoods.get("categorical")
        self.gaussian_kl = likelihoods.gaussian_kl
        self.decoder_inputs = model.decoder_inputs  # BOS + shifted tokens, word dropout
        self.beta, self.warmup_steps = float(config.beta), float(warmup_steps)
        self.step_count = tf.Variable(0.0, trainable=False)
        self.variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        self.optimizer = keras.optimizers.Adam(config.learning_rate)
        self.optimizer.build(self.variables)
        self.step = tf.function(self._step)

    def _step(self, x):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            mean, log_var = self.encoder(x, training=True)
            z = mean + tf.exp(0.5 * log_var) * tf.random.normal(tf.shape(mean))
            logits = self.decoder([z, self.decoder_inputs(x, training=True)], training=True)
            reconstruction = -tf.reduce_mean(self.likelihood.log_prob(x, logits))
            kl = tf.reduce_mean(self.gaussian_kl(mean, log_var))
            beta = self.beta * tf.minimum(1.0, self.step_count / self.warmup_steps)
            loss = reconstruction + beta * kl
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        self.step_count.assign_add(1.0)
        return loss


def sequence_dataset(batch_size, seed=0):
    """4 batches of strokes token sequences of random sprites, cached and repeated."""
    import numpy as np
    import tensorflow as tf

    from keras_vae.data import shapes, strokes

    rng = np.random.default_rng(seed)
    n = bench.NUM_SYNTHETIC_BATCHES * batch_size
    factors = np.stack([rng.integers(0, size, n) for size in shapes.FACTOR_SIZES], axis=1)
    x = strokes.tokenize(factors).reshape(bench.NUM_SYNTHETIC_BATCHES, batch_size, -1)
    return tf.data.Dataset.from_tensor_slices(x).cache().repeat().prefetch(2)


def measure(dataset, args):
    """The ablation table of one preset: {variant: [ms/step per chunk]} and its context."""
    import gc

    import keras
    import tensorflow as tf

    from keras_vae import training as training_lib

    keras.backend.clear_session()
    gc.collect()
    keras.config.set_dtype_policy(args.dtype)
    keras.utils.set_random_seed(0)
    config = bench.preset_config(dataset, args.batch_size)
    steps_per_epoch = 1000
    vocabulary = ()
    if config.is_sequence:
        from keras_vae.data import strokes

        image_shape, vocabulary = (strokes.MAX_LENGTH,), tuple(strokes.VOCABULARY)
        ds = sequence_dataset(args.batch_size)
    else:
        image_shape = bench.ARCHITECTURES[dataset]
        ds = bench.synthetic_dataset(config, image_shape, args.batch_size)
    iterator = iter(ds)

    def model(plain=False, steps_per_execution=1):
        m = training_lib.build_model(
            config, image_shape, steps_per_epoch=steps_per_epoch, vocabulary=vocabulary
        )
        if plain:  # keras.Model.compile: no LossScaleOptimizer wrapper
            keras.Model.compile(
                m,
                optimizer=keras.optimizers.Adam(config.learning_rate),
                steps_per_execution=steps_per_execution,
            )
        elif steps_per_execution > 1:
            m.compile(
                optimizer=keras.optimizers.Adam(config.learning_rate),
                steps_per_execution=steps_per_execution,
            )
        return m

    as_is, plain, spe = model(), model(plain=True), model(steps_per_execution=STEPS_PER_EXECUTION)
    if config.is_sequence:
        warmup = config.warmup_steps or max(1, config.epochs * steps_per_epoch // 4)
        bare = SequenceBareLoop(config, image_shape[0], len(vocabulary), warmup, as_is)
    else:
        bare = bench.BareLoop(config, image_shape)
    train_step = tf.function(as_is.train_step)
    plain_step = tf.function(plain.train_step)
    workdir = tempfile.TemporaryDirectory(prefix="keras_vae_bench_")
    run_callbacks = bench.run_callbacks(config, workdir.name)
    guard = [training_lib.NonFiniteGuard(config.max_consecutive_skips)]

    def variants(n):
        return {
            BARE: lambda: manual_loop(bare.step, iterator, n),
            TRAIN_STEP: lambda: manual_loop(train_step, iterator, n),
            TRAIN_STEP_PLAIN: lambda: manual_loop(plain_step, iterator, n),
            FIT: lambda: clocked_fit(as_is, ds, n),
            FIT_PLAIN: lambda: clocked_fit(plain, ds, n),
            FIT_SPE: lambda: clocked_fit(spe, ds, n, steps_per_call=STEPS_PER_EXECUTION),
            FIT_GUARD: lambda: clocked_fit(as_is, ds, n, guard),
            FIT_CALLBACKS: lambda: clocked_fit(as_is, ds, n, run_callbacks),
        }

    load_start = round(os.getloadavg()[0], 2)
    warm = 3 * STEPS_PER_EXECUTION
    for fn in variants(warm).values():  # trace and warm up
        fn()
    # Steps per chunk from the bare loop's pace, a multiple of steps_per_execution.
    probe_ms = manual_loop(bare.step, iterator, warm)
    n = math.ceil(args.chunk_seconds * 1e3 / probe_ms / STEPS_PER_EXECUTION)
    n = STEPS_PER_EXECUTION * min(max(n, args.min_steps // STEPS_PER_EXECUTION, 3), 250)
    fns = variants(n)
    results = {name: [] for name in fns}
    names = list(fns)
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            results[name].append(fns[name]())
    workdir.cleanup()
    return {
        "dataset": dataset,
        "network": config.network,
        "image_shape": image_shape,
        "latent_dim": config.latent_dim,
        "likelihood": config.likelihood,
        "steps_per_chunk": n,
        "results": results,
        "load1_start": load_start,
        "load1_end": round(os.getloadavg()[0], 2),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~2 min)")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="comma-separated presets: " + ",".join(DATASETS))  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=bench.DTYPES)
    parser.add_argument("--chunk_seconds", type=float, default=None, help="seconds per chunk")
    parser.add_argument("--min_steps", type=int, default=None, help="steps per chunk, min")
    parser.add_argument("--repeats", type=int, default=None, help="chunks per variant")
    parser.add_argument("--name", default="fit_overhead", help="results file stem")
    args = parser.parse_args(argv)
    if args.chunk_seconds is None:
        args.chunk_seconds = 0.3 if args.quick else 1.5
    if args.min_steps is None:
        args.min_steps = 24 if args.quick else 40
    if args.repeats is None:
        args.repeats = 2 if args.quick else 3
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown --datasets {unknown}; known: {', '.join(DATASETS)}")

    machine = common.machine_info()
    start = time.perf_counter()
    measured = []
    for dataset in datasets:
        m = measure(dataset, args)
        measured.append(m)
        best = {name: min(v) for name, v in m["results"].items()}
        print(
            f"{dataset}: bare {best[BARE]:.2f} ms/step, fit {best[FIT]:.2f} ms/step, "
            f"fit/bare {best[BARE] / best[FIT]:.3f} (load {m['load1_start']} -> "
            f"{m['load1_end']})",
            flush=True,
        )

    sections, payload, summary, targets = [], [], [], []
    for m in measured:
        bare_best = min(m["results"][BARE])
        bare_median = common.median(m["results"][BARE])
        rows, entries = [], []
        for name, values in m["results"].items():
            best, med = min(values), common.median(values)
            rows.append([name, best, med, best - bare_best, bare_best / best])
            entries.append(
                {
                    "variant": name,
                    "ms_per_step": values,
                    "best_ms": best,
                    "median_ms": med,
                    "best_minus_bare_ms": best - bare_best,
                    "images_per_s_over_bare": bare_best / best,
                }
            )
        shape = "x".join(map(str, m["image_shape"]))
        sections.append(
            (
                f"{m['dataset']}: {m['network']} {shape}, z {m['latent_dim']}, "
                f"{m['likelihood']} ({args.repeats} interleaved chunks of "
                f"{m['steps_per_chunk']} steps; load {m['load1_start']} -> {m['load1_end']})",
                ["variant", "best ms/step", "median ms/step", "best - bare (ms)",
                 "images/s vs bare (best)"],
                rows,
            )
        )  # fmt: skip
        r = {name: min(v) for name, v in m["results"].items()}
        med = {name: common.median(v) for name, v in m["results"].items()}
        ratio = bare_best / r[FIT]
        ok = ratio >= FIT_TARGET
        summary.append(
            [
                m["dataset"],
                f"{m['network']} {shape}",
                bare_best,
                r[FIT],
                ratio,
                bare_median / med[FIT],
                common.pass_miss(ok),
                r[FIT] - r[TRAIN_STEP],
                r[TRAIN_STEP] - r[TRAIN_STEP_PLAIN],
                bare_best / r[FIT_SPE],
                bare_best / r[FIT_PLAIN],
                bare_best / r[FIT_CALLBACKS],
                f"{m['load1_start']} -> {m['load1_end']}",
            ]
        )
        targets.append({"target": f"fit >= {FIT_TARGET} x bare loop: {m['dataset']} "
                                  f"b{args.batch_size} {args.dtype}",
                         "value": ratio, "pass": ok})  # fmt: skip
        payload.append({**{k: v for k, v in m.items() if k != "results"}, "variants": entries,
                        "fit_over_bare_best": ratio})  # fmt: skip
    sections.insert(
        0,
        (
            f"Summary: fit vs the bare loop per preset network (batch {args.batch_size}, "
            f"{args.dtype}; best chunks)",
            ["preset", "network", "bare ms/step", "fit ms/step", "fit / bare",
             "fit / bare (medians)", f">= {FIT_TARGET}", "fit - train_step (ms)",
             "LossScaleOptimizer (ms)", "spe=8 / bare", "plain Adam fit / bare",
             "fit + run callbacks / bare", "load (1 min)"],
            summary,
        ),
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    common.report(
        args.name,
        f"fit overhead per step, every preset network (batch {args.batch_size}, {args.dtype})",
        machine,
        sections,
        {"quick": args.quick, "args": vars(args), "presets": payload, "targets": targets},
        [
            "Reading: fit / bare = images/s of fit over the bare loop's (best chunks); "
            "fit - train_step = Keras' per-step work in fit (the same graph run from a Python "
            "loop vs by fit); LossScaleOptimizer = train_step - train_step with a plain Adam "
            "(its skip-if-non-finite update); spe=8 / bare = fit with steps_per_execution=8 "
            "over the bare loop; the callback rows add train_and_evaluate's per-step callbacks "
            "(Backup saves every 200 steps).",
            f"total time {elapsed:.0f} s.",
        ],
    )


if __name__ == "__main__":
    main()
