"""Shared helpers of the benchmark scripts: machine description, tables, JSON, data.

Every script imports this module first (`from benchmarks import common`): it
puts the repository root on `sys.path`, so the scripts run from anywhere as
`python benchmarks/<name>.py`, and quiets TensorFlow's C++ start-up logging.

Results go to `benchmarks/results/<name>.json` (git-ignored) and the Markdown
table next to it as `<name>.md`; `run_all.py` concatenates the tables.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import platform
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "benchmarks", "results")

# A script run as `python benchmarks/x.py` has benchmarks/ as sys.path[0]:
# replace it by the repository root, so that `keras_vae` and `benchmarks`
# import and a script's name (training.py, memory.py) shadows nothing.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# -- machine description ------------------------------------------------------


def _cpuinfo():
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    key, value = (s.strip() for s in line.split(":", 1))
                    info.setdefault(key, value)
    except OSError:
        pass
    return info


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info():
    """CPU, cores, RAM, load and library versions, for every JSON and table."""
    import keras
    import numpy as np
    import tensorflow as tf

    cpu = _cpuinfo()
    flags = set(cpu.get("flags", "").split())
    interesting = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_family_model": f"{cpu.get('cpu family', '?')}/{cpu.get('model', '?')}",
        "cpu_flags": [f for f in interesting if f in flags],
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": _mem_total_gib(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def machine_line(machine):
    flags = ",".join(machine["cpu_flags"]) or "-"
    return (
        f"{machine['cpu']} (family/model {machine['cpu_family_model']}; {flags}), "
        f"{machine['usable_cores']} cores, {machine['ram_gib']} GiB RAM; "
        f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
        f"Python {machine['python']}; load average at start "
        f"{'/'.join(str(x) for x in machine['load_average_at_start'])}"
    )


# -- output -------------------------------------------------------------------


def fmt(value, digits=3):
    """A table cell: floats with `digits` significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if abs(value) >= 10**digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def report(name, title, machine, sections, payload, notes=()):
    """Prints the Markdown report and writes `<name>.md` and `<name>.json`.

    Args:
        name: file stem in `benchmarks/results/`.
        title: the report's heading.
        machine: `machine_info()`.
        sections: list of `(subtitle, headers, rows)`.
        payload: JSON-able dict of the raw results (machine is added).
        notes: lines printed under the tables.
    """
    machine = dict(machine, load_average_at_end=[round(x, 2) for x in os.getloadavg()])
    out = io.StringIO()
    out.write(
        f"## {title}\n\nMachine: {machine_line(machine)}; at end "
        f"{'/'.join(str(x) for x in machine['load_average_at_end'])}.\n"
    )
    if payload.get("quick"):
        out.write("\n**Quick smoke run (`--quick`): numbers are indicative only.**\n")
    for subtitle, headers, rows in sections:
        out.write(f"\n### {subtitle}\n\n{markdown_table(headers, rows)}\n")
    if notes:
        out.write("\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    text = out.getvalue()
    print(text, flush=True)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{name}.md"), "w") as f:
        f.write(text)
    payload = dict(payload, machine=machine, title=title)
    with open(os.path.join(RESULTS_DIR, f"{name}.json"), "w") as f:
        json.dump(payload, f, indent=2, default=_json_default)
        f.write("\n")
    return text


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def pass_miss(ok):
    return "PASS" if ok else "MISS"


# -- timing -------------------------------------------------------------------


def median(values):
    return statistics.median(values) if values else None


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


# -- synthetic data -------------------------------------------------------------


def make_jpeg_folder(root, num_images, seed=0, height=218, width=178, quality=90):
    """Writes `num_images` CelebA-like JPEGs (218 x 178 RGB) into `root`.

    Smooth sinusoidal colour gradients, an ellipse of another colour (the
    "face") and Gaussian noise (sigma 3), saved at quality 90: ~8.5 KB per
    file, about the size of CelebA's `img_align_celeba` JPEGs, so decoding
    costs about as much. ~3 ms per image to generate.

    Returns:
        The total size of the files in bytes.
    """
    import numpy as np
    from PIL import Image

    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    total = 0
    for i in range(num_images):
        image = np.empty((height, width, 3), np.float32)
        for c in range(3):
            a, b, phase = rng.uniform(-1, 1, 3)
            fy, fx = rng.uniform(0.005, 0.03, 2)
            image[..., c] = 128 + 60 * np.sin(2 * np.pi * (xx * fx * a + yy * fy * b) + 6 * phase)
        cy, cx = rng.uniform(80, 140), rng.uniform(70, 110)
        inside = ((yy - cy) / rng.uniform(40, 70)) ** 2 + ((xx - cx) / rng.uniform(30, 50)) ** 2
        image += (inside < 1)[..., None] * rng.uniform(-60, 60, 3).astype(np.float32)
        image += 3.0 * rng.standard_normal(image.shape, dtype=np.float32)
        path = os.path.join(root, f"{i:06d}.jpg")
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=quality)
        total += os.path.getsize(path)
    return total


def peak_rss_mib():
    """This process' peak resident set size (ru_maxrss), MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mib():
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
