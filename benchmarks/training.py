"""Training throughput: keras_vae's `fit` against a bare GradientTape loop, FLOP/s.

    python benchmarks/training.py            # full (~9.5 min on 2 cores)
    python benchmarks/training.py --quick    # <1 min smoke run: 4 cells, one per preset

For each preset architecture (the model `train.py` builds for that dataset):

    shapes   conv 64x64x1, latent 10,  bernoulli
    mnist    mlp  28x28x1, latent 32,  bernoulli
    cifar10  conv 32x32x3, latent 128, discretized_logistic
    celeb_a  conv 64x64x3, latent 128, discretized_logistic

at batch 64 and 256, under the float32 and the mixed_bfloat16 dtype policy,
two training loops run on the same synthetic in-memory batches (a cached,
repeated `tf.data` dataset of 4 batches, so input is never the bottleneck):

- `fit`: `keras_vae.training.build_model(config, ...)` (the VAE with its
  custom train_step, compiled with its LossScaleOptimizer-wrapped Adam) and
  `model.fit(ds, steps_per_epoch=N, verbose=0)`;
- `bare`: the same encoder/decoder builders, a `tf.function` step
  encoder -> reparameterize -> decoder -> the same loss (keras_vae.likelihoods)
  -> `Adam.apply_gradients`; no LossScaleOptimizer, no metrics, no callbacks.

Timing: after a warm-up (tracing + a few steps), `--repeats` interleaved
chunks of ~`--chunk_seconds` each (fit, bare, bare, fit, ...); in a chunk the
clock reads at the start of every step (for fit in `on_train_batch_begin`,
which keeps Keras' async callback dispatch on), and images/s counts the steps
between the second and the last reading. Reported: median images/s of each
loop and the median of the per-repeat ratios fit/bare (paired, so slow drift
of the machine cancels).

FLOPs per training image = 3 x forward FLOPs from the layer shapes (Dense
2*in*out; Conv2D 2*Ho*Wo*k*k*Cin*Cout; Conv2DTranspose 2*Hi*Wi*k*k*Cin*Cout);
bias adds, activations, the likelihood and Adam are left out. The
"profiler fwd+bwd" column cross-checks it with `tf.compat.v1.profiler`
(float_operation) on the graph of one batch-1 gradient step. Achieved FLOP/s
= FLOPs/image x images/s, as a fraction of a 2048^3 float32 `tf.matmul`
measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

# dataset -> image shape of the preset's model (celeb_a at its preset image_size 64).
ARCHITECTURES = {
    "shapes": (64, 64, 1),
    "mnist": (28, 28, 1),
    "cifar10": (32, 32, 3),
    "celeb_a": (64, 64, 3),
}
DTYPES = ("float32", "mixed_bfloat16")
FIT_TARGET = 0.95  # fit >= 0.95 x bare images/s
NUM_SYNTHETIC_BATCHES = 4
SKIP_STEPS = 1  # steps of a chunk before the clock starts


# -- models and loops -------------------------------------------------------------


def preset_config(dataset, batch_size):
    from keras_vae import config as config_lib

    return config_lib.resolve(dataset, batch_size=batch_size)


def synthetic_dataset(config, image_shape, batch_size, seed=0):
    """A cached, repeated dataset of NUM_SYNTHETIC_BATCHES float32 batches.

    Binary pixels for the Bernoulli presets, 8-bit levels k/255 otherwise.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    shape = (NUM_SYNTHETIC_BATCHES, batch_size, *image_shape)
    if config.likelihood == "bernoulli":
        x = (rng.random(shape) < 0.3).astype(np.float32)
    else:
        x = (rng.integers(0, 256, shape) / 255.0).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices(x).cache().repeat().prefetch(2)


class BareLoop:
    """The preset's architecture trained by a plain `tf.function` GradientTape step."""

    def __init__(self, config, image_shape, optimizer=None, jit_compile=False):
        import keras
        import tensorflow as tf

        from keras_vae import likelihoods
        from keras_vae.networks import build_networks

        self.encoder, self.decoder = build_networks(config, image_shape)
        self.likelihood = likelihoods.get(config.likelihood, sigma=config.gaussian_sigma)
        self.gaussian_kl = likelihoods.gaussian_kl
        self.beta = float(config.beta)
        self.variables = self.encoder.trainable_variables + self.decoder.trainable_variables
        # keras.optimizers.Adam unless given (e.g. keras_vae's FusedAdam).
        self.optimizer = optimizer or keras.optimizers.Adam(config.learning_rate)
        self.optimizer.build(self.variables)
        self.step = tf.function(self._step, jit_compile=jit_compile)

    def _step(self, x):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            mean, log_var = self.encoder(x, training=True)
            eps = tf.random.normal(tf.shape(mean), dtype=mean.dtype)
            z = mean + tf.exp(0.5 * log_var) * eps
            params = self.decoder(z, training=True)
            reconstruction = -tf.reduce_mean(self.likelihood.log_prob(x, params))
            kl = tf.reduce_mean(self.gaussian_kl(mean, log_var))
            loss = reconstruction + self.beta * kl
        grads = tape.gradient(loss, self.variables)
        self.optimizer.apply_gradients(zip(grads, self.variables, strict=True))
        return loss


def _rate(times, batch_size):
    """images/s between the (SKIP_STEPS)-th and the last clock reading."""
    steps = len(times) - 1 - SKIP_STEPS
    return steps * batch_size / (times[-1] - times[SKIP_STEPS])


def run_bare(loop, iterator, steps, batch_size):
    times = []
    loss = None
    for _ in range(steps):
        times.append(time.perf_counter())
        loss = loop.step(next(iterator))
    float(loss)  # the step has finished
    times.append(time.perf_counter())
    return _rate(times, batch_size)


def _fit_clock():
    import keras

    class Clock(keras.callbacks.Callback):
        # Only batch *begin* is hooked: a batch-end hook would switch off
        # Keras' async callback dispatch and change what is measured.
        def on_train_begin(self, logs=None):
            self.times = []

        def on_train_batch_begin(self, batch, logs=None):
            self.times.append(time.perf_counter())

        def on_train_end(self, logs=None):
            self.times.append(time.perf_counter())

    return Clock()


def run_callbacks(config, workdir):
    """The per-step callbacks `train_and_evaluate` installs, saving into `workdir`.

    NonFiniteGuard and Backup (every `config.backup_every_steps` steps) hook
    batch ends; TensorBoard is included as in a run (scalars per epoch). The
    epoch-level ones (model saves, history, image grids) run once per epoch
    and are left out.
    """
    import keras

    from keras_vae import training as training_lib

    return [
        training_lib.NonFiniteGuard(config.max_consecutive_skips),
        keras.callbacks.TensorBoard(
            log_dir=os.path.join(workdir, "tensorboard"), write_graph=False, profile_batch=0
        ),
        training_lib.Backup(os.path.join(workdir, "backup"), config.backup_every_steps, 10**9),
    ]


def run_fit(model, ds, steps, batch_size, callbacks=()):
    clock = _fit_clock()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[*callbacks, clock])
    # The last reading (on_train_end) also holds the epoch-end work; use the
    # batch-begin readings only, as for the bare loop (its last reading is
    # after a sync, so both count steps - 1 - SKIP_STEPS full steps).
    return _rate(clock.times[:-1], batch_size) if len(clock.times) > SKIP_STEPS + 2 else None


# -- FLOPs ---------------------------------------------------------------------------


def forward_flops(model):
    """Multiply-add FLOPs (2 per MAC) of one image through a functional model's layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
        elif isinstance(layer, keras.layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, h, w, _ = layer.output.shape
            cin = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            total += 2 * h * w * kh * kw * cin * layer.filters
    return total


def profiler_flops(loop, image_shape):
    """(forward, forward+backward) float ops of one image, by tf.compat.v1.profiler."""
    import tensorflow as tf

    spec = tf.TensorSpec((1, *image_shape), tf.float32)

    @tf.function(input_signature=[spec])
    def forward(x):
        mean, _ = loop.encoder(x)
        return loop.decoder(mean)

    @tf.function(input_signature=[spec])
    def gradient(x):
        with tf.GradientTape() as tape:
            mean, _ = loop.encoder(x, training=True)
            loss = tf.reduce_sum(loop.decoder(mean, training=True))
        return tape.gradient(loss, loop.variables)

    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    counts = []
    for fn in (forward, gradient):
        graph = fn.get_concrete_function().graph
        counts.append(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)
    return tuple(counts)


def matmul_peak(n=2048, dtype="float32", seconds=3.0):
    """FLOP/s of an n x n @ n x n tf.matmul in a tf.function (best of the timed runs)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    b = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(b, dtype)

    @tf.function
    def matmul(a, b):
        # Reduce the whole product (4M adds, ~0.02% of the 17 GFLOP), so no
        # graph rewrite can shrink the matmul to the part that is read.
        return tf.reduce_sum(tf.cast(tf.matmul(a, b), tf.float32))

    float(matmul(a, b))  # trace + warm up
    float(matmul(a, b))
    runs = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(runs) < 3:
        start = time.perf_counter()
        float(matmul(a, b))
        runs.append(time.perf_counter() - start)
    flops = 2 * n**3
    return {
        "n": n,
        "dtype": dtype,
        "runs": len(runs),
        "best_s": min(runs),
        "median_s": common.median(runs),
        "flops_per_s": flops / min(runs),
        "median_flops_per_s": flops / common.median(runs),
    }


# -- one cell ------------------------------------------------------------------------


def bench_cell(dataset, batch_size, dtype, args, with_callbacks=False):
    import gc
    import tempfile

    import keras

    from keras_vae import training as training_lib

    image_shape = ARCHITECTURES[dataset]
    config = preset_config(dataset, batch_size)
    # Nothing of the previous cell (models, functions, iterators) left around.
    keras.backend.clear_session()
    gc.collect()
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    workdir = tempfile.TemporaryDirectory(prefix="keras_vae_bench_")
    callbacks = run_callbacks(config, workdir.name) if with_callbacks else None
    loops = ("fit", "bare", "fit+callbacks") if with_callbacks else ("fit", "bare")
    try:
        keras.utils.set_random_seed(0)
        model = training_lib.build_model(config, image_shape, steps_per_epoch=1000)
        bare = BareLoop(config, image_shape)
        ds = synthetic_dataset(config, image_shape, batch_size)
        iterator = iter(ds)

        start = time.perf_counter()
        run_fit(model, ds, args.warmup_steps, batch_size)
        fit_warmup = time.perf_counter() - start
        if callbacks:
            run_fit(model, ds, args.warmup_steps, batch_size, callbacks)
        start = time.perf_counter()
        run_bare(bare, iterator, args.warmup_steps, batch_size)
        bare_warmup = time.perf_counter() - start
        # Steps per chunk from a short timed probe of the bare loop.
        probe = run_bare(bare, iterator, max(SKIP_STEPS + 3, args.min_steps // 2), batch_size)
        steps = max(args.min_steps, math.ceil(args.chunk_seconds * probe / batch_size))
        steps = min(steps, args.max_steps)

        fit_rates, bare_rates, ratios, cb_rates, cb_ratios = [], [], [], [], []
        n = steps + SKIP_STEPS + 1
        for repeat in range(args.repeats):
            rates = {}
            for which in loops if repeat % 2 == 0 else loops[::-1]:
                if which == "fit":
                    rates[which] = run_fit(model, ds, n, batch_size)
                elif which == "bare":
                    rates[which] = run_bare(bare, iterator, n, batch_size)
                else:
                    rates[which] = run_fit(model, ds, n, batch_size, callbacks)
            fit_rates.append(rates["fit"])
            bare_rates.append(rates["bare"])
            ratios.append(rates["fit"] / rates["bare"])
            if with_callbacks:
                cb_rates.append(rates["fit+callbacks"])
                cb_ratios.append(rates["fit+callbacks"] / rates["bare"])

        forward = forward_flops(bare.encoder) + forward_flops(bare.decoder)
        prof = profiler_flops(bare, image_shape) if args.profiler_flops else (None, None)
        skipped = int(keras.ops.convert_to_numpy(model.skipped_steps))
    finally:
        keras.config.set_dtype_policy(previous)
        workdir.cleanup()
    return {
        "dataset": dataset,
        "network": config.network,
        "image_shape": image_shape,
        "latent_dim": config.latent_dim,
        "likelihood": config.likelihood,
        "batch_size": batch_size,
        "dtype_policy": dtype,
        "params": int(sum(math.prod(v.shape) for v in bare.variables)),
        "steps_per_chunk": steps,
        "fit_warmup_s": fit_warmup,
        "bare_warmup_s": bare_warmup,
        "fit_images_per_s": fit_rates,
        "bare_images_per_s": bare_rates,
        "fit_over_bare": ratios,
        "fit_images_per_s_median": common.median(fit_rates),
        "bare_images_per_s_median": common.median(bare_rates),
        "fit_over_bare_median": common.median(ratios),
        "fit_callbacks_images_per_s": cb_rates,
        "fit_callbacks_over_bare": cb_ratios,
        "fit_callbacks_over_bare_median": common.median(cb_ratios),
        "forward_flops_per_image": forward,
        "train_flops_per_image": 3 * forward,
        "profiler_forward_flops": prof[0],
        "profiler_train_flops": prof[1],
        "skipped_steps": skipped,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: short chunks, a diagonal of 4 cells of the grid",
    )
    parser.add_argument(
        "--datasets",
        default=None,
        help="comma-separated presets (default all): " + ",".join(ARCHITECTURES),
    )
    parser.add_argument("--batch_sizes", default=None, help="comma-separated (default 64,256)")
    parser.add_argument(
        "--dtypes",
        default=None,
        help="comma-separated dtype policies (default " + ",".join(DTYPES) + ")",
    )
    parser.add_argument(
        "--chunk_seconds",
        type=float,
        default=None,
        help="target seconds of one timed chunk of one loop",
    )
    parser.add_argument("--repeats", type=int, default=None, help="interleaved chunks per loop")
    parser.add_argument("--warmup_steps", type=int, default=None)
    parser.add_argument("--min_steps", type=int, default=None, help="timed steps per chunk, min")
    parser.add_argument("--max_steps", type=int, default=2000, help="timed steps per chunk, max")
    parser.add_argument(
        "--callbacks_for",
        default="float32:64",
        help="comma-separated policy:batch cells that also time fit with the "
        "per-step callbacks of train_and_evaluate ('' for none)",
    )
    parser.add_argument(
        "--no_profiler_flops",
        dest="profiler_flops",
        action="store_false",
        help="skip the tf.compat.v1.profiler cross-check of the FLOP count",
    )
    parser.add_argument("--name", default="training", help="results file stem")
    args = parser.parse_args(argv)
    defaults = (
        dict(chunk_seconds=0.6, repeats=3, warmup_steps=3, min_steps=3)
        if args.quick
        else dict(chunk_seconds=3.5, repeats=3, warmup_steps=5, min_steps=8)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and args.datasets is None and args.batch_sizes is None and args.dtypes is None:
        # A diagonal of the grid: every architecture, batch size and policy once.
        grid = [
            ("shapes", 64, "float32"),
            ("mnist", 256, "mixed_bfloat16"),
            ("cifar10", 64, "mixed_bfloat16"),
            ("celeb_a", 256, "float32"),
        ]
    else:
        datasets = [d for d in (args.datasets or ",".join(ARCHITECTURES)).split(",") if d]
        unknown = sorted(set(datasets) - set(ARCHITECTURES))
        if unknown:
            parser.error(f"unknown --datasets {unknown}; known: {', '.join(ARCHITECTURES)}")
        batch_sizes = [int(b) for b in (args.batch_sizes or "64,256").split(",") if b]
        dtypes = [d for d in (args.dtypes or ",".join(DTYPES)).split(",") if d]
        if set(dtypes) - set(DTYPES):
            parser.error(f"--dtypes must be among {DTYPES}")
        grid = [(d, b, t) for d in datasets for b in batch_sizes for t in dtypes]

    import tensorflow as tf  # noqa: F401  (import before timing anything)

    machine = common.machine_info()
    start = time.perf_counter()
    peak = matmul_peak(seconds=1.0 if args.quick else 3.0)
    peak_bf16 = matmul_peak(dtype="bfloat16", seconds=1.0 if args.quick else 3.0)
    print(
        f"float32 matmul 2048^3: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s; bfloat16: "
        f"{peak_bf16['flops_per_s'] / 1e9:.1f} GFLOP/s",
        flush=True,
    )

    cells = []
    for dataset, batch_size, dtype in grid:
        with_callbacks = f"{dtype}:{batch_size}" in args.callbacks_for.split(",")
        cell = bench_cell(dataset, batch_size, dtype, args, with_callbacks)
        cells.append(cell)
        print(
            f"{dataset} b{batch_size} {dtype}: fit {cell['fit_images_per_s_median']:.0f}"
            f" img/s, bare {cell['bare_images_per_s_median']:.0f} img/s, fit/bare "
            f"{cell['fit_over_bare_median']:.3f} ({cell['steps_per_chunk']} steps/chunk)",
            flush=True,
        )
    # The matmul once more at the end: the machine's state may have changed.
    peak_end = matmul_peak(seconds=1.0 if args.quick else 3.0)
    f32_peak = max(peak["flops_per_s"], peak_end["flops_per_s"])

    rows, flop_rows, targets = [], [], []
    for c in cells:
        ratio = c["fit_over_bare_median"]
        ok = ratio >= FIT_TARGET
        c["target_fit_over_bare"] = {"target": FIT_TARGET, "pass": ok}
        rows.append(
            [
                c["dataset"],
                f"{c['network']} {'x'.join(map(str, c['image_shape']))} z{c['latent_dim']}",
                c["batch_size"],
                c["dtype_policy"],
                c["fit_images_per_s_median"],
                c["bare_images_per_s_median"],
                ratio,
                f"{min(c['fit_over_bare']):.3f}-{max(c['fit_over_bare']):.3f}",
                common.pass_miss(ok),
                c["fit_callbacks_over_bare_median"],
            ]
        )
        achieved = c["train_flops_per_image"] * c["fit_images_per_s_median"]
        achieved_bare = c["train_flops_per_image"] * c["bare_images_per_s_median"]
        c["achieved_flops_per_s_fit"] = achieved
        c["achieved_flops_per_s_bare"] = achieved_bare
        c["fraction_of_f32_matmul_fit"] = achieved / f32_peak
        flop_rows.append(
            [
                c["dataset"],
                c["batch_size"],
                c["dtype_policy"],
                c["params"],
                c["forward_flops_per_image"] / 1e6,
                c["train_flops_per_image"] / 1e6,
                None if c["profiler_train_flops"] is None else c["profiler_train_flops"] / 1e6,
                achieved / 1e9,
                achieved_bare / 1e9,
                100 * achieved / f32_peak,
            ]
        )
        targets.append(
            {
                "target": f"fit >= {FIT_TARGET} x bare: {c['dataset']} b{c['batch_size']} "
                f"{c['dtype_policy']}",
                "value": ratio,
                "pass": ok,
            }
        )
    elapsed = time.perf_counter() - start
    sections = [
        (
            "fit vs bare GradientTape loop (images/s, median of repeats)",
            [
                "preset",
                "model",
                "batch",
                "policy",
                "fit img/s",
                "bare img/s",
                "fit/bare",
                "fit/bare range",
                f"fit >= {FIT_TARGET}x bare",
                "fit+run callbacks / bare",
            ],
            rows,
        ),
        (
            "FLOPs and achieved FLOP/s",
            [
                "preset",
                "batch",
                "policy",
                "params",
                "fwd MFLOP/img",
                "train MFLOP/img (3x fwd)",
                "profiler fwd+bwd MFLOP/img",
                "fit GFLOP/s",
                "bare GFLOP/s",
                "fit % of f32 matmul",
            ],
            flop_rows,
        ),
    ]
    notes = [
        f"float32 2048x2048 matmul: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s at start, "
        f"{peak_end['flops_per_s'] / 1e9:.1f} at end (best run; the larger is the reference); "
        f"bfloat16: {peak_bf16['flops_per_s'] / 1e9:.1f} GFLOP/s.",
        f"{args.repeats} interleaved repeats per loop of ~{args.chunk_seconds:g} s; "
        "synthetic cached in-memory batches; fit with verbose=0 and no callbacks of its own.",
        "fit+run callbacks: the same fit with train_and_evaluate's per-step callbacks "
        "(NonFiniteGuard, Backup every backup_every_steps=200 steps, TensorBoard); "
        f"measured for {args.callbacks_for or 'no'} cells (policy:batch).",
        "train FLOPs = 3 x forward from layer shapes (Dense, Conv2D, Conv2DTranspose only); "
        "the profiler column counts the batch-1 gradient graph (tf.compat.v1.profiler).",
        f"total time {elapsed:.0f} s.",
    ]
    common.report(
        args.name,
        "Training throughput: keras_vae fit vs bare GradientTape loop",
        machine,
        sections,
        {
            "quick": args.quick,
            "args": vars(args),
            "matmul_float32": [peak, peak_end],
            "matmul_bfloat16": peak_bf16,
            "cells": cells,
            "targets": targets,
        },
        notes,
    )


if __name__ == "__main__":
    main()
