"""`models.loss_scaling._all_finite`: the step's finiteness check, a sum first and
the element-wise check only when the sum is not finite, gives the element-wise
answer in every case, the overflowing sums included."""

import numpy as np
import pytest
import tensorflow as tf


@pytest.mark.parametrize(
    "values, expected",
    [
        # All finite, small: the sum's fast answer.
        ([1.0, -2.0, 3.0], True),
        # All finite, but the sum overflows float32 (3e38 + 3e38 = inf): the
        # element-wise check decides, and every element is finite.
        ([3e38, 3e38, 1.0], True),
        ([np.inf, 1.0, 2.0], False),
        ([np.nan, 1.0, 2.0], False),
        # inf + -inf = nan: still not finite, whatever the order.
        ([np.inf, -np.inf, 0.0], False),
    ],
)
def test_all_finite_is_the_element_wise_check(values, expected):
    from keras_vae.models.loss_scaling import _all_finite

    grads = [tf.constant(values, "float32"), tf.ones((2, 3), "float64")]
    assert bool(_all_finite(tf.constant(1.0), grads)) is expected
    assert bool(tf.function(_all_finite)(tf.constant(1.0), grads)) is expected
    # A non-finite loss alone is enough.
    assert bool(_all_finite(tf.constant(np.nan), grads[1:])) is False


def test_all_finite_checks_an_embedding_gradient_dense():
    from keras_vae.models.loss_scaling import _all_finite

    # Two slices of row 0 add up to inf in the dense gradient; the slices'
    # own sum (3e38 + 3e38 - 3e38 - 3e38 in this order) would be finite.
    slices = tf.IndexedSlices(
        tf.constant([[3e38], [-3e38], [3e38], [-3e38]]),
        tf.constant([0, 1, 0, 1]),
        tf.constant([2, 1]),
    )
    assert bool(_all_finite(tf.constant(0.0), [slices])) is False
    finite = tf.IndexedSlices(tf.constant([[1.0], [2.0]]), tf.constant([0, 0]), tf.constant([2, 1]))
    assert bool(_all_finite(tf.constant(0.0), [finite])) is True
