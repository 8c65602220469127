"""The one-line errors a run that went wrong ends with: what happened, what
is kept, the way out."""

from __future__ import annotations

import math
import os

from keras_vae.config import UserError
from keras_vae.training.checkpoint import BACKUP_DIR, backup_step


def diverged_error(error, config, workdir):
    """The one line for a `Diverged` run: what happened, what is kept, the way out."""
    saved_step = backup_step(os.path.join(workdir, BACKUP_DIR))
    # A tenth of the rate, and no more than Adam's usual 1e-3.
    lower = f"--learning_rate={min(config.learning_rate / 10, 1e-3):g}"
    if error.reason == "nonfinite":
        what = (
            f"Training diverged at step {error.step}: an update made the weights NaN/Inf "
            "(non-finite) although the loss and gradients were finite, so nothing after the "
            "last finite state was saved. Likely cause: a learning rate too high"
        )
    else:
        what = (
            f"Training stopped at step {error.step}: {config.max_consecutive_skips} steps in a "
            "row had a non-finite loss or gradient (NaN/Inf) and were skipped. Likely causes: a "
            "learning rate too high, float16 overflow under mixed precision, or broken input "
            "images"
        )
    if saved_step is None:
        kept = (
            "No finite state had been saved yet: rerun the same command with e.g. "
            f"{lower} (it starts from step 0), or --restart."
        )
    else:
        kept = (
            f"The last finite state is in {os.path.join(workdir, BACKUP_DIR)} (step "
            f"{saved_step}) and model.keras (its last finished epoch): rerun the same command "
            f"with e.g. {lower} to resume from step {saved_step}, or --restart."
        )
    return UserError(f"{what}. {kept}")


def check_finite_results(results):
    # What the model reports: no elbo or kl for one that bounds no likelihood.
    present = [k for k in ("elbo", "reconstruction", "kl") if k in results]
    bad = [k for k in present if not math.isfinite(results[k])]
    if bad:
        raise UserError(
            f"The test metrics are not finite ({', '.join(f'{k}={results[k]}' for k in bad)}) "
            "although the weights are: the likelihood overflows on the test images (e.g. a "
            "--gaussian_sigma far too small). The run is not marked finished: change the "
            "setting and pass --restart."
        )
