"""Trains a VAE. `python train.py` runs on the built-in shapes data, no download.

    python train.py                                   # shapes, conv, ~5 min on 2 CPU cores
    python train.py --dataset=celeb_a --workdir=runs/celeba
    python train.py --dataset=folder:/data/img_align_celeba
    python train.py --dataset=mnist --model=conv --latent_dim=2

Flags override the dataset's preset (keras_vae/config.py); the resolved
config is written to WORKDIR/config.json.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Keep TensorFlow's C++ start-up lines off stderr unless asked for verbosity.
if not any(a.startswith(("--verbosity", "-v")) for a in sys.argv[1:]):
    os.environ.setdefault("KERAS_VAE_QUIET_IMPORT", "1")

from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "shapes", "shapes, mnist, fashion_mnist, cifar10, celeb_a, "
                    "svhn_cropped, frey_faces, or folder:PATH for a folder of images.")
flags.DEFINE_string("workdir", None, "Where the run is written. Default: runs/<dataset>-<time>.")
flags.DEFINE_string("data_dir", None, "TensorFlow Datasets data_dir; also where "
                    "frey_rawface.mat is looked for.")
flags.DEFINE_boolean("download", None, "Let tfds download a missing dataset (needs network).")
flags.DEFINE_boolean("strict_data", None, "Stop on a corrupt image file instead of skipping it.")
flags.DEFINE_string("model", None, "Architecture: mlp (fully connected) or conv.")
flags.DEFINE_integer("latent_dim", None, "Size of the latent code z.")
flags.DEFINE_list("widths", None, "Layer widths, e.g. 32,64,128 (conv) or 512,256 (mlp).")
flags.DEFINE_integer("dense_units", None, "conv: width of the dense layer next to z.")
flags.DEFINE_boolean("per_channel_scale", None, "gaussian_learned: one sigma per channel.")
flags.DEFINE_string("likelihood", None, "bernoulli, gaussian, gaussian_learned or "
                    "discretized_logistic.")
flags.DEFINE_float("gaussian_sigma", None, "Fixed sigma of the gaussian likelihood.")
flags.DEFINE_boolean("binarize", None, "Dynamically binarize the images (Bernoulli data).")
flags.DEFINE_float("beta", None, "KL weight: 1 is the ELBO, > 1 a beta-VAE.")
flags.DEFINE_string("beta_schedule", None, "constant, linear (warm-up) or cyclical.")
flags.DEFINE_integer("warmup_steps", None, "Linear schedule: steps to reach --beta.")
flags.DEFINE_integer("beta_cycles", None, "Cyclical schedule: cycles over the run.")
flags.DEFINE_float("cycle_ratio", None, "Cyclical schedule: fraction of a cycle spent rising.")
flags.DEFINE_float("free_bits", None, "Free nats per latent dimension (0 = off).")
flags.DEFINE_integer("epochs", None, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass).")
flags.DEFINE_integer("validation_steps", None, "Validation batches per epoch (default: all).")
flags.DEFINE_integer("eval_steps", None, "Test batches for the final summary (default: all).")
flags.DEFINE_integer("batch_size", None, "Global batch size.")
flags.DEFINE_float("learning_rate", None, "Adam learning rate.")
flags.DEFINE_integer("image_size", None, "Resize images to this size (square).")
flags.DEFINE_integer("seed", None, "Random seed (weights, sampling, data order).")
flags.DEFINE_boolean("deterministic", None, "TensorFlow op determinism: the same seed gives "
                     "the same losses (slower).")
flags.DEFINE_integer("backup_every_steps", None, "Save resume state every N steps (and each "
                     "epoch); a killed run restarted with the same command continues from it.")
flags.DEFINE_integer("max_consecutive_skips", None, "Stop after N non-finite steps in a row.")
flags.DEFINE_boolean("export", None, "Write the SavedModel to WORKDIR/export at the end.")
flags.DEFINE_string("mixed_precision", None, "auto (float16 on GPU, none on CPU), float16, "
                    "bfloat16 or none.")
flags.DEFINE_string("jit_compile", None, "XLA: auto (GPU only), true or false.")
flags.DEFINE_string("distribution", None, "auto, none, mirrored (local GPUs), multi_worker "
                    "(from TF_CONFIG) or tpu.")
flags.DEFINE_boolean("restart", False, "Start the run in --workdir over, discarding its "
                     "backup, logs and summary (a finished run is never overwritten without it).")
flags.DEFINE_integer("image_every", None, "Write TensorBoard image grids every N epochs.")

# Flag name -> Config field, where they differ.
_RENAMED = {"model": "architecture"}
_CONFIG_FLAGS = (
    "data_dir", "download", "strict_data", "model", "latent_dim", "widths", "dense_units",
    "per_channel_scale", "cycle_ratio", "likelihood",
    "gaussian_sigma", "binarize", "beta", "beta_schedule", "warmup_steps", "beta_cycles",
    "free_bits", "epochs", "steps_per_epoch", "validation_steps", "eval_steps", "batch_size",
    "learning_rate", "image_size", "seed", "image_every", "deterministic", "backup_every_steps",
    "max_consecutive_skips", "export", "mixed_precision", "jit_compile", "distribution",
)


def _overrides():
    from keras_vae.config import UsageError

    overrides = {}
    for name in _CONFIG_FLAGS:
        value = FLAGS[name].value
        if name == "widths" and value is not None:
            try:
                value = tuple(int(w) for w in value)
            except ValueError:
                raise UsageError(
                    f"--widths must be integers separated by commas. Received: {value!r}."
                ) from None
        overrides[_RENAMED.get(name, name)] = value
    return overrides


def main(argv):
    from keras_vae import config as config_lib
    from keras_vae import training

    if len(argv) > 1:
        raise config_lib.UsageError(
            f"unexpected arguments {argv[1:]}; flags look like --name=value."
        )
    config = config_lib.resolve(FLAGS.dataset, **_overrides())
    workdir = FLAGS.workdir or config_lib.default_workdir(config.dataset)
    results = training.train_and_evaluate(config, workdir, restart=FLAGS.restart)
    print(training.summary_line(results))
    return 0


if __name__ == "__main__":
    from keras_vae import cli

    cli.run(main)
