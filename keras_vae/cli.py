"""What the entry points (train.py, evaluate.py, python -m keras_vae.export) share.

- a bad flag is a usage error: one `error:` line and exit code 2 (absl's own
  parser prints several lines and exits 1);
- a `UserError` ends the program with its one-line message and exit code,
  with the traceback only under `--verbosity=1` or more.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from keras_vae.config import UserError


def parse_flags(argv):
    """`flags_parser` for `absl.app.run`."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def guarded(main):
    """Wraps `main(argv) -> exit code` so a UserError becomes one stderr line."""

    def run(argv):
        try:
            code = main(argv)
        except KeyboardInterrupt:  # Ctrl-C outside the parts that save on it
            print("error: interrupted (Ctrl-C); nothing was left half-written.", file=sys.stderr)
            code = 130
        except UserError as e:
            if logging.get_verbosity() >= logging.DEBUG:
                raise
            if sys.stdout.isatty():  # end a progress bar's line first
                print(file=sys.stdout, flush=True)
            print(f"error: {e}", file=sys.stderr)
            code = e.exit_code
            if getattr(e, "hard_exit", False):
                # The process state is broken (e.g. HDF5 after a failed
                # write) and would crash at shutdown: leave at once.
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        sys.exit(code or 0)

    return run


def run(main):
    """`absl.app.run` with one-line usage errors: exit 2 for flags, the
    UserError's code for the rest."""
    app.run(guarded(main), flags_parser=parse_flags)
