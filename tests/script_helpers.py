"""Running train.py and evaluate.py as a user does, in a fresh Python process
(imported by the tests, not collected)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# evaluate.py in seconds: one test batch, a 10-sample IWAE bound, no
# disentanglement metrics (DCI's trees take minutes; tests/test_report.py and
# tests/test_disentanglement.py run them), no figures.
QUICK_EVALUATE = ("--iwae_samples=10", "--max_batches=1", "--nodisentanglement", "--nofigures")


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
