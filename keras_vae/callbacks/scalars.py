"""`StepScalars`: training scalars every N steps, on the model's global step.

Keras' `TensorBoard(update_freq=N)` counts batches from 0 in every `fit`
call, and a run that resumes calls `fit` more than once
(`keras_vae.training.phases`), so its step axis would start over. This
callback writes at the model's own step counter instead (`step_of`: the
`kl_step` that the backup saves), so after a kill and a resume the points
continue where the backup left off.

Each point `step/<key>` (`step/loss`, `step/elbo`, ... one per log key, the
names of Keras' `epoch_<key>` tags) is the mean over the steps since the
previous point, not a running mean since the epoch began. It is exact: a
tracker holds `total` (sum of weighted values) and `count` (sum of weights)
since the epoch began, so the mean over steps (t0, t] is
`(total_t - total_t0) / (count_t - count_t0)`, which with equal batches is
`(t * m_t - t0 * m_t0) / (t - t0)` in the running means m, and which a
skipped (non-finite) step, weighted 0 by `VAE._update_trackers`, leaves out.
A window that spans an epoch's end adds the previous epoch's tail (read at
its last step, before validation resets the trackers).

Every point is flushed as it is written. A resumed run repeats the steps
after its backup; if the killed process had already written points past that
step, the event files hold both. TensorBoard's default data server (the
`--load_fast` one) shows the resumed run's: a point at step s evicts the
earlier file's points at steps >= s of the same tag (seen on TensorBoard
2.21); the older Python loader (`--load_fast=false`) shows both.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_vae.callbacks.guards import step_of

PREFIX = "step/"


class StepScalars(keras.callbacks.Callback):
    """Writes the mean of every training log over the last `every` steps.

    After each training step whose global step (`step_of(model)`) reaches
    a multiple of `every`, writes `step/<key>` at that step for every log
    key of the model: the mean over the steps since the previous point of
    this callback (or since the start of this process's training). Logs
    backed by a mean tracker (`keras.metrics.Mean` named as the key, the
    model's `metrics`) are averaged exactly from the tracker's total and
    count; any other key from its running mean and the step count.

    Args:
        log_dir: folder of the event file (`train_and_evaluate` uses
            `workdir/tensorboard/train`, next to Keras' `epoch_<key>` scalars).
        every: steps between points, >= 1.
        exact: read the trackers' totals and counts; False uses the logs'
            running means only (exact with equal batches and no skipped
            step). False under MultiWorkerMirroredStrategy, where reading a
            tracker is a collective all-reduce that the other workers, which
            run no such callback, would never join.
        chief: only the chief writes; False makes the callback a no-op.
    """

    def __init__(self, log_dir, every, exact=True, chief=True):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"Expected `every` a positive int. Received: every={every!r}")
        self.log_dir = log_dir
        self.every = int(every)
        self.exact = bool(exact)
        self.chief = bool(chief)
        self._writer = None
        self._last_step = None  # global step of the previous batch end
        self._base = {}  # key -> (sum, weight) since the epoch began, at the last point
        self._carry = {}  # key -> (sum, weight) of earlier epochs' tails since the last point

    # -- the window ------------------------------------------------------------

    def _state(self, batch, logs):
        """`{key: (sum, weight)}` of the steps since this epoch began in this `fit`."""
        state = {}
        for metric in self.model.metrics if self.exact else ():
            if isinstance(metric, keras.metrics.Mean):
                # Sum-aggregated, on-read variables: their read is the sum over
                # replicas, so the window is the global batch's.
                total = float(keras.ops.convert_to_numpy(metric.total))
                count = float(keras.ops.convert_to_numpy(metric.count))
                state[metric.name] = (total, count)
        steps = batch + 1  # batches since the epoch began in this `fit`
        for key, value in (logs or {}).items():
            if key not in state and np.ndim(value) == 0:
                state[key] = (steps * float(value), float(steps))
        return state

    @staticmethod
    def _add(into, state, base, sign=1.0):
        for key, (total, weight) in state.items():
            base_total, base_weight = base.get(key, (0.0, 0.0))
            old_total, old_weight = into.get(key, (0.0, 0.0))
            into[key] = (
                old_total + sign * (total - base_total),
                old_weight + sign * (weight - base_weight),
            )

    def _write(self, step, window):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=step):
            for key, (total, weight) in sorted(window.items()):
                if weight > 0:  # else every step of the window was skipped
                    tf.summary.scalar(
                        PREFIX + key,
                        total / weight,
                        description=f"Mean of the training `{key}` over the steps since the "
                        f"previous point (every {self.every} steps; x axis: the model's global "
                        "step).",
                    )
        # On disk at once: a run stopped by a signal or a kill skips
        # `on_train_end`, and its resume continues from what is written.
        self._writer.flush()

    # -- Keras hooks -------------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.chief:
            self._last_step = step_of(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._base = {}  # the trackers start again from zero

    def on_train_batch_end(self, batch, logs=None):
        if not self.chief:
            return
        step = step_of(self.model)
        # Crossing a multiple, not landing on one: `steps_per_execution`
        # reports several steps at once.
        due = step // self.every > self._last_step // self.every
        steps = self.params.get("steps")
        last_of_epoch = steps is None or batch + 1 >= steps
        self._last_step = step
        if not (due or last_of_epoch):
            return
        state = self._state(batch, logs)
        if due:
            window = dict(self._carry)
            self._add(window, state, self._base)
            self._write(step, window)
            self._carry, self._base = {}, state
        if last_of_epoch:
            # Validation resets the trackers before the next epoch: keep this
            # epoch's tail since the last point.
            self._add(self._carry, state, self._base)
            self._base = state

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
