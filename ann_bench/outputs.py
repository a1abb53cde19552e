"""Where a command may write: the one check every command runs on its output path before any work.

Rules (issue 15: no user file is ever overwritten or converted by accident):

1. never over one of the command's own inputs — compared as files (device and inode), so a symlink, a hard
   link or another spelling of the same path is caught;
2. never over a results store or a dataset (a VectorSet HDF5 file), whatever the command — except that a
   command whose output *is* a dataset (``data synth``, ``data import``, ``embed``) may replace a dataset it is
   not reading;
3. over any other existing file only when that file is of the command's own kind (a plot over a PNG, a report
   over an HTML page, an export over a CSV/JSON export, a checkpoint over a checkpoint), else with ``--force``.

The file is then written to a temporary name and renamed into place (:mod:`ann_bench.atomic`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ann_bench.errors import InputError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# kind -> (description, test of the first bytes of an existing file: True when it is of that kind)
KINDS = {
    "dataset": ("an HDF5 vector set", lambda head: head.startswith(HDF5_MAGIC)),
    "plot": ("a PNG, SVG or PDF plot", lambda head: head.startswith(PNG_MAGIC) or head.startswith(b"%PDF")
             or b"<svg" in head or head.lstrip().startswith(b"<?xml")),
    "report": ("an HTML report", lambda head: head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))),
    "export": ("a CSV or JSON export of results", lambda head: head.startswith(b"key,") or head.lstrip()[:1] in (b"[", b"{")),
    "checkpoint": ("a torch checkpoint", lambda head: head.startswith(b"PK\x03\x04")),
    "neighbours": ("a neighbours file of `ann-bench search`",
                   lambda head: head.startswith((b"query_key,", b"query_key\t", b'{"query_key"'))
                   or (head.startswith(b"\x93NUMPY") and b"'query_key'" in head)),
}


def _head(path: Path, n: int = 512) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file ``path`` names (through symlinks), or None when there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def check_output(output: str | os.PathLike, kind: str, inputs: Iterable[str | os.PathLike | None] = (),
                 force: bool = False, option: str = "-o") -> Path:
    """``output`` as a Path when the command may write it (see the module's rules); InputError otherwise.

    ``kind``: the command's kind of output (a key of :data:`KINDS`); ``inputs``: every file the command reads
    (None entries are ignored)."""
    from ann_bench.bench.results import is_results_store

    out = Path(output).expanduser()
    target = _identity(out)  # stat the output once: an image folder's inputs can be many thousand files
    for source in inputs:
        if source is not None and target is not None and _identity(Path(source).expanduser()) == target:
            raise InputError(f"{option} {str(out)!r} is also an input of this command ({str(source)!r}); "
                             "writing it would destroy the input: choose another output path")
    if not os.path.lexists(out):
        return out
    if out.is_dir():
        raise InputError(f"{option} {str(out)!r} is a directory; give a file name")
    if not out.exists():  # a dangling symlink: writing would create its target somewhere else
        raise InputError(f"{option} {str(out)!r} is a broken symbolic link; remove it or choose another path")
    if not out.is_file():
        raise InputError(f"{option} {str(out)!r} is not a regular file; choose another output path")
    head = _head(out)
    if is_results_store(out):
        raise InputError(f"{option} {str(out)!r} is an ann-bench results store; ann-bench never writes over one: "
                         "choose another output path")
    if KINDS["dataset"][1](head) and kind != "dataset":
        raise InputError(f"{option} {str(out)!r} is an HDF5 file (a dataset?); ann-bench never writes over one "
                         f"with {KINDS[kind][0]}: choose another output path")
    if not force and not KINDS[kind][1](head):
        raise InputError(f"{option} {str(out)!r} exists and is not {KINDS[kind][0]}; pass --force to replace it, "
                         "or choose another output path")
    return out
