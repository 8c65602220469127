"""Trains a VAE. `python train.py` runs on the built-in shapes data, no download.

    python train.py                                   # shapes, conv, ~4 min on 2 CPU cores
    python train.py --dataset=celeb_a --workdir=runs/celeba
    python train.py --dataset=folder:/data/img_align_celeba
    python train.py --dataset=mnist --network=conv --latent_dim=2

Every other flag is a field of keras_vae.config.Config (type, default and help
are written there once); flags override the dataset's preset, and the resolved
config is written to WORKDIR/config.json.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow's C++ start-up lines off stderr unless asked for verbosity.
if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
    os.environ.setdefault("KERAS_VAE_QUIET_IMPORT", "1")

from absl import flags  # noqa: E402

from keras_vae import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Where the run is written. Default: runs/<dataset>-<time>.")
flags.DEFINE_boolean("restart", False, "Start the run in --workdir over, discarding its "
                     "backup, logs and summary (a finished run is never overwritten without it).")
cli.define_config_flags()
flags.adopt_module_key_flags(cli)  # --help lists them with the two above


def main(argv):
    from keras_vae import config as config_lib
    from keras_vae import training

    if len(argv) > 1:
        raise config_lib.UsageError(
            f"unexpected arguments {argv[1:]}; flags look like --name=value."
        )
    config = cli.config_from_flags()
    workdir = FLAGS.workdir or config_lib.default_workdir(config.dataset)
    results = training.train_and_evaluate(config, workdir, restart=FLAGS.restart)
    print(training.summary_line(results))
    return 0


if __name__ == "__main__":
    cli.run(main)
