"""A sequence VAE's evaluation beyond the bounds: per token, perplexity, views.

`keras_vae.evaluation.evaluate_model` computes the ELBO, the IWAE bound,
KL and active units of any model, sequences included, in nats per sequence.
For token sequences the comparable figures are per token: the number of
scored tokens of a sequence is its length up to and including the end token
(padding is not scored; BOS is never predicted), and

    nll_per_token = sum over sequences of NLL / sum of scored tokens
    perplexity    = exp(nll_per_token)

with the NLL from the IWAE bound (an upper bound on the true NLL, so the
perplexity is an upper bound too), as Bowman et al. 2016 report it. Bits
per dimension, an image measure, are dropped.
"""

from __future__ import annotations

import math
import os

import numpy as np

from keras_vae import files, sequence_views
from keras_vae.data.tokens import PAD
from keras_vae.latent_grids import prior_noise

# Image-only keys of `evaluate_model`'s results, meaningless for tokens.
IMAGE_KEYS = ("elbo_bits_per_dim", "iwae_bits_per_dim", "image_shape", "reconstruction_per_dim")
NUM_VIEWS = 8


# evaluate.py's rows for sequences (`report.format_table`'s extra rows).
TABLE_ROWS = (
    ("num_tokens", "scored tokens (end tokens included)", "", "{:,d}"),
    ("elbo_per_token", "ELBO per token", "nats", "{:.4f}"),
    ("nll_per_token", "NLL per token (IWAE bound)", "nats", "{:.4f}"),
    ("perplexity", "perplexity (exp NLL per token)", "", "{:.3f}"),
    ("token_accuracy", "greedy reconstruction: tokens right", "", "{:.3f}"),
    ("exact_match", "greedy reconstruction: sequences exact", "", "{:.3f}"),
)


def count_tokens(dataset, max_examples=None, max_batches=None):
    """Scored (non-PAD) tokens of the first `max_examples` sequences of the
    first `max_batches` batches (None: all), as `evaluate_model` reads them."""
    tokens = seen = 0
    for step, batch in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        x = np.asarray(batch[0] if isinstance(batch, tuple) else batch)
        if max_examples is not None:
            x = x[: max(0, max_examples - seen)]
        tokens += int(np.sum(x != PAD))
        seen += x.shape[0]
        if max_examples is not None and seen >= max_examples:
            break
    return tokens


def per_token(results, dataset, max_batches=None):
    """`results` of `evaluate_model` on `dataset` with per-token figures added
    and the image keys removed.

    Adds `num_tokens` (of the `num_examples` sequences), `tokens_per_sequence`,
    `elbo_per_token` (nats), `nll_per_token` and `perplexity` (from the IWAE
    NLL of the first `iwae_num_examples` sequences and their tokens when it
    was computed, else from -ELBO; `perplexity_from` says which).
    """
    out = {k: v for k, v in results.items() if k not in IMAGE_KEYS}
    count = results["num_examples"]
    tokens = count_tokens(dataset, count, max_batches)
    out["num_tokens"] = tokens
    out["tokens_per_sequence"] = tokens / count
    out["elbo_per_token"] = results["elbo"] * count / tokens
    if "iwae_nll" in results:
        iwae_count = results.get("iwae_num_examples", count)
        iwae_tokens = tokens if iwae_count == count else count_tokens(
            dataset, iwae_count, max_batches
        )
        out["nll_per_token"] = results["iwae_nll"] * iwae_count / iwae_tokens
        out["perplexity_from"] = "iwae"
    else:
        out["nll_per_token"] = -results["elbo"] * count / tokens
        out["perplexity_from"] = "elbo"
    out["perplexity"] = math.exp(out["nll_per_token"])
    return out


def test_summary(results, dataset, max_batches):
    """train.py's test summary of a sequence model (`results` in nats per
    sequence, from `evaluation.summarize_test`) with `bits_per_dim` replaced by
    `num_tokens`, `elbo_per_token` and `perplexity_bound` = exp(-ELBO per
    token), an upper bound on the perplexity (evaluate.py's IWAE is tighter)."""
    out = {k: v for k, v in results.items() if k not in ("bits_per_dim", "bits_per_dim_note")}
    count = results["num_images"]
    tokens = count_tokens(dataset, count, max_batches)
    out.update(num_tokens=tokens, elbo_per_token=results["elbo"] * count / tokens)
    out["perplexity_bound"] = math.exp(-out["elbo_per_token"])
    return out


def summary_line(results):
    """train.py's last line for a sequence model (`test_summary`'s results)."""
    return (
        f"Test ELBO {results['elbo']:.2f} nats/sequence ({results['elbo_per_token']:.4f} "
        f"nats/token, perplexity <= {results['perplexity_bound']:.3f}; reconstruction "
        f"{results['reconstruction']:.2f}, KL {results['kl']:.2f}) on {results['num_images']} "
        f"test sequences ({results['num_tokens']:,} tokens). Run saved in {results['workdir']}"
    )


def views_of(model, dataset, seed=0):
    """What the model shows of itself on the first held-out sequences:
    `sequence_views.views` plus `token_accuracy` and `exact_match` of the
    greedy reconstructions (over the first 64 sequences)."""
    batch = next(iter(dataset))
    x = np.asarray(batch[0] if isinstance(batch, tuple) else batch)[:64]
    noise = prior_noise(NUM_VIEWS, model.latent_dim, seed)
    view = sequence_views.views(model, x, noise)
    return view, {
        "token_accuracy": sequence_views.token_accuracy(view["inputs"], view["reconstructions"]),
        "exact_match": sequence_views.exact_match(view["inputs"], view["reconstructions"]),
        "accuracy_sequences": int(len(x)),
    }


def write_views(model, view, figures_dir):
    """Writes the views: strokes as PNG figures (`reconstructions.png`,
    `samples.png`, `homotopy.png`), text as `sequences.md`; returns the
    results.json entries (text: the strings; strokes: the figure names)."""
    os.makedirs(figures_dir, exist_ok=True)
    shown = {k: (v if k == "homotopy_pair" else v[:NUM_VIEWS]) for k, v in view.items()}
    if sequence_views.is_drawing(model):
        from keras_vae import plots

        written = {}
        for name, grid in sequence_views.pictures(shown).items():
            path = os.path.join(figures_dir, f"{name}.png")
            plots.save_grid_png(path, grid)
            written[name] = os.path.basename(path)
        return {"figures": written}
    texts = {name: sequence_views.as_text(model, ids) for name, ids in shown.items()
             if name != "homotopy_pair"}
    texts["homotopy_pair"] = [int(i) for i in view["homotopy_pair"]]
    markdown = sequence_views.texts(model, shown)
    body = "".join(f"## {name}\n\n{text}\n\n" for name, text in markdown.items())
    path = os.path.join(figures_dir, "sequences.md")
    files.atomic_write_text(path, body)
    return {"sequences": texts, "figures": {"sequences": os.path.basename(path)}}
