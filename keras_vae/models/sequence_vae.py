"""The sequence VAE (VAE-RNN) of Bowman et al. 2016: token sequences in and out.

Per example, in nats (the `VAE` objective with a sequence likelihood):

    loss = -sum_t log p(x_t | x_<t, z) + beta * KL(q(z|x) || N(0, I))

The decoder is teacher-forced (it reads BOS, x_1, ..., x_{T-1}), padding is
not scored, the end token is. Against posterior collapse, where the decoder
ignores z and the KL falls to 0, the KL is annealed (`beta_schedule`), may
get free bits, and word dropout replaces a fraction of the decoder's input
tokens by UNK in training, so it must take what they said from z.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vae.data.tokens import BOS, EOS, PAD, UNK
from keras_vae.models.vae import VAE

# How the tokens of a vocabulary join into text (`separator`): none for
# strokes, which are drawn, not read.
SEPARATORS = {"char": "", "word": " "}


@keras.saving.register_keras_serializable(package="keras_vae")
class SequenceVAE(VAE):
    """VAE over token sequences with an RNN encoder and decoder.

    Args:
        encoder: `keras.Model` int32 `(batch, T)` -> `[mean, log_var]`, see
            `keras_vae.sequence_networks.build_sequence_encoder`.
        decoder: a `keras_vae.sequence_networks.SequenceDecoder`.
        likelihood: `categorical` (the only one for tokens).
        word_dropout: probability in [0, 1] of replacing each decoder input
            token by UNK in training (Bowman et al. section 3.2; 1 makes the
            decoder rely on z alone).
        vocabulary: the tokens by id (`keras_vae.data.tokens`), kept with the
            model so exported text and summaries need no data files; may be
            empty (ids only).
        separator: how tokens join into text (`""` for characters, `" "` for
            words), or None when the sequences are not text (strokes).
        **kwargs: the `VAE`'s arguments (beta, its schedule, free bits, seed).

    Input shape:
        `(batch, T)` int token ids: the sequence, EOS, then PAD (id 0).

    Output shape (`call`):
        `(batch, T)` int32: the most likely token at each position given the
        true prefix and the posterior mean (teacher forcing); `decode` and
        `reconstruct` decode freely (greedy) instead.

    Reference:
        Bowman et al., "Generating Sentences from a Continuous Space", CoNLL 2016.
    """

    is_sequence = True

    def __init__(
        self,
        encoder,
        decoder,
        likelihood="categorical",
        word_dropout=0.0,
        vocabulary=(),
        separator=None,
        **kwargs,
    ):
        super().__init__(encoder, decoder, likelihood=likelihood, **kwargs)
        if not 0.0 <= word_dropout <= 1.0:
            raise ValueError(
                f"Expected `word_dropout` in [0, 1]. Received: word_dropout={word_dropout!r}"
            )
        if vocabulary and len(vocabulary) != decoder.vocab_size:
            raise ValueError(
                f"Expected a vocabulary of the decoder's {decoder.vocab_size} tokens. "
                f"Received: {len(vocabulary)} tokens."
            )
        if separator not in (None, *SEPARATORS.values()):
            raise ValueError(
                f"Expected `separator` in {(None, *SEPARATORS.values())}. "
                f"Received: separator={separator!r}"
            )
        self.word_dropout = float(word_dropout)
        self.vocabulary = tuple(vocabulary)
        self.separator = separator
        seed = kwargs.get("seed")
        self.word_dropout_seed = keras.random.SeedGenerator(
            None if seed is None else seed + 2, name="word_dropout_seed"
        )

    def rng_state(self):
        # The word-dropout stream too: a resumed run must drop the tokens an
        # uninterrupted one drops (RunState keeps the VAE's two streams).
        return {
            **super().rng_state(),
            "word_dropout": ops.convert_to_numpy(self.word_dropout_seed.state).tolist(),
        }

    def set_rng_state(self, state):
        super().set_rng_state(state)
        if "word_dropout" in state:
            self.word_dropout_seed.state.assign(state["word_dropout"])

    def _check_decoder(self):
        if self.likelihood != "categorical":
            raise ValueError(
                "Expected likelihood='categorical' for a sequence model. "
                f"Received: likelihood={self.likelihood!r}"
            )

    @classmethod
    def config_options(cls, config, dataset_size=None):
        return {"word_dropout": config.word_dropout}

    @property
    def max_length(self):
        return self.image_shape[0]

    @property
    def vocab_size(self):
        return self.decoder.vocab_size

    @staticmethod
    def _as_images(x):
        # Token ids stay ids (the image models' uint8 -> [0, 1] does not apply).
        return ops.cast(ops.convert_to_tensor(x), "int32")

    def decoder_inputs(self, x, training=False):
        """BOS then `x` shifted right, `(batch, T)`; in training each token after
        BOS is replaced by UNK with probability `word_dropout`."""
        x = ops.cast(x, "int32")
        previous = x[:, :-1]
        if training and self.word_dropout > 0:
            keep = keras.random.uniform(ops.shape(previous), seed=self.word_dropout_seed)
            previous = ops.where(keep >= self.word_dropout, previous, UNK)
        start = ops.full((ops.shape(x)[0], 1), BOS, dtype="int32")
        return ops.concatenate([start, previous], axis=1)

    def _likelihood_params(self, x, z, labels=None, training=False):
        return self.decoder([z, self.decoder_inputs(x, training)], training=training)

    def call(self, inputs, training=None):
        x = self._as_images(inputs)
        mean, log_var = self._encoder_outputs(x, training=training)
        z = self.sampling([mean, log_var], deterministic=not training)
        return self.likelihood_fn.mean(self._likelihood_params(x, z, training=training))

    def decode(self, z, labels=None):
        """Greedy decoding from codes `z` `(n, latent_dim)`: token ids `(n, T)` int32.

        Each step feeds the most likely token back (one RNN-cell step in a
        symbolic loop, so a SavedModel signature stays small); after the
        first EOS the sequence is padding, and a sequence that has not ended
        by position T - 1 ends there with EOS (the data's convention). PAD
        and BOS are never chosen: neither is ever a target in the data, and a
        PAD before the EOS would end the text or drawing early.
        """
        z = ops.convert_to_tensor(z)
        n, length = ops.shape(z)[0], self.max_length
        positions = ops.arange(length, dtype="int32")
        ids = ops.arange(self.vocab_size, dtype="int32")
        emittable = ops.logical_and(ops.not_equal(ids, PAD), ops.not_equal(ids, BOS))  # (V,)

        def body(t, carry):
            tokens, token, done, *state = carry
            logits, state = self.decoder.step(z, token, state)
            logits = ops.where(emittable, logits, float("-inf"))  # (n, V)
            best = ops.cast(ops.argmax(logits, axis=-1), "int32")  # (n,)
            best = ops.where(ops.equal(t, length - 1), EOS, best)
            best = ops.where(done, PAD, best)
            here = ops.cast(ops.equal(positions, t), "int32")  # (T,) one-hot of t
            tokens = tokens + ops.expand_dims(best, 1) * ops.expand_dims(here, 0)
            return (tokens, best, ops.logical_or(done, ops.equal(best, EOS)), *state)

        start = (
            ops.zeros((n, length), dtype="int32"),
            ops.full((n,), BOS, dtype="int32"),
            ops.zeros((n,), dtype="bool"),
            *self.decoder.initial_state(z),
        )
        return ops.fori_loop(0, length, body, start)[0]

    def homotopy(self, start, end, steps=5):
        """Greedy decodings along the line between two sequences' posterior means
        (Bowman et al. Table 8): `(steps, T)` int32, first row from `start`,
        last from `end` (each `(T,)` token ids)."""
        pair = ops.stack([self._as_images(start), self._as_images(end)])
        mean, _ = self.encode(pair)
        t = ops.reshape(ops.linspace(0.0, 1.0, steps), (steps, 1))
        return self.decode(mean[0:1] * (1.0 - t) + mean[1:2] * t)

    def get_config(self):
        return {
            **super().get_config(),
            "word_dropout": self.word_dropout,
            "vocabulary": list(self.vocabulary),
            "separator": self.separator,
        }
