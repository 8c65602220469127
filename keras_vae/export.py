"""SavedModel export with named serving signatures (DESIGN.md section 4).

    from keras_vae import export
    export.export_saved_model(vae, "runs/x/export")

    python -m keras_vae.export --workdir=runs/x      # runs/x/model.keras -> runs/x/export/

The SavedModel loads with plain TensorFlow, no `keras_vae` (or Keras) import:

    m = tf.saved_model.load("runs/x/export")
    m.encode(images)["mean"]                    # images float32 in [0, 1]
    m.encode_uint8(pixels)["mean"]              # pixels uint8 in [0, 255]
    m.decode(z)["images"]
    m.sample(count=16, temperature=1.0, seed=0)["images"]
    m.reconstruct(images)["images"]             # also signatures["serving_default"]

A conditional model (`model.conditional`, `--model=cvae`) exports the same
signatures, each with one more input, `label`:

    m.sample(count=16, temperature=1.0, seed=0, label=2)["images"]   # 16 of class 2
    m.decode(z, label=ids)["images"]            # ids int32 (batch,), one per code
    m.reconstruct(images, label=ids)["images"]  # one id per image; encode alike
    # multi-hot (CelebA's 40 attributes): a float32 0/1 vector per sample or image
    m.sample(count=16, temperature=1.0, seed=0, label=attributes)["images"]  # (40,)
    m.decode(z, label=attribute_rows)["images"]                         # (batch, 40)

Signatures (`saved_model_cli show --all --dir runs/x/export` lists them with
their shapes); the batch dimension is free, H, W, C and the latent size are
fixed; every output is float32 and every image output is in [0, 1]:

    encode             images float32 (None, H, W, C) -> mean, log_var (None, D)
    encode_uint8       images uint8   (None, H, W, C) -> mean, log_var (None, D)
    decode             z float32 (None, D)             -> images (None, H, W, C)
    sample             count int32 (), temperature float32 (), seed int64 ()
                                                       -> images (count, H, W, C)
    reconstruct        images float32 (None, H, W, C) -> images (None, H, W, C)
    reconstruct_uint8  images uint8   (None, H, W, C) -> images (None, H, W, C)
    serving_default    = reconstruct

and for a conditional model with K classes or attributes, `label` after the
other inputs:

    one-hot (class ids)   sample: label int32 ()       others: label int32 (None,)
    multi-hot (--condition=attributes)
                          sample: label float32 (K,)   others: label float32 (None, K)

Class ids must lie in [0, K) and attribute values in [0, 1] (1 = present;
CelebA's raw -1/1 coding is refused), and a per-image `label` needs one row
per image or code: anything else fails with an InvalidArgumentError naming
the endpoint and the values received, never with the all-zero condition that
`one_hot` makes of an id out of range. `sample`'s noise does not depend on
the label: one seed with two labels gives the same codes, two classes.

uint8 or float: a SavedModel signature has exactly one input signature (one
dtype), and `ExportArchive.add_endpoint` with one `fn` traced for two dtypes
still exposes only one of them as a signature. So the images endpoints come
twice, under two names: the float32 one (the package convention, images in
[0, 1]) and a `_uint8` one that divides by 255 inside the graph. A TF Serving
or C++ client sees both in the signature list and feeds raw bytes without a
conversion of its own; a wrong dtype fails at the signature boundary instead
of being silently reinterpreted.

Everything is deterministic: encode returns the posterior mean and log-variance,
decode the mean of p(x|z), reconstruct decode(mean). `sample` uses stateless
random ops seeded with [seed, 0], so a seed always gives the same images.
An empty batch (or `count=0`) gives an empty batch of the same trailing shape.

A model with a NaN or Inf weight (a diverged run) is never exported.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os

import keras
import tensorflow as tf
from absl import logging

from keras_vae import files, runs
from keras_vae.config import UserError

SIGNATURES = (
    "reconstruct",  # first: ExportArchive also registers it as serving_default
    "reconstruct_uint8",
    "encode",
    "encode_uint8",
    "decode",
    "sample",
)


def _check_shape(tensor, trailing_shape, what, endpoint, batched=True):
    """`tensor` after an in-graph check that it is `(batch, *trailing_shape)`
    (or exactly `trailing_shape` unless `batched`).

    The object API (`loaded.encode(x)`) checks inputs against the signature's
    TensorSpec before running anything. A call through `loaded.signatures[...]`
    (or TF Serving) does not: without this check a wrong image size fails deep
    inside the network ("Input to reshape is a tensor with 50 values ...").
    """
    dims = ["batch"] * batched + [str(d) for d in trailing_shape]
    expected = f"({', '.join(dims)}{',' * (len(dims) == 1)})"  # (batch, 8), (batch,), ()
    rank = len(dims)
    shape = tf.shape(tensor)  # (actual rank,)
    # Padding keeps the slice valid for any rank; the rank test decides.
    padded = tf.concat([shape, tf.zeros([rank], tf.int32)], axis=0)
    known = tf.constant(trailing_shape, tf.int32, [len(trailing_shape)])
    ok = tf.logical_and(
        tf.equal(tf.size(shape), rank),
        tf.reduce_all(tf.equal(padded[int(batched) : rank], known)),
    )
    check = tf.debugging.Assert(
        ok,
        [f"{endpoint}: expected {what} of shape {expected}; received shape", shape],
        summarize=8,
    )
    with tf.control_dependencies([check]):
        # Grappler folds the rank test above to True from the signature's
        # static shape (a label (4, 1) for (None,) would pass); EnsureShape
        # compares the runtime shape, after the clearer check.
        return tf.ensure_shape(tensor, [None] * batched + list(trailing_shape))


def _checked_images(images, image_shape, endpoint):
    """`images` (uint8 or float) as float32 in [0, 1], after the shape check."""
    images = _check_shape(images, image_shape, "images", endpoint)
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def _label_spec(model, batched):
    """The `label` input of a conditional model's endpoints: int32 class ids
    `(None,)` (`sample`: one id, `()`), or with `multi_hot` float32 attribute
    vectors `(None, K)` (`sample`: one vector, `(K,)`)."""
    if model.multi_hot:
        trailing, dtype = (int(model.condition_size),), tf.float32
    else:
        trailing, dtype = (), tf.int32
    return tf.TensorSpec((None,) * batched + trailing, dtype, name="label")


def _checked_label(label, model, endpoint, rows=None, row="image"):
    """`label` after in-graph checks of its shape, its values and (given the
    batch input `rows`, one `row` each) its batch size.

    An id out of [0, K) would become an all-zero one-hot condition and an
    attribute outside [0, 1] (CelebA's raw -1/1 coding) a condition the model
    never saw: plausible-looking images of no class, so both are errors.
    """
    size = int(model.condition_size)
    batched = rows is not None
    trailing = (size,) if model.multi_hot else ()
    label = _check_shape(label, trailing, "label", endpoint, batched=batched)
    if model.multi_hot:
        valid = tf.logical_and(label >= 0.0, label <= 1.0)  # False for NaN too
        what = "attribute values in [0, 1] (1 = present, 0 = absent)"
    else:
        valid = tf.logical_and(label >= 0, label < size)
        what = f"class ids in [0, {size})"
    # The offending values only, flattened (a scalar label included).
    wrong = tf.boolean_mask(tf.reshape(label, [-1]), tf.reshape(~valid, [-1]))
    checks = [
        tf.debugging.Assert(
            tf.reduce_all(valid),
            [f"{endpoint}: expected label {what}; received", wrong],
            summarize=8,
        )
    ]
    if batched:
        checks.append(
            tf.debugging.Assert(
                tf.equal(tf.shape(label)[0], tf.shape(rows)[0]),
                [
                    f"{endpoint}: expected one label per {row}; received labels",
                    tf.shape(label)[0],
                    f"for {row}s",
                    tf.shape(rows)[0],
                ],
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(label)


def _unless_empty(fn, x, outputs):
    """`fn(x)`, or for an empty batch zeros of shape `(0, *shape)` per output.

    oneDNN's fused convolutions reject a batch of 0 ("input depth must be
    evenly divisible by filter depth: 1 vs 8"); a serving client that sends
    an empty request should get an empty answer.

    Args:
        fn: `x -> {name: float32 tensor}`.
        x: the (checked) input, batch first.
        outputs: `{name: trailing shape}`, the keys of `fn`'s result.
    """

    def empty():
        return {name: tf.zeros((0, *shape), tf.float32) for name, shape in outputs.items()}

    return tf.cond(tf.shape(x)[0] > 0, lambda: fn(x), empty)


def _signature_fns(model):
    """The endpoint functions and their input signatures, by name.

    A conditional model's endpoints take `label` after the other inputs (see
    the module docstring); an unconditional model's take none.
    """
    image_shape = tuple(int(d) for d in model.image_shape)
    latent_dim = int(model.latent_dim)
    conditional = bool(getattr(model, "conditional", False))

    def labels_of(label):
        return {"labels": label} if conditional else {}

    def encoded(x, label=None):
        mean, log_var = model.encode(x, **labels_of(label))
        return {"mean": tf.cast(mean, tf.float32), "log_var": tf.cast(log_var, tf.float32)}

    def decoded(z, label=None):
        return {"images": tf.cast(model.decode(z, **labels_of(label)), tf.float32)}

    def reconstructed(x, label=None):
        return decoded(model.encode(x, **labels_of(label))[0], label)

    codes = {"mean": (latent_dim,), "log_var": (latent_dim,)}
    pictures = {"images": image_shape}

    def run(fn, outputs, x, label, endpoint):
        """`fn(x, label)` after the checks of `label`, or the empty answer."""
        if conditional:
            row = "code" if endpoint == "decode" else "image"
            label = _checked_label(label, model, endpoint, rows=x, row=row)
        return _unless_empty(lambda x: fn(x, label), x, outputs)

    # Python parameter names are the object API's keywords (`m.decode(z=...)`).
    def images_endpoint(fn, outputs, endpoint):
        if conditional:

            def call(images, label):
                x = _checked_images(images, image_shape, endpoint)
                return run(fn, outputs, x, label, endpoint)

        else:

            def call(images):
                x = _checked_images(images, image_shape, endpoint)
                return run(fn, outputs, x, None, endpoint)

        return call

    def decode_rows(z, label=None):
        z = _check_shape(z, (latent_dim,), "z", "decode")
        return run(decoded, pictures, z, label, "decode")

    def sample_images(count, temperature, seed, label=None):
        check = tf.debugging.Assert(
            count >= 0, ["sample: expected count >= 0; received count", count]
        )
        with tf.control_dependencies([check]):
            count = tf.identity(count)
        shape = tf.stack([count, latent_dim])
        # Stateless: the same (seed, count, temperature) gives the same images;
        # the noise does not depend on the label.
        z = tf.random.stateless_normal(shape, seed=tf.stack([seed, tf.zeros_like(seed)]))
        if conditional:
            # One label for every sample: (count,) ids or (count, K) vectors.
            label = _checked_label(label, model, "sample")
            label = tf.repeat(label[tf.newaxis], count, axis=0)
        return _unless_empty(lambda z: decoded(z, label), z * temperature, pictures)

    sample_spec = [
        tf.TensorSpec((), tf.int32, name="count"),
        tf.TensorSpec((), tf.float32, name="temperature"),
        tf.TensorSpec((), tf.int64, name="seed"),
    ]
    decode_spec = [tf.TensorSpec((None, latent_dim), tf.float32, name="z")]
    if conditional:
        decode, sample = decode_rows, sample_images
        label_specs = [_label_spec(model, batched=True)]
        sample_spec.append(_label_spec(model, batched=False))
    else:

        def decode(z):
            return decode_rows(z)

        def sample(count, temperature, seed):
            return sample_images(count, temperature, seed)

        label_specs = []

    def images_spec(dtype):
        return [tf.TensorSpec((None, *image_shape), dtype, name="images"), *label_specs]

    return {
        "reconstruct": (
            images_endpoint(reconstructed, pictures, "reconstruct"),
            images_spec(tf.float32),
        ),
        "reconstruct_uint8": (
            images_endpoint(reconstructed, pictures, "reconstruct_uint8"),
            images_spec(tf.uint8),
        ),
        "encode": (images_endpoint(encoded, codes, "encode"), images_spec(tf.float32)),
        "encode_uint8": (images_endpoint(encoded, codes, "encode_uint8"), images_spec(tf.uint8)),
        "decode": (decode, decode_spec + label_specs),
        "sample": (sample, sample_spec),
    }


def signatures_of(model):
    """The signature names `model` exports, `serving_default`'s first."""
    if getattr(model, "is_sequence", False):
        from keras_vae import sequence_export

        return sequence_export.SIGNATURES
    return SIGNATURES


def build_export_archive(model):
    """A `keras.export.ExportArchive` of `model` with the signatures of this module.

    `reconstruct` is added first: `ExportArchive.write_out` registers the
    first endpoint as `serving_default` as well.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    if getattr(model, "is_sequence", False):  # token ids in and out
        from keras_vae import sequence_export

        fns = sequence_export.signature_fns(model, _check_shape)
    else:
        fns = _signature_fns(model)
    for name in signatures_of(model):
        fn, input_signature = fns[name]
        archive.add_endpoint(name, fn, input_signature=input_signature)
    return archive


@contextlib.contextmanager
def _quiet_saving():
    """Holds absl and TensorFlow's Python logger at WARNING, unless --verbosity
    asks for debug lines.

    Saving a SavedModel logs INFO lines ("INFO:tensorflow:Assets written to:
    .../export.tmp-XXXX/assets", "Writing fingerprint to ...", renamed
    signature inputs) that name the temporary folder `replace_dir` renames a
    moment later: noise to a user, twice over (TensorFlow's handler and absl's).
    """
    verbosity, tf_logger = logging.get_verbosity(), tf.get_logger()
    tf_level = tf_logger.level
    if verbosity < logging.DEBUG:
        logging.set_verbosity(min(verbosity, logging.WARNING))
        tf_logger.setLevel(max(tf_level, std_logging.WARNING))
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        tf_logger.setLevel(tf_level)


def export_saved_model(model, export_dir):
    """Exports `model` as a SavedModel to `export_dir`, atomically.

    Through `keras_vae.files.replace_dir`: `export_dir` never holds a
    half-written SavedModel, and an error leaves the previous export where
    it was (and no temporary folder).

    Args:
        model: a `VAE` (with `model.conditional`, every signature takes a
            `label`; see the module docstring).
        export_dir: the SavedModel folder to create or replace.

    Returns:
        `export_dir`.

    Raises:
        UserError: `export_dir` is a file, or a weight of `model` is NaN or
            Inf (nothing is written then).
    """
    export_dir = os.path.abspath(export_dir)
    runs.check_finite(
        model,
        f"Cannot export to {export_dir}: the model's weights are",
        "a diverged model; retrain it with a lower --learning_rate.",
    )
    parent = os.path.dirname(export_dir)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise UserError(f"Cannot export to {export_dir}: it is a file; remove it or pick a folder.")
    with _quiet_saving():
        archive = build_export_archive(model)
        files.replace_dir(export_dir, lambda tmp: archive.write_out(tmp, verbose=False))
    names = ", ".join(signatures_of(model))
    logging.info("Exported the SavedModel (%s) to %s.", names, export_dir)
    return export_dir


def export_workdir(workdir):
    """Loads `workdir/model.keras` and exports it to `workdir/export`.

    Raises:
        UserError: no model in `workdir`, or one that cannot be loaded or
            exported (see `keras_vae.runs.load_model`).
    """
    model_path = os.path.join(workdir, runs.MODEL_FILE)
    if not os.path.isfile(model_path):
        raise UserError(
            f"No model at {model_path}: train one first with "
            f"`python train.py --workdir={workdir}`, or point --workdir at a run folder."
        )
    return export_saved_model(runs.load_model(model_path), os.path.join(workdir, runs.EXPORT_DIR))


def _main(argv):
    from absl import flags

    from keras_vae.config import UsageError

    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; flags look like --name=value.")
    workdir = flags.FLAGS.workdir
    if not workdir:
        raise UsageError("--workdir is required: the run folder that holds model.keras.")
    export_dir = export_workdir(workdir)
    print(f"Exported the SavedModel (serving_default = reconstruct) to {export_dir}")
    return 0


if __name__ == "__main__":
    # Flags are defined here, not at import, so that importing this module
    # from an entry point with its own --workdir flag does not clash.
    from absl import flags

    from keras_vae import cli

    flags.DEFINE_string("workdir", None, "Run folder with model.keras; writes WORKDIR/export.")
    cli.run(_main)
