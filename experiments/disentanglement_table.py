"""The disentanglement study's table: one row per run of a sweep folder.

    python experiments/disentanglement_table.py runs/disentanglement

Reads each run's config.json, train_summary.json and results.json (written by
train.py and evaluate.py) and prints a Markdown table: the model and its
weight, the test ELBO, reconstruction and KL, and the disentanglement metrics
(MIG, SAP, DCI, FactorVAE score); then copies the traversal of the run with
the highest MIG to docs/traversal_best.png when asked (--docs).
"""

import json
import os
import shutil
import sys

COLUMNS = (
    ("ELBO", "elbo", "{:.2f}"),
    ("reconstruction", "reconstruction", "{:.2f}"),
    ("KL", "kl", "{:.2f}"),
    ("MIG", "mig", "{:.3f}"),
    ("SAP", "sap", "{:.3f}"),
    ("DCI dis.", "dci_disentanglement", "{:.3f}"),
    ("DCI compl.", "dci_completeness", "{:.3f}"),
    ("DCI info.", "dci_informativeness", "{:.3f}"),
    ("FactorVAE", "factor_vae_score", "{:.3f}"),
)


def _read(path):
    with open(path) as f:
        return json.load(f)


def weight(config):
    """The run's disentanglement knob as a phrase: beta, or the TC weight."""
    if config["model"] == "beta_tcvae":
        return f"beta-TCVAE, TC weight {config['tc_weight']:g}"
    return f"beta-VAE, beta {config['beta']:g}"


def rows(folder):
    """`[(name, config, results)]` of the finished and evaluated runs in `folder`."""
    found = []
    for name in sorted(os.listdir(folder)):
        run = os.path.join(folder, name)
        if os.path.isfile(os.path.join(run, "results.json")):
            config = _read(os.path.join(run, "config.json"))
            found.append((name, config, _read(os.path.join(run, "results.json"))))
    return found


def table(found):
    lines = [
        "| run | model | steps | " + " | ".join(c[0] for c in COLUMNS) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in COLUMNS) + " |",
    ]
    for name, config, results in found:
        steps = config["epochs"] * config["steps_per_epoch"]
        cells = [
            fmt.format(results[key]) if isinstance(results.get(key), (int, float)) else "-"
            for _, key, fmt in COLUMNS
        ]
        lines.append(f"| {name} | {weight(config)} | {steps:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2:
        sys.exit("usage: python experiments/disentanglement_table.py FOLDER [--docs]")
    folder = argv[1]
    found = rows(folder)
    if not found:
        sys.exit(f"No evaluated run (results.json) in {folder}: run experiments/disentanglement.sh")
    print(table(found))
    best_name, _, best = max(found, key=lambda row: row[2].get("mig", float("-inf")))
    print(f"\nHighest MIG: {best_name} ({best.get('mig', float('nan')):.3f}).")
    if "--docs" in argv:
        source = os.path.join(folder, best_name, "figures", "traversal.png")
        os.makedirs("docs", exist_ok=True)
        shutil.copyfile(source, os.path.join("docs", "traversal_best.png"))
        print(f"Copied {source} to docs/traversal_best.png.")


if __name__ == "__main__":
    main(sys.argv)
