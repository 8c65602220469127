"""What the entry points (train.py, evaluate.py, python -m keras_vae.export) share.

- train.py's flags are generated from `Config`'s fields (`define_config_flags`),
  whose type, default and help are written once, in keras_vae/config.py;
- a bad flag is a usage error: one `error:` line and exit code 2 (absl's own
  parser prints several lines and exits 1);
- a `UserError` ends the program with its one-line message and exit code,
  with the traceback only under `--verbosity=1` or more.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from absl import app, flags, logging

from keras_vae import config as config_lib
from keras_vae.config import UsageError, UserError

# Config field type (a string: config.py postpones annotations) -> absl flag.
_DEFINE = {
    "str": flags.DEFINE_string,
    "str | None": flags.DEFINE_string,
    "int": flags.DEFINE_integer,
    "int | None": flags.DEFINE_integer,
    "float": flags.DEFINE_float,
    "bool": flags.DEFINE_boolean,
    "tuple[int, ...] | None": flags.DEFINE_list,
}


def _help(field):
    """A field's help, with its default (unless the help gives it) and whether
    a dataset preset sets it."""
    default = field.default
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    elif isinstance(default, bool) or default is None:
        default = str(default).lower()
    notes = [] if "default" in field.metadata["help"] else [f"default {default}"]
    if any(field.name in values for values in config_lib.PRESETS.values()):
        notes.append("the dataset's preset may set it")
    return field.metadata["help"] + (f" ({'; '.join(notes)})." if notes else ".")


def define_config_flags(flag_values=flags.FLAGS):
    """Defines one flag per `Config` field, named as the field.

    Every flag's default is None, meaning "not given": the run then takes the
    dataset preset's value, else the field's default (both shown in the help).
    """
    for field in dataclasses.fields(config_lib.Config):
        _DEFINE[field.type](field.name, None, _help(field), flag_values=flag_values)


def config_from_flags(flag_values=flags.FLAGS):
    """The resolved `Config` of the flags `define_config_flags` defined.

    Raises:
        UsageError: a value that is not valid (the message names the flag).
    """
    overrides = {}
    for field in dataclasses.fields(config_lib.Config):
        value = flag_values[field.name].value
        if field.type.startswith("tuple") and value is not None:
            try:
                value = tuple(int(w) for w in value)
            except ValueError:
                raise UsageError(
                    f"--{field.name} must be integers separated by commas. Received: "
                    f"{','.join(value)!r}."
                ) from None
        overrides[field.name] = value
    dataset = overrides.pop("dataset") or config_lib.Config.dataset
    return config_lib.resolve(dataset, **overrides)


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
