"""Guards: stop a run before it keeps a state not worth keeping.

`NonFiniteGuard` stops a run whose weights turned NaN/Inf or that keeps
skipping non-finite steps (`Diverged`); `PreemptionGuard` turns SIGTERM and
Ctrl-C into a backup and a clean stop (`Preempted`). `step_of` reads the
model's true global step, which every step-indexed summary uses.
"""

from __future__ import annotations

import signal
import threading

import keras
from absl import logging


class Diverged(Exception):
    """Raised inside `fit` to stop a run whose state must not be kept.

    `train_and_evaluate` turns it into a one-line `UserError` naming the last
    finite state on disk and the way out.

    Attributes:
        step: training steps taken when it was noticed.
        reason: `nonfinite` (a weight or optimizer variable is NaN/Inf) or
            `skips` (too many non-finite steps in a row).
    """

    def __init__(self, step, reason):
        super().__init__(f"{reason} at step {step}")
        self.step = step
        self.reason = reason


class Preempted(Exception):
    """SIGTERM or Ctrl-C: the run stops after a backup of its current step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def step_of(model):
    """Training steps `model` has taken (its saved `kl_step` counter)."""
    return int(keras.ops.convert_to_numpy(model.kl_step))


def check_finite(model):
    """Raises `Diverged` if any weight or optimizer variable is NaN/Inf.

    Called before every save: no file a run writes holds a non-finite value.
    """
    if model.nonfinite_variables():
        raise Diverged(step_of(model), "nonfinite")


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops a run before it can save a state that is not worth keeping.

    Two ways a run goes bad:
    - a step with a finite loss and finite gradients whose update overflows
      the weights (a learning rate far too high): every later loss is NaN.
      The weights are checked whenever a step is skipped and at each epoch's
      end (and by every save, see `check_finite`), so the run stops at once
      instead of saving NaN;
    - `max_consecutive` skipped (non-finite) steps in a row with finite
      weights: the model skips each such update (its optimizer is a
      LossScaleOptimizer, see `VAE.compile`), but the run goes nowhere.

    Either raises `Diverged` out of `fit`; nothing after the last good save
    is written. It is the first callback, so it acts before the savers.
    """

    def __init__(self, max_consecutive):
        super().__init__()
        self.max_consecutive = max_consecutive

    def on_train_batch_end(self, batch, logs=None):
        run = int(keras.ops.convert_to_numpy(self.model.consecutive_skips))
        if run:  # only then can the weights have gone bad unseen: cheap otherwise
            check_finite(self.model)
        if run >= self.max_consecutive:
            raise Diverged(step_of(self.model), "skips")

    def on_epoch_end(self, epoch, logs=None):
        check_finite(self.model)


class PreemptionGuard(keras.callbacks.Callback):
    """Turns SIGTERM and SIGINT (Ctrl-C) into a backup and a clean stop.

    `tf.distribute.experimental.PreemptionCheckpointHandler` does this for a
    custom loop under MultiWorkerMirroredStrategy or TPUStrategy only, around
    its own `tf.train.Checkpoint`; here `fit` runs on any strategy and the
    backup is `Backup`'s, so a small handler does it: a signal sets a flag,
    and at the next step's end the backup is written and `Preempted` raised.
    A signal during validation or at an epoch's end waits for that epoch's
    own backup. A second signal stops at once (the previous backup stays).

    Use as a context manager around training: it installs the handlers
    (main thread only) and puts the previous ones back.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, backup=None):
        super().__init__()
        self.backup = backup
        self.received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.received is not None or not self._in_training:
            raise Preempted(signum)
        self.received = signum
        logging.warning("%s received: stopping after this step.", signal.Signals(signum).name)

    def __enter__(self):
        self._in_training = False
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def on_train_begin(self, logs=None):
        self._in_training = True

    def on_train_end(self, logs=None):
        self._in_training = False

    def _stop(self):
        if self.received is not None:
            if self.backup is not None:
                self.backup.save()
            raise Preempted(self.received)

    def on_train_batch_end(self, batch, logs=None):
        # Not on an epoch's last step: its state is saved after validation.
        # (`batch` is a call's last step, past the epoch's end for a shorter
        # last call: `training.execution`.)
        steps = self.params.get("steps")
        if steps is None or batch + 1 < steps:
            self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()  # placed after Backup: this epoch's backup is written
