"""Disentanglement metrics on data with known factors (the built-in shapes).

Each metric as disentanglement_lib computes it (Locatello et al. 2019,
"Challenging Common Assumptions in the Unsupervised Learning of
Disentangled Representations", ICML 2019):

    from keras_vae import disentanglement
    disentanglement.scores(codes, factors)            # mig, sap, dci_* of (N, d) codes
    disentanglement.scores_on_shapes(model)           # the same on fresh shapes draws
    disentanglement.factor_vae_score(model)           # renders its own batches

- MIG, Mutual Information Gap (Chen et al. 2018);
- SAP, Separated Attribute Predictability (Kumar et al. 2018);
- DCI disentanglement, completeness, informativeness (Eastwood & Williams 2018);
- the FactorVAE score (Kim & Mnih 2018).

Their ceilings on shapes are below 1 even for the true factors (20-bin
discretization, one-dimensional linear classifiers); README, "Evaluation",
gives them as measured. Three files: `metrics` (MIG, SAP, DCI of given codes,
NumPy and scikit-learn), `factor_vae` (the FactorVAE votes over a
representation function) and `on_shapes` (a model on shapes draws).
"""

from keras_vae.disentanglement.factor_vae import factor_vae_score_of, factor_vae_votes
from keras_vae.disentanglement.metrics import (
    dci,
    dci_completeness,
    dci_disentanglement,
    dci_importance,
    discrete_mutual_information,
    histogram_discretize,
    mutual_information_gap,
    mutual_information_matrix,
    sap_score,
    sap_score_matrix,
    scores,
)
from keras_vae.disentanglement.on_shapes import (
    EVALUATE_FACTOR_VAE_VOTES,
    REFERENCE_POINTS,
    TABLE_ROWS,
    compute_mig_on_shapes,
    encode_factors,
    evaluate_on_shapes,
    factor_vae_score,
    sample_factors,
    scored_factor_names,
    scores_on_shapes,
)

__all__ = [
    "EVALUATE_FACTOR_VAE_VOTES",
    "REFERENCE_POINTS",
    "TABLE_ROWS",
    "compute_mig_on_shapes",
    "dci",
    "dci_completeness",
    "dci_disentanglement",
    "dci_importance",
    "discrete_mutual_information",
    "encode_factors",
    "evaluate_on_shapes",
    "factor_vae_score",
    "factor_vae_score_of",
    "factor_vae_votes",
    "histogram_discretize",
    "mutual_information_gap",
    "mutual_information_matrix",
    "sample_factors",
    "sap_score",
    "sap_score_matrix",
    "scored_factor_names",
    "scores",
    "scores_on_shapes",
]
