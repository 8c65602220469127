"""What the entry points (train.py, evaluate.py, python -m keras_vae.export) share.

- a bad flag is a usage error: one `error:` line and exit code 2 (absl's own
  parser prints several lines and exits 1);
- a `UserError` ends the program with its one-line message and exit code,
  with the traceback only under `--verbosity=1` or more.
"""

from __future__ import annotations

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
        except UserError as e:
            if logging.get_verbosity() >= logging.DEBUG:
                raise
            print(f"error: {e}", file=sys.stderr)
            code = e.exit_code
        sys.exit(code or 0)

    return run


def run(main):
    """`absl.app.run` with one-line usage errors: exit 2 for flags, the
    UserError's code for the rest."""
    app.run(guarded(main), flags_parser=parse_flags)
