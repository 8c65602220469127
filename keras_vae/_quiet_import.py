"""Imports TensorFlow without its C++ start-up chatter, when asked to.

TensorFlow's runtime prints "WARNING: All log messages before
absl::InitializeLog() ..." and INFO lines (oneDNN, CUDA drivers) straight to
file descriptor 2 while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says
(TF 2.21). The entry points set KERAS_VAE_QUIET_IMPORT=1 so that a usage
error is one line on stderr, not one line after six. Library users are not
affected unless they set the variable themselves.
"""

import os
import sys


def import_tensorflow():
    # `python -m keras_vae.export` imports this package before its own code
    # runs (sys.argv[0] is still "-m" then): an entry point too.
    quiet = os.environ.get("KERAS_VAE_QUIET_IMPORT") == "1" or (
        sys.argv[:1] == ["-m"] and not any(a.startswith(("--verbosity", "-v")) for a in sys.argv)
    )
    if not quiet or "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow

            # Device discovery prints "failed call to cuInit" on a machine
            # without a GPU driver: let it happen here.
            tensorflow.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
