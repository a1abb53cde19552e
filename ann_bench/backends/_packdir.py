"""Helpers for libraries whose index is a directory of files (NGT, DiskANN): a working directory that lives as
long as the index, one uncompressed tar file with a small JSON manifest for save/load, and silencing of the
progress lines their C++ code prints straight to the process's stdout/stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import shutil
import sys
import tarfile
import tempfile
import weakref
from pathlib import Path
from typing import Any

from ann_bench.errors import InputError

MANIFEST = "ann-bench.json"


class WorkDir:
    """A temporary directory removed by :meth:`close`, or when the owner is garbage-collected, or at exit.

    The index files live here while the index is open (``$TMPDIR`` chooses where: on a RAM-backed /tmp they
    take memory as well as the loaded index).
    """

    def __init__(self, owner: object, prefix: str):
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self._finalizer = weakref.finalize(owner, shutil.rmtree, str(self.path), True)

    def close(self) -> None:
        self._finalizer()


def pack_dir(directory: str | os.PathLike, path: str | os.PathLike, manifest: dict[str, Any]) -> None:
    """Write the regular files of ``directory`` (not recursive) into ONE uncompressed tar at ``path``, after a
    JSON ``manifest``. The headers carry no time, owner or mode, so equal indexes give equal bytes."""
    directory = Path(directory)
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    with open(path, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        blob = json.dumps(manifest, sort_keys=True).encode()
        tar.addfile(_member(MANIFEST, len(blob)), io.BytesIO(blob))
        for name in names:
            file = directory / name
            with open(file, "rb") as fh:
                tar.addfile(_member(name, file.stat().st_size), fh)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = size, 0, 0o644, 0, 0
    return info


def unpack_dir(path: str | os.PathLike, directory: str | os.PathLike, what: str) -> dict[str, Any]:
    """Extract a file written by :func:`pack_dir` into ``directory``; return its manifest.

    Only plain files with plain names are accepted (no paths, links or devices); anything else, or a file that
    is not such a tar, is an InputError naming ``what`` the file should have been.
    """
    source = os.fspath(path)
    bad = f"{source!r} is not {what} saved by ann-bench"
    manifest = None
    try:
        with tarfile.open(source, mode="r:") as tar:
            for member in tar:
                name = member.name
                if not member.isreg() or name in ("", ".", "..") or "/" in name or "\\" in name:
                    raise InputError(f"{bad} (unexpected entry {name!r})")
                fh = tar.extractfile(member)
                if name == MANIFEST:
                    manifest = json.loads(fh.read().decode())
                    continue
                with open(Path(directory) / name, "wb") as out:
                    shutil.copyfileobj(fh, out, 1 << 20)
    except (tarfile.TarError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{bad} ({exc})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{bad} (no {MANIFEST})")
    return manifest


def check_manifest(label: str, path: str | os.PathLike, saved: dict[str, Any], mine: dict[str, Any]) -> None:
    """InputError if a saved index was built with other settings than this instance's (metric, dim, params)."""
    wrong = [f"{key}={saved.get(key)!r} (not {value!r})" for key, value in mine.items() if saved.get(key) != value]
    if wrong:
        raise InputError(f"{label}: {os.fspath(path)!r} was built with {', '.join(wrong)}")


@contextlib.contextmanager
def native_output_silenced():
    """Send what C/C++ code writes to file descriptors 1 and 2 to /dev/null for the duration (progress lines
    that the libraries print even when asked not to). Python's own streams are flushed first; C's stdio
    buffers are flushed before the descriptors are restored, so nothing leaks out later."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(devnull, fd)
            except OSError:
                pass
        yield
    finally:
        _flush_c_stdio()
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


def _flush_c_stdio() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)
