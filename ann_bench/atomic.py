"""Atomic file writes: write to a temporary name in the target directory, then rename into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ann_bench.errors import InputError


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the parent directory of ``path`` if needed and check it is writable; InputError if not."""
    parent = Path(path).expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory {str(parent)!r}: {exc.strerror}; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"output directory {str(parent)!r} is not writable; choose another path")
    return parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error delete it.

    A reader never sees a half-written file, and a failed command leaves nothing behind.
    """
    target = Path(path).expanduser()
    parent = ensure_writable_dir(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
