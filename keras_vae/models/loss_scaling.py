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

    def compile_from_config(self, config):
        # Keras skips a custom `compile` on load without this (the saved
        # optimizer is already the LossScaleOptimizer).
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and not self.optimizer.built:  # LossScaleOptimizer.build: not idempotent
            self.optimizer.build(self.trainable_variables)
