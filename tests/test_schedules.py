"""Tests for keras_vae.models.schedules: the KL weight's schedules by hand."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_vae import config as config_lib
from keras_vae.models.schedules import beta_at
from keras_vae.training import plan


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


def _planned_cycle(total_steps, cycles, steps=None):
    """`cycle_steps` and the betas at `steps` (default 0..T-1) of a run that
    `build_model` plans: one epoch of T = `total_steps` steps, `cycles`
    cycles, beta 1, R = 0.5."""
    config = config_lib.resolve(
        "shapes", network="mlp", latent_dim=2, dense_units=8, epochs=1,
        beta_schedule="cyclical", beta_cycles=cycles, cycle_ratio=0.5,
    )
    model = plan.build_model(config, (8, 8, 1), steps_per_epoch=total_steps)
    betas = [float(np_(beta_at(s, 1.0, "cyclical", cycle_steps=model.cycle_steps, cycle_ratio=0.5)))
             for s in (range(total_steps) if steps is None else steps)]
    return model.cycle_steps, np.asarray(betas)


def test_cyclical_cycle_length_is_ceil_of_steps_over_cycles():
    # Fu et al. 2019: cycle length ceil(T/M). T = 10 steps, M = 4 cycles:
    # ceil(2.5) = 3 steps, beta = min(1, (t mod 3) / 1.5) for t = 0..9:
    #   0, 2/3, 1 | 0, 2/3, 1 | 0, 2/3, 1 | 0
    # four cycles, the last cut short (t = 9, cycle 9 // 3 = 3, the 4th).
    # The old floor(2.5) = 2 gave 0, 1 | 0, 1 | 0, 1 | 0, 1 | 0, 1: five
    # cycles, beta back to 0 at step 8 (cycle 8 // 2 = 4, a 5th).
    cycle, betas = _planned_cycle(10, 4)
    assert cycle == 3
    assert (10 - 1) // cycle == 3  # the last step is in the 4th cycle
    np.testing.assert_allclose(betas, [0, 2 / 3, 1] * 3 + [0], rtol=1e-6, atol=1e-7)
    # T = 1000, M = 4 divides: 250 either way; the 4th cycle ends at the last step
    # at beta (t = 999: phase 249 >= 125).
    cycle, betas = _planned_cycle(1000, 4, steps=[0, 125, 249, 250, 500, 750, 874, 999])
    assert cycle == 250
    np.testing.assert_allclose(betas, [0, 1, 1, 0, 0, 0, 124 / 125, 1], rtol=1e-6, atol=1e-7)


def test_beta_at_tensor_step_and_unknown_schedule():
    step = keras.Variable(np.int64(5), dtype="int64")
    np.testing.assert_allclose(np_(beta_at(step, 1.0, "linear", warmup_steps=20)), 0.25)
    with pytest.raises(ValueError, match="Expected `schedule`"):
        beta_at(0, 1.0, "exponential")
