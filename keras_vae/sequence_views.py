"""Model + token sequences: the recipes TensorBoard and evaluate.py share.

What a sequence VAE shows of itself, for strokes as pictures and for text as
strings: held-out sequences with their greedy reconstructions, greedy
decodings of prior samples, and the homotopy between two held-out sequences
(Bowman et al. 2016, Table 8: decodings of codes on the line between their
posterior means). Everything is deterministic (posterior means, greedy
decoding, fixed prior noise), so two calls with unchanged weights agree.
"""

from __future__ import annotations

import numpy as np

from keras_vae import grids
from keras_vae.data.tokens import PAD, SPECIAL_TOKENS

HOMOTOPY_STEPS = 7


def as_text(model, token_ids):
    """Token ids `(N, T)` -> N strings in the model's vocabulary, up to the
    first EOS (`keras_vae.data.text.detokenize`)."""
    from keras_vae.data import text

    kind = "char" if model.separator == "" else "word"
    return text.detokenize(np.asarray(token_ids), model.vocabulary, kind)


def is_drawing(model):
    """True when the model's sequences are pen strokes (drawn, not read)."""
    return model.separator is None and len(model.vocabulary) > len(SPECIAL_TOKENS)


def as_images(token_ids):
    """Strokes token ids `(N, T)` -> images `(N, 64, 64, 1)` in [0, 1]."""
    from keras_vae.data import strokes

    return strokes.render_tokens(np.asarray(token_ids))


def farthest_pair(model, sequences, candidates=8):
    """Indices of the two of the first `candidates` sequences whose posterior
    means lie farthest apart (a homotopy with something to show)."""
    mean = np.asarray(model.encode(np.asarray(sequences)[:candidates])[0], dtype=np.float64)
    distances = np.sum((mean[:, None] - mean[None]) ** 2, axis=-1)  # (n, n)
    first, second = np.unravel_index(np.argmax(distances), distances.shape)
    return int(min(first, second)), int(max(first, second))


def views(model, sequences, noise, homotopy_pair=None, steps=HOMOTOPY_STEPS):
    """The token ids a sequence model shows of itself.

    Args:
        model: a `SequenceVAE`.
        sequences: `(N, T)` held-out token ids, N >= 2.
        noise: `(M, latent_dim)` fixed prior noise for the samples.
        homotopy_pair: indices of the two sequences joined by the homotopy;
            None: `farthest_pair` (returned as `homotopy_pair`).
        steps: codes along the homotopy, ends included.

    Returns:
        dict of int32 arrays: `inputs` `(N, T)`, `reconstructions` `(N, T)`
        (greedy, from the posterior mean), `samples` `(M, T)`, `homotopy`
        `(steps, T)` and `homotopy_pair` `(2,)`.
    """
    sequences = np.asarray(sequences)
    if homotopy_pair is None:
        homotopy_pair = farthest_pair(model, sequences)
    first, second = homotopy_pair
    return {
        "homotopy_pair": np.asarray(homotopy_pair, dtype=np.int32),
        "inputs": sequences,
        "reconstructions": np.asarray(model.reconstruct(sequences)),
        "samples": np.asarray(model.decode(noise)),
        "homotopy": np.asarray(model.homotopy(sequences[first], sequences[second], steps)),
    }


def exact_match(inputs, reconstructions):
    """Fraction of sequences reconstructed token for token (up to EOS)."""
    inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
    return float(np.mean(np.all(inputs == reconstructions, axis=-1)))


def token_accuracy(inputs, reconstructions):
    """Fraction of the inputs' tokens (EOS included, PAD not) the greedy
    reconstruction has at the same position."""
    inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
    scored = inputs != PAD
    return float(np.sum((inputs == reconstructions) & scored) / max(1, np.sum(scored)))


def pictures(view):
    """Strokes views as image grids `(H, W, 1)` in [0, 1]: `reconstructions`
    (rows alternate: inputs, their reconstructions), `samples` and `homotopy`
    (one row: the start drawing, the decodings, the end drawing)."""
    inputs, recon = as_images(view["inputs"]), as_images(view["reconstructions"])
    cols = min(8, len(inputs))
    rows = []
    for start in range(0, len(inputs) - len(inputs) % cols, cols):
        rows += [inputs[start:start + cols], recon[start:start + cols]]
    samples = as_images(view["samples"])
    return {
        "reconstructions": grids.tile_rows(rows[:8]),
        "samples": grids.tile(samples, cols=min(8, len(samples))),
        # The two held-out drawings at the ends, their homotopy between.
        "homotopy": grids.tile_rows([np.concatenate([
            as_images(view["inputs"][view["homotopy_pair"][:1]]),
            as_images(view["homotopy"]),
            as_images(view["inputs"][view["homotopy_pair"][1:]]),
        ])]),
    }


def texts(model, view):
    """Text views as markdown: `reconstructions` (a table of inputs and their
    reconstructions), `samples` and `homotopy` (numbered lines)."""

    def quote(s):
        return s.replace("|", "\\|") or " "

    rows = zip(as_text(model, view["inputs"]), as_text(model, view["reconstructions"]), strict=True)
    table = ["| input | reconstruction |", "| --- | --- |"]
    table += [f"| {quote(a)} | {quote(b)} |" for a, b in rows]
    return {
        "reconstructions": "\n".join(table),
        "samples": "\n".join(f"{i + 1}. {quote(s)}"
                             for i, s in enumerate(as_text(model, view["samples"]))),
        "homotopy": "\n".join(f"{i + 1}. {quote(s)}"
                              for i, s in enumerate(as_text(model, view["homotopy"]))),
    }
