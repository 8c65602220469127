"""Evaluates a trained run: test metrics, results.json and figures; or compares runs.

    python evaluate.py --workdir=runs/shapes                 # IWAE with K=1000, all test batches
    python evaluate.py --workdir=runs/shapes --max_batches=10 --iwae_samples=100
    python evaluate.py --workdir=runs/celeba --attribute=Smiling --radius=0.25,0.5,1
    python evaluate.py --compare runs/mlp-d8 runs/conv-d8 runs/conv-d32

One run: reads WORKDIR/config.json and WORKDIR/model.keras, evaluates the test
split (ELBO, IWAE log-likelihood, bits/dim, active units, KL per dimension;
MIG on shapes), writes WORKDIR/results.json, prints the table and draws
WORKDIR/figures/*.png (see keras_vae/figures.py for the list). K=1000
importance samples over a whole test split take long on a CPU: use
--max_batches (and/or a smaller --iwae_samples) for a quick look.

--compare DIR1 DIR2 ...: one table and side-by-side figures of several runs
of one dataset, into --output (default runs/compare-<time>).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow's C++ start-up lines off stderr unless asked for verbosity.
if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
    os.environ.setdefault("KERAS_VAE_QUIET_IMPORT", "1")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder written by train.py (config.json, model.keras).")
flags.DEFINE_integer(
    "iwae_samples",
    1000,
    "K of the importance-weighted log-likelihood bound "
    "(Burda et al. 2015); 0 skips it. Slow on CPU: see --max_batches.",
    lower_bound=0,
)
flags.DEFINE_integer(
    "max_batches",
    None,
    "Evaluate at most this many test batches (default: the whole test split).",
    lower_bound=1,
)
flags.DEFINE_boolean("mig", True, "shapes only: the Mutual Information Gap.")
flags.DEFINE_integer("mig_points", 10_000, "Factor samples for MIG.", lower_bound=2)
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


def _evaluate_one(workdir):
    from keras_vae import evaluation, figures, training

    config, model = figures.load_run(workdir)
    # A folder we cannot write to fails now, not after a long evaluation.
    figures.check_writable(workdir)
    if FLAGS.figures:
        figures.check_writable(os.path.join(workdir, "figures"))
    test_ds, info = training.load_split(config, "test", shuffle=False, repeat=False)
    figures.check_image_shape(workdir, model, info.image_shape)
    if FLAGS.figures:  # bad figure flags fail now, not after a long evaluation
        attribute = figures.parse_attribute(FLAGS.attribute, info.label_names)
        radii = figures.parse_radii(FLAGS.radius)
        figures.check_neighbourhood(FLAGS.neighbourhood_of, info)
    results = figures.evaluate_run(
        model,
        config,
        test_ds,
        iwae_samples=FLAGS.iwae_samples,
        max_batches=FLAGS.max_batches,
        mig=FLAGS.mig,
        mig_points=FLAGS.mig_points,
        seed=FLAGS.seed,
    )
    evaluation.write_results(os.path.join(workdir, "results.json"), results)
    print(evaluation.format_table(results))
    print(f"Results written to {os.path.join(workdir, 'results.json')}")
    if FLAGS.figures:
        out_dir = os.path.join(workdir, "figures")
        paths = figures.write_run_figures(
            model,
            config,
            out_dir,
            results=results,
            attribute=attribute,
            neighbourhood_of=FLAGS.neighbourhood_of,
            radii=radii,
            num_directions=FLAGS.num_directions,
            max_batches=FLAGS.max_batches,
            figure_examples=FLAGS.figure_examples,
            seed=FLAGS.seed,
        )
        print(f"{len(paths)} figures written to {out_dir}")


def _compare(workdirs):
    from keras_vae import config as config_lib
    from keras_vae import figures

    output = FLAGS.output or config_lib.default_workdir("compare")
    summary = figures.compare_runs(
        workdirs,
        output,
        max_batches=FLAGS.max_batches,
        pca_images=FLAGS.pca_images,
        seed=0 if FLAGS.seed is None else FLAGS.seed,
    )
    print(summary["table"])
    print(f"Comparison written to {output}")


def _usage_error(message):
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv):
    # Flag combinations first: a usage error should not wait for TensorFlow.
    if FLAGS.compare:
        # `--compare DIR1 DIR2`: absl takes DIR1 as the value, the rest stay in argv.
        workdirs = list(FLAGS.compare) + list(argv[1:])
        if FLAGS.workdir:
            return _usage_error("use either --workdir or --compare, not both.")
    elif len(argv) > 1:
        return _usage_error(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    elif not FLAGS.workdir:
        return _usage_error(
            "--workdir is required: the run folder that holds model.keras "
            "(or --compare DIR1 DIR2 ... to compare runs)."
        )
    from keras_vae import config as config_lib

    try:
        if FLAGS.compare:
            _compare(workdirs)
        else:
            _evaluate_one(FLAGS.workdir)
    except config_lib.UserError as e:
        if logging.get_verbosity() >= logging.DEBUG:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    return 0


def _parse_flags(argv):
    """absl's parser, but a bad flag is a usage error: one line, exit code 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=_parse_flags)
