"""Tests for keras_vae.models.schedules: the KL weight's schedules by hand."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_vae.models.schedules import beta_at


def np_(x):
    return np.asarray(ops.convert_to_numpy(x))


def test_beta_at_constant():
    for step in (0, 7, 10_000):
        np.testing.assert_allclose(np_(beta_at(step, 0.5)), 0.5)


def test_beta_at_linear_warmup():
    # beta * min(1, step / warmup): steps 0, 5, 10, 20 of a 10-step warm-up give
    # 0, 0.5, 1, 1 times beta (Bowman et al. 2016).
    got = [float(np_(beta_at(s, 2.0, "linear", warmup_steps=10))) for s in (0, 5, 10, 20)]
    np.testing.assert_allclose(got, [0.0, 1.0, 2.0, 2.0], rtol=1e-7)
    # No warm-up: beta from the first step.
    np.testing.assert_allclose(np_(beta_at(0, 2.0, "linear", warmup_steps=0)), 2.0)


def test_beta_at_cyclical():
    # Fu et al. 2019 with T/M = 10 steps per cycle, R = 0.5: tau = (t mod 10) / 10,
    # beta = tau / R while tau <= R, then 1. Steps 0, 2, 5, 7, 9 -> 0, 0.4, 1, 1, 1;
    # the next cycle restarts at 0: steps 10, 12, 15, 25 -> 0, 0.4, 1, 1.
    steps = [0, 2, 5, 7, 9, 10, 12, 15, 25]
    got = [float(np_(beta_at(s, 1.0, "cyclical", cycle_steps=10, cycle_ratio=0.5))) for s in steps]
    np.testing.assert_allclose(got, [0, 0.4, 1, 1, 1, 0, 0.4, 1, 1], rtol=1e-6, atol=1e-7)
    # R = 1: a saw-tooth, 4 steps per cycle, times beta = 3.
    saw = {"cycle_steps": 4, "cycle_ratio": 1.0}
    got = [float(np_(beta_at(s, 3.0, "cyclical", **saw))) for s in range(6)]
    np.testing.assert_allclose(got, [0, 0.75, 1.5, 2.25, 0, 0.75], rtol=1e-6)


def test_beta_at_tensor_step_and_unknown_schedule():
    step = keras.Variable(np.int64(5), dtype="int64")
    np.testing.assert_allclose(np_(beta_at(step, 1.0, "linear", warmup_steps=20)), 0.25)
    with pytest.raises(ValueError, match="Expected `schedule`"):
        beta_at(0, 1.0, "exponential")
