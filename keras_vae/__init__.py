"""keras_vae: Variational Autoencoders for Keras 3 on TensorFlow.

Public API (DESIGN.md section 3)::

    import keras_vae
    enc = keras_vae.build_encoder(image_shape, latent_dim, network="conv")
    dec = keras_vae.build_decoder(image_shape, latent_dim, network="conv",
                                  likelihood="bernoulli")
    vae = keras_vae.VAE(enc, dec, likelihood="bernoulli", beta=1.0)

    # token sequences (Bowman et al. 2016): ids (batch, T), 0 PAD, 3 EOS
    enc = keras_vae.build_sequence_encoder(max_length, vocab_size, latent_dim)
    dec = keras_vae.SequenceDecoder(vocab_size, latent_dim)
    seq = keras_vae.SequenceVAE(enc, dec, word_dropout=0.25, beta_schedule="linear")
"""

from keras_vae import _quiet_import

_quiet_import.import_tensorflow()

from keras_vae import models  # noqa: E402
from keras_vae.layers import LearnedScale, Sampling, SoftClip  # noqa: E402
from keras_vae.models import VAE, SequenceVAE, beta_at  # noqa: E402
from keras_vae.networks import build_decoder, build_encoder  # noqa: E402
from keras_vae.sequence_networks import SequenceDecoder, build_sequence_encoder  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "SequenceVAE",
    "SequenceDecoder",
    "build_sequence_encoder",
    "models",
    "LearnedScale",
    "Sampling",
    "SoftClip",
    "beta_at",
    "build_decoder",
    "build_encoder",
]
