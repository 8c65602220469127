"""Checks of evaluate.py's numbers shared by tests/test_report.py and
tests/test_cvae_evaluate.py (imported by the tests, not collected): its
bounds against precise references, and the table it prints against
results.json."""

import math

import keras
import numpy as np
import pytest
from scipy.special import logsumexp

from keras_vae import disentanglement, evaluation, report


def bound_references(model, images, labels=None, k=8, groups=10, elbo_draws=40, seed=1):
    """Precise expectations of evaluate.py's ELBO and K-sample IWAE bound on `images`.

    Independent of `evaluate_model`: E[L_k] from `groups` independent L_k
    per image (the public `VAE.log_weights`, numpy's logsumexp), and the
    ELBO (analytic KL) from `elbo_draws` one-draw ELBOs per image.

    Returns:
        dict: `iwae`, `elbo` (means over images and draws, nats) with `*_se`
        (their standard errors) and `single_iwae_se`, `single_elbo_se`: the
        standard error of the mean over the images of ONE draw per image, as
        evaluate.py computes them.
    """
    gen = keras.random.SeedGenerator(seed)
    log_l, elbos = [], []
    for start in range(0, len(images), 16):  # memory: 16 images x 40 draws per decoder call
        x = images[start : start + 16]
        given = {} if labels is None else {"labels": labels[start : start + 16]}
        log_w = np.concatenate(
            [np.asarray(model.log_weights(x, k * groups // 2, seed=gen, **given)) for _ in "ab"], 1
        ).astype(np.float64)  # (n, k * groups)
        log_l.append(logsumexp(log_w.reshape(len(x), groups, k), axis=2) - math.log(k))
        # One ELBO draw per copy of the images: (draws * n,) -> (n, draws).
        tiled = {k: np.tile(v, (elbo_draws,) + (1,) * (np.ndim(v) - 1)) for k, v in given.items()}
        elbo = evaluation.elbo_terms(
            model, np.tile(x, (elbo_draws, 1, 1, 1)), seed=gen, **tiled
        )["elbo"]
        elbos.append(np.asarray(elbo, np.float64).reshape(elbo_draws, len(x)).T)
    log_l, elbos = np.concatenate(log_l), np.concatenate(elbos)  # (N, groups), (N, draws)
    n = len(images)
    return {
        "iwae": log_l.mean(),
        "iwae_se": math.sqrt(log_l.var(1).sum() / groups) / n,
        "single_iwae_se": math.sqrt(log_l.var(1).sum()) / n,
        "elbo": elbos.mean(),
        "elbo_se": math.sqrt(elbos.var(1).sum() / elbo_draws) / n,
        "single_elbo_se": math.sqrt(elbos.var(1).sum()) / n,
    }


def check_bounds(results, ref):
    """evaluate.py's ELBO and IWAE NLL against `bound_references` of the same images.

    Each result is one draw per image: within 5 standard errors of its
    expectation (its own SE and the reference's). The IWAE bound is strictly
    tighter than the ELBO: on these tiny models E[L_8] - ELBO was 0.111
    (vae) and 0.105 (cvae) nats (log-weights of one image spread by ~0.47
    nats, and L_8 - L_1 ~ var / 2 * (1 - 1/8)), 19 times the references'
    SE; an IWAE that were the ELBO (K ignored) would be ~0.11 off, 8 of the
    results' SE (0.013 on 256 images), and one without the -log K 2.08 nats
    off. Seen: the results within 0.002 (IWAE) and 0.008 (ELBO) of the
    references.
    """
    iwae_tol = 5 * math.hypot(ref["single_iwae_se"], ref["iwae_se"])
    elbo_tol = 5 * math.hypot(ref["single_elbo_se"], ref["elbo_se"])
    print(f"references {ref}, results ELBO {results['elbo']}, IWAE {-results['iwae_nll']}")
    assert ref["iwae"] - ref["elbo"] > 0.05  # the margin is real (seen: 0.109)
    assert ref["iwae"] - ref["elbo"] > 8 * math.hypot(ref["iwae_se"], ref["elbo_se"])
    assert iwae_tol < 0.09 and elbo_tol < 0.25, (iwae_tol, elbo_tol)
    assert abs(-results["iwae_nll"] - ref["iwae"]) < iwae_tol
    assert abs(results["elbo"] - ref["elbo"]) < elbo_tol
    # The IWAE ran on the same images as the ELBO: its ELBO is the ELBO.
    assert results["iwae_elbo"] == pytest.approx(results["elbo"], rel=1e-12)
    # And the bound the results report is the tighter one: -ELBO - NLL has
    # expectation ~0.11 and SE ~0.03 (both single draws): > 0 at 3.5 SE.
    assert results["iwae_nll"] < -results["elbo"]


def _table_values(stdout, results, extra_rows=disentanglement.TABLE_ROWS):
    """`{key: printed value}` of the table lines on stdout, for the keys in `results`."""
    lines = stdout.splitlines()
    printed = {}
    for key, label, unit, _ in report.tables.TABLE_ROWS + tuple(extra_rows):
        head = label + (f" [{unit}]" if unit else "")
        for plain, given in report.tables._CONDITIONAL_LABELS if results.get("conditional") else ():
            head = head.replace(plain, given)
        match = [line for line in lines if line.startswith(head + "  ")]
        if key in results and results[key] is not None:
            assert len(match) == 1, (key, head)
            printed[key] = match[0][len(head) :].strip()
    return printed


def check_printed_table(stdout, results):
    """Every number of the table on stdout is results.json's, as formatted."""
    printed = _table_values(stdout, results)
    formats = {key: fmt for key, _, _, fmt in report.tables.TABLE_ROWS + disentanglement.TABLE_ROWS}
    assert len(printed) >= 10, printed
    for key, text in printed.items():
        assert text == formats[key].format(results[key]), (key, text, results[key])
    kl_line = next(line for line in stdout.splitlines() if line.startswith("KL per dimension"))
    assert kl_line.split()[-len(results["kl_per_dim"]) :] == [
        f"{v:.2f}" for v in results["kl_per_dim"]
    ]
    # The plan came first, with an estimate; the table after it.
    assert stdout.index("Evaluation plan:") < stdout.index("Estimated time: about")
    assert stdout.index("Estimated time: about") < stdout.index("ELBO (<= log p(x")
