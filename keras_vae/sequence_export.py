"""The SavedModel signatures of a sequence VAE (`keras_vae.export` picks them).

    m = tf.saved_model.load("runs/strokes/export")
    m.encode(tokens)["mean"]                         # tokens int32 (batch, T)
    m.decode(z)["tokens"]                            # greedy, int32 (batch, T)
    m.sample(count=8, temperature=1.0, seed=0)["tokens"]
    m.reconstruct(tokens)["tokens"]                  # also signatures["serving_default"]

For text data every output with `tokens` also has `text`, tf.string
`(batch,)`: the tokens up to the end token, joined ("" for characters, " "
for words), so a client needs neither `keras_vae` nor the vocabulary file.

Signatures (T and the latent size D are fixed, the batch is free):

    encode        tokens int32 (None, T)   -> mean, log_var float32 (None, D)
    decode        z float32 (None, D)      -> tokens int32 (None, T) [, text (None,)]
    sample        count int32 (), temperature float32 (), seed int64 ()
                                           -> tokens (count, T) [, text (count,)]
    reconstruct   tokens int32 (None, T)   -> tokens (None, T) [, text (None,)]
    serving_default = reconstruct

Token ids follow `keras_vae.data.tokens` (0 PAD, 1 UNK, 2 BOS, 3 EOS); an id
outside [0, V) fails with an InvalidArgumentError naming the endpoint.
Decoding is greedy and `sample` stateless (seeded with [seed, 0]): the same
inputs always give the same tokens.
"""

from __future__ import annotations

import tensorflow as tf

SIGNATURES = ("reconstruct", "encode", "decode", "sample")


def _text(model, tokens):
    """tf.string `(batch,)` of token ids `(batch, T)`, up to the first EOS."""
    from keras_vae.data import text

    kind = "char" if model.separator == "" else "word"
    return text.detokenize_tf(tokens, model.vocabulary, kind)


def signature_fns(model, check_shape):
    """The endpoint functions and their input signatures, by name.

    Args:
        model: a `SequenceVAE`.
        check_shape: `keras_vae.export._check_shape` (the in-graph shape check).
    """
    length, latent_dim, vocab = int(model.max_length), int(model.latent_dim), model.vocab_size
    has_text = model.separator is not None and bool(model.vocabulary)

    def checked_tokens(tokens, endpoint):
        tokens = check_shape(tokens, (length,), "tokens", endpoint)
        valid = tf.logical_and(tokens >= 0, tokens < vocab)
        wrong = tf.boolean_mask(tf.reshape(tokens, [-1]), tf.reshape(~valid, [-1]))
        check = tf.debugging.Assert(
            tf.reduce_all(valid),
            [f"{endpoint}: expected token ids in [0, {vocab}); received", wrong],
            summarize=8,
        )
        with tf.control_dependencies([check]):
            return tf.identity(tokens)

    def tokens_out(tokens):
        tokens = tf.cast(tokens, tf.int32)
        return {"tokens": tokens, "text": _text(model, tokens)} if has_text else {"tokens": tokens}

    def encode(tokens):
        mean, log_var = model.encode(checked_tokens(tokens, "encode"))
        return {"mean": tf.cast(mean, tf.float32), "log_var": tf.cast(log_var, tf.float32)}

    def decode(z):
        return tokens_out(model.decode(check_shape(z, (latent_dim,), "z", "decode")))

    def reconstruct(tokens):
        mean, _ = model.encode(checked_tokens(tokens, "reconstruct"))
        return tokens_out(model.decode(mean))

    def sample(count, temperature, seed):
        check = tf.debugging.Assert(count >= 0, ["sample: expected count >= 0; received", count])
        with tf.control_dependencies([check]):
            shape = tf.stack([tf.identity(count), latent_dim])
        z = tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.zeros_like(seed)]))
        return tokens_out(model.decode(z * temperature))

    token_spec = [tf.TensorSpec((None, length), tf.int32, name="tokens")]
    return {
        "reconstruct": (reconstruct, token_spec),
        "encode": (encode, token_spec),
        "decode": (decode, [tf.TensorSpec((None, latent_dim), tf.float32, name="z")]),
        "sample": (
            sample,
            [
                tf.TensorSpec((), tf.int32, name="count"),
                tf.TensorSpec((), tf.float32, name="temperature"),
                tf.TensorSpec((), tf.int64, name="seed"),
            ],
        ),
    }
