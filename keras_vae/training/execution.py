"""Several training steps per call of `fit`'s train function, with exact step counts.

`fit` runs its Python work and every batch callback once per call of the
train function; a small model pays for that at each step (on 2 CPU cores
the mnist MLP trained at 0.65-0.85x the speed of a bare `tf.GradientTape`
loop). `compile(steps_per_execution=n)` runs n steps per call, but Keras
rounds each epoch up to whole calls (with repeated data the epoch then
runs too many steps), and the presets' epochs are 859, 703 and 2,543
steps: no n > 1 divides them. `StepsPerCall` keeps the count exact: each
call runs Keras' own train function built for its number of steps, the
epoch's last call one for the steps left. The steps run through the same
while-loop graph whatever their grouping, so a run ends with the weights of
one step per call, bit for bit (tests/test_fast_paths.py).

Callbacks see a call's last step: the run's own (`Backup`, `StepScalars`,
the guards) act when a call crosses their step, on the model's global
step. A caller's callback with a batch hook gets every step (one step per
call), as in a plain `fit`.
"""

from __future__ import annotations

import math

import keras

# Steps per call, at most: a signal or a non-finite step is acted on at most
# this many steps late.
MAX_STEPS_PER_EXECUTION = 8
# Shorter runs keep one step per call: the train function for several steps
# (and one for an epoch's last, shorter call) costs ~1.5 s more to trace
# (2 cores), more than it saves in a few hundred steps.
MIN_RUN_STEPS = 1000


def steps_per_execution(*intervals, limit=None):
    """The largest n <= `limit` dividing every one of `intervals` (the step
    intervals that callbacks act on), so that with an epoch length that n
    divides, every backup and logged point falls on a call's end."""
    limit = MAX_STEPS_PER_EXECUTION if limit is None else limit
    common = math.gcd(*(int(i) for i in intervals))  # gcd(n, 0) = n
    return max(n for n in range(1, int(limit) + 1) if common == 0 or common % n == 0)


def run_schedule(config, steps_per_epoch, limit=None):
    """`(steps per call, logging interval)` of a run of `config`: points every
    `config.log_every_steps`, else about 100 per run as a multiple of the
    steps per call (48 apart on shapes); backups every `backup_every_steps`.
    One step per call for a run shorter than `MIN_RUN_STEPS`."""
    if config.epochs * steps_per_epoch < MIN_RUN_STEPS:
        limit = 1
    every = config.log_every_steps
    if every is None:
        calls = steps_per_execution(config.backup_every_steps, limit=limit)
        every = max(calls, config.epochs * steps_per_epoch // 100 // calls * calls)
    return steps_per_execution(config.backup_every_steps, every, limit=limit), every


def acts_on_batches(callbacks):
    """Whether any of `callbacks` overrides a training batch hook."""
    base = keras.callbacks.Callback
    hooks = ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end")
    return any(getattr(type(c), h) is not getattr(base, h) for c in callbacks for h in hooks)


class StepsPerCall(keras.callbacks.Callback):
    """Runs `model.fit` `steps` steps per call of its train function, the
    epoch's last call the steps left (`fit` asks for ceil(epoch / steps)
    calls). Pass it among `fit`'s callbacks after `install`."""

    def __init__(self, steps):
        super().__init__()
        self.steps = int(steps)
        self._left = self._per_call = self.steps

    def install(self, model):
        """Sets `model` up for the next `fit`: one call of the train function
        per `steps` steps (callbacks run once a call), each call Keras' own
        train function for that many steps. Call it before each `fit`."""
        model.steps_per_execution = self.steps  # what `fit` reads as it starts
        if getattr(model.train_function, "steps_per_call", None) is self:
            return
        functions = {}  # steps per call -> Keras' train function

        def train_function(iterator):
            steps = min(self._left, self._per_call)
            # Keras reads `steps_per_execution` as it builds and traces one.
            model.steps_per_execution, caller = steps, model.train_function
            try:
                if steps not in functions:
                    model.train_function = None
                    model.make_train_function()
                    functions[steps] = model.train_function
                return functions[steps](iterator)
            finally:
                model.train_function, model.steps_per_execution = caller, 1

        train_function.steps_per_call = self
        model.test_function = None
        model.train_function = train_function

    def on_train_begin(self, logs=None):
        # The steps per call `fit`'s epoch iterator took; then 1 for anything
        # built later (a validation iterator, the test function).
        self._per_call = self.model.steps_per_execution
        self.model.steps_per_execution = 1

    def on_train_batch_begin(self, batch, logs=None):
        steps = self.params.get("steps")  # `batch`: the call's first step
        self._left = self.steps if steps is None else steps - batch


class ClampedProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, which would count the epoch's last, shorter call
    as a whole one (e.g. 864/859, or 8/2 for an evaluation of 2 steps)."""

    def _last(self, batch):
        # `target`: the epoch's steps (ProgbarLogger keeps no `params`).
        return batch if self.target is None else min(batch, self.target - 1)

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(self._last(batch), logs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(self._last(batch), logs)
