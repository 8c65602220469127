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

    bare loop                   tf.function GradientTape step + keras Adam.apply_gradients
    bare loop, FusedAdam        the same with keras_vae's FusedAdam (the run's update)
    VAE.train_step              the model's own train_step in a tf.function, manual loop
    fit, 1 step per call        model.fit(verbose=0), one step per train-function call
    fit, 1 step per call + run callbacks
                                the same with train_and_evaluate's per-step callbacks
                                (NonFiniteGuard, TensorBoard, Backup every 200 steps):
                                how a run trained before issue 16
    fit as a run                N steps per call as `train_and_evaluate` sets them
                                (`keras_vae.training.execution.StepsPerCall`, N from the
                                preset's backup and logging intervals) + the run callbacks

The summary's fit / bare compares `fit as a run` with the bare loop that
makes the same update (FusedAdam): the issue's target, >= 0.95 for every
preset network; and with the plain keras Adam loop a user would write.

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

STEPS_PER_EXECUTION = 8  # chunks are a multiple of it
FIT_TARGET = 0.95
DATASETS = ("shapes", "mnist", "cifar10", "celeb_a", "strokes")
BARE = "bare loop"
BARE_FUSED = "bare loop, FusedAdam"
TRAIN_STEP = "VAE.train_step (tf.function, manual loop)"
FIT_ONE = "fit, 1 step per call"
FIT_ONE_CALLBACKS = "fit, 1 step per call + run callbacks"
FIT_RUN = "fit as a run (N steps per call + run callbacks)"


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

    def __init__(self, config, max_length, vocab_size, warmup_steps, model, optimizer=None,
                 jit_compile=False):
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
        self.optimizer = optimizer or keras.optimizers.Adam(config.learning_rate)
        self.optimizer.build(self.variables)
        self.step = tf.function(self._step, jit_compile=jit_compile)

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

    from keras_vae.models.loss_scaling import FusedAdam
    from keras_vae.training import execution
    from keras_vae.training.distribute import auto_jit_compile

    # XLA as `--jit_compile=auto` resolves here, for fit and the bare loops alike.
    jit = auto_jit_compile(config, bool(tf.config.list_physical_devices("GPU")))

    def model():
        return training_lib.build_model(
            config, image_shape, steps_per_epoch=steps_per_epoch, jit_compile=jit,
            vocabulary=vocabulary,
        )

    as_is, run_model = model(), model()
    # N as `train_and_evaluate` chooses it.
    steps_per_call = execution.StepsPerCall(execution.run_schedule(config, steps_per_epoch)[0])
    steps_per_call.install(run_model)
    if config.is_sequence:
        warmup = config.warmup_steps or max(1, config.epochs * steps_per_epoch // 4)

        def bare_loop(optimizer=None):
            return SequenceBareLoop(
                config, image_shape[0], len(vocabulary), warmup, as_is, optimizer, jit
            )
    else:

        def bare_loop(optimizer=None):
            return bench.BareLoop(config, image_shape, optimizer, jit)

    bare, bare_fused = bare_loop(), bare_loop(FusedAdam(config.learning_rate))
    train_step = tf.function(as_is.train_step, jit_compile=jit)
    workdir = tempfile.TemporaryDirectory(prefix="keras_vae_bench_")
    run_callbacks = bench.run_callbacks(config, workdir.name)
    n_call = steps_per_call.steps

    def variants(n):
        return {
            BARE: lambda: manual_loop(bare.step, iterator, n),
            BARE_FUSED: lambda: manual_loop(bare_fused.step, iterator, n),
            TRAIN_STEP: lambda: manual_loop(train_step, iterator, n),
            FIT_ONE: lambda: clocked_fit(as_is, ds, n),
            FIT_ONE_CALLBACKS: lambda: clocked_fit(as_is, ds, n, run_callbacks),
            FIT_RUN: lambda: (steps_per_call.install(run_model), clocked_fit(
                run_model, ds, n, [steps_per_call, *run_callbacks], steps_per_call=n_call
            ))[1],
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
            f"{dataset}: bare (FusedAdam) {best[BARE_FUSED]:.2f} ms/step, fit as a run "
            f"{best[FIT_RUN]:.2f} ms/step, fit/bare {best[BARE_FUSED] / best[FIT_RUN]:.3f} "
            f"(load {m['load1_start']} -> "
            f"{m['load1_end']})",
            flush=True,
        )

    sections, payload, summary, targets = [], [], [], []
    for m in measured:
        bare_best = min(m["results"][BARE])
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
        fused_best = r[BARE_FUSED]
        ratio = fused_best / r[FIT_RUN]
        ok = ratio >= FIT_TARGET
        summary.append(
            [
                m["dataset"],
                f"{m['network']} {shape}",
                fused_best,
                r[FIT_RUN],
                ratio,
                med[BARE_FUSED] / med[FIT_RUN],
                common.pass_miss(ok),
                bare_best / r[FIT_RUN],
                bare_best / r[FIT_ONE_CALLBACKS],
                r[FIT_ONE] - r[TRAIN_STEP],
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
            ["preset", "network", "bare (FusedAdam) ms/step", "fit as a run ms/step",
             "fit / bare", "fit / bare (medians)", f">= {FIT_TARGET}",
             "fit as a run / bare keras Adam", "before: 1 step per call + callbacks / bare",
             "fit - train_step, 1 step per call (ms)", "load (1 min)"],
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
            "Reading: fit / bare = images/s of fit as train_and_evaluate runs it (several "
            "steps per call, the run's callbacks, FusedAdam) over a bare tf.GradientTape loop "
            "making the same update (FusedAdam), best chunks; the next columns compare with "
            "the plain keras Adam loop: fit as a run now, and fit one step per call with the "
            "run callbacks (a run before issue 16); fit - train_step = Keras' per-step work "
            "in fit at one step per call.",
            f"total time {elapsed:.0f} s.",
        ],
    )


if __name__ == "__main__":
    main()
