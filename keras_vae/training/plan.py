"""What a run will do before it does it: its data, its steps and phases, its
model, and whether that model fits in memory."""

from __future__ import annotations

import math
import os

from absl import logging

from keras_vae import data as data_lib
from keras_vae import models
from keras_vae.config import UsageError, UserError
from keras_vae.models.loss_scaling import FusedAdam
from keras_vae.models.sequence_vae import SEPARATORS
from keras_vae.networks import build_networks, estimate_size
from keras_vae.sequence_networks import build_sequence_networks


def load_split(config, split, *, shuffle, repeat, drop_remainder=False):
    """The `split` of `config.dataset` as a batched `tf.data.Dataset` and its info:
    images, or `(images, labels)` for a conditional model (`config.condition`)."""
    return data_lib.load_for_config(
        config,
        split,
        shuffle=shuffle,
        repeat=repeat,
        drop_remainder=drop_remainder,
        with_condition=config.condition is not None,
    )


def condition_size(config):
    """The size of `config`'s condition vector (0 for an unconditional model)."""
    return 0 if config.condition is None else config.condition_spec[0]


def build_model(
    config, image_shape, steps_per_epoch, jit_compile=False, dataset_size=None, vocabulary=()
):
    """Builds and compiles the model (`config.model`, a registered variant) that
    `config` describes; for token sequences `image_shape` is `(max_length,)`
    and `vocabulary` the data's tokens by id (`DatasetInfo.vocabulary`).

    `steps_per_epoch` sets the beta schedule's length: a linear warm-up over
    `config.warmup_steps` (default a quarter of training) or
    `config.beta_cycles` cycles over the whole run. A variant takes its own
    settings from `config` (and `dataset_size`, the training split's size)
    through its `config_options`.
    """
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = config.warmup_steps
    if warmup_steps is None:
        warmup_steps = max(1, total_steps // 4)
    cycle_steps = max(1, math.ceil(total_steps / config.beta_cycles))  # Fu et al.: ceil(T/M)
    extra = {}
    try:
        if config.is_sequence:
            encoder, decoder = build_sequence_networks(config, image_shape[0], len(vocabulary))
            text = config.preset_name != "strokes"  # strokes are drawn, not read
            extra = {"vocabulary": tuple(vocabulary),
                     "separator": SEPARATORS[config.tokens] if text else None}
        else:
            encoder, decoder = build_networks(config, image_shape, condition_size(config))
    except ValueError as e:
        raise UsageError(f"Cannot build the {config.network} networks: {e}") from e
    cls = models.get(config.model)
    model = cls(
        encoder,
        decoder,
        likelihood=config.likelihood,
        beta=config.beta,
        beta_schedule=config.beta_schedule,
        warmup_steps=warmup_steps,
        cycle_steps=cycle_steps,
        cycle_ratio=config.cycle_ratio,
        free_bits=config.free_bits,
        gaussian_sigma=config.gaussian_sigma,
        seed=config.seed,
        **cls.config_options(config, dataset_size),
        **extra,
    )
    model.compile(optimizer=FusedAdam(config.learning_rate), jit_compile=jit_compile)
    return model


def steps_for(requested, num_examples, batch_size, what):
    available = num_examples // batch_size
    if available == 0:
        raise UsageError(
            f"--batch_size={batch_size} is larger than the {what} split "
            f"({num_examples} images): use a smaller --batch_size."
        )
    return available if requested is None else requested


def validation_steps_for(requested, num_examples, batch_size, whole_batches):
    """Validation batches per epoch: all of them, or `requested`, capped at
    what the (unrepeated) split holds, saying so."""
    batches = steps_for(None, num_examples, batch_size, "validation")
    if not whole_batches:
        batches = math.ceil(num_examples / batch_size)
    if requested is not None and requested > batches:
        logging.warning(
            "--validation_steps=%d is more than the validation split holds (%d images, %d "
            "batches of %d): validating on all %d batches.",
            requested, num_examples, batches, batch_size, batches,
        )
        return batches
    return batches if requested is None else requested


def _available_memory():
    """Bytes of memory available to a new allocation, or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(config, image_shape, available=None):
    """Refuses a model too large for this machine's memory, before building it.

    Building allocates every weight: a huge `latent_dim` or `image_size`
    would end in an out-of-memory kill (or a swap storm) instead of a line.
    The estimate counts float32 weights, gradients and two Adam moments per
    parameter (16 bytes) and each layer output of a batch twice (forward and
    backward, 8 bytes a value); it is a lower bound, so only a model that
    cannot fit is refused.

    Raises:
        UserError: the estimate exceeds the available memory.
    """
    available = _available_memory() if available is None else available
    if config.is_sequence:
        # Rough: the embeddings and the output layer dominate (V x width),
        # and the logits (T x V per sequence, kept for the softmax's gradient).
        vocab, length, units = config.vocab_size + 4, image_shape[0], config.rnn_units
        params = vocab * (2 * config.embedding_dim + units) + 12 * units * (units + 64)
        activations = 3 * length * vocab
    else:
        params, activations = _image_model_size(config, image_shape)
    need = 16 * params + 8 * activations * config.batch_size
    if available is not None and need > available:
        gib = 2.0**30
        raise UserError(
            f"This model does not fit in memory: {params:,} parameters and {activations:,} "
            f"activations per example (examples {'x'.join(map(str, image_shape))}, latent_dim "
            f"{config.latent_dim}) need about {need / gib:,.1f} GiB to train with batch "
            f"{config.batch_size}, and {available / gib:,.1f} GiB are available: use a "
            "smaller --latent_dim, --image_size, --widths, --dense_units, --vocab_size or "
            "--batch_size."
        )
    return need


def _image_model_size(config, image_shape):
    try:
        return estimate_size(
            image_shape, config.latent_dim, config.network, config.likelihood,
            config.widths, config.dense_units, config.per_channel_scale,
            condition_size(config),
        )
    except ValueError as e:
        raise UsageError(f"Cannot build the {config.network} networks: {e}") from e


def phases(start_step, steps_per_epoch, epochs):
    """The `fit` calls that take a run from `start_step` to its end.

    Returns:
        A list of `(initial_epoch, epochs, steps_per_epoch)`: first the rest
        of an interrupted epoch, then whole epochs.
    """
    epoch, within = divmod(start_step, steps_per_epoch)
    phases = []
    if within and epoch < epochs:
        phases.append((epoch, epoch + 1, steps_per_epoch - within))
        epoch += 1
    if epoch < epochs:
        phases.append((epoch, epochs, steps_per_epoch))
    return phases
