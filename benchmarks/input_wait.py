"""Is the input pipeline ever the bottleneck? Input wait of the real pipeline + train step.

    python benchmarks/input_wait.py            # full (~1 min on 2 cores)
    python benchmarks/input_wait.py --quick    # seconds

For `shapes` (its preset model: conv 64x64x1) and a cached `folder` of
generated CelebA-like JPEGs (the folder preset: conv 64x64x3, latent 128,
discretized logistic, image_size 64), exactly what `train_and_evaluate` feeds
`fit`: `keras_vae.training.load_split(config, "train", shuffle=True,
repeat=True, drop_remainder=True)` and `build_model(config, ...)`. A manual
loop drives the model's own `train_step` (in a `tf.function`, as `fit` does):

    t0; batch = next(iterator); t1; logs = step(batch); float(logs["loss"]); t2
    wait += t1 - t0;  total += t2 - t0

per epoch (a folder epoch is one pass over its train split; a shapes "epoch"
is `--shapes_steps` steps of its 626,688-image split, rendered on the fly).
The first step (tracing) is left out. Also measured in the same run:

- the training rate on one in-memory batch (no pipeline at all), so the
  cost of the pipeline's background threads sharing the 2 cores shows as
  "real / in-memory";
- the pipeline alone (no training) from a fresh `load_split`, after one
  epoch has filled the cache.

Targets (from the 2nd epoch): input wait < 5% of step time, and the cached
pipeline delivers >= 50x the training rate (the shapes renderer has no cache;
its ratio is shown for information).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BATCH_SIZE = 64
WAIT_TARGET = 0.05
RATE_TARGET = 50.0


def train_loop(step, iterator, steps):
    """Runs `steps` steps; returns (wait s, total s, per-step waits)."""
    wait = total = 0.0
    waits = []
    for _ in range(steps):
        t0 = time.perf_counter()
        batch = next(iterator)
        t1 = time.perf_counter()
        logs = step(batch)
        float(logs["loss"])
        t2 = time.perf_counter()
        wait += t1 - t0
        total += t2 - t0
        waits.append(t1 - t0)
    return wait, total, waits


def pipeline_rate(ds, fill_batches, timed_batches):
    """images/s of `ds` alone: `fill_batches` untimed (cache fill), then `timed_batches`."""
    iterator = iter(ds)
    for _ in range(fill_batches):
        next(iterator)
    start = time.perf_counter()
    images = 0
    for _ in range(timed_batches):
        images += int(next(iterator).shape[0])
    return images / (time.perf_counter() - start)


def bench_case(label, config, steps_per_epoch, epochs, args, cached):
    import keras
    import tensorflow as tf

    from keras_vae import training as training_lib

    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    train_ds, info = training_lib.load_split(
        config, "train", shuffle=True, repeat=True, drop_remainder=True
    )
    load_seconds = time.perf_counter() - start
    model = training_lib.build_model(config, info.image_shape, steps_per_epoch)
    step = tf.function(model.train_step)

    iterator = iter(train_ds)
    t0 = time.perf_counter()
    first = next(iterator)
    float(step(first)["loss"])  # trace + first step
    first_step_seconds = time.perf_counter() - t0

    per_epoch = []
    for epoch in range(epochs):
        # Epoch 1 has already used one batch (the tracing step).
        steps = steps_per_epoch - 1 if epoch == 0 else steps_per_epoch
        wait, total, waits = train_loop(step, iterator, steps)
        waits.sort()
        per_epoch.append(
            {
                "epoch": epoch + 1,
                "steps": steps,
                "wait_s": wait,
                "total_s": total,
                "wait_fraction": wait / total,
                "images_per_s": steps * BATCH_SIZE / total,
                "max_wait_ms": 1e3 * waits[-1],
                "p90_wait_ms": 1e3 * waits[int(0.9 * (len(waits) - 1))],
            }
        )
        print(
            f"{label} epoch {epoch + 1}: wait {100 * wait / total:.2f}% of {total:.1f} s, "
            f"{steps * BATCH_SIZE / total:.0f} img/s",
            flush=True,
        )

    # The same step on one in-memory batch: training without any pipeline.
    n = max(5, per_epoch[-1]["steps"] // 2)
    t0 = time.perf_counter()
    for _ in range(n):
        logs = step(first)
    float(logs["loss"])
    in_memory = n * BATCH_SIZE / (time.perf_counter() - t0)
    del iterator

    # The pipeline alone, from a fresh dataset (a fresh cache): one epoch to
    # fill the cache (folder), then `pipeline_batches` timed batches.
    fresh, _ = training_lib.load_split(
        config, "train", shuffle=True, repeat=True, drop_remainder=True
    )
    fill = steps_per_epoch if cached else 2
    alone = pipeline_rate(fresh, fill, args.pipeline_batches)

    later = per_epoch[1:]
    wait_fraction = max(e["wait_fraction"] for e in later)
    train_rate = common.median([e["images_per_s"] for e in later])
    return {
        "case": label,
        "dataset": config.dataset,
        "cached": cached,
        "image_shape": info.image_shape,
        "train_examples": info.num_examples,
        "steps_per_epoch": steps_per_epoch,
        "load_seconds": load_seconds,
        "first_step_seconds": first_step_seconds,
        "epochs": per_epoch,
        "in_memory_images_per_s": in_memory,
        "pipeline_alone_images_per_s": alone,
        "train_images_per_s_epochs_2plus": train_rate,
        "max_wait_fraction_epochs_2plus": wait_fraction,
        "pipeline_over_training": alone / train_rate,
        "real_over_in_memory": train_rate / in_memory,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per case (>= 2)")
    parser.add_argument("--shapes_steps", type=int, default=None, help="steps per shapes epoch")
    parser.add_argument("--folder_images", type=int, default=None, help="JPEGs to generate")
    parser.add_argument(
        "--pipeline_batches", type=int, default=None, help="timed batches of the pipeline alone"
    )
    parser.add_argument("--jpeg_dir", default=None, help="use this JPEG folder, do not generate")
    parser.add_argument("--name", default="input_wait", help="results file stem")
    args = parser.parse_args(argv)
    defaults = (
        dict(epochs=2, shapes_steps=15, folder_images=700, pipeline_batches=30)
        if args.quick
        else dict(epochs=3, shapes_steps=150, folder_images=4000, pipeline_batches=400)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (targets are measured from the 2nd epoch)")

    from keras_vae import config as config_lib

    machine = common.machine_info()
    results = []
    shapes = config_lib.resolve("shapes", batch_size=BATCH_SIZE)
    results.append(
        bench_case("shapes (rendered)", shapes, args.shapes_steps, args.epochs, args, cached=False)
    )
    with tempfile.TemporaryDirectory(prefix="keras_vae_bench_") as tmp:
        root = args.jpeg_dir
        if root is None:
            root = os.path.join(tmp, "jpegs")
            common.make_jpeg_folder(root, args.folder_images)
        folder = config_lib.resolve(f"folder:{root}", batch_size=BATCH_SIZE)
        from keras_vae.data import folder as folder_lib

        train_files = sum(folder_lib.split_of(f) == "train" for f in folder_lib.list_images(root))
        results.append(
            bench_case(
                f"folder 64x64 cached ({train_files} train JPEGs)",
                folder,
                train_files // BATCH_SIZE,
                args.epochs,
                args,
                cached=True,
            )
        )

    rows, target_rows, targets = [], [], []
    for r in results:
        for e in r["epochs"]:
            rows.append(
                [
                    r["case"],
                    e["epoch"],
                    e["steps"],
                    e["images_per_s"],
                    100 * e["wait_fraction"],
                    e["p90_wait_ms"],
                    e["max_wait_ms"],
                ]
            )
        wait_ok = r["max_wait_fraction_epochs_2plus"] < WAIT_TARGET
        targets.append(
            {
                "target": f"input wait < 5% of step time from epoch 2: {r['case']}",
                "value": r["max_wait_fraction_epochs_2plus"],
                "pass": wait_ok,
            }
        )
        ratio_ok = r["pipeline_over_training"] >= RATE_TARGET
        if r["cached"]:
            targets.append(
                {
                    "target": f"cached pipeline >= 50x training rate: {r['case']}",
                    "value": r["pipeline_over_training"],
                    "pass": ratio_ok,
                }
            )
        target_rows.append(
            [
                r["case"],
                r["train_images_per_s_epochs_2plus"],
                r["in_memory_images_per_s"],
                r["real_over_in_memory"],
                r["pipeline_alone_images_per_s"],
                r["pipeline_over_training"],
                common.pass_miss(ratio_ok) if r["cached"] else "n/a (no cache)",
                100 * r["max_wait_fraction_epochs_2plus"],
                common.pass_miss(wait_ok),
            ]
        )
    sections = [
        (
            "Per epoch: training on the real pipeline (manual loop over model.train_step)",
            ["case", "epoch", "steps", "train img/s", "input wait %", "p90 wait ms", "max wait ms"],
            rows,
        ),
        (
            "Targets (epochs 2+)",
            [
                "case",
                "train img/s (real pipeline)",
                "train img/s (in-memory batch)",
                "real / in-memory",
                "pipeline alone img/s",
                "pipeline / training",
                ">= 50x (cached)",
                "max input wait %",
                "wait < 5%",
            ],
            target_rows,
        ),
    ]
    notes = [
        f"batch {BATCH_SIZE}; wait = time in next(iterator); step = next + train_step + "
        "reading the loss; the first (tracing) step is left out.",
        "pipeline alone = a fresh load_split iterated without training (after one epoch "
        "filling the cache for the folder).",
    ]
    common.report(
        args.name,
        "Input wait: real pipeline feeding the real train step",
        machine,
        sections,
        {"quick": args.quick, "args": vars(args), "results": results, "targets": targets},
        notes,
    )


if __name__ == "__main__":
    main()
