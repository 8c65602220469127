"""What a run's fault tolerance asks of a model, apart from its maths:
the finiteness check before every save and the seed generators' states,
which `save_weights` does not keep and the backup does."""

from __future__ import annotations

import numpy as np
from keras import ops


class RunState:
    """Mixin of `VAE`: needs `variables`, `optimizer`, `sampling` and
    `prior_seed_generator`."""

    def nonfinite_variables(self):
        """Names of the model's and its optimizer's variables holding a NaN or Inf.

        Empty for a healthy model. Nothing that holds a non-finite value is
        ever saved (training checks before every save, export before export).
        """
        variables = list(self.variables)
        optimizer = getattr(self, "optimizer", None)  # unset before `compile`
        if optimizer is not None and optimizer.built:
            variables += list(optimizer.variables)
        bad = []
        for variable in variables:
            value = ops.convert_to_numpy(variable.value)
            if value.dtype.kind in "fc" and not np.isfinite(value).all():
                bad.append(variable.path)
        return bad

    def rng_state(self):
        """The seed generators' states (not in `save_weights`; the backup keeps them)."""
        return {
            "sampling": ops.convert_to_numpy(self.sampling.seed_generator.state).tolist(),
            "prior": ops.convert_to_numpy(self.prior_seed_generator.state).tolist(),
        }

    def set_rng_state(self, state):
        """Restores what `rng_state` returned."""
        self.sampling.seed_generator.state.assign(state["sampling"])
        self.prior_seed_generator.state.assign(state["prior"])
