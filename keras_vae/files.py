"""Atomic writes: a crash mid-write leaves the previous good file or folder.

Everything a run saves (config.json, model.keras, history.json,
results.json, backups, the SavedModel export) goes through these
functions: write under a temporary name in the same folder, then rename,
which is atomic on POSIX (and on Windows for files) when both names are on
one file system.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile

import numpy as np


def _umask_mode(base):
    """`base` less the process umask: the mode open()/mkdir() would give."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def atomic_save(path, save, suffix=""):
    """Calls `save(tmp_path)` and renames the result to `path`.

    Args:
        path: the file to create or replace.
        save: a function writing a complete file at the path it is given.
        suffix: the temporary name's ending, for writers that check it
            (`model.save` wants ".keras", `save_weights` ".weights.h5").
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=directory)
    os.close(fd)
    try:
        save(tmp)
        os.chmod(tmp, _umask_mode(0o666))  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    """Writes `text` to `path` atomically (flushed and fsynced first)."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_save(path, write, suffix=os.path.basename(path))


def jsonable(value):
    """`value` with NumPy scalars and arrays as Python numbers and lists, and
    every non-finite float (NaN, Inf) as None: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path, value, indent=2, sort_keys=False):
    """Writes `value` as strict JSON (see `jsonable`) to `path`, atomically."""
    text = json.dumps(jsonable(value), indent=indent, sort_keys=sort_keys, allow_nan=False)
    atomic_write_text(path, text + "\n")


def replace_dir(path, build):
    """Builds a folder with `build(tmp_dir)` and swaps it in for `path`.

    The new folder is complete before it takes the name. A previous folder
    is renamed aside first and deleted only once the new one is in place;
    on an error it is put back. A hard kill between the two renames leaves
    it as `path + ".old-XXXX"` (and no `path`): `recover_dir` undoes that.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    name = os.path.basename(os.path.normpath(path))
    tmp = tempfile.mkdtemp(prefix=name + ".tmp-", dir=parent)
    old = None
    try:
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp creates 0700
        build(tmp)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=name + ".old-", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)  # put the previous folder back
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def recover_dir(path):
    """After a kill inside `replace_dir`: brings back `path` from a leftover
    `.old-` folder if `path` is missing, and removes stale temporaries."""
    parent = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(os.path.normpath(path))
    if not os.path.isdir(parent):
        return
    leftovers = sorted(
        e for e in os.listdir(parent) if e.startswith((name + ".old-", name + ".tmp-"))
    )
    for entry in leftovers:
        full = os.path.join(parent, entry)
        if entry.startswith(name + ".old-") and not os.path.exists(path):
            os.rename(full, path)
        else:
            shutil.rmtree(full, ignore_errors=True)


def recover_all(folder):
    """`recover_dir` for every name in `folder`, and removes the temporary
    files of interrupted `atomic_save`s (`.tmp-*`): run once at a start."""
    if not os.path.isdir(folder):
        return
    names = set()
    for entry in os.listdir(folder):
        full = os.path.join(folder, entry)
        if entry.startswith(".tmp-") and os.path.isfile(full):
            os.remove(full)
        else:
            for mark in (".old-", ".tmp-"):
                if mark in entry[1:]:
                    names.add(entry[: entry.index(mark, 1)])
    for name in sorted(names):
        recover_dir(os.path.join(folder, name))
