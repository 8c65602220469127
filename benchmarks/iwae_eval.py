"""IWAE evaluation speed: K importance samples per image with the mnist preset network.

    python benchmarks/iwae_eval.py             # N=512 images, K=5000 (~2 min on 2 quiet cores)
    python benchmarks/iwae_eval.py --quick     # smoke run: N=64, K=200 (~30 s)
    python benchmarks/iwae_eval.py --images=10000 --samples=5000   # the issue's full protocol

The mnist preset's model (MLP 512-256, z 32, Bernoulli; built by
`keras_vae.training.build_model`, random weights, or `--train_steps` of
`fit` on the data first: speed does not depend on the weights) is evaluated
on N random binary 28x28x1 images (speed does not depend on the pixels)
through the library's evaluation entry, `keras_vae.evaluation.evaluate_model`
(ELBO, IWAE bound with K samples, active units; batches of
`--batch_size`, the IWAE chunk chosen by the library), timed twice: with
K = `--samples` and with the IWAE bound off (K = 0). Their difference is the
IWAE bound's time.

Reported:
- images/s of the whole evaluation and of the IWAE part, and the projected
  time for 10,000 images;
- achieved FLOP/s of the decoder's matmuls: N * K * 2 * sum(in * out) of the
  decoder's Dense layers / IWAE time (the encoder runs once per image and
  is left out; bias adds, ReLUs, the likelihood and the logsumexp are not
  counted), against a 2048x2048 float32 `tf.matmul` measured in the same
  run (the best of its timed runs, at start and end; the target is >= 60%);
- where one chunk's time goes (`--breakdown`): at the chunk the library
  picks, the library's own compiled chunk (`bounds._CHUNK_GIVEN_POSTERIOR`:
  decoder, log-prob with the images broadcast, log-weights, running
  logsumexp), the eager `model.log_weights` call the library made before
  issue 16 part 3, the same as a `tf.function` and compiled by XLA, the
  decoder alone, its three matmuls alone, the Bernoulli likelihood alone
  (with the tiling of the images) and its softplus alone, each as ms per
  chunk (wall, and CPU: the process's CPU seconds, less sensitive to other
  jobs on a shared machine) and GFLOP/s of the decoder matmuls;
- the library's compiled chunk at other chunk sizes (`--chunk_sweep`):
  decoder-matmul GFLOP/s against samples per decoder call;
- peak memory: the same evaluation in a fresh process for two values of K
  (`--memory_samples`), peak RSS (ru_maxrss) and its growth over the RSS
  before the evaluation: memory should be flat in K (the library draws the
  samples in chunks).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

TARGET = 0.60  # IWAE decoder matmul FLOP/s >= 60% of a large matmul's
IMAGE_SHAPE = (28, 28, 1)
FULL_PROTOCOL_IMAGES = 10_000


def build(train_steps, batch_size, seed=0):
    """The mnist preset's compiled model (optionally trained a few steps) and its config."""
    import keras
    import numpy as np

    from keras_vae import config as config_lib
    from keras_vae import training as training_lib

    keras.utils.set_random_seed(seed)
    config = config_lib.resolve("mnist", batch_size=batch_size)
    model = training_lib.build_model(config, IMAGE_SHAPE, steps_per_epoch=1000)
    if train_steps:
        rng = np.random.default_rng(seed + 1)
        x = (rng.random((batch_size * 8, *IMAGE_SHAPE)) < 0.3).astype("float32")
        model.fit(x, epochs=1, batch_size=batch_size, steps_per_epoch=train_steps, verbose=0)
    return config, model


def dataset(num_images, batch_size, seed=0):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    x = (rng.random((num_images, *IMAGE_SHAPE)) < 0.3).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).cache()


def decoder_dense_flops(model):
    """2 * in * out summed over the decoder's Dense layers: FLOPs per code."""
    import keras

    return sum(
        2 * layer.input.shape[-1] * layer.units
        for layer in model.decoder.layers
        if isinstance(layer, keras.layers.Dense)
    )


def decoder_dense_shapes(model):
    import keras

    return [
        (layer.input.shape[-1], layer.units)
        for layer in model.decoder.layers
        if isinstance(layer, keras.layers.Dense)
    ]


def timed_evaluation(model, ds, samples):
    from keras_vae import evaluation

    start = time.perf_counter()
    results = evaluation.evaluate_model(
        model, ds, iwae_samples=samples, elbo_samples=1, seed=0, progress=False
    )
    return time.perf_counter() - start, results


# -- where a chunk's time goes ------------------------------------------------------------


def _time(fn, min_seconds, min_runs=3, cpu=None):
    """Median and best wall seconds of `fn()` (returns something convertible to
    numpy); with a list `cpu`, the median CPU seconds of the process are appended."""
    import numpy as np

    np.asarray(fn())  # warm up / trace
    runs, cpu_runs = [], []
    deadline = time.perf_counter() + min_seconds
    while len(runs) < min_runs or time.perf_counter() < deadline:
        start, start_cpu = time.perf_counter(), time.process_time()
        np.asarray(fn())
        runs.append(time.perf_counter() - start)
        cpu_runs.append(time.process_time() - start_cpu)
    if cpu is not None:
        cpu.append(common.median(cpu_runs))
    return common.median(runs), min(runs)


def _library_chunk(model, x, chunk):
    """`iwae_log_likelihood`'s compiled chunk on `chunk` samples of images `x`:
    a function of no arguments returning the folded (max, sum) state."""
    import numpy as np
    import tensorflow as tf

    from keras_vae.evaluation import bounds

    mean, log_var = (tf.cast(t, tf.float32) for t in model.encode(x))
    eps = tf.random.normal((chunk, x.shape[0], model.latent_dim))
    state = (tf.fill((x.shape[0],), -np.inf), tf.zeros((x.shape[0],)))
    return lambda: bounds._CHUNK_GIVEN_POSTERIOR(model, x, mean, log_var, eps, *state, None)


def chunk_sweep(model, batch_size, chunks, seconds):
    """The library's compiled chunk at each chunk size: ms and decoder GFLOP/s."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = tf.constant((rng.random((batch_size, *IMAGE_SHAPE)) < 0.3).astype(np.float32))
    rows = []
    for chunk in chunks:
        cpu = []
        med, best = _time(_library_chunk(model, x, chunk), seconds, cpu=cpu)
        flops = decoder_dense_flops(model) * batch_size * chunk
        rows.append({"chunk": chunk, "codes": batch_size * chunk, "median_ms": 1e3 * med,
                     "best_ms": 1e3 * best, "cpu_ms": 1e3 * cpu[0],
                     "decoder_gflops_per_s": flops / med / 1e9,
                     "best_decoder_gflops_per_s": flops / best / 1e9})  # fmt: skip
        print(f"  chunk {chunk}: {1e3 * med:.1f} ms, {flops / med / 1e9:.0f} GFLOP/s", flush=True)
    return rows


def breakdown(model, batch_size, chunk, seconds):
    """ms per chunk of the pieces of one `log_weights(x, chunk)` call."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_vae import likelihoods

    rng = np.random.default_rng(0)
    x = tf.constant((rng.random((batch_size, *IMAGE_SHAPE)) < 0.3).astype(np.float32))
    codes = batch_size * chunk
    z = tf.random.normal((codes, model.latent_dim))
    x_flat = tf.constant(np.tile(x.numpy(), (chunk, 1, 1, 1)))
    dense = [
        layer for layer in model.decoder.layers if isinstance(layer, keras.layers.Dense)
    ]
    seed = keras.random.SeedGenerator(0)

    def eager():
        return model.log_weights(x, chunk, seed=seed)

    graph = tf.function(lambda x: model.log_weights(x, chunk, seed=seed))
    xla = tf.function(lambda x: model.log_weights(x, chunk, seed=seed), jit_compile=True)
    decoder = tf.function(lambda z: model.decoder(z))

    @tf.function
    def matmuls(z):
        h = z
        for layer in dense:
            h = tf.matmul(h, layer.kernel)
        return tf.reduce_sum(h)

    @tf.function
    def matmuls_bias_relu(z):
        h = z
        for i, layer in enumerate(dense):
            h = tf.matmul(h, layer.kernel) + layer.bias
            if i < len(dense) - 1:
                h = tf.nn.relu(h)
        return tf.reduce_sum(h)

    logits = decoder(z)
    eps = tf.random.normal((chunk, batch_size, model.latent_dim))
    library = tf.function(lambda x, eps: model.log_weights(x, chunk, eps=eps))

    def broadcast(x, eps):
        # VAE._importance_terms' maths with x broadcast against the K codes
        # instead of tiled to (K*B, H, W, C): the same ops on the same values.
        mean, log_var = model.encode(x)
        z = mean[None] + tf.exp(0.5 * log_var)[None] * eps  # (K, B, D)
        flat = tf.reshape(model.decoder(tf.reshape(z, (codes, -1))), (chunk, batch_size, -1))
        log_px = tf.reduce_sum(
            tf.reshape(x, (1, batch_size, -1)) * flat - tf.nn.softplus(flat), axis=-1
        )
        log_pz = -0.5 * tf.reduce_sum(likelihoods.LOG_2PI + tf.square(z), axis=-1)
        log_qz = -0.5 * tf.reduce_sum(
            likelihoods.LOG_2PI + log_var[None] + tf.square(eps), axis=-1
        )
        return tf.transpose(log_px + log_pz - log_qz)

    broadcast_graph = tf.function(broadcast)
    broadcast_xla = tf.function(broadcast, jit_compile=True)
    differences = {
        name: float(tf.reduce_max(tf.abs(fn(x, eps) - library(x, eps))))
        for name, fn in (("broadcast", broadcast_graph), ("broadcast_xla", broadcast_xla))
    }
    bernoulli = tf.function(lambda x, p: likelihoods.bernoulli_log_prob(x, p))
    softplus = tf.function(lambda p: tf.reduce_sum(tf.reshape(tf.nn.softplus(p), (codes, -1)), 1))

    @tf.function
    def tile_and_bernoulli(x, p):
        tiled = tf.reshape(tf.tile(x[None], (chunk, 1, 1, 1, 1)), (codes, *IMAGE_SHAPE))
        return likelihoods.bernoulli_log_prob(tiled, p)

    # (name, fn, runs the decoder's matmuls)
    pieces = [
        ("model.log_weights, eager (as the library called it before)", eager, True),
        ("the library's compiled chunk (iwae_log_likelihood now)",
         _library_chunk(model, x, chunk), True),
        ("the same in a tf.function", lambda: graph(x), True),
        ("the same in a tf.function, jit_compile=True (XLA)", lambda: xla(x), True),
        ("x broadcast, not tiled, in a tf.function (given eps)",
         lambda: broadcast_graph(x, eps), True),
        ("x broadcast, not tiled, tf.function + XLA (given eps)",
         lambda: broadcast_xla(x, eps), True),
        ("decoder alone (tf.function)", lambda: decoder(z), True),
        ("decoder's 3 matmuls alone", lambda: matmuls(z), True),
        ("decoder's matmuls + bias + ReLU, unfused", lambda: matmuls_bias_relu(z), True),
        ("Bernoulli log_prob alone (x already tiled)", lambda: bernoulli(x_flat, logits), False),
        ("tile x + Bernoulli log_prob", lambda: tile_and_bernoulli(x, logits), False),
        ("softplus of the logits alone, summed", lambda: softplus(logits), False),
    ]
    flops = decoder_dense_flops(model) * codes
    rows = []
    for name, fn, has_decoder in pieces:
        cpu = []
        med, best = _time(fn, seconds, cpu=cpu)
        rows.append({"piece": name, "median_ms": 1e3 * med, "best_ms": 1e3 * best,
                     "cpu_ms": 1e3 * cpu[0],
                     "decoder_gflops_per_s": flops / med / 1e9 if has_decoder else None})
        print(f"  {name}: {1e3 * med:.1f} ms/chunk", flush=True)
    return {"chunk": chunk, "codes_per_chunk": codes, "decoder_flops_per_chunk": flops,
            "pieces": rows, "max_abs_difference_vs_log_weights": differences}  # fmt: skip


# -- memory (one fresh process per K) --------------------------------------------------------


def memory_child(args):
    """Runs in a fresh interpreter: prints JSON with the RSS before and the peak."""
    import keras  # noqa: F401

    _, model = build(0, args.batch_size)
    ds = dataset(args.memory_images, args.batch_size)
    before = common.current_rss_mib()
    seconds, _ = timed_evaluation(model, ds, args.memory_child)
    print(json.dumps({"samples": args.memory_child, "rss_before_mib": before,
                      "peak_rss_mib": common.peak_rss_mib(),
                      "rss_after_mib": common.current_rss_mib(), "seconds": seconds}))  # fmt: skip


def memory_runs(args):
    out = []
    for k in args.memory_samples:
        cmd = [sys.executable, os.path.abspath(__file__), f"--memory_child={k}",
               f"--memory_images={args.memory_images}",
               f"--batch_size={args.batch_size}"]  # fmt: skip
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        text = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        result = json.loads(text.strip().splitlines()[-1])
        result["load1"] = round(os.getloadavg()[0], 2)
        out.append(result)
        print(f"  K={k}: peak RSS {result['peak_rss_mib']:.0f} MiB "
              f"(before evaluation {result['rss_before_mib']:.0f} MiB)", flush=True)  # fmt: skip
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: N=64, K=200")
    parser.add_argument("--images", type=int, default=None, help="N (default 512)")
    parser.add_argument("--samples", type=int, default=None, help="K (default 5000)")
    parser.add_argument("--batch_size", type=int, default=64, help="evaluation batch (run's: 64)")
    parser.add_argument("--train_steps", type=int, default=0, help="fit steps before (0: random "
                        "weights)")  # fmt: skip
    parser.add_argument("--no_breakdown", dest="breakdown", action="store_false")
    parser.add_argument("--breakdown_seconds", type=float, default=None)
    parser.add_argument("--chunk_sweep", default=None, help="comma-separated chunk sizes "
                        "(samples per decoder call) to time the library's chunk at "
                        "(default 16,40,83,160; empty: none)")
    parser.add_argument("--memory_samples", default=None,
                        help="comma-separated K values of the memory runs (default 500,5000)")
    parser.add_argument("--memory_images", type=int, default=None, help="N of the memory runs")
    parser.add_argument("--memory_child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="iwae_eval", help="results file stem")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = dict(
        images=64 if quick else 512,
        samples=200 if quick else 5000,
        breakdown_seconds=0.5 if quick else 2.0,
        memory_samples="50,200" if quick else "500,5000",
        chunk_sweep="16,83" if quick else "16,40,83,160",
        memory_images=64 if quick else 128,
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.memory_child is not None:
        return memory_child(args)
    args.memory_samples = [int(k) for k in args.memory_samples.split(",") if k]
    args.chunk_sweep = [int(k) for k in args.chunk_sweep.split(",") if k]

    from benchmarks import training as bench
    from keras_vae import evaluation

    machine = common.machine_info()
    start = time.perf_counter()
    peak = bench.matmul_peak(seconds=1.0 if quick else 3.0)
    print(f"float32 matmul 2048^3: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)

    config, model = build(args.train_steps, args.batch_size)
    ds = dataset(args.images, args.batch_size)
    per_code = decoder_dense_flops(model)
    chunk = evaluation._auto_chunk(args.batch_size, IMAGE_SHAPE, args.samples)
    load = {"start": round(os.getloadavg()[0], 2)}
    timed_evaluation(model, ds.take(1), min(args.samples, 2 * chunk))  # warm up
    total_s, results = timed_evaluation(model, ds, args.samples)
    load["after_iwae"] = round(os.getloadavg()[0], 2)
    base_s, _ = timed_evaluation(model, ds, 0)
    iwae_s = max(total_s - base_s, 1e-9)
    codes = args.images * args.samples
    achieved = per_code * codes / iwae_s
    print(f"evaluate_model N={args.images} K={args.samples}: {total_s:.1f} s "
          f"(without IWAE {base_s:.2f} s); decoder matmuls {achieved / 1e9:.1f} GFLOP/s",
          flush=True)  # fmt: skip

    pieces = None
    if args.breakdown:
        print(f"breakdown at the library's chunk ({chunk} samples x {args.batch_size} images):",
              flush=True)  # fmt: skip
        pieces = breakdown(model, args.batch_size, chunk, args.breakdown_seconds)
        load["after_breakdown"] = round(os.getloadavg()[0], 2)
    sweep = None
    if args.chunk_sweep:
        print("the library's compiled chunk against the chunk size:", flush=True)
        sweep = chunk_sweep(model, args.batch_size, args.chunk_sweep, args.breakdown_seconds)
        load["after_sweep"] = round(os.getloadavg()[0], 2)
    print("memory (fresh process per K):", flush=True)
    memory = memory_runs(args)
    peak_end = bench.matmul_peak(seconds=1.0 if quick else 3.0)
    reference = max(peak["flops_per_s"], peak_end["flops_per_s"])
    load["end"] = round(os.getloadavg()[0], 2)
    fraction = achieved / reference
    ok = fraction >= TARGET

    rows = [
        ["images N / samples K / batch", f"{args.images:,} / {args.samples:,} / {args.batch_size}"],
        ["IWAE chunk (samples per decoder call, the library's)", chunk],
        ["evaluate_model time (s)", total_s],
        ["  of which without the IWAE bound (K=0) (s)", base_s],
        ["images/s, whole evaluation", args.images / total_s],
        ["images/s, IWAE bound", args.images / iwae_s],
        ["projected time for 10,000 images (min)",
         FULL_PROTOCOL_IMAGES / args.images * total_s / 60],
        ["decoder MFLOP per code (Dense layers)", per_code / 1e6],
        ["decoder matmul GFLOP/s achieved", achieved / 1e9],
        ["reference 2048^3 float32 matmul GFLOP/s", reference / 1e9],
        ["achieved / reference", f"{100 * fraction:.1f}%"],
        [f"target >= {100 * TARGET:.0f}%", common.pass_miss(ok)],
        ["load (1 min): start / after IWAE / end",
         f"{load['start']} / {load['after_iwae']} / {load['end']}"],
    ]  # fmt: skip
    sections = [("IWAE evaluation (mnist preset network, random binary 28x28 images)",
                 ["what", "value"], rows)]  # fmt: skip
    if pieces:
        sections.append((
            f"Where one chunk goes: {chunk} samples x {args.batch_size} images = "
            f"{pieces['codes_per_chunk']:,} codes per decoder call",
            ["piece", "median ms / chunk", "best ms", "CPU ms", "of the eager call",
             "decoder-matmul GFLOP/s", "% of reference matmul"],
            [[p["piece"], p["median_ms"], p["best_ms"], p["cpu_ms"],
              f"{100 * p['median_ms'] / pieces['pieces'][0]['median_ms']:.0f}%",
              p["decoder_gflops_per_s"],
              None if p["decoder_gflops_per_s"] is None
              else f"{100 * p['decoder_gflops_per_s'] * 1e9 / reference:.0f}%"]
             for p in pieces["pieces"]],
        ))  # fmt: skip
    if sweep:
        sections.append((
            f"The library's compiled chunk against the chunk size ({args.batch_size} images)",
            ["samples per chunk", "codes per decoder call", "median ms", "best ms", "CPU ms",
             "decoder-matmul GFLOP/s (median)", "% of reference (median / best)"],
            [[r["chunk"], r["codes"], r["median_ms"], r["best_ms"], r["cpu_ms"],
              r["decoder_gflops_per_s"],
              f"{100 * r['decoder_gflops_per_s'] * 1e9 / reference:.0f}% / "
              f"{100 * r['best_decoder_gflops_per_s'] * 1e9 / reference:.0f}%"]
             for r in sweep],
        ))  # fmt: skip
    base_rss = min(m["rss_before_mib"] for m in memory)
    sections.append((
        f"Peak memory, {args.memory_images} images, a fresh process per K",
        ["K", "RSS before evaluation (MiB)", "peak RSS (MiB)", "peak - before (MiB)",
         "seconds", "load (1 min)"],
        [[m["samples"], m["rss_before_mib"], m["peak_rss_mib"],
          m["peak_rss_mib"] - m["rss_before_mib"], m["seconds"], m["load1"]] for m in memory],
    ))  # fmt: skip
    growth = memory[-1]["peak_rss_mib"] - memory[0]["peak_rss_mib"]
    elapsed = time.perf_counter() - start
    notes = [
        f"float32 2048^3 matmul: {peak['flops_per_s'] / 1e9:.1f} GFLOP/s at start, "
        f"{peak_end['flops_per_s'] / 1e9:.1f} at end (best run; the larger is the reference).",
        f"Decoder matmul FLOPs = N * K * {per_code:,} (2 * in * out of "
        f"{decoder_dense_shapes(model)}); the IWAE time is evaluate_model(K) - "
        "evaluate_model(K=0).",
        f"Memory: peak RSS grows by {growth:+.0f} MiB from K={memory[0]['samples']} to "
        f"K={memory[-1]['samples']} (baseline RSS {base_rss:.0f} MiB).",
        "Breakdown: max |log w - model.log_weights| of the broadcast reformulation "
        f"(same eps): {pieces['max_abs_difference_vs_log_weights'] if pieces else '-'} nats.",
        f"IWAE NLL of the random-weight model (sanity): {results.get('iwae_nll', float('nan')):.2f}"
        " nats.",
        f"total time {elapsed:.0f} s.",
    ]
    common.report(
        args.name,
        "IWAE evaluation speed (mnist preset network)",
        machine,
        sections,
        {
            "quick": quick,
            "args": vars(args),
            "matmul_float32": [peak, peak_end],
            "images": args.images,
            "samples": args.samples,
            "chunk": chunk,
            "evaluate_s": total_s,
            "evaluate_without_iwae_s": base_s,
            "iwae_s": iwae_s,
            "images_per_s": args.images / total_s,
            "iwae_images_per_s": args.images / iwae_s,
            "decoder_flops_per_code": per_code,
            "achieved_flops_per_s": achieved,
            "reference_flops_per_s": reference,
            "fraction_of_reference": fraction,
            "breakdown": pieces,
            "chunk_sweep": sweep,
            "memory": memory,
            "load1": load,
            "targets": [
                {"target": f"IWAE decoder matmuls >= {100 * TARGET:.0f}% of a 2048^3 matmul",
                 "value": fraction, "pass": ok},
                {"target": "IWAE evaluation memory flat in K (peak RSS growth < 64 MiB)",
                 "value": growth, "pass": growth < 64},
            ],  # fmt: skip
        },
        notes,
    )
    return None


if __name__ == "__main__":
    main()
