"""Where a training step's time goes: op categories, the likelihood alone, thread settings.

    python benchmarks/profile_step.py                 # every preset (~4 min on 2 quiet cores)
    python benchmarks/profile_step.py --quick         # smoke run (~1.5 min)
    python benchmarks/profile_step.py --datasets=celeb_a --no_threads

Three measurements, for the preset networks (batch 64, float32):

1. **Op time by category** (`fit` under TensorFlow's profiler,
   `tf.profiler.experimental`, `--profile_steps` steps after a warm-up): the
   self time of every op of the train function, summed by category from the
   op's name: the networks' forward and backward (convolutions, matmuls,
   their bias/ReLU), the loss' forward and backward outside the networks
   (the likelihood, the KL, the reparameterization), Adam's update, the
   LossScaleOptimizer's unscaling and the finite checks (`cond/...`,
   IsFinite, All), sampling, and the rest (metrics, counters, variable
   reads). With the per-step wall time of an unprofiled `fit` next to it;
   the sum of op self times can exceed the wall time (two threads run ops
   at once) or fall short of it (idle and Python time between steps).
   Plus the op types that take the most time.
2. **The likelihood alone**: `log_prob` (keras_vae.likelihoods) forward and
   backward (the gradient with respect to the decoder's output) on one batch
   of the preset's shapes, in a `tf.function`, the same compiled by XLA
   (`jit_compile=True`: its element-wise ops fused into one loop), and the
   PyTorch replica's (`torch_replicas.py`, eager, 2 threads and 1 thread,
   in a process of its own), as ms per batch and as a share of the
   unprofiled `fit` step.
3. **Thread settings** (`--threads`, a fresh process per setting, as they are
   fixed at TensorFlow's start): `fit` images/s with
   `tf.config.threading` intra-op/inter-op = default (0/0: one thread per
   core), 2/1, 1/2 and 1/1.

`fit`'s per-step Python overhead is measured by `fit_overhead.py`.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

DATASETS = ("shapes", "mnist", "cifar10", "celeb_a", "strokes")
IMAGE_SHAPES = {"shapes": (64, 64, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3),
                "celeb_a": (64, 64, 3)}  # fmt: skip
BATCH_SIZE = 64
THREAD_SETTINGS = ((0, 0), (2, 1), (1, 2), (1, 1))
CATEGORIES = (
    "networks forward",
    "networks backward",
    "loss forward (likelihood, KL)",
    "loss backward (likelihood, KL)",
    "Adam update",
    "loss scaling + finite checks",
    "sampling",
    "metrics, counters, other",
)


def category(name, op_type):
    """The category of an op of the train function, from its name and type."""
    if "/adam/" in name:
        return "Adam update"
    if "/cond/" in name or op_type in ("IsFinite", "All", "LogicalAnd", "LogicalNot"):
        return "loss scaling + finite checks"
    network = re.search(r"encoder|decoder|iaf_flow", name)
    if network and "gradient_tape/" in name:
        return "networks backward"
    if network:
        return "networks forward"
    if "sampling" in name or "Random" in op_type:
        return "sampling"
    if "gradient_tape/" in name:
        return "loss backward (likelihood, KL)"
    if op_type.endswith("VariableOp") or "Iterator" in op_type or op_type in ("NoOp", "Identity"):
        return "metrics, counters, other"
    return "loss forward (likelihood, KL)"


# -- building a preset -------------------------------------------------------------------


def build(dataset, jit_compile=False):
    """`(config, model, tf.data dataset, input shape, vocabulary)` of a preset at batch 64."""
    import keras

    from benchmarks import training as bench
    from keras_vae import training as training_lib

    keras.utils.set_random_seed(0)
    config = bench.preset_config(dataset, BATCH_SIZE)
    vocabulary = ()
    if config.is_sequence:
        from benchmarks.fit_overhead import sequence_dataset
        from keras_vae.data import strokes

        shape, vocabulary = (strokes.MAX_LENGTH,), tuple(strokes.VOCABULARY)
        ds = sequence_dataset(BATCH_SIZE)
    else:
        shape = IMAGE_SHAPES[dataset]
        ds = bench.synthetic_dataset(config, shape, BATCH_SIZE)
    model = training_lib.build_model(
        config, shape, steps_per_epoch=1000, jit_compile=jit_compile, vocabulary=vocabulary
    )
    return config, model, ds, shape, vocabulary


def fit_ms_per_step(model, ds, steps, repeats=3):
    """Best ms/step of `fit` over `repeats` chunks (batch-begin clock)."""
    from benchmarks import training as bench

    best = None
    for _ in range(repeats):
        clock = bench._fit_clock()
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
        times = clock.times[:-1]
        ms = 1e3 * (times[-1] - times[1]) / (len(times) - 2)
        best = ms if best is None else min(best, ms)
    return best


# -- 1. op categories ----------------------------------------------------------------------


def op_profile(model, ds, steps):
    """Op self time (ms per step) by category and by op type, from the profiler."""
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    logdir = tempfile.mkdtemp(prefix="keras_vae_profile_")
    try:
        tf.profiler.experimental.start(logdir)
        model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0)
        tf.profiler.experimental.stop()
        path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
        raw, ok = plugin.xspace_to_tools_data([path], "framework_op_stats", {})
        if not ok:
            raise RuntimeError(f"profiler tool failed: {raw[:200]!r}")
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    table = json.loads(raw)[0]
    cols = [c["id"] for c in table["cols"]]
    by_category = collections.Counter()
    by_type = collections.Counter()
    for row in table["rows"]:
        r = dict(zip(cols, (c.get("v") for c in row["c"]), strict=True))
        if r["type"] in ("IDLE", "Dataset") or r["operation"].startswith("Iterator::"):
            continue  # idle; tf.data's own threads (the input runs ahead, async)
        ms = r["total_self_time"] / 1e3 / steps  # microseconds in the tool
        by_category[category(r["operation"], r["type"])] += ms
        by_type[r["type"]] += ms
    return dict(by_category), dict(by_type)


# -- 2. the likelihood alone -----------------------------------------------------------------


def likelihood_inputs(config, model, shape, seed=0):
    """numpy `(x, params)` of one batch: data as the benchmarks feed it, params
    as the decoder's output shape (random, in a realistic range)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if config.is_sequence:
        from keras_vae.data import shapes, strokes

        factors = np.stack(
            [rng.integers(0, s, BATCH_SIZE) for s in shapes.FACTOR_SIZES], axis=1
        )
        x = strokes.tokenize(factors)
        params = rng.normal(size=(BATCH_SIZE, shape[0], len(strokes.VOCABULARY)))
        return x, params.astype(np.float32)
    out_shape = (BATCH_SIZE, *model.decoder.output_shape[1:])
    if config.likelihood == "bernoulli":
        x = (rng.random((BATCH_SIZE, *shape)) < 0.3).astype(np.float32)
        return x, rng.normal(size=out_shape).astype(np.float32)
    x = (rng.integers(0, 256, (BATCH_SIZE, *shape)) / 255.0).astype(np.float32)
    params = rng.normal(size=out_shape).astype(np.float32)
    c = shape[-1]
    params[..., :c] = x + 0.05 * params[..., :c]  # means near the pixels
    params[..., c:] = -3.0 + 0.5 * params[..., c:]  # log-scales ~ -3
    return x, params


def _timed(fn, seconds, min_runs=5):
    import numpy as np

    np.asarray(fn())
    np.asarray(fn())
    runs = []
    deadline = time.perf_counter() + seconds
    while len(runs) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        np.asarray(fn())
        runs.append(time.perf_counter() - start)
    return 1e3 * common.median(runs), 1e3 * min(runs)


def likelihood_tf(config, x, params, seconds):
    """ms (median, best) of log_prob forward+backward: tf.function and XLA."""
    import tensorflow as tf

    from keras_vae import likelihoods

    lik = likelihoods.get(config.likelihood, sigma=config.gaussian_sigma)
    x, params = tf.constant(x), tf.constant(params)

    def fwd_bwd(x, params):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = -tf.reduce_mean(lik.log_prob(x, params))
        return tape.gradient(loss, params)

    out = {}
    for name, fn in (
        ("tf.function", tf.function(fwd_bwd)),
        ("tf.function + XLA", tf.function(fwd_bwd, jit_compile=True)),
        ("forward only, tf.function", tf.function(lambda x, p: lik.log_prob(x, p))),
    ):
        out[name] = _timed(lambda fn=fn: fn(x, params), seconds)
    return out


def torch_child(path):
    """Runs in a fresh interpreter without TensorFlow: the PyTorch replica's
    likelihood forward+backward on the arrays in `path` (npz); prints JSON."""
    import numpy as np
    import torch

    from benchmarks import torch_replicas

    data = np.load(path)
    likelihood = str(data["likelihood"])
    x, params = data["x"], data["params"]
    if likelihood == "categorical":
        x = torch.from_numpy(x.astype(np.int64))
        params = torch.from_numpy(params)
    else:  # NHWC -> NCHW
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        params = torch.from_numpy(np.ascontiguousarray(params.transpose(0, 3, 1, 2)))

    def fwd_bwd():
        p = params.detach().requires_grad_(True)
        if likelihood == "categorical":
            picked = torch.log_softmax(p, dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
            log_px = (picked * (x != 0).float()).sum(-1)
        else:
            log_px = torch_replicas.log_prob(likelihood, x, p)
        (-log_px.mean()).backward()
        return p.grad

    out = {}
    for threads in (int(data["threads"]), 1):
        torch.set_num_threads(threads)
        out[f"torch eager, {threads} thread(s)"] = _timed(fwd_bwd, float(data["seconds"]))
    print(json.dumps(out))


def likelihood_torch(config, x, params, seconds, threads):
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "inputs.npz")
        np.savez(path, x=x, params=params, likelihood=config.likelihood, seconds=seconds,
                 threads=threads)  # fmt: skip
        cmd = [sys.executable, os.path.abspath(__file__), f"--torch_child={path}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        except subprocess.CalledProcessError as e:
            print(f"  torch child failed: {e.stderr[-500:]}", flush=True)
            return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- 3. thread settings ----------------------------------------------------------------------


def threads_child(spec):
    """Runs in a fresh interpreter: `fit` ms/step of a preset under intra/inter threads."""
    dataset, intra, inter, seconds = spec.split(":")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    tf.config.threading.set_inter_op_parallelism_threads(int(inter))
    _, model, ds, _, _ = build(dataset)
    model.fit(ds, epochs=1, steps_per_epoch=8, verbose=0)  # trace + warm up
    probe = fit_ms_per_step(model, ds, 8, repeats=1)
    steps = max(8, int(float(seconds) * 1e3 / probe))
    print(json.dumps({"ms_per_step": fit_ms_per_step(model, ds, steps, repeats=2)}))


def thread_runs(datasets, seconds, repeats):
    out = {}
    for repeat in range(repeats):
        settings = THREAD_SETTINGS if repeat % 2 == 0 else THREAD_SETTINGS[::-1]
        for dataset in datasets:
            for intra, inter in settings:
                cmd = [sys.executable, os.path.abspath(__file__),
                       f"--threads_child={dataset}:{intra}:{inter}:{seconds}"]  # fmt: skip
                env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
                done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
                ms = json.loads(done.stdout.strip().splitlines()[-1])["ms_per_step"]
                out.setdefault((dataset, intra, inter), []).append(ms)
                print(f"  {dataset} intra {intra} inter {inter}: {ms:.2f} ms/step "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
    return out


# -- main ------------------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--profile_steps", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="timing per measurement")
    parser.add_argument("--no_threads", dest="threads", action="store_false",
                        help="skip the thread-settings runs")  # fmt: skip
    parser.add_argument("--threads_datasets", default="mnist,celeb_a")
    parser.add_argument("--no_torch", dest="torch", action="store_false")
    parser.add_argument("--torch_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads_child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default="profile_step", help="results file stem")
    args = parser.parse_args(argv)
    if args.torch_child:
        return torch_child(args.torch_child)
    if args.threads_child:
        return threads_child(args.threads_child)
    if args.profile_steps is None:
        args.profile_steps = 5 if args.quick else 20
    if args.seconds is None:
        args.seconds = 0.3 if args.quick else 1.5
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = sorted(set(datasets) - set(DATASETS))
    if unknown:
        parser.error(f"unknown --datasets {unknown}; known: {', '.join(DATASETS)}")
    threads_datasets = [d for d in args.threads_datasets.split(",") if d]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    has_torch = args.torch and shutil.which(sys.executable) is not None
    if has_torch:
        import importlib.util

        has_torch = importlib.util.find_spec("torch") is not None

    import keras

    machine = common.machine_info()
    start = time.perf_counter()
    profiles, lik_rows, cat_rows, type_rows = [], [], [], []
    for dataset in datasets:
        keras.backend.clear_session()
        config, model, ds, shape, _ = build(dataset)
        load = round(os.getloadavg()[0], 2)
        model.fit(ds, epochs=1, steps_per_epoch=5, verbose=0)  # trace + warm up
        probe = fit_ms_per_step(model, ds, 6, repeats=1)
        steps = max(6, int(args.seconds * 1e3 / probe))
        step_ms = fit_ms_per_step(model, ds, steps)
        by_category, by_type = op_profile(model, ds, args.profile_steps)
        total = sum(by_category.values())
        x, params = likelihood_inputs(config, model, shape)
        lik = likelihood_tf(config, x, params, args.seconds)
        if has_torch:
            lik.update(likelihood_torch(config, x, params, args.seconds, cores))
        load_end = round(os.getloadavg()[0], 2)
        profiles.append({
            "dataset": dataset, "likelihood": config.likelihood, "fit_ms_per_step": step_ms,
            "op_ms_per_step_by_category": by_category, "op_ms_per_step_by_type": by_type,
            "likelihood_fwd_bwd_ms": lik, "load1_start": load, "load1_end": load_end,
        })  # fmt: skip
        cat_rows.append(
            [dataset, step_ms, total]
            + [f"{by_category.get(c, 0.0):.2f} ({100 * by_category.get(c, 0.0) / total:.0f}%)"
               for c in CATEGORIES]
            + [f"{load} -> {load_end}"]
        )  # fmt: skip
        top = sorted(by_type.items(), key=lambda kv: -kv[1])[:6]
        type_rows.append([dataset, ", ".join(f"{t} {ms:.2f} ({100 * ms / total:.0f}%)"
                                             for t, ms in top)])  # fmt: skip
        for name, (med, best) in lik.items():
            lik_rows.append([dataset, config.likelihood, name, med, best,
                             f"{100 * med / step_ms:.0f}%"])  # fmt: skip
        print(f"{dataset}: fit {step_ms:.2f} ms/step; likelihood fwd+bwd "
              + ", ".join(f"{n} {m:.2f} ms" for n, (m, _) in lik.items()), flush=True)  # fmt: skip

    sections = [
        (
            "1. Op self time by category, ms per step (share of the op time), fit under the "
            f"TensorFlow profiler ({args.profile_steps} steps); wall time of an unprofiled fit",
            ["preset", "fit wall ms/step", "op time ms/step", *CATEGORIES, "load (1 min)"],
            cat_rows,
        ),
        ("Op types taking the most time (ms per step, share of op time)",
         ["preset", "op types"], type_rows),  # fmt: skip
        ("2. The likelihood alone: log_prob forward + backward on one batch of 64 (ms)",
         ["preset", "likelihood", "how", "median ms", "best ms", "of the fit step (median)"],
         lik_rows),  # fmt: skip
    ]
    threads = None
    if args.threads and threads_datasets:
        print("thread settings (a fresh process each):", flush=True)
        runs = thread_runs(threads_datasets, args.seconds, 1 if args.quick else 2)
        threads = [{"dataset": d, "intra": i, "inter": j, "ms_per_step": v}
                   for (d, i, j), v in runs.items()]  # fmt: skip
        rows = []
        for dataset in threads_datasets:
            base = min(runs[(dataset, 0, 0)])
            for intra, inter in THREAD_SETTINGS:
                best = min(runs[(dataset, intra, inter)])
                rows.append([dataset, f"{intra}/{inter}" + (" (default)" if not intra else ""),
                             best, BATCH_SIZE * 1e3 / best, base / best])  # fmt: skip
        sections.append(("3. Thread settings: fit ms/step by tf.config.threading intra/inter-op "
                         "threads (best of the runs)",
                         ["preset", "intra/inter", "ms/step", "img/s", "speed vs default"],
                         rows))  # fmt: skip
    elapsed = time.perf_counter() - start
    common.report(
        args.name,
        "Where a training step's time goes (batch 64, float32)",
        machine,
        sections,
        {"quick": args.quick, "args": vars(args), "profiles": profiles, "threads": threads},
        [
            "Op times are self times summed over the train function's ops (two threads can "
            "run ops at once, so they may exceed the wall time); categories from op names: "
            "encoder/decoder/iaf_flow = networks, gradient_tape/ = backward, /adam/ = Adam, "
            "cond/ + IsFinite/All = the LossScaleOptimizer's unscaling and the finite checks.",
            "The likelihood timings take random decoder outputs of the preset's shape; the "
            "PyTorch rows run the replica's likelihood (benchmarks/torch_replicas.py) in a "
            "process without TensorFlow.",
            f"total time {elapsed:.0f} s.",
        ],
    )
    return None


if __name__ == "__main__":
    main()
