"""Peak resident memory of training runs, one subprocess per measurement.

    python benchmarks/memory.py            # full (~2 min on 2 cores)
    python benchmarks/memory.py --quick    # ~1 min smoke run

Each measurement is a fresh Python process that calls
`keras_vae.training.train_and_evaluate(config, workdir, verbose=0)` with a
small config (`export=False`, a temporary workdir) and reports
`ru_maxrss` (the peak resident set size) plus a psutil RSS timeline sampled
every 0.1 s, so that peaks of different runs never mix.

- `shapes` (rendered on the fly, nothing cached): the same run for an
  increasing number of training steps (= images seen / batch), 4 epochs
  each. Targets: the training-phase peak (max RSS from the end of epoch 1,
  when everything is traced and allocated, to the end of the last epoch)
  does not grow with the number of steps (growth from the shortest to the
  longest run < max(32 MiB, 3%)), and within the longest run the max RSS
  of the last epoch is no higher than that of epoch 2 (same tolerance).
  Epoch ends are read by wrapping `EpochHistory.on_epoch_end` in the child
  process (benchmark-only instrumentation; the library is unchanged).
- `folder`: a cached 64x64 folder of generated CelebA-like JPEGs with 1.5k
  and 4.5k files (1.5k: about the smallest folder whose 5% validation split
  holds one batch of 64; `--quick` uses 400 / 1,200 files at batch 16): the
  in-memory uint8 caches should grow by 64*64*3 bytes per image (the
  shuffle buffer holds references to the cached tensors, not copies); the
  table shows the measured growth next to that estimate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

MARKER = "KERAS_VAE_MEMORY_RESULT "
GROWTH_TOLERANCE_MIB = 32.0
GROWTH_TOLERANCE_FRACTION = 0.03


# -- child -------------------------------------------------------------------------


class RssSampler(threading.Thread):
    def __init__(self, interval=0.1):
        super().__init__(daemon=True)
        self.interval = interval
        self.samples = []
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            self.samples.append((time.perf_counter(), common.current_rss_mib()))
            self._done.wait(self.interval)

    def stop(self):
        self._done.set()
        self.join()


def child(spec):
    """Runs one training run in this process and prints its memory figures."""
    sampler = RssSampler()
    sampler.start()
    from keras_vae import config as config_lib
    from keras_vae import training as training_lib

    import_rss = common.current_rss_mib()
    config = config_lib.resolve(spec["dataset"], **spec["overrides"])
    # RSS at every epoch end: wrap the history callback's hook (benchmark-only
    # instrumentation of this process; the library is unchanged).
    epoch_rss, epoch_times = [], []
    original = training_lib.EpochHistory.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        epoch_times.append(time.perf_counter())
        epoch_rss.append(common.current_rss_mib())
        return original(self, epoch, logs)

    training_lib.EpochHistory.on_epoch_end = on_epoch_end
    with tempfile.TemporaryDirectory(prefix="keras_vae_mem_") as workdir:
        start = time.perf_counter()
        results = training_lib.train_and_evaluate(config, os.path.join(workdir, "run"), verbose=0)
        end = time.perf_counter()
    sampler.stop()
    seconds = end - start
    # Max RSS while each epoch after the first trains: samples after the
    # previous epoch's end, up to (and with) its own end.
    epoch_max = []
    for e in range(1, len(epoch_times)):
        inside = [r for t, r in sampler.samples if epoch_times[e - 1] < t <= epoch_times[e]]
        epoch_max.append(max(inside + [epoch_rss[e]]))
    out = {
        "spec": spec,
        "steps": results["steps"],
        "seconds": seconds,
        "rss_after_import_mib": import_rss,
        "peak_rss_mib": common.peak_rss_mib(),
        "final_rss_mib": common.current_rss_mib(),
        "epoch_end_rss_mib": epoch_rss,
        # Epochs 2, 3, ...: their max RSS; the training-phase peak is the max.
        "epoch_max_rss_mib": epoch_max,
        "training_peak_rss_mib": max(epoch_max) if epoch_max else None,
        # Every 0.5 s: seconds since train_and_evaluate started, RSS MiB.
        "timeline": [(round(t - start, 2), round(r, 1)) for t, r in sampler.samples[::5]],
    }
    print(MARKER + json.dumps(out), flush=True)


# -- parent --------------------------------------------------------------------------


def measure(spec):
    """Runs `child(spec)` in a fresh interpreter; returns its result dict."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise RuntimeError(f"memory child failed ({proc.returncode}): {spec}")
    result = json.loads(lines[-1][len(MARKER) :])
    result["process_seconds"] = time.perf_counter() - start
    print(
        f"{spec['label']}: peak {result['peak_rss_mib']:.0f} MiB, {result['steps']} steps, "
        f"{result['process_seconds']:.0f} s",
        flush=True,
    )
    return result


def grew(small, large):
    return large - small > max(GROWTH_TOLERANCE_MIB, GROWTH_TOLERANCE_FRACTION * small)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="~1 min smoke run")
    parser.add_argument(
        "--shapes_steps",
        default=None,
        help="comma-separated total training steps of the shapes runs",
    )
    parser.add_argument(
        "--folder_images", default=None, help="comma-separated JPEG counts of the folder runs"
    )
    parser.add_argument(
        "--batch_size",
        type=int,
        default=None,
        help="batch size of every run (64; 16 with --quick, for small splits)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="memory", help="results file stem")
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return
    if args.shapes_steps is None:
        args.shapes_steps = "20,80" if args.quick else "100,400,1200"
    if args.folder_images is None:
        args.folder_images = "400,1200" if args.quick else "1500,4500"
    if args.batch_size is None:
        args.batch_size = 16 if args.quick else 64
    shapes_steps = sorted(int(s) for s in args.shapes_steps.split(","))
    folder_images = sorted(int(s) for s in args.folder_images.split(","))

    machine = common.machine_info()
    shapes_runs = []
    for steps in shapes_steps:
        steps = 4 * max(1, steps // 4)
        overrides = dict(
            epochs=4,
            steps_per_epoch=steps // 4,
            validation_steps=2,
            eval_steps=2,
            export=False,
            batch_size=args.batch_size,
            image_every=1000,
        )
        shapes_runs.append(
            measure({"label": f"shapes {steps} steps", "dataset": "shapes", "overrides": overrides})
        )
    folder_runs = []
    with tempfile.TemporaryDirectory(prefix="keras_vae_bench_") as tmp:
        from keras_vae.data import folder as folder_lib

        largest = os.path.join(tmp, f"jpegs{folder_images[-1]}")
        common.make_jpeg_folder(largest, folder_images[-1])
        names = sorted(os.listdir(largest))
        for count in folder_images:
            root = os.path.join(tmp, f"jpegs{count}")
            if root != largest:
                os.makedirs(root)
                for name in names[:count]:
                    os.link(os.path.join(largest, name), os.path.join(root, name))
            splits = [folder_lib.split_of(name) for name in names[:count]]
            overrides = dict(epochs=2, export=False, batch_size=args.batch_size, image_every=1000)
            result = measure(
                {
                    "label": f"folder {count} JPEGs",
                    "dataset": f"folder:{root}",
                    "overrides": overrides,
                }
            )
            result["images"] = count
            result["train_images"] = splits.count("train")
            result["other_images"] = count - result["train_images"]
            folder_runs.append(result)

    def row(label, r, train_images=None):
        ends, maxes = r["epoch_end_rss_mib"], r["epoch_max_rss_mib"]
        return [
            label,
            r["steps"],
            r["steps"] * args.batch_size,
            train_images,
            r["rss_after_import_mib"],
            ends[0] if ends else None,
            maxes[0] if maxes else None,
            maxes[-1] if maxes else None,
            r["training_peak_rss_mib"],
            r["peak_rss_mib"],
            r["final_rss_mib"],
            r["seconds"],
        ]

    rows = [row("shapes (rendered)", r) for r in shapes_runs]
    rows += [
        row(f"folder 64x64 cached, {r['images']} JPEGs", r, r["train_images"]) for r in folder_runs
    ]

    targets = []
    small, large = shapes_runs[0], shapes_runs[-1]
    growth = large["training_peak_rss_mib"] - small["training_peak_rss_mib"]
    per_1k = 1000 * growth / max(1, large["steps"] - small["steps"])
    targets.append(
        {
            "target": f"shapes training-phase peak RSS does not grow with steps "
            f"({small['steps']} -> {large['steps']} steps)",
            "value": growth,
            "pass": not grew(small["training_peak_rss_mib"], large["training_peak_rss_mib"]),
            "detail": f"{per_1k:+.2f} MiB per 1000 steps; whole-process peak (ru_maxrss) "
            f"{large['peak_rss_mib'] - small['peak_rss_mib']:+.1f} MiB",
        }
    )
    maxes = large["epoch_max_rss_mib"]
    targets.append(
        {
            "target": f"shapes RSS flat within the {large['steps']}-step run (max in the last "
            "epoch vs max in epoch 2)",
            "value": maxes[-1] - maxes[0],
            "pass": not grew(maxes[0], maxes[-1]),
        }
    )
    target_rows = [
        [t["target"], f"{t['value']:+.1f} MiB", common.pass_miss(t["pass"])] for t in targets
    ]
    folder_rows = []
    if len(folder_runs) >= 2:
        a, b = folder_runs[0], folder_runs[-1]
        extra = b["train_images"] - a["train_images"]
        extra_other = b["other_images"] - a["other_images"]
        # One uint8 copy per image in the caches; the shuffle buffer shares
        # the cached tensors' buffers.
        expected = (extra + extra_other) * 64 * 64 * 3 / 2**20
        folder_rows.append(
            [
                f"{a['images']} -> {b['images']} JPEGs",
                extra,
                extra_other,
                b["peak_rss_mib"] - a["peak_rss_mib"],
                expected,
            ]
        )
    sections = [
        (
            "Peak RSS per run (MiB; one subprocess each)",
            [
                "run",
                "steps",
                "images seen",
                "train split",
                "after import",
                "epoch 1 end",
                "max epoch 2",
                "max last epoch",
                "training peak (epochs 2+)",
                "process peak (ru_maxrss)",
                "final",
                "train_and_evaluate s",
            ],
            rows,
        ),
        ("Targets", ["target", "growth", "result"], target_rows),
    ]
    if folder_rows:
        sections.append(
            (
                "Folder cache growth",
                [
                    "runs",
                    "extra train images",
                    "extra val+test images",
                    "measured peak growth MiB",
                    "expected MiB (12 KiB per cached image)",
                ],
                folder_rows,
            )
        )
    notes = [
        f"train_and_evaluate, export=False, verbose=0, batch {args.batch_size}, image grids "
        "only at the end; shapes: 4 epochs, validation_steps=2, eval_steps=2; folder: 2 epochs "
        "over the whole train split, whole validation and test splits.",
        f"growth tolerance: max({GROWTH_TOLERANCE_MIB:g} MiB, "
        f"{100 * GROWTH_TOLERANCE_FRACTION:g}% of the smaller peak).",
        "RSS = current resident set (psutil, sampled every 0.1 s); the JSON has a 0.5 s "
        "timeline of each run. Training peak = max RSS from the end of epoch 1 to the end of "
        "the last epoch; the process peak also holds the end of the run (final save, test "
        "evaluation, image grids), which does not depend on the number of steps but varies "
        "by a few tens of MiB from run to run (allocator).",
    ]
    common.report(
        args.name,
        "Peak memory of training runs",
        machine,
        sections,
        {
            "quick": args.quick,
            "args": vars(args),
            "shapes": shapes_runs,
            "folder": folder_runs,
            "targets": targets,
        },
        notes,
    )


if __name__ == "__main__":
    main()
