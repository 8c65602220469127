"""Training throughput: keras_vae's `fit` against an eager PyTorch replica of the same model.

    pip install -r benchmarks/requirements.txt     # torch 2.13.0, CPU build
    python benchmarks/vs_pytorch.py                # every row (~5 min on 2 quiet cores)
    python benchmarks/vs_pytorch.py --quick        # smoke run (~1.5 min)
    python benchmarks/vs_pytorch.py --rows=celeb_a,iwae --keras_variants=fit_run,fit_xla
    python benchmarks/vs_pytorch.py --json=-       # also the raw results as JSON on stdout

Rows (batch 64, float32, in-memory data):

    shapes        conv 64x64x1, z 10,  Bernoulli               (vae)
    mnist         MLP 512-256 28x28x1, z 32, Bernoulli        (vae)
    cifar10       conv 32x32x3, z 128, discretized logistic   (vae)
    celeb_a       conv 64x64x3, z 128, discretized logistic   (vae)
    iwae          the shapes network, K = 5 codes per image   (--model=iwae)
    iaf           the shapes network, 2 IAF steps of 64 units (--model=iaf)
    sequence_vae  the strokes preset: bidirectional GRU 128 encoder, GRU 128
                  decoder fed z at every step, embedding 32, z 16, categorical
                  over 100 tokens, sequences of 38 tokens (11-38 used),
                  word dropout 0.5, linear KL warm-up

keras_vae side: `keras_vae.training.build_model(config, ...)` (the model
train.py trains: FusedAdam in its LossScaleOptimizer, XLA as `--jit_compile=auto`
resolves on this machine) and `model.fit(ds, steps_per_epoch=N, verbose=0)` on
a cached, repeated `tf.data` dataset of 4 batches, as in `training.py`.
Keras loops (`--keras_variants`, the first is the headline): `fit_run`, fit
as `train_and_evaluate` runs it (several steps per call of the train
function, `keras_vae.training.execution.StepsPerCall`); `fit`, one step per
call; `fit_xla`, `build_model(..., jit_compile=True)` (the whole train_step
compiled by XLA).

PyTorch side (`torch_replicas.py`): the same layers, widths, heads,
likelihood and loss, `torch.optim.Adam(lr, eps=1e-7)` (Keras' defaults), an
eager `zero_grad / loss / backward / step` loop over the same 4 batches
(NCHW tensors). Parameter counts of both sides are printed and must be
equal. `torch.set_num_threads(n)` and `set_num_interop_threads(n)` with n =
the cores this process may use (`os.sched_getaffinity`), which is what
TensorFlow's default thread pools use (intra-op and inter-op 0 = one thread
per schedulable core); TensorFlow's settings are left at their defaults, as
in a run.

Each framework runs in a process of its own (spawned; neither imports the
other; a fresh pair for every row), the driver alternating them: after a
warm-up, `--repeats` interleaved chunks of ~`--chunk_seconds` per loop
(keras, torch, torch, keras, ...). The clock reads at every step start
(Keras: `on_train_batch_begin`, which keeps the async batch-end dispatch
on); images/s counts the steps between the second and the last reading.
Reported: median images/s per loop and the median of the per-repeat ratios
keras/torch (paired, so drift of the machine cancels), with the 1-minute
load average at each row's start and end. `--tuning=tuned` runs PyTorch
as its CPU tuning advice has it: glibc's malloc thresholds raised (its conv
rows depend on them) and denormals flushed to zero (TensorFlow does so by
default; the mnist replica slows down 40% within 1,000 steps without it);
keras_vae runs as it does for a user in both settings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import os
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

BATCH_SIZE = 64
NUM_BATCHES = 4
TARGET = 1.25  # keras_vae fit >= 1.25 x the PyTorch replica (issue 16)
SKIP_STEPS = 1
# --tuning=tuned: glibc reuses freed blocks up to 32 MiB from its heap (the
# largest mmap threshold it accepts) and keeps up to 1 GiB of free heap,
# instead of mmap/munmap and page faults for every large tensor of a step.
MALLOC_TUNED = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
# row -> (dataset preset, --model); the variants train the shapes network (the
# data of train.py's default run and of the README's variants table).
ROWS = {
    "shapes": ("shapes", "vae"),
    "mnist": ("mnist", "vae"),
    "cifar10": ("cifar10", "vae"),
    "celeb_a": ("celeb_a", "vae"),
    "iwae": ("shapes", "iwae"),
    "iaf": ("shapes", "iaf"),
    "sequence_vae": ("strokes", "sequence_vae"),
}
IMAGE_SHAPES = {"shapes": (64, 64, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3),
                "celeb_a": (64, 64, 3)}  # fmt: skip
KERAS_VARIANTS = {
    # fit as `train_and_evaluate` runs it: N steps per call (`training.execution`).
    "fit_run": {"run": True},
    "fit": {},
    "fit_run_no_xla": {"run": True, "jit_compile": False},
    "fit_xla": {"jit_compile": True},
}


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count()


# -- row description (driver side: imports keras_vae) ----------------------------------


def row_spec(row, batch_size=BATCH_SIZE, steps_per_epoch=1000):
    """The model of a row as plain data, for both workers."""
    from keras_vae import config as config_lib
    from keras_vae import networks

    dataset, model = ROWS[row]
    config = config_lib.resolve(dataset, batch_size=batch_size, model=model)
    spec = {
        "row": row,
        "dataset": dataset,
        "model": config.model,
        "network": config.network,
        "latent_dim": config.latent_dim,
        "likelihood": config.likelihood,
        "learning_rate": config.learning_rate,
        "beta": config.beta,
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
    }
    if config.is_sequence:
        from keras_vae.data import strokes

        total = config.epochs * steps_per_epoch  # training.plan.build_model's warm-up
        spec.update(
            image_shape=(strokes.MAX_LENGTH,),
            vocabulary=list(strokes.VOCABULARY),
            vocab_size=len(strokes.VOCABULARY),
            rnn_units=config.rnn_units,
            embedding_dim=config.embedding_dim,
            bidirectional=config.bidirectional,
            word_dropout=config.word_dropout,
            warmup_steps=config.warmup_steps or max(1, total // 4),
            description=(
                f"{'bi' if config.bidirectional else ''}GRU {config.rnn_units} / GRU "
                f"{config.rnn_units}, T {strokes.MAX_LENGTH}, V {len(strokes.VOCABULARY)}, "
                f"z {config.latent_dim}, categorical"
            ),
            unit="seq/s",
        )
        return spec
    shape = IMAGE_SHAPES[dataset]
    widths = config.widths
    if widths is None:
        widths = (
            networks.DEFAULT_MLP_WIDTHS
            if config.network == "mlp"
            else networks.default_conv_widths(shape)
        )
    net = (
        f"MLP {'-'.join(map(str, widths))}"
        if config.network == "mlp"
        else f"conv {'-'.join(map(str, widths))}"
    )
    extra = ""
    if config.model == "iwae":
        extra = f", IWAE K={config.iwae_k}"
    elif config.model == "iaf":
        extra = f", IAF {config.iaf_steps}x{config.iaf_units}"
    spec.update(
        image_shape=shape,
        widths=tuple(widths),
        dense_units=config.dense_units,
        k=config.iwae_k,
        flow_steps=config.iaf_steps,
        flow_units=config.iaf_units,
        description=(
            f"{net} {'x'.join(map(str, shape))}, z {config.latent_dim}, "
            f"{config.likelihood.replace('_', ' ')}{extra}"
        ),
        unit="img/s",
    )
    return spec


def make_batches(spec, seed=0):
    """NUM_BATCHES in-memory batches: binary pixels (Bernoulli), k/255 levels,
    or strokes token sequences of random sprites."""
    import numpy as np

    rng = np.random.default_rng(seed)
    b = spec["batch_size"]
    if spec["model"] == "sequence_vae":
        from keras_vae.data import shapes, strokes

        factors = np.stack(
            [rng.integers(0, size, NUM_BATCHES * b) for size in shapes.FACTOR_SIZES], axis=1
        )
        return strokes.tokenize(factors).reshape(NUM_BATCHES, b, -1).astype(np.int32)
    shape = (NUM_BATCHES, b, *spec["image_shape"])
    if spec["likelihood"] == "bernoulli":
        return (rng.random(shape) < 0.3).astype(np.float32)
    return (rng.integers(0, 256, shape) / 255.0).astype(np.float32)


# -- workers (each in a process of its own) ---------------------------------------------


def _rate(times, batch_size, steps_per_call=1):
    calls = len(times) - 1 - SKIP_STEPS
    return calls * steps_per_call * batch_size / (times[-1] - times[SKIP_STEPS])


class KerasWorker:
    def __init__(self, threads):
        import tensorflow as tf

        self.tf = tf
        self.models, self.ds = {}, None

    def info(self):
        import keras

        tf = self.tf
        return {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
        }

    def setup(self, spec, batches, variants, warmup_steps):
        import gc

        import keras

        from keras_vae import config as config_lib
        from keras_vae import training as training_lib
        from keras_vae.training.distribute import auto_jit_compile

        gpu = bool(self.tf.config.list_physical_devices("GPU"))
        self.models = {}
        keras.backend.clear_session()
        gc.collect()
        keras.utils.set_random_seed(0)
        dataset, model = ROWS[spec["row"]]
        config = config_lib.resolve(dataset, batch_size=spec["batch_size"], model=model)
        self.ds = self.tf.data.Dataset.from_tensor_slices(batches).cache().repeat().prefetch(2)
        out = {}
        for name in variants:
            options = KERAS_VARIANTS[name]
            m = training_lib.build_model(
                config,
                tuple(spec["image_shape"]),
                steps_per_epoch=spec["steps_per_epoch"],
                jit_compile=options.get("jit_compile", auto_jit_compile(config, gpu)),
                vocabulary=tuple(spec.get("vocabulary", ())),
            )
            spe = options.get("steps_per_execution", 1)
            extra = []
            if options.get("run"):
                from keras_vae.training import execution

                calls = execution.StepsPerCall(
                    execution.run_schedule(config, spec["steps_per_epoch"])[0]
                )
                calls.install(m)
                spe, extra = calls.steps, [calls]
            elif spe > 1:
                m.compile(
                    optimizer=keras.optimizers.Adam(config.learning_rate),
                    steps_per_execution=spe,
                )
            self.models[name] = (m, spe, extra)
            start = time.perf_counter()
            self.run(name, max(warmup_steps, 3 * spe))  # traces the train function
            warmup = time.perf_counter() - start
            probe = self.run(name, max(SKIP_STEPS + 4, 2 * spe) * spe)
            out[name] = {
                "params": int(sum(math.prod(v.shape) for v in m.trainable_weights)),
                "warmup_s": warmup,
                "probe_rate": probe,
            }
        return out

    def run(self, name, steps):
        import keras

        model, spe, extra = self.models[name]
        times = []

        class Clock(keras.callbacks.Callback):
            # Batch *begin* only: a batch-end hook would switch off Keras'
            # async dispatch of batch-end callbacks.
            def on_train_batch_begin(self, batch, logs=None):
                times.append(time.perf_counter())

        steps = max(steps - steps % spe, (SKIP_STEPS + 2) * spe)
        for calls in extra:  # StepsPerCall: before each fit, as training does
            calls.install(model)
        model.fit(self.ds, epochs=1, steps_per_epoch=steps, verbose=0,
                  callbacks=[*extra, Clock()])
        # The last batch-begin reading starts the last call: time up to it only.
        return _rate(times, int(self.ds.element_spec.shape[0]), spe)


class TorchWorker:
    def __init__(self, threads, flush_denormal=False):
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)
        if flush_denormal:
            torch.set_flush_denormal(True)
        self.torch = torch
        self.threads = threads
        self.flush_denormal = flush_denormal
        self.trainer = None

    def info(self):
        torch = self.torch
        return {
            "torch": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(),
            "flush_denormal": self.flush_denormal,
            "parallel_info": torch.__config__.parallel_info().splitlines()[:8],
        }

    def setup(self, spec, batches, warmup_steps):
        import gc

        from benchmarks import torch_replicas

        self.trainer = None
        gc.collect()
        self.trainer = torch_replicas.Trainer(spec, list(batches))
        start = time.perf_counter()
        self.run(warmup_steps)
        warmup = time.perf_counter() - start
        probe = self.run(SKIP_STEPS + 5)
        self.torch.set_num_threads(self.threads)
        return {"params": self.trainer.num_params, "warmup_s": warmup, "probe_rate": probe}

    def run(self, steps, threads=None, max_seconds=None):
        """images/s over `steps` steps, or fewer once `max_seconds` have passed
        (a loaded machine can slow a thread setting down 10x after the probe)."""
        if threads is not None:
            self.torch.set_num_threads(threads)
        times = []
        loss = None
        for i in range(steps):
            times.append(time.perf_counter())
            if max_seconds and i > SKIP_STEPS + 3 and times[-1] - times[0] > max_seconds:
                times.pop()
                break
            loss = self.trainer.step()
        float(loss.detach())  # eager CPU: already done; kept for symmetry
        times.append(time.perf_counter())
        return _rate(times, self.trainer.batches[0].shape[0])


def _worker_main(kind, conn, threads, options):
    try:
        impl = (KerasWorker if kind == "keras" else TorchWorker)(threads, **options)
        conn.send(("ok", impl.info()))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            command, kwargs = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if command == "stop":
            return
        try:
            conn.send(("ok", getattr(impl, command)(**kwargs)))
        except Exception:
            conn.send(("error", traceback.format_exc()))


def start_with_env(process, env=None):
    """Starts a spawned `process` with `env` added to this one's environment
    (read by glibc's malloc in the child), this process' left unchanged."""
    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        process.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)


class Worker:
    """A framework in a spawned process; `call` runs a method of its worker class."""

    def __init__(self, kind, threads, env=None, **options):
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_worker_main, args=(kind, child, threads, options), daemon=True
        )
        start_with_env(self.process, env)
        self.info = self._receive()

    def _receive(self):
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"{self.kind} worker failed:\n{value}")
        return value

    def call(self, command, **kwargs):
        self.conn.send((command, kwargs))
        return self._receive()

    def close(self):
        try:
            self.conn.send(("stop", {}))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():  # busy in a chunk: stop it
            self.process.terminate()
            self.process.join(timeout=10)


# -- driver ------------------------------------------------------------------------------


def load1():
    return round(os.getloadavg()[0], 2)


def bench_row(row, keras_w, torch_w, args):
    spec = row_spec(row)
    batches = make_batches(spec)
    load_start = load1()
    print(f"\n{row}: {spec['description']} (load {load_start})", flush=True)
    k_setup = keras_w.call(
        "setup", spec=spec, batches=batches, variants=args.keras_variants,
        warmup_steps=args.warmup_steps,
    )  # fmt: skip
    t_setup = torch_w.call("setup", spec=spec, batches=batches, warmup_steps=args.warmup_steps)
    params = {name: s["params"] for name, s in k_setup.items()}
    print(
        f"  parameters: keras {params[args.keras_variants[0]]:,}, "
        f"torch {t_setup['params']:,}",
        flush=True,
    )
    if any(p != t_setup["params"] for p in params.values()):
        raise SystemExit(f"{row}: parameter counts differ: keras {params}, torch {t_setup}")

    def steps_for(rate):
        steps = math.ceil(args.chunk_seconds * rate / spec["batch_size"])
        return min(args.max_steps, max(args.min_steps, steps)) + SKIP_STEPS + 1

    torch_loops = {"torch": args.threads, **{f"torch_{n}t": n for n in args.torch_threads_also}}
    loops = [*args.keras_variants, *torch_loops]
    steps = {name: steps_for(k_setup[name]["probe_rate"]) for name in args.keras_variants}
    for name in torch_loops:
        steps[name] = steps_for(t_setup["probe_rate"])
    rates = {name: [] for name in loops}
    for repeat in range(args.repeats):
        for name in loops if repeat % 2 == 0 else loops[::-1]:
            if name in torch_loops:
                threads = torch_loops[name]
                rates[name].append(torch_w.call("run", steps=steps[name], threads=threads,
                                                max_seconds=3 * args.chunk_seconds))
            else:
                rates[name].append(keras_w.call("run", name=name, steps=steps[name]))
    ratios = {
        name: [k / t for k, t in zip(rates[name], rates["torch"], strict=True)]
        for name in args.keras_variants
    }
    # Against the faster torch thread setting of each repeat (load-robust).
    best_torch = [max(rates[name][i] for name in torch_loops) for i in range(args.repeats)]
    ratios_best = [k / t for k, t in zip(rates[args.keras_variants[0]], best_torch, strict=True)]
    result = {
        "row": row,
        "description": spec["description"],
        "unit": spec["unit"],
        "dataset": spec["dataset"],
        "model": spec["model"],
        "batch_size": spec["batch_size"],
        "params_keras": params,
        "params_torch": t_setup["params"],
        "steps_per_chunk": steps,
        "warmup_s": {**{n: s["warmup_s"] for n, s in k_setup.items()},
                     "torch": t_setup["warmup_s"]},  # fmt: skip
        "rates": rates,
        "rates_median": {name: common.median(v) for name, v in rates.items()},
        "ratios": ratios,
        "ratios_median": {name: common.median(v) for name, v in ratios.items()},
        "ratios_vs_best_torch": ratios_best,
        "ratio_vs_best_torch_median": common.median(ratios_best),
        "load1_start": load_start,
        "load1_end": load1(),
    }
    med = result["rates_median"]
    print(
        "  "
        + ", ".join(f"{n} {med[n]:,.0f}" for n in loops)
        + f" {spec['unit']}; keras/torch {result['ratios_median'][args.keras_variants[0]]:.2f}"
        + f" (load {result['load1_end']})",
        flush=True,
    )
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short chunks")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of "
                        + ",".join(ROWS))  # fmt: skip
    parser.add_argument(
        "--keras_variants",
        default="fit_run,fit",
        help="comma-separated Keras loops to time, the first one is the headline: "
        + ", ".join(KERAS_VARIANTS),
    )
    parser.add_argument("--chunk_seconds", type=float, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="interleaved chunks per loop")
    parser.add_argument("--warmup_steps", type=int, default=None)
    parser.add_argument("--min_steps", type=int, default=None, help="timed steps per chunk, min")
    parser.add_argument("--max_steps", type=int, default=2000, help="timed steps per chunk, max")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: the usable cores, as TensorFlow's default)",
    )
    parser.add_argument(
        "--torch_threads_also",
        default="",
        help="comma-separated extra torch thread counts to time as loops torch_<n>t "
        "(e.g. 1: on a loaded machine OpenMP's 2-thread barriers can stall)",
    )
    parser.add_argument(
        "--tuning",
        choices=("default", "tuned"),
        default="default",
        help="default: both processes as a user's starts; tuned: PyTorch's process with "
        "glibc malloc's MALLOC_MMAP_THRESHOLD_ 32 MiB and MALLOC_TRIM_THRESHOLD_ 1 GiB "
        "(freed blocks reused, not returned to the kernel and faulted in again) and "
        "torch.set_flush_denormal(True) (TensorFlow flushes denormals by default); "
        "keras_vae's as it runs",
    )
    parser.add_argument("--json", default=None, help="also write the raw results to this "
                        "path ('-': stdout)")  # fmt: skip
    parser.add_argument("--name", default="vs_pytorch", help="results file stem")
    args = parser.parse_args(argv)
    defaults = (
        dict(chunk_seconds=0.5, repeats=2, warmup_steps=3, min_steps=3)
        if args.quick
        else dict(chunk_seconds=3.0, repeats=3, warmup_steps=5, min_steps=8)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        parser.error(f"unknown --rows {unknown}; known: {', '.join(ROWS)}")
    args.keras_variants = [v for v in args.keras_variants.split(",") if v]
    if not args.keras_variants or set(args.keras_variants) - set(KERAS_VARIANTS):
        parser.error(f"--keras_variants must be among {', '.join(KERAS_VARIANTS)}")
    threads = args.threads = args.threads or usable_cores()
    args.torch_threads_also = [int(n) for n in args.torch_threads_also.split(",") if n]
    if importlib.util.find_spec("torch") is None:  # the torch worker imports it, not we
        raise SystemExit(
            "PyTorch is missing: pip install -r benchmarks/requirements.txt (torch 2.13.0, CPU)"
        )

    def terminate(signum, frame):
        raise SystemExit(128 + signum)  # runs the `finally` below: the workers stop too

    signal.signal(signal.SIGTERM, terminate)
    machine = common.machine_info()
    start = time.perf_counter()
    results, infos = [], {}
    for row in rows:
        # A fresh pair of processes per row, as a user's run is: a process's
        # speed depends on what it ran before (glibc's malloc adapts its mmap
        # and trim thresholds to the largest blocks freed so far: PyTorch's
        # iaf row, the shapes network, ran 1,200 img/s after the iwae row's
        # larger batches and 812 in a fresh process).
        keras_w = Worker("keras", threads)
        tuned = args.tuning == "tuned"
        torch_w = Worker(
            "torch", threads, env=MALLOC_TUNED if tuned else None, flush_denormal=tuned
        )
        try:
            if not infos:
                infos = {"keras": keras_w.info, "torch": torch_w.info}
                print(f"TensorFlow threads: {keras_w.info}", flush=True)
                print(f"PyTorch threads: {torch_w.info}", flush=True)
            results.append(bench_row(row, keras_w, torch_w, args))
        finally:
            keras_w.close()
            torch_w.close()
    elapsed = time.perf_counter() - start

    headline = args.keras_variants[0]
    table, targets = [], []
    for r in results:
        ratio = r["ratios_median"][headline]
        # Judged against the faster torch setting measured (conservative).
        judged = min(ratio, r.get("ratio_vs_best_torch_median") or ratio)
        ok = judged >= TARGET
        torch_name = "PyTorch tuned" if args.tuning == "tuned" else "PyTorch"
        targets.append({"target": f"keras_vae {headline} >= {TARGET}x {torch_name}: {r['row']}",
                        "value": judged, "pass": ok})  # fmt: skip
        cells = [
            r["row"],
            r["description"],
            f"{r['params_keras'][headline]:,} / {r['params_torch']:,}",
            f"{r['rates_median'][headline]:,.0f}",
            f"{r['rates_median']['torch']:,.0f}",
            r["unit"],
            f"{ratio:.2f}",
            f"{min(r['ratios'][headline]):.2f}-{max(r['ratios'][headline]):.2f}",
            common.pass_miss(ok),
        ]
        for name in args.keras_variants[1:]:
            cells += [f"{r['rates_median'][name]:,.0f}", f"{r['ratios_median'][name]:.2f}"]
        for n in args.torch_threads_also:
            cells.append(f"{r['rates_median'][f'torch_{n}t']:,.0f}")
        if args.torch_threads_also:
            cells.append(f"{r['ratio_vs_best_torch_median']:.2f}")
        cells.append(f"{r['load1_start']:.2f} -> {r['load1_end']:.2f}")
        table.append(cells)
    headers = [
        "row", "model", "params keras / torch", f"keras {headline}", "torch eager", "unit",
        "keras / torch", "range", f">= {TARGET}x",
    ]  # fmt: skip
    for name in args.keras_variants[1:]:
        headers += [f"keras {name}", f"{name} / torch"]
    headers += [f"torch {n} thread(s)" for n in args.torch_threads_also]
    if args.torch_threads_also:
        headers.append(f"keras {headline} / faster torch")
    headers.append("load (1 min) start -> end")
    notes = [
        f"batch {BATCH_SIZE}, float32, in-memory data ({NUM_BATCHES} batches cycled); "
        f"{args.repeats} interleaved repeats per loop of ~{args.chunk_seconds:g} s; medians.",
        f"TensorFlow thread pools at their defaults (intra-op "
        f"{infos['keras']['intra_op_threads']}, inter-op {infos['keras']['inter_op_threads']}: "
        f"0 = one per usable core, {usable_cores()} here); torch.set_num_threads({threads}), "
        f"set_num_interop_threads({threads}).",
        "keras: keras_vae.training.build_model + model.fit(verbose=0); torch: eager replica "
        "(benchmarks/torch_replicas.py), Adam(eps=1e-7), zero_grad/backward/step.",
        "Parameter counts are equal on every row (the script stops otherwise).",
        "A fresh keras and torch process for every row; "
        + ("PyTorch tuned: glibc malloc with "
           + ", ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items())
           + " and torch.set_flush_denormal(True); keras_vae as it runs (TensorFlow "
           "flushes denormals by default)."
           if args.tuning == "tuned" else "glibc malloc and torch's denormals at their "
           "defaults."),
        f"The >= {TARGET}x column judges the ratio against the faster torch thread setting "
        "measured (with --torch_threads_also), else against torch with the cores' threads.",
        f"total time {elapsed:.0f} s.",
    ]
    stalled = [r["row"] for r in results
               if any(r["rates_median"][f"torch_{n}t"] > r["rates_median"]["torch"]
                      for n in args.torch_threads_also)]  # fmt: skip
    if stalled:
        notes.append(
            f"torch with fewer threads beat torch with {threads} on: {', '.join(stalled)}: "
            "OpenMP's threads stall at every parallel region when other processes hold cores "
            "(see the load column); there the ratio against torch with the cores' threads "
            "says more about the load than about the libraries."
        )
    payload = {
        "quick": args.quick,
        "args": vars(args),
        "threads": threads,
        "keras_worker": infos["keras"],
        "torch_worker": infos["torch"],
        "tuning": args.tuning,
        "torch_malloc": MALLOC_TUNED if args.tuning == "tuned" else {},
        "rows": results,
        "targets": targets,
    }
    common.report(
        args.name,
        "keras_vae fit vs an eager PyTorch replica (training throughput)",
        machine,
        [("Training images (sequences) per second, median of interleaved repeats", headers,
          table)],  # fmt: skip
        payload,
        notes,
    )
    if args.json:
        text = json.dumps(dict(payload, machine=machine), indent=2, default=common._json_default)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")


if __name__ == "__main__":
    main()
