"""Encoder and decoder of the sequence VAE (`gru`, `lstm`): RNNs over token ids.

After Bowman et al. 2016, "Generating Sentences from a Continuous Space":
- encoder: token ids `(batch, T)` -> embedding -> a (bidirectional) RNN whose
  final state -> `[mean, log_var]`, each `(batch, latent_dim)` float32; the
  padding (id 0) is masked, so the state is the one at the end token;
- decoder (`SequenceDecoder`): z sets the RNN's initial state and is fed with
  every input token; teacher forcing in training (the input is the true
  sequence shifted right behind the start token); the output is logits
  `(batch, T, V)` over the vocabulary, the `categorical` likelihood's
  parameters. `run` steps it token by token for greedy decoding.

Token ids follow `keras_vae.data.tokens` (0 PAD, 1 UNK, 2 BOS, 3 EOS).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vae.layers import SoftClip
from keras_vae.networks import LOG_VAR_BOUNDS, _head_dtype

RNNS = ("gru", "lstm")
DEFAULT_RNN_UNITS = 256
DEFAULT_EMBEDDING_DIM = 64


def _check(rnn, vocab_size, latent_dim, units, embedding_dim):
    if rnn not in RNNS:
        raise ValueError(f"Expected `rnn` in {RNNS}. Received: rnn={rnn!r}")
    for name, value, low in (
        ("vocab_size", vocab_size, 5),
        ("latent_dim", latent_dim, 1),
        ("units", units, 1),
        ("embedding_dim", embedding_dim, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"Expected `{name}` to be an int >= {low}. Received: {name}={value!r}")


class _SplitGRUCell(keras.layers.GRUCell):
    """`keras.layers.GRUCell` (its default form: implementation 2, reset after,
    biases, no dropout) with the recurrent projection split into the three
    gates by one `split` instead of three slices: the same values, and a
    backward pass of one concatenation where each slice's gradient wrote a
    zero tensor (`StridedSliceGrad`: 17% of the strokes step's op time)."""

    def call(self, inputs, states, training=False):
        plain = (self.implementation != 2 or not self.reset_after or not self.use_bias
                 or self.dropout or self.recurrent_dropout)  # fmt: skip
        if plain:
            return super().call(inputs, states, training)
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        input_bias, recurrent_bias = ops.unstack(self.bias, 2, axis=0)
        x_z, x_r, x_h = ops.split(ops.matmul(inputs, self.kernel) + input_bias, 3, axis=-1)
        inner = ops.matmul(h_tm1, self.recurrent_kernel) + recurrent_bias
        recurrent_z, recurrent_r, recurrent_h = ops.split(inner, 3, axis=-1)
        z = self.recurrent_activation(x_z + recurrent_z)
        r = self.recurrent_activation(x_r + recurrent_r)
        hh = self.activation(x_h + r * recurrent_h)
        h = z * h_tm1 + (1 - z) * hh
        return h, [h] if isinstance(states, (list, tuple)) else h


@keras.saving.register_keras_serializable(package="keras_vae")
class GRU(keras.layers.GRU):
    """`keras.layers.GRU` (same weights, config and GPU path) stepping with
    `_SplitGRUCell`."""

    def __init__(self, units, **kwargs):
        super().__init__(units, **kwargs)
        # The cell Keras made, given the subclass's `call` (state unchanged).
        self.cell.__class__ = _SplitGRUCell


def _rnn_layer(rnn, units, **kwargs):
    cls = GRU if rnn == "gru" else keras.layers.LSTM
    return cls(units, **kwargs)


def build_sequence_encoder(
    max_length,
    vocab_size,
    latent_dim,
    rnn="gru",
    units=DEFAULT_RNN_UNITS,
    embedding_dim=DEFAULT_EMBEDDING_DIM,
    bidirectional=True,
    name="encoder",
):
    """q(z|x) over token sequences.

    Args:
        max_length: T, the length of the (padded) sequences.
        vocab_size: V, including the 4 special tokens.
        latent_dim: size of z.
        rnn: `gru` or `lstm`.
        units: the RNN's width (per direction).
        embedding_dim: width of the token embedding.
        bidirectional: read the sequence both ways (the final states of both
            directions are concatenated).

    Returns:
        A functional `keras.Model`: int32 `(batch, T)` -> `[mean, log_var]`.
    """
    _check(rnn, vocab_size, latent_dim, units, embedding_dim)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"Expected `max_length` to be an int >= 2. Received: {max_length!r}")
    tokens = keras.Input((max_length,), dtype="int32", name="tokens")
    # mask_zero: the RNN skips the padding, so its final state is the one
    # after the end token whatever the sequence's length.
    h = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(tokens)
    layer = _rnn_layer(rnn, units, name=rnn)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer, name=f"bidirectional_{rnn}")
    h = layer(h)  # (B, units) or (B, 2 * units)
    head_dtype = _head_dtype()
    mean = keras.layers.Dense(latent_dim, dtype=head_dtype, name="mean")(h)
    raw_log_var = keras.layers.Dense(latent_dim, dtype=head_dtype, name="raw_log_var")(h)
    log_var = SoftClip(*LOG_VAR_BOUNDS, dtype=head_dtype, name="log_var")(raw_log_var)
    return keras.Model(tokens, [mean, log_var], name=name)


@keras.saving.register_keras_serializable(package="keras_vae")
class SequenceDecoder(keras.Model):
    """p(x|z) over token sequences: an RNN started from z, z fed at every step.

    Args:
        vocab_size: V, including the 4 special tokens.
        latent_dim: size of z.
        rnn: `gru` or `lstm`.
        units: the RNN's width.
        embedding_dim: width of the input token embedding.
        **kwargs: `keras.Model` keyword arguments (`name`, ...).

    Input shape (`call`):
        `[z (batch, latent_dim), tokens (batch, T) int]`: the decoder's input
        tokens, i.e. BOS then the sequence shifted right (teacher forcing).

    Output shape:
        `(batch, T, V)` float32 logits: at position t, p(x_t | x_<t, z).

    Reference:
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
    """

    def __init__(
        self,
        vocab_size,
        latent_dim,
        rnn="gru",
        units=DEFAULT_RNN_UNITS,
        embedding_dim=DEFAULT_EMBEDDING_DIM,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check(rnn, vocab_size, latent_dim, units, embedding_dim)
        self.vocab_size = vocab_size
        self.latent_dim = latent_dim
        self.rnn = rnn
        self.units = units
        self.embedding_dim = embedding_dim
        self.embedding = keras.layers.Embedding(vocab_size, embedding_dim, name="embedding")
        # z -> the initial state (an LSTM's h and c from one layer's halves).
        states = 1 if rnn == "gru" else 2
        self.state_from_z = keras.layers.Dense(states * units, activation="tanh", name="state")
        self.recurrent = _rnn_layer(
            rnn, units, return_sequences=True, return_state=True, name=rnn
        )
        self.logits = keras.layers.Dense(vocab_size, dtype=_head_dtype(), name="logits")

    def build(self, input_shape=None):
        if self.built:
            return
        self.embedding.build((None, None))
        self.state_from_z.build((None, self.latent_dim))
        self.recurrent.build((None, None, self.embedding_dim + self.latent_dim))
        self.logits.build((None, None, self.units))
        self.built = True

    def initial_state(self, z):
        """The RNN state before the first token: a list of `(batch, units)`."""
        state = self.state_from_z(z)
        if self.rnn == "gru":
            return [state]
        return list(ops.split(state, 2, axis=-1))

    def run(self, z, tokens, state):
        """Runs the RNN over `tokens` `(batch, t)` from `state`.

        Returns:
            `(logits (batch, t, V), state)`; the state continues the sequence
            (greedy decoding feeds one token at a time).
        """
        embedded = self.embedding(tokens)  # (B, t, E)
        steps = ops.shape(tokens)[1]
        z_every_step = ops.repeat(ops.expand_dims(ops.cast(z, embedded.dtype), 1), steps, axis=1)
        outputs, *state = self.recurrent(
            ops.concatenate([embedded, z_every_step], axis=-1), initial_state=state
        )
        return self.logits(outputs), state

    def step(self, z, token, state):
        """One decoding step with the RNN's cell (the weights `run` uses).

        Args:
            z: `(batch, latent_dim)` codes.
            token: `(batch,)` int, the previous token (BOS first).
            state: the list of `(batch, units)` states.

        Returns:
            `(logits (batch, V), state)`.
        """
        embedded = self.embedding(token)  # (B, E)
        inputs = ops.concatenate([embedded, ops.cast(z, embedded.dtype)], axis=-1)
        outputs, state = self.recurrent.cell(inputs, list(state))
        return self.logits(outputs), list(state)

    def call(self, inputs):
        z, tokens = inputs
        logits, _ = self.run(z, tokens, self.initial_state(z))
        return logits

    def compute_output_shape(self, input_shape):
        return (input_shape[1][0], input_shape[1][1], self.vocab_size)

    def get_config(self):
        return {
            **super().get_config(),
            "vocab_size": self.vocab_size,
            "latent_dim": self.latent_dim,
            "rnn": self.rnn,
            "units": self.units,
            "embedding_dim": self.embedding_dim,
        }


def build_sequence_networks(config, max_length, vocab_size):
    """`(encoder, decoder)` for a run's settings (`config.network` is the RNN)."""
    encoder = build_sequence_encoder(
        max_length,
        vocab_size,
        config.latent_dim,
        rnn=config.network,
        units=config.rnn_units,
        embedding_dim=config.embedding_dim,
        bidirectional=config.bidirectional,
    )
    decoder = SequenceDecoder(
        vocab_size,
        config.latent_dim,
        rnn=config.network,
        units=config.rnn_units,
        embedding_dim=config.embedding_dim,
        name="decoder",
    )
    decoder.build()
    return encoder, decoder
