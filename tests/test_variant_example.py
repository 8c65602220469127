"""How a model variant plugs in (README, "Architecture"): one class, one registry
line, and training, evaluation and export work for it unchanged.

The toy variant is Burgess et al.'s capacity-controlled beta-VAE ("Understanding
disentangling in beta-VAE", 2018): loss = reconstruction + gamma * |KL - C|. It
overrides `objective` only.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

import keras_vae
from keras_vae import config as config_lib
from keras_vae import evaluation, models, training


class CapacityVAE(keras_vae.VAE):
    """beta-VAE with a KL target: the KL is pulled towards `capacity` nats."""

    gamma, capacity = 10.0, 5.0

    def objective(self, terms, beta):
        loss, logs = super().objective(terms, beta)
        kl_term = self.gamma * ops.abs(logs["kl"] - self.capacity)
        return logs["reconstruction"] + kl_term, logs


@pytest.fixture
def registered():
    models.register("capacity_vae", CapacityVAE)
    yield
    del models.MODELS["capacity_vae"]  # keep the registry as the package ships it


def test_a_variant_trains_evaluates_and_exports(tmp_path, registered):
    config = config_lib.resolve(
        "shapes", model="capacity_vae", epochs=1, steps_per_epoch=3, validation_steps=1,
        eval_steps=1, batch_size=8, latent_dim=2, widths=(8, 8, 16, 16), dense_units=16,
    )
    results = training.train_and_evaluate(config, str(tmp_path), verbose=0)
    assert results["steps"] == 3 and np.isfinite(results["elbo"])
    model = keras.models.load_model(tmp_path / "model.keras")
    assert type(model) is CapacityVAE  # saved and loaded as the variant
    images = np.zeros((4, 64, 64, 1), np.float32)
    metrics = evaluation.evaluate_model(
        model, tf.data.Dataset.from_tensors(images), iwae_samples=5, progress=False
    )
    assert metrics["iwae_nll"] <= -metrics["elbo"] + 1e-3  # IWAE, K=5: a tighter bound
    served = tf.saved_model.load(str(tmp_path / "export"))  # plain TensorFlow
    assert served.reconstruct(images)["images"].shape == (4, 64, 64, 1)
