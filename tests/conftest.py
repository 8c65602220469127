"""Shared test set-up: quiet TensorFlow, CPU only, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402  (after the environment variables, which must come first)


@pytest.fixture
def dtype_policy():
    """Sets a global Keras dtype policy (and optionally floatx) for one test.

    Usage: `dtype_policy("mixed_float16")` or `dtype_policy("float64", floatx="float64")`
    before building layers. Whatever the test does, float32 is restored afterwards
    (the same as a try/finally around the test body), so no later test inherits it.
    """
    import keras

    def set_policy(name, floatx=None):
        if floatx is not None:
            keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(name)

    try:
        yield set_policy
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
