"""Model variants, by name: the one seam a new variant plugs into.

    import keras_vae
    cls = keras_vae.models.get("vae")          # keras_vae.VAE
    model = cls(encoder, decoder, likelihood="bernoulli", beta=4.0)

A variant is a `VAE` subclass in `models/<name>.py` that overrides only what
differs (`compute_terms`, `objective`, how labels enter), registered here
with one line. Training, TensorBoard, evaluation, export and comparison talk
to the public methods of `VAE` (`encode`, `decode`, `sample`, `reconstruct`,
`elbo`, `log_weights`), never to its encoder or decoder.
"""

import keras

from keras_vae.models.ae import AE
from keras_vae.models.beta_tcvae import BetaTCVAE
from keras_vae.models.cvae import CVAE
from keras_vae.models.iaf import IAF
from keras_vae.models.iwae import IWAE
from keras_vae.models.schedules import beta_at
from keras_vae.models.sequence_vae import SequenceVAE
from keras_vae.models.vae import VAE

# Name (the `--model` flag, `Config.model`) -> class.
MODELS = {
    "vae": VAE,
    "ae": AE,
    "beta_tcvae": BetaTCVAE,
    "iwae": IWAE,
    "iaf": IAF,
    "cvae": CVAE,
    "sequence_vae": SequenceVAE,
}


def get(name):
    """The model class registered as `name`.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if name not in MODELS:
        raise ValueError(f"Expected a model in {sorted(MODELS)}. Received: model={name!r}")
    return MODELS[name]


def register(name, cls):
    """Registers `cls` (a `VAE` subclass) as `name`; returns `cls`.

    For a variant outside the package (e.g. a test's toy variant); the
    package's own variants are listed in `MODELS`. The class is also made
    Keras-serializable, so its `model.keras` loads as the variant.
    """
    if not (isinstance(cls, type) and issubclass(cls, VAE)):
        raise TypeError(f"Expected a VAE subclass. Received: cls={cls!r}")
    if name in MODELS and MODELS[name] is not cls:
        raise ValueError(f"A model is already registered as {name!r}: {MODELS[name]!r}")
    keras.saving.register_keras_serializable(package="keras_vae", name=cls.__name__)(cls)
    MODELS[name] = cls
    return cls


__all__ = [
    "AE", "CVAE", "IAF", "IWAE", "MODELS", "VAE", "BetaTCVAE", "SequenceVAE", "beta_at", "get",
    "register",
]
