"""Token ids shared by every sequence dataset (`strokes`, `text:PATH`, tfds text).

A sequence example is an int32 vector `(max_length,)`: the token ids of the
sequence, then `EOS`, then `PAD` up to `max_length` (a sequence longer than
`max_length - 1` tokens is cut, and still ends with `EOS`). `BOS` never appears
in the data: the sequence model prepends it for teacher forcing. The first four
ids are the same for every vocabulary, so the model, the likelihood's mask and
the exported signatures need no per-dataset table:

    0 PAD  padding, masked out of the likelihood (`keras.layers.StringLookup`'s
           mask token, index 0)
    1 UNK  out of vocabulary (`StringLookup`'s single OOV index) and the
           word-dropout replacement (Bowman et al. 2016)
    2 BOS  start of sequence (decoder input only)
    3 EOS  end of sequence (predicted and scored like any token)
"""

from __future__ import annotations

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>")
NUM_SPECIAL = len(SPECIAL_TOKENS)


def vocabulary_with_specials(tokens):
    """The full vocabulary tuple: `SPECIAL_TOKENS` then `tokens` (ids from 4)."""
    tokens = tuple(tokens)
    clash = sorted(set(tokens) & set(SPECIAL_TOKENS))
    if clash:
        raise ValueError(f"Expected tokens without the special tokens. Received: {clash}")
    return SPECIAL_TOKENS + tokens


def lengths(token_ids):
    """Tokens scored per sequence (up to and including EOS), NumPy `(B,)`."""
    import numpy as np

    return (np.asarray(token_ids) != PAD).sum(axis=-1)
