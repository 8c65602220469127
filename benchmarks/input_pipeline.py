"""Input pipeline throughput of `keras_vae.data.load`, first and cached epochs.

    python benchmarks/input_pipeline.py            # full (~25 s on 2 cores)
    python benchmarks/input_pipeline.py --quick    # seconds

Sources, each through `keras_vae.data.load(..., split="train", batch_size=64)`:

- `shapes`: rendered on the fly per batch (no cache), so every pass costs the
  same; a "pass" is `--shapes_batches` batches of the 626,688-image split.
- `folder`: a temporary folder of generated 218 x 178 JPEGs (CelebA-sized,
  ~8.5 KB each, see `common.make_jpeg_folder`) at image_size 64. `load` first
  decodes every file of the split once (the unreadable-file scan): reported
  as "load s". Epoch 1 decodes, crops, resizes and fills the in-memory uint8
  cache; later epochs read the cache.
- `tfds mock celeb_a`: `tfds.testing.mock_data(num_examples=N)`; TFDS's mock
  generates random examples in Python, so epoch 1 measures the mock, not
  real TFRecord reading and JPEG decoding; cached epochs are the real thing.

The consumer iterates the dataset in Python (`for batch in ds`) and counts
images: images/s = images / wall time of the whole epoch, iterator creation
and first batch included ("first batch ms" shows that part).
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


def time_epochs(ds, epochs, max_batches=None):
    """Iterates `ds` `epochs` times; per epoch: images, seconds, images/s, first batch ms."""
    results = []
    for _ in range(epochs):
        source = ds if max_batches is None else ds.take(max_batches)
        images, first = 0, None
        start = time.perf_counter()
        for batch in source:
            if first is None:
                first = time.perf_counter() - start
            images += int(batch.shape[0])
        seconds = time.perf_counter() - start
        results.append(
            {
                "images": images,
                "seconds": seconds,
                "images_per_s": images / seconds,
                "first_batch_ms": 1e3 * (first or 0.0),
            }
        )
    return results


def summarize(name, load_seconds, num_examples, epochs, note=""):
    cached = [e["images_per_s"] for e in epochs[1:]]
    return {
        "source": name,
        "load_seconds": load_seconds,
        "num_examples": num_examples,
        "epochs": epochs,
        "first_epoch_images_per_s": epochs[0]["images_per_s"],
        "cached_images_per_s_median": common.median(cached),
        "note": note,
    }


def bench_shapes(args):
    from keras_vae import data

    start = time.perf_counter()
    ds, info = data.load("shapes", "train", batch_size=BATCH_SIZE, seed=0)
    load = time.perf_counter() - start
    epochs = time_epochs(ds, args.epochs, max_batches=args.shapes_batches)
    return summarize(
        "shapes (rendered)",
        load,
        info.num_examples,
        epochs,
        f"passes of {args.shapes_batches} batches; no cache, every pass renders",
    )


def bench_folder(args, root):
    from keras_vae import data

    start = time.perf_counter()
    ds, info = data.load(f"folder:{root}", "train", batch_size=BATCH_SIZE, image_size=64, seed=0)
    load = time.perf_counter() - start
    epochs = time_epochs(ds, args.epochs)
    return summarize(
        f"folder JPEG 218x178 -> 64 ({args.folder_images} files)",
        load,
        info.num_examples,
        epochs,
        "load s = listing + decode scan of every file of the split",
    )


def bench_tfds_mock(args, data_dir):
    import tensorflow_datasets as tfds

    from keras_vae import data

    with tfds.testing.mock_data(num_examples=args.mock_examples):
        start = time.perf_counter()
        ds, info = data.load("celeb_a", "train", batch_size=BATCH_SIZE, seed=0, data_dir=data_dir)
        load = time.perf_counter() - start
        epochs = time_epochs(ds, args.epochs)
    return summarize(
        "tfds mock celeb_a 218x178 -> 64",
        load,
        info.num_examples,
        epochs,
        "epoch 1 = TFDS mock's Python random-example generator",
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--epochs", type=int, default=None, help="passes per source (>= 2)")
    parser.add_argument("--shapes_batches", type=int, default=None, help="batches per shapes pass")
    parser.add_argument("--folder_images", type=int, default=None, help="JPEGs to generate")
    parser.add_argument("--mock_examples", type=int, default=None, help="tfds mock examples")
    parser.add_argument(
        "--jpeg_dir", default=None, help="use this folder of JPEGs instead of generating one"
    )
    parser.add_argument("--name", default="input_pipeline", help="results file stem")
    args = parser.parse_args(argv)
    defaults = (
        dict(epochs=3, shapes_batches=10, folder_images=256, mock_examples=256)
        if args.quick
        else dict(epochs=5, shapes_batches=300, folder_images=4000, mock_examples=3000)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch fills the cache)")

    machine = common.machine_info()
    results = [bench_shapes(args)]
    with tempfile.TemporaryDirectory(prefix="keras_vae_bench_") as tmp:
        root = args.jpeg_dir
        jpeg_bytes = None
        if root is None:
            root = os.path.join(tmp, "jpegs")
            start = time.perf_counter()
            jpeg_bytes = common.make_jpeg_folder(root, args.folder_images)
            each = jpeg_bytes / args.folder_images / 1e3
            print(
                f"Generated {args.folder_images} JPEGs ({each:.1f} KB each) in "
                f"{time.perf_counter() - start:.1f} s",
                flush=True,
            )
        results.append(bench_folder(args, root))
        results.append(bench_tfds_mock(args, os.path.join(tmp, "tfds")))

    headers = [
        "source",
        "train images",
        "load s",
        "epoch 1 img/s",
        "epoch 1 first batch ms",
        "epoch 2 img/s",
        "epoch 3 img/s",
        "median epochs 2+ img/s",
    ]
    rows = []
    for r in results:
        e = r["epochs"]
        rows.append(
            [
                r["source"],
                r["num_examples"],
                r["load_seconds"],
                e[0]["images_per_s"],
                e[0]["first_batch_ms"],
                e[1]["images_per_s"],
                e[2]["images_per_s"] if len(e) > 2 else None,
                r["cached_images_per_s_median"],
            ]
        )
    notes = [
        f"batch {BATCH_SIZE}; images/s = images of the epoch / its wall time "
        "(iterator start and first batch included); Python consumer, no training.",
        *(f"{r['source']}: {r['note']}" for r in results if r["note"]),
    ]
    if jpeg_bytes:
        notes.append(f"generated JPEGs: {jpeg_bytes / args.folder_images / 1e3:.1f} KB average")
    common.report(
        args.name,
        "Input pipeline throughput (keras_vae.data.load)",
        machine,
        [(f"images/s per epoch, {args.epochs} epochs", headers, rows)],
        {"quick": args.quick, "args": vars(args), "batch_size": BATCH_SIZE, "results": results},
        notes,
    )


if __name__ == "__main__":
    main()
