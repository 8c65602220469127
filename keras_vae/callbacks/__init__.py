"""Keras callbacks and TensorBoard writers of a run.

What `train_and_evaluate` writes under `workdir/tensorboard`, and where:

- `train` and `validation`, Scalars: `epoch_<key>` per epoch (`loss`,
  `elbo`, ...), Keras' `TensorBoard`.
- `train`, Scalars: `step/<key>`, the mean over the last N training steps
  at the model's global step (`StepScalars`).
- `validation`, Images and Histograms: `images/...` grids and `latent/...`
  (`LatentSummaries`).
- `validation`, Projector: the latent means of 1,024 held-out images with
  their sprite and labels (`write_held_out_projector`).
- the folder itself, HParams: the config and the metric list at the start
  (`write_hparams`), `test/...` scalars at the end (`write_final_metrics`).

- `validation`, Images or Text: a sequence model's `sequences/...`
  (`SequenceSummaries`) instead of the image grids.

Modules: `images` (LatentSummaries), `sequences` (SequenceSummaries),
`scalars` (StepScalars), `projector`, `hparams`, and `guards`
(NonFiniteGuard, PreemptionGuard: stop a run before it keeps a state not
worth keeping).
"""

from keras_vae.callbacks.guards import (
    Diverged,
    NonFiniteGuard,
    Preempted,
    PreemptionGuard,
    check_finite,
    step_of,
)
from keras_vae.callbacks.hparams import (
    final_metrics,
    hparam_values,
    write_final_metrics,
    write_hparams,
)
from keras_vae.callbacks.images import MAX_KL_SCALARS, LatentSummaries
from keras_vae.callbacks.projector import (
    encode_means,
    metadata_columns,
    sprite_atlas,
    write_held_out_projector,
    write_latent_projector,
    write_projector,
)
from keras_vae.callbacks.scalars import StepScalars
from keras_vae.callbacks.sequences import SequenceSummaries

__all__ = [
    "MAX_KL_SCALARS",
    "Diverged",
    "LatentSummaries",
    "SequenceSummaries",
    "NonFiniteGuard",
    "Preempted",
    "PreemptionGuard",
    "StepScalars",
    "check_finite",
    "encode_means",
    "final_metrics",
    "hparam_values",
    "metadata_columns",
    "sprite_atlas",
    "step_of",
    "write_final_metrics",
    "write_held_out_projector",
    "write_hparams",
    "write_latent_projector",
    "write_projector",
]
