"""Runs every benchmark and writes `benchmarks/results/summary.md`.

    python benchmarks/run_all.py            # full: ~45 min on 2 cores
    python benchmarks/run_all.py --quick    # smoke run, ~15 min

Each script runs in its own process (one after the other, so they never
compete for the cores), writes `results/<name>.json` and `results/<name>.md`;
the summary is the targets table (PASS/MISS, gathered from the JSONs)
followed by every script's tables. Run it on an otherwise idle machine: the
load average at the start and end of each script is in its header.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402

# (results name, script[, its arguments]): in this order; all write
# results/<name>.json.
SCRIPTS = (
    ("input_pipeline", "input_pipeline.py"),
    ("input_wait", "input_wait.py"),
    ("training", "training.py"),
    ("fit_overhead", "fit_overhead.py"),
    ("memory", "memory.py"),
    ("profile_step", "profile_step.py"),
    ("iwae_eval", "iwae_eval.py"),
    # Needs PyTorch (benchmarks/requirements.txt); skipped when it is missing.
    ("vs_pytorch", "vs_pytorch.py"),
    ("vs_pytorch_tuned", "vs_pytorch.py", ["--tuning=tuned", "--name=vs_pytorch_tuned"]),
)
NEEDS_TORCH = ("vs_pytorch", "vs_pytorch_tuned")


def targets_table(names):
    rows = []
    for name in names:
        path = os.path.join(common.RESULTS_DIR, f"{name}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            payload = json.load(f)
        for target in payload.get("targets", []):
            value = target.get("value")
            if name == "input_wait" and "wait" in target["target"]:
                shown = f"{100 * value:.2f}%"
            elif name == "memory" or (name == "iwae_eval" and "memory" in target["target"]):
                shown = f"{value:+.1f} MiB"
            elif name == "iwae_eval":
                shown = f"{100 * value:.1f}%"
            elif isinstance(value, float):
                digits = 3 if name in ("training", "fit_overhead") else 2
                shown = f"{value:.{digits}f}x" if name != "input_wait" else f"{value:.1f}x"
            else:
                shown = common.fmt(value)
            rows.append([target["target"], shown, common.pass_miss(target["pass"]), name])
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run of every script")
    parser.add_argument(
        "--only", default=None, help="comma-separated subset of " + ",".join(s[0] for s in SCRIPTS)
    )
    args = parser.parse_args(argv)
    selected = [s for s in SCRIPTS if args.only is None or s[0] in args.only.split(",")]
    selected = [(name, script, extra[0] if extra else []) for name, script, *extra in selected]
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")

    timings, failed = [], []
    if importlib.util.find_spec("torch") is None:
        skipped = [s for s in selected if s[0] in NEEDS_TORCH]
        if skipped:
            print("PyTorch is missing (pip install -r benchmarks/requirements.txt): skipping "
                  + ", ".join(s[0] for s in skipped), flush=True)  # fmt: skip
        selected = [s for s in selected if s[0] not in NEEDS_TORCH]
    for name, script, extra in selected:
        cmd = [sys.executable, os.path.join(here, script), *extra]
        cmd += ["--quick"] if args.quick else []
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        for ext in (".json", ".md"):  # no stale results from an earlier run
            stale = os.path.join(common.RESULTS_DIR, name + ext)
            if os.path.exists(stale):
                os.remove(stale)
        start = time.perf_counter()
        code = subprocess.call(cmd, env=env)
        seconds = time.perf_counter() - start
        timings.append([name, seconds, code])
        if code:
            failed.append(name)

    machine = common.machine_info()
    parts = [
        "# keras_vae benchmarks" + (" (quick smoke run)" if args.quick else ""),
        "",
        f"Machine: {common.machine_line(machine)}.",
        "",
        "## Targets",
        "",
        common.markdown_table(
            ["target", "measured", "result", "script"], targets_table([s[0] for s in selected])
        ),
        "",
        "## Run times",
        "",
        common.markdown_table(["script", "seconds", "exit code"], timings),
    ]
    for name, *_ in selected:
        path = os.path.join(common.RESULTS_DIR, f"{name}.md")
        if os.path.exists(path) and name not in failed:
            with open(path) as f:
                parts += ["", f.read().strip()]
    text = "\n".join(parts) + "\n"
    os.makedirs(common.RESULTS_DIR, exist_ok=True)
    summary = os.path.join(common.RESULTS_DIR, "summary.md")
    with open(summary, "w") as f:
        f.write(text)
    print(f"\nWrote {summary}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
