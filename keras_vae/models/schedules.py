"""The KL weight's schedules (constant, linear warm-up, cyclical), computed in
the graph from the model's saved step counter, so they survive resume,
`steps_per_execution` and tf.distribute unchanged; and the metric that
reports the current value."""

from __future__ import annotations

import keras
from keras import ops

BETA_SCHEDULES = ("constant", "linear", "cyclical")


def beta_at(step, beta, schedule="constant", warmup_steps=0, cycle_steps=0, cycle_ratio=0.5):
    """The KL weight at a training step.

    - `constant`: beta.
    - `linear` (warm-up, Bowman et al. 2016): beta * min(1, step / warmup_steps).
    - `cyclical` (Fu et al. 2019): in each cycle of `cycle_steps`, rises
      linearly from 0 to beta over the first `cycle_ratio` of the cycle, then
      stays at beta: beta * min(1, (step mod cycle_steps) / (cycle_ratio * cycle_steps)).
      For M cycles over T steps, `cycle_steps` = ceil(T / M), as in the
      paper (`training.plan.build_model`): floor(T / M) would start an
      (M+1)-th cycle, at beta ~ 0, near the end of training whenever M does
      not divide T; with ceil the M-th cycle is the last, cut short.

    Args:
        step: scalar tensor or int, 0 for the first training step.
        beta, schedule, warmup_steps, cycle_steps, cycle_ratio: as in `VAE`.

    Returns:
        float32 scalar.
    """
    step = ops.cast(step, "float32")
    beta = ops.cast(beta, "float32")
    if schedule == "constant":
        return beta
    if schedule == "linear":
        if warmup_steps <= 0:
            return beta
        return beta * ops.minimum(1.0, step / float(warmup_steps))
    if schedule == "cyclical":
        phase = ops.mod(step, float(cycle_steps))
        return beta * ops.minimum(1.0, phase / (cycle_ratio * cycle_steps))
    raise ValueError(f"Expected `schedule` in {BETA_SCHEDULES}. Received: schedule={schedule!r}")


class LastValue(keras.metrics.Metric):
    """Reports the last value it was given (for the current beta)."""

    def __init__(self, name, **kwargs):
        super().__init__(name=name, **kwargs)
        self.value = self.add_variable(
            shape=(), initializer="zeros", name="value", aggregation="only_first_replica"
        )

    def update_state(self, value):
        self.value.assign(ops.cast(value, self.value.dtype))

    def result(self):
        # A copy: returning the variable itself would let the validation pass
        # overwrite the training value already handed to the epoch logs.
        return ops.copy(self.value)

    def reset_state(self):
        # Keep the value across epochs: beta is state, not a running mean.
        pass
