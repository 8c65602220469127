"""Where the model maths asks the TensorFlow backend for compiled graphs.

The maths stays `keras.ops` (DESIGN.md, "Backend boundary"); three speed
paths need the backend's compiler and ask it here, in one place. On another
backend each helper leaves `fn` as it is (and `tracing` is False).

- `tracing()`: whether a TensorFlow graph is being traced (a `fit` or
  `evaluate` step, a `tf.function`), as opposed to eager execution.
- `xla_when_traced(fn)`: `fn` run as one XLA cluster when traced into a
  graph, unchanged when called eagerly (`likelihoods`).
- `graph(fn)`: `fn` as one graph per input signature, traced once and reused
  (`evaluation.bounds`' IWAE chunks).
"""

from __future__ import annotations

import functools

import keras


def tracing():
    """Whether the TensorFlow backend is tracing a graph (a `tf.function`)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return not tf.executing_eagerly()


def xla_when_traced(fn):
    """`fn`, run as one XLA cluster when it is traced into a TensorFlow graph
    (a `fit` or `evaluate` step): its element-wise ops fused into a few loops,
    forward and backward. Eager calls and other backends run `fn` unchanged.

    Meant for element-wise-heavy functions, not whole steps: XLA's
    convolutions are slower than oneDNN's on CPU (DESIGN.md, "Performance")."""
    compiled = []

    @functools.wraps(fn)
    def run(*args):
        if tracing():
            if not compiled:
                import tensorflow as tf

                compiled.append(tf.function(fn, jit_compile=True, autograph=False))
            return compiled[0](*args)
        return fn(*args)

    return run


def graph(fn):
    """`fn` as one graph per input signature on the TensorFlow backend, else `fn`.

    `reduce_retracing`: a shorter last chunk or batch generalizes the traced
    shapes instead of tracing again and again. The traces live as long as
    the returned function (a module-level one: the process), one per
    distinct non-tensor argument (e.g. per model)."""
    if keras.backend.backend() != "tensorflow":
        return fn
    import tensorflow as tf

    return tf.function(fn, reduce_retracing=True, autograph=False)
