"""Evaluates a trained run: test metrics, results.json, TensorBoard entries and figures;
or compares runs.

    python evaluate.py --workdir=runs/shapes                  # the standard protocol: minutes
    python evaluate.py --workdir=runs/mnist --protocol=paper  # the published one: hours on a CPU
    python evaluate.py --workdir=runs/shapes --iwae_samples=1000 --iwae_images=500
    python evaluate.py --workdir=runs/celeba --attribute=Smiling --radius=0.25,0.5,1
    python evaluate.py --compare runs/mlp-d8 runs/conv-d8 runs/conv-d32

One run: reads WORKDIR/config.json and WORKDIR/model.keras, prints its plan
and an estimated time (from timing a few batches now), evaluates the test split
(ELBO, IWAE log-likelihood, bits/dim, active units, KL per dimension; on
shapes MIG, SAP, DCI and the FactorVAE score), writes WORKDIR/results.json
and prints its table, writes TensorBoard's Projector (the codes of the first
test images, tensorboard/test) and the HParams test metrics, and draws
WORKDIR/figures/*.png (see keras_vae/report/run_figures.py for the list). A
cvae run is evaluated given the labels it is conditioned on: its ELBO, IWAE
and bits/dim bound log p(x|y), and its disentanglement metrics score the
other factors.

--protocol=standard (the default) takes minutes on 2 CPU cores for every
preset: the ELBO on the first 10,000 test images, the IWAE bound with K=100
on the first 1,000, disentanglement metrics on 2,000 points and 500
FactorVAE votes (keras_vae/report/protocol.py says why). --protocol=paper
is the published protocol: the whole test split, K=5000 (Burda et al.
2015), 10,000 points and votes (disentanglement_lib). Flags given
explicitly override either; results.json's `protocol` records all of them.

--compare DIR1 DIR2 ...: one table and side-by-side figures of several runs
of one dataset, into --output (default runs/compare-<time>).
"""

import functools
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow's C++ start-up lines off stderr unless asked for verbosity.
if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
    os.environ.setdefault("KERAS_VAE_QUIET_IMPORT", "1")

from absl import flags  # noqa: E402

from keras_vae import cli, report  # noqa: E402
from keras_vae.config import UsageError, default_workdir  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder written by train.py (config.json, model.keras).")
flags.DEFINE_enum(
    "protocol",
    "standard",
    list(report.PROTOCOLS),
    "How much to evaluate: standard (minutes on 2 CPU cores: 10,000 test images, IWAE K=100 "
    "on 1,000 of them, 2,000 disentanglement points, 500 FactorVAE votes) or paper (the "
    "whole test split, K=5000, 10,000 points and votes: hours on a CPU). The flags below "
    "override it.",
)
flags.DEFINE_integer(
    "test_images",
    None,
    "Evaluate the first this many test images (default: the protocol's, 10,000 or all).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "iwae_images",
    None,
    "The IWAE bound on the first this many of them (default: the protocol's).",
    lower_bound=1,
)
flags.DEFINE_integer(
    "iwae_samples",
    None,
    "K of the importance-weighted log-likelihood bound (Burda et al. 2015); 0 skips it "
    "(default: the protocol's, 100 or 5000).",
    lower_bound=0,
)
flags.DEFINE_integer(
    "max_batches",
    None,
    "Evaluate at most this many test batches (with --test_images: the fewer).",
    lower_bound=1,
)
flags.DEFINE_boolean(
    "disentanglement",
    True,
    "shapes only: MIG, SAP, DCI and the FactorVAE score (disentanglement_lib's definitions).",
)
flags.DEFINE_integer(
    "disentanglement_points",
    None,
    "disentanglement_lib's num_train: MIG's points, SAP's and DCI's train points (test "
    "points: half), the FactorVAE score's variance points (default: the protocol's, 2,000 "
    "or 10,000). Fewer are quicker but noisier, and lower DCI.",
    lower_bound=10,
)
flags.DEFINE_integer(
    "factor_vae_votes",
    None,
    "FactorVAE score: training votes of 64 images each (evaluation votes: half; default: "
    "the protocol's, 500 or disentanglement_lib's 10,000).",
    lower_bound=1,
)
# The names before the FactorVAE, SAP and DCI metrics joined MIG.
flags.DEFINE_alias("mig", "disentanglement")
flags.DEFINE_alias("mig_points", "disentanglement_points")
flags.DEFINE_boolean("figures", True, "Write WORKDIR/figures/*.png.")
flags.DEFINE_integer(
    "seed",
    None,
    "Seed of the evaluation's random draws (default: the run's "
    "seed; with --compare 0, so that every run decodes the same prior noise).",
)
flags.DEFINE_string(
    "attribute",
    None,
    "Attribute vector and scatter colours: NAME (NAME == 1, "
    "e.g. Smiling on celeb_a) or NAME:VALUE (one class against the rest, e.g. "
    "label:3 on mnist, shape:2 on shapes). Default: Smiling if the dataset has "
    "it, else <first label>:1.",
)
flags.DEFINE_integer(
    "neighbourhood_of", 0, "Test image whose latent neighbourhood is sampled.", lower_bound=0
)
flags.DEFINE_list(
    "radius",
    ["0.5"],
    "Radii R of the neighbourhood samples z = E_q[z|x] + R * eps, e.g. 0.25,0.5,1.",
)
flags.DEFINE_integer(
    "num_directions", 4, "Principal directions of the test codes drawn.", lower_bound=1
)
flags.DEFINE_integer(
    "figure_examples",
    5000,
    "Most test images encoded for the latent "
    "figures (scatter, principal directions, attribute vector).",
    lower_bound=2,
)
flags.DEFINE_list(
    "compare",
    None,
    "Run folders to compare (--compare DIR1 DIR2 ... or --compare=DIR1,DIR2); all on one dataset.",
)
flags.DEFINE_string("output", None, "--compare: output folder. Default: runs/compare-<time>.")
flags.DEFINE_integer(
    "pca_images",
    2000,
    "--compare: train images the PCA baseline is fitted on (and test images it is scored on).",
    lower_bound=2,
)


def main(argv):
    if FLAGS.compare:
        # `--compare DIR1 DIR2`: absl takes DIR1 as the value, the rest stay in argv.
        workdirs = list(FLAGS.compare) + list(argv[1:])
        if FLAGS.workdir:
            raise UsageError("use either --workdir or --compare, not both.")
        output = FLAGS.output or default_workdir("compare")
        summary = report.compare_runs(
            workdirs,
            output,
            max_batches=FLAGS.max_batches,
            pca_images=FLAGS.pca_images,
            seed=0 if FLAGS.seed is None else FLAGS.seed,
        )
        print(summary["table"])
        print(f"Comparison written to {output}")
        return 0
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    if not FLAGS.workdir:
        raise UsageError(
            "--workdir is required: the run folder that holds model.keras "
            "(or --compare DIR1 DIR2 ... to compare runs)."
        )
    report.evaluate_workdir(
        FLAGS.workdir,
        protocol=FLAGS.protocol,
        test_images=FLAGS.test_images,
        iwae_images=FLAGS.iwae_images,
        iwae_samples=FLAGS.iwae_samples,
        max_batches=FLAGS.max_batches,
        disentanglement=FLAGS.disentanglement,
        disentanglement_points=FLAGS.disentanglement_points,
        factor_vae_votes=FLAGS.factor_vae_votes,
        seed=FLAGS.seed,
        figures=FLAGS.figures,
        attribute=FLAGS.attribute,
        neighbourhood_of=FLAGS.neighbourhood_of,
        radius=FLAGS.radius,
        num_directions=FLAGS.num_directions,
        figure_examples=FLAGS.figure_examples,
        # The plan first, the table as soon as it is written, then the rest.
        echo=functools.partial(print, flush=True),
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
