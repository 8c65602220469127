"""The metrics table evaluate.py prints (`format_table`), from the results it writes.

    from keras_vae import report
    print(report.format_table(results, disentanglement.TABLE_ROWS))

Every number is one value of `results` (the dict written to results.json),
formatted; nothing is computed here. Units: nats per image (DESIGN.md section 4).
"""

from __future__ import annotations

TABLE_ROWS = (
    # key, label, unit, format
    ("num_examples", "examples", "", "{:,d}"),
    ("elbo", "ELBO (<= log p(x))", "nats", "{:.3f}"),
    ("reconstruction", "reconstruction (-E log p(x|z))", "nats", "{:.3f}"),
    ("reconstruction_per_dim", "reconstruction per dimension", "nats/dim", "{:.5f}"),
    ("kl", "KL(q(z|x) || p(z))", "nats", "{:.3f}"),
    ("elbo_bits_per_dim", "-ELBO", "bits/dim", "{:.4f}"),
    ("iwae_num_examples", "IWAE examples (the first ones)", "", "{:,d}"),
    ("iwae_samples", "IWAE samples K", "", "{:,d}"),
    ("iwae_elbo", "ELBO on the IWAE examples", "nats", "{:.3f}"),
    ("iwae_nll", "IWAE NLL (-log p(x))", "nats", "{:.3f}"),
    ("iwae_bits_per_dim", "IWAE NLL", "bits/dim", "{:.4f}"),
    ("conditioned_on", "conditioned on (y)", "", "{}"),
    ("active_units", "active units (Cov > 0.01)", "", "{:d}"),
    ("latent_dim", "latent dimensions", "", "{:d}"),
)

# A conditional model's labels (`evaluate_model`'s `conditional`): its
# densities are given y, the label.
_CONDITIONAL_LABELS = (("p(x)", "p(x|y)"), ("p(x|z)", "p(x|z,y)"), ("q(z|x)", "q(z|x,y)"))
# Notes printed under the table, in this order.
_NOTES = ("note", "bits_per_dim_note", "disentanglement_note")


def format_table(results, extra_rows=()):
    """A readable two-column table of `results` for stdout.

    Args:
        results: `evaluation.evaluate_model`'s dict (or results.json read
            back); a key that is missing or None has no row.
        extra_rows: more `(key, label, unit, format)` rows, e.g.
            `disentanglement.TABLE_ROWS`.

    Returns:
        The table, one `label [unit]  value` line per row, then the lists
        (KL, variance and mean per dimension) and the notes (`note`,
        `bits_per_dim_note`, `disentanglement_note`). A conditional model's
        rows say log p(x|y) where others say log p(x).
    """
    lines = []
    for key, label, unit, fmt in TABLE_ROWS + tuple(extra_rows):
        if key in results and results[key] is not None:
            value = fmt.format(results[key])
            for plain, given_y in _CONDITIONAL_LABELS if results.get("conditional") else ():
                label = label.replace(plain, given_y)
            lines.append((f"{label}" + (f" [{unit}]" if unit else ""), value))
    if "kl_per_dim" in results:
        lines.append(
            ("KL per dimension [nats]", " ".join(f"{v:.2f}" for v in results["kl_per_dim"]))
        )
    if "latent_variances" in results:
        lines.append(
            ("Var(E_q[z]) per dimension", " ".join(f"{v:.3f}" for v in results["latent_variances"]))
        )
    if "latent_means" in results:
        lines.append(("E[z] per dimension", " ".join(f"{v:.3f}" for v in results["latent_means"])))
    width = max(len(label) for label, _ in lines)
    table = "\n".join(f"{label:<{width}}  {value}" for label, value in lines)
    for key in _NOTES:
        if results.get(key):
            table += f"\nnote: {results[key]}"
    return table
