"""Running train.py and evaluate.py as a user does, in a fresh Python process
(imported by the tests, not collected)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# evaluate.py in seconds, as `report.evaluate_workdir`'s arguments: one test
# batch, a 10-sample IWAE bound, no disentanglement metrics (DCI's trees take
# minutes; tests/test_report.py and tests/test_disentanglement.py run them),
# no figures.
QUICK_EVALUATE = {
    "iwae_samples": 10, "max_batches": 1, "disentanglement": False, "figures": False,
}  # fmt: skip


def run_script(script, *args, timeout=900):
    """Runs `script` (e.g. "train.py") of the repository with `args`; returns
    the `subprocess.CompletedProcess` (text stdout and stderr captured)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    return subprocess.run(
        [sys.executable, os.path.join(REPO, script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_in_process(workdir, *args, callbacks=()):
    """What `python train.py --workdir=WORKDIR ARGS` does, in this process: the
    config from the same flags by train.py's own definitions and parsing
    (`keras_vae.cli`), then `training.train_and_evaluate` (progress bars off).
    For tests of the run itself; those of the script (exit codes, output
    lines, signals) start it with `run_script`, at ~7 s more for a fresh
    interpreter importing TensorFlow. Returns the results dict."""
    from absl import flags

    from keras_vae import cli, training

    values = flags.FlagValues()
    cli.define_config_flags(values)
    values(["train.py", *args])
    config = cli.config_from_flags(values)
    return training.train_and_evaluate(config, workdir, verbose=0, callbacks=callbacks)


def quick_evaluate_in_process(workdir):
    """What `python evaluate.py --workdir=WORKDIR --iwae_samples=10
    --max_batches=1 --nodisentanglement --nofigures` does, in this process
    (`report.evaluate_workdir` with QUICK_EVALUATE, the others at their
    defaults): results.json in WORKDIR, the printed lines returned."""
    from keras_vae import report

    printed = []
    report.evaluate_workdir(workdir, **QUICK_EVALUATE, echo=printed.append)
    return printed
