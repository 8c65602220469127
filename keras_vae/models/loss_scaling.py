"""The optimizer a model trains with: every update goes through a
`LossScaleOptimizer`, which skips an update whose gradients are not finite
(in float32 too) and, under `mixed_float16`, scales the loss."""

from __future__ import annotations

import keras


class LossScaling:
    """Mixin of `VAE` (before `keras.Model`): `compile` wraps the optimizer."""

    def compile(self, optimizer="adam", **kwargs):
        """`keras.Model.compile`, with the optimizer in a `LossScaleOptimizer`.

        The wrapper skips any update whose gradients are not finite, which
        guards float32 runs too (scale 1, never grown: exact). Under
        `mixed_float16` it starts at 2**8 instead of Keras' 2**15, which
        skipped the first ~5 steps of every run (float16 overflow).
        """
        optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            if self.dtype_policy.name == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**8)
            else:
                optimizer = keras.optimizers.LossScaleOptimizer(
                    optimizer, initial_scale=1.0, dynamic_growth_steps=2**62
                )
        super().compile(optimizer=optimizer, **kwargs)

    def apply_if_finite(self, loss, grads):
        """Applies `grads` (of the scaled loss) to the trainable weights unless
        the loss or a gradient is not finite; returns whether it did (a bool
        tensor).

        Unscaled (float32, bfloat16) and on one device, the update is Adam's
        in a `cond` on one finiteness check: the LossScaleOptimizer would
        check the gradients a second time and multiply them by its scale of
        1 (the same update, ~10% of an mnist MLP step on 2 CPU cores). Under
        `mixed_float16` or a distribution strategy it goes through the
        LossScaleOptimizer (scaling; its cross-replica `cond`).
        """
        import tensorflow as tf

        finite = _all_finite(loss, [grad for grad in grads if grad is not None])
        inner = getattr(self.optimizer, "inner_optimizer", None)
        scaled = self.dtype_policy.name == "mixed_float16"
        if inner is None or scaled or tf.distribute.has_strategy():
            self.optimizer.apply(grads, self.trainable_weights)
            return finite

        if not self.optimizer.built:  # as its `apply` would: its own variables too
            with keras.name_scope(self.optimizer.name, caller=self.optimizer):
                self.optimizer.build(self.trainable_weights)
            self.optimizer.built = True

        def apply():
            inner.apply(grads, self.trainable_weights)
            return tf.constant(True)

        tf.cond(finite, apply, lambda: tf.constant(False))
        return finite

    def compile_from_config(self, config):
        # Keras skips a custom `compile` on load without this (the saved
        # optimizer is already the LossScaleOptimizer).
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and not self.optimizer.built:  # LossScaleOptimizer.build: not idempotent
            self.optimizer.build(self.trainable_variables)


def _all_finite(loss, grads):
    """Whether `loss` and every element of `grads` are finite, a bool tensor.

    First one sum per tensor, vectorized: a NaN or an Inf anywhere makes
    the total NaN or Inf whatever the order of the additions. Only when the
    total is not finite does the element-wise check run and decide (a sum
    of finite values can overflow). The same answer as checking every
    element, without the unvectorized `IsFinite` pass over the gradients
    at every step (0.3 ms of a 7 ms mnist MLP step on 2 CPU cores)."""
    import tensorflow as tf

    # An embedding's IndexedSlices checked dense, as before (the sum of its
    # slices could stay finite where the dense rows they add up to overflow).
    grads = [tf.convert_to_tensor(grad) for grad in grads]
    total = tf.add_n([tf.cast(tf.reduce_sum(t), "float32") for t in [loss, *grads]])

    def every_element():
        finite = tf.math.is_finite(loss)
        for grad in grads:
            finite = tf.logical_and(finite, tf.reduce_all(tf.math.is_finite(grad)))
        return finite

    return tf.cond(tf.math.is_finite(total), lambda: tf.constant(True), every_element)


@keras.saving.register_keras_serializable(package="keras_vae")
class FusedAdam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose update of a dense float variable is one
    fused kernel on TensorFlow (`ResourceApplyAdam`: the same formula,
    alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t), m += (g - m)(1 - beta_1),
    v += (g^2 - v)(1 - beta_2), w -= alpha m / (sqrt(v) + epsilon)) instead of
    about fifteen element-wise ops, each a pass over the weights (on the
    mnist MLP, 1.1M weights, a third of a step on 2 CPU cores)."""

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # One step's constants (the betas' powers, ...) are made once per
        # dtype and reused by every variable's update, not remade per
        # variable: ~7 scalar ops each, on the mnist MLP's 14 variables a
        # hundred ops of dispatch per step.
        self._step_constants = {}
        try:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_constants = None

    def _constants(self, dtype, learning_rate):
        """`(beta1_power, beta2_power, lr, beta1, beta2, epsilon)` in `dtype`."""
        import tensorflow as tf

        cache = getattr(self, "_step_constants", None)
        if tf.distribute.has_strategy():  # per replica device, as Adam makes them
            cache = None
        if cache is not None and dtype in cache:
            return cache[dtype]
        step = tf.cast(self.iterations + 1, dtype)
        # The powers as Adam forms them (beta via a float32 tensor); the betas
        # and epsilon from the Python floats (`tf.cast(0.9, float64)` would
        # round 0.9 to float32 first).
        constants = (
            tf.pow(tf.cast(self.beta_1, dtype), step),
            tf.pow(tf.cast(self.beta_2, dtype), step),
            tf.cast(learning_rate, dtype),
            tf.constant(self.beta_1, dtype),
            tf.constant(self.beta_2, dtype),
            tf.constant(self.epsilon, dtype),
        )
        if cache is not None:
            cache[dtype] = constants
        return constants

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        # An embedding's gradient (IndexedSlices) keeps Adam's own update:
        # Keras squares its slices before summing repeated rows, so v differs
        # from the square of the dense gradient that the kernel would take.
        sparse = isinstance(gradient, tf.IndexedSlices)
        if sparse or self.amsgrad or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        beta1_power, beta2_power, lr, beta1, beta2, epsilon = self._constants(dtype, learning_rate)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=beta1_power,
            beta2_power=beta2_power,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            epsilon=epsilon,
            grad=tf.cast(gradient, dtype),
        )
