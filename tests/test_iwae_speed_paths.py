"""Tests of the IWAE bound's fast path (issue 16): `iwae_log_likelihood` runs each
chunk as one compiled graph, encodes a batch once, broadcasts the images
against the K codes instead of tiling them and folds the chunks into a (B,)
running log-sum-exp. Each path is checked against the eager reference (the
public `log_weights` on the same noise, numpy's logsumexp in float64), for
every kind of model it serves."""

import math

import keras
import numpy as np
import pytest
from scipy.special import logsumexp

import keras_vae
from keras_vae import evaluation
from keras_vae.data.tokens import EOS, vocabulary_with_specials
from keras_vae.evaluation import bounds
from keras_vae.models.sequence_vae import SequenceVAE
from keras_vae.sequence_networks import SequenceDecoder, build_sequence_encoder

SHAPE = (8, 8, 1)
LATENT = 3
CLASSES = 3


def np_(x):
    return keras.ops.convert_to_numpy(x)


def make(name, **options):
    """A tiny image model of variant `name` (MLP 16, z 3), weights fixed."""
    keras.utils.set_random_seed(1)
    nets = dict(network="mlp", widths=(16,), condition_size=options.get("condition_size", 0))
    encoder = keras_vae.build_encoder(SHAPE, LATENT, **nets)
    decoder = keras_vae.build_decoder(SHAPE, LATENT, **nets)
    return keras_vae.models.get(name)(encoder, decoder, seed=0, **options)


def make_sequence_vae():
    keras.utils.set_random_seed(1)
    vocabulary = vocabulary_with_specials(tuple("abcdefgh"))
    encoder = build_sequence_encoder(8, len(vocabulary), LATENT, units=16, embedding_dim=8)
    decoder = SequenceDecoder(len(vocabulary), LATENT, units=16, embedding_dim=8, name="decoder")
    decoder.build()
    return SequenceVAE(encoder, decoder, vocabulary=vocabulary, seed=0)


def images(n=6, seed=0):
    return (np.random.default_rng(seed).random((n, *SHAPE)) < 0.4).astype("float32")


def tokens(n=6, seed=0):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 8), "int32")
    for i in range(n):
        size = int(rng.integers(2, 8))
        x[i, :size] = rng.integers(4, 12, size)
        x[i, size] = EOS
    return x


def reference(model, x, num_samples, chunk_size, seed, labels=None):
    """The bound as the eager loop computed it before: `model.log_weights` per
    chunk with the seed's generator (the same draws), logsumexp in float64."""
    generator = keras.random.SeedGenerator(seed)
    given = {} if labels is None else {"labels": labels}
    log_w = np.concatenate(
        [
            np_(model.log_weights(x, min(chunk_size, num_samples - s), seed=generator, **given))
            for s in range(0, num_samples, chunk_size)
        ],
        axis=1,
    ).astype(np.float64)  # (B, K)
    return logsumexp(log_w, axis=1) - math.log(num_samples)


# Each variant with its path: vae, iwae, cvae and sequence_vae encode once
# (`VAE.log_weights`); the IAF has its own `log_weights` (its flow posterior),
# compiled as it is. 11 samples in chunks of 4: two full chunks and one of 3.
@pytest.mark.parametrize(
    "name, options, once",
    [
        ("vae", {}, True),
        ("iwae", {"k": 2}, True),
        ("cvae", {"condition_size": CLASSES}, True),
        ("iaf", {"flow_steps": 2, "flow_units": 8}, False),
        ("sequence_vae", {}, True),
    ],
)
def test_compiled_bound_equals_the_eager_reference(name, options, once):
    model = make_sequence_vae() if name == "sequence_vae" else make(name, **options)
    x = tokens() if name == "sequence_vae" else images()
    labels = np.arange(6) % CLASSES if name == "cvae" else None
    assert bounds._encodes_once(model) is once
    given = {} if labels is None else {"labels": labels}
    got = np_(evaluation.iwae_log_likelihood(model, x, 11, chunk_size=4, seed=3, **given))
    expected = reference(model, x, 11, 4, 3, labels)
    assert got.shape == (6,) and got.dtype == np.float32
    # The same noise and the same float32 log-weights (bit-identical on the
    # MNIST preset network, benchmarks/iwae_eval.py): only the float32
    # running logsumexp against float64 remains, log w ~ -10 to -60 nats
    # here, whose float32 spacing is up to 4e-6. Seen: <= 1.5e-6.
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-5)


def test_cvae_labels_enter_the_compiled_bound():
    model = make("cvae", condition_size=CLASSES)
    x, y = images(), np.arange(6) % CLASSES
    right = np_(evaluation.iwae_log_likelihood(model, x, 8, chunk_size=3, seed=1, labels=y))
    other = np_(
        evaluation.iwae_log_likelihood(model, x, 8, chunk_size=3, seed=1, labels=(y + 1) % 3)
    )
    # The same noise, other labels: another bound (the labels are not
    # captured as constants by the first trace). Seen: up to 0.68 nats.
    assert np.max(np.abs(right - other)) > 1e-3


def test_seed_semantics_are_kept():
    model, x = make("vae"), images()
    a = np_(evaluation.iwae_log_likelihood(model, x, 10, chunk_size=4, seed=7))
    np.testing.assert_array_equal(a, np_(evaluation.iwae_log_likelihood(model, x, 10, 4, seed=7)))
    # One generator across calls: fresh noise each call, the draws an eager
    # loop over `log_weights` with that generator makes (first, then second).
    gen = keras.random.SeedGenerator(7)
    first = np_(evaluation.iwae_log_likelihood(model, x, 10, chunk_size=4, seed=gen))
    second = np_(evaluation.iwae_log_likelihood(model, x, 10, chunk_size=4, seed=gen))
    assert np.min(np.abs(first - second)) > 1e-6
    np.testing.assert_array_equal(first, a)  # SeedGenerator(7) starts as seed=7 does
    ref_gen = keras.random.SeedGenerator(7)
    for got in (first, second):
        log_w = np.concatenate(
            [np_(model.log_weights(x, n, seed=ref_gen)) for n in (4, 4, 2)], 1
        ).astype(np.float64)
        np.testing.assert_allclose(got, logsumexp(log_w, 1) - math.log(10), atol=5e-5)
    # None: a fresh random stream per call.
    none = [np_(evaluation.iwae_log_likelihood(model, x, 10, chunk_size=4)) for _ in "ab"]
    assert np.min(np.abs(none[0] - none[1])) > 1e-6


def test_chunks_fold_to_the_one_big_chunk_value():
    # The running (max, sum) state over chunks of 7, 7, 6 equals one chunk
    # of all 20 log-weights, and the float64 logsumexp: the folding is exact
    # up to float32 rounding (seen: 3.8e-6 and 1.8e-6 of values ~ -41 nats).
    model, x = make("vae"), images()
    mean, log_var = (keras.ops.cast(t, "float32") for t in model.encode(x))
    eps = np.random.default_rng(0).standard_normal((20, 6, LATENT)).astype("float32")
    empty = (np.full(6, -np.inf, "float32"), np.zeros(6, "float32"))
    whole = bounds._CHUNK_GIVEN_POSTERIOR(model, x, mean, log_var, eps, *empty, None)
    state = empty
    for s in range(0, 20, 7):
        state = bounds._CHUNK_GIVEN_POSTERIOR(model, x, mean, log_var, eps[s : s + 7], *state, None)
    results = [np_(m + keras.ops.log(t)) for m, t in (whole, state)]
    log_w = np_(model.log_weights(x, 20, eps=eps)).astype(np.float64)
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=2e-5)
    np.testing.assert_allclose(results[1], logsumexp(log_w, 1), rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    "likelihood", ["bernoulli", "gaussian", "gaussian_learned", "discretized_logistic"]
)
def test_broadcast_images_equal_the_tiled_ones(likelihood):
    # In a graph `importance_terms` broadcasts x against the K blocks of B
    # codes (eagerly it tiles); the tiled layout (a sequence model's) gives the
    # same log p(x|z) on the same codes: the same ops on the same values.
    # Seen: identical (0.0) but for the discretized logistic in a graph, an
    # XLA cluster of its own (1.1e-5 of ~60 nats).
    keras.utils.set_random_seed(1)
    nets = dict(network="mlp", widths=(16,), likelihood=likelihood)
    encoder = keras_vae.build_encoder(SHAPE, LATENT, network="mlp", widths=(16,))
    decoder = keras_vae.build_decoder(SHAPE, LATENT, **nets)
    model = keras_vae.VAE(encoder, decoder, likelihood=likelihood, seed=0)
    x = np.round(images() * 255) / 255
    mean, log_var = model.encode(x)
    eps = np.random.default_rng(1).standard_normal((5, 6, LATENT)).astype("float32")

    def both(x, mean, log_var, eps):
        _, log_px, z, params = model._importance_terms(x, mean, log_var, eps)
        tiled = keras.ops.tile(x, (5, 1, 1, 1))
        return log_px, keras.ops.reshape(model.likelihood_fn.log_prob(tiled, params), (5, 6)), z
    import tensorflow as tf

    for fn in (both, tf.function(both)):
        log_px, expected, z = (np_(t) for t in fn(x, mean, log_var, eps))
        np.testing.assert_allclose(log_px, expected, rtol=1e-6, atol=1e-5)
        assert z.shape == (5, 6, LATENT)


def test_memory_is_flat_in_k_and_the_graph_traces_once(monkeypatch):
    # Flat memory: no tensor with K in its shape. Every draw (and so every
    # decoder call) holds at most chunk_size * B codes, the draws add up to
    # K, and the state passed between chunks is (B,).
    model, x = make("vae"), images()
    draws, states = [], []
    normal = keras.random.normal
    chunk_fn = bounds._CHUNK_GIVEN_POSTERIOR

    def recording_normal(shape, *args, **kwargs):
        draws.append(tuple(shape))
        return normal(shape, *args, **kwargs)

    def recording_chunk(model, x, mean, log_var, eps, running_max, running_sum, labels):
        states.append((tuple(running_max.shape), tuple(running_sum.shape)))
        return chunk_fn(model, x, mean, log_var, eps, running_max, running_sum, labels)

    monkeypatch.setattr(bounds.keras.random, "normal", recording_normal)
    monkeypatch.setattr(bounds, "_CHUNK_GIVEN_POSTERIOR", recording_chunk)
    evaluation.iwae_log_likelihood(model, x, 1000, chunk_size=64, seed=0)
    assert max(d[0] for d in draws) == 64 and sum(d[0] for d in draws) == 1000
    assert all(d[1:] == (6, LATENT) for d in draws)
    assert set(states) == {((6,), (6,))}
    # One trace serves every full chunk: another call (new seed, the same
    # shapes) traces nothing new.
    traces = chunk_fn.experimental_get_tracing_count()
    evaluation.iwae_log_likelihood(model, x, 1000, chunk_size=64, seed=1)
    assert chunk_fn.experimental_get_tracing_count() == traces
