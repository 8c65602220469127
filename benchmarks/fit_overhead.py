"""Where `fit`'s per-step time goes, against the bare loop (a profile by ablation).

    python benchmarks/fit_overhead.py                      # mnist mlp, batch 64 (~50 s)
    python benchmarks/fit_overhead.py --dataset=shapes     # a conv preset
    python benchmarks/fit_overhead.py --quick

The same preset architecture (see training.py) trained by, in interleaved
chunks of `--steps` steps, `--repeats` times each:

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
per variant: ms/step as the best and the median chunk (the best is the most
robust to other load on a shared machine), and the best relative to the
bare loop's best.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from benchmarks import training as bench  # noqa: E402

STEPS_PER_EXECUTION = 8


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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~20 s)")
    parser.add_argument("--dataset", default="mnist", choices=sorted(bench.ARCHITECTURES))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--dtype", default="float32", choices=bench.DTYPES)
    parser.add_argument("--steps", type=int, default=None, help="steps per chunk")
    parser.add_argument("--repeats", type=int, default=None, help="chunks per variant")
    parser.add_argument("--name", default="fit_overhead", help="results file stem")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 40 if args.quick else 160
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    args.steps = max(args.steps, 4 * STEPS_PER_EXECUTION)
    args.steps -= args.steps % STEPS_PER_EXECUTION

    import keras
    import tensorflow as tf

    from keras_vae import training as training_lib

    machine = common.machine_info()
    image_shape = bench.ARCHITECTURES[args.dataset]
    config = bench.preset_config(args.dataset, args.batch_size)
    keras.config.set_dtype_policy(args.dtype)
    keras.utils.set_random_seed(0)
    ds = bench.synthetic_dataset(config, image_shape, args.batch_size)
    iterator = iter(ds)

    def model(plain=False, steps_per_execution=1):
        m = training_lib.build_model(config, image_shape, steps_per_epoch=1000)
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

    bare = bench.BareLoop(config, image_shape)
    as_is, plain, spe = model(), model(plain=True), model(steps_per_execution=STEPS_PER_EXECUTION)
    train_step = tf.function(as_is.train_step)
    plain_step = tf.function(plain.train_step)
    workdir = tempfile.TemporaryDirectory(prefix="keras_vae_bench_")
    run_callbacks = bench.run_callbacks(config, workdir.name)
    guard = [training_lib.NonFiniteGuard(config.max_consecutive_skips)]
    n = args.steps
    variants = {
        "bare loop": lambda: manual_loop(bare.step, iterator, n),
        "VAE.train_step (tf.function, manual loop)": lambda: manual_loop(train_step, iterator, n),
        "VAE.train_step, plain Adam (no LossScaleOptimizer)": lambda: manual_loop(
            plain_step, iterator, n
        ),
        "fit": lambda: clocked_fit(as_is, ds, n),
        "fit, plain Adam (no LossScaleOptimizer)": lambda: clocked_fit(plain, ds, n),
        f"fit, steps_per_execution={STEPS_PER_EXECUTION}": lambda: clocked_fit(
            spe, ds, n, steps_per_call=STEPS_PER_EXECUTION
        ),
        "fit + NonFiniteGuard": lambda: clocked_fit(as_is, ds, n, guard),
        "fit + run callbacks (guard, TensorBoard, Backup/200)": lambda: clocked_fit(
            as_is, ds, n, run_callbacks
        ),
    }
    for fn in variants.values():  # trace and warm up
        fn()
    results = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(args.repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            results[name].append(variants[name]())
    workdir.cleanup()

    bare_best = min(results["bare loop"])
    rows, payload = [], []
    for name, values in results.items():
        best, med = min(values), common.median(values)
        rows.append([name, best, med, best - bare_best, bare_best / best])
        payload.append(
            {
                "variant": name,
                "ms_per_step": values,
                "best_ms": best,
                "median_ms": med,
                "best_minus_bare_ms": best - bare_best,
                "images_per_s_over_bare": bare_best / best,
            }
        )
    title = (
        f"fit overhead per step: {args.dataset} {config.network} "
        f"{'x'.join(map(str, image_shape))}, batch {args.batch_size}, {args.dtype}"
    )
    common.report(
        args.name,
        title,
        machine,
        [
            (
                f"ms per step ({args.repeats} interleaved chunks of {n} steps)",
                [
                    "variant",
                    "best ms/step",
                    "median ms/step",
                    "best - bare (ms)",
                    "images/s vs bare (best)",
                ],
                rows,
            )
        ],
        {"quick": args.quick, "args": vars(args), "results": payload},
        [
            "Reading: VAE.train_step - bare = the train_step graph (LossScaleOptimizer, finite "
            "checks, metrics); fit - VAE.train_step = Keras' per-step work in fit; the callback "
            "rows add train_and_evaluate's per-step callbacks (Backup saves every 200 steps)."
        ],
    )


if __name__ == "__main__":
    main()
