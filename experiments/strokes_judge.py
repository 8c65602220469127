"""Does a strokes run's reconstruction redraw the right shape? A judge says.

    python experiments/strokes_judge.py --workdir=runs/strokes

A small CNN is trained on drawings of real (tokenized, then rendered)
training sequences to tell square / ellipse / heart apart, checked on
held-out drawings, then shown the greedy reconstructions of held-out test
sequences (decoded from the posterior mean) and the model's prior samples.
Prints the judge's own test accuracy, the fraction of reconstructions judged
as their input's shape (with the confusion counts), and the shapes of the
samples; nothing is written.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

flags.DEFINE_string("workdir", None, "A finished strokes run (train.py --dataset=strokes).")
flags.DEFINE_integer("count", 512, "Held-out test sequences to reconstruct.")
flags.DEFINE_integer("judge_examples", 12_000, "Training drawings of the judge.")
FLAGS = flags.FLAGS


def _drawings(split, count, seed=0):
    """`(images (count, 64, 64, 1), shape ids (count,), token ids)` of a split."""
    from keras_vae.data import pipeline, strokes

    source = strokes.make_source(split)
    ds = pipeline.tail(source, batch_size=count, shuffle=True, seed=seed, repeat=False,
                       drop_remainder=False, binarize=False, with_labels=True, cache=False)
    tokens, labels = next(iter(ds))
    tokens = tokens.numpy()
    return strokes.render_tokens(tokens), labels["shape"].numpy(), tokens


def _judge(images, shapes):
    import keras

    model = keras.Sequential([
        keras.Input((64, 64, 1)),
        keras.layers.MaxPooling2D(2),  # 32x32: the lines survive a max-pool
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(3),
    ])
    model.compile(keras.optimizers.Adam(2e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(images, shapes, batch_size=128, epochs=6, verbose=0)
    return model


def main(argv):
    del argv
    import keras

    from keras_vae import runs
    from keras_vae.data import strokes

    keras.utils.set_random_seed(0)
    images, shapes, _ = _drawings("train", FLAGS.judge_examples)
    judge = _judge(images, shapes)
    test_images, test_shapes, test_tokens = _drawings("test", FLAGS.count, seed=1)
    judged = np.argmax(judge.predict(test_images, verbose=0), axis=-1)
    print(f"judge on real held-out drawings: {np.mean(judged == test_shapes):.1%} "
          f"of {len(test_shapes)}")

    model = runs.load_model(f"{FLAGS.workdir}/model.keras")
    recon = np.concatenate([np.asarray(model.reconstruct(test_tokens[i:i + 128]))
                            for i in range(0, len(test_tokens), 128)])
    judged = np.argmax(judge.predict(strokes.render_tokens(recon), verbose=0), axis=-1)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (test_shapes, judged), 1)
    print(f"reconstructions judged as their input's shape: {np.mean(judged == test_shapes):.1%}")
    print("rows: input shape (square, ellipse, heart); columns: judged shape")
    print(confusion)
    samples = np.asarray(model.sample(256, seed=0))
    counts = np.bincount(np.argmax(judge.predict(strokes.render_tokens(samples), verbose=0),
                                   axis=-1), minlength=3)
    print(f"256 prior samples judged square / ellipse / heart: {counts.tolist()}")


if __name__ == "__main__":
    flags.mark_flag_as_required("workdir")
    app.run(main)
