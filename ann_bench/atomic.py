"""Atomic file writes: write to a temporary name in the target directory, then rename into place."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
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


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (someone else's live process counts): the test a sweep of files named
    after their owning process uses, so that only a dead owner's leftovers are removed."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_terminated: list[int] = []  # exit codes of termination requests (SIGTERM) not yet honoured


def request_termination(code: int) -> None:
    """Record that the process must stop (a signal handler calls this, then raises SystemExit). An exception
    raised by a signal handler is lost when the signal lands in a finalizer or weakref callback ("Exception
    ignored in ..."), so every file commit and every sweep step also checks :func:`raise_if_terminated`."""
    _terminated.append(code)


def clear_termination() -> None:
    """Forget a termination request that was handled (tune ends with the answers of what it measured): the
    files written after it are committed; a second signal ends the command as the first would have."""
    _terminated.clear()


def raise_if_terminated() -> None:
    """SystemExit if termination was requested: nothing more is committed."""
    if _terminated:
        raise SystemExit(_terminated[0])


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or quota, or file-size limit) is full: an OSError with that errno, or
    one raised by h5py / SQLite that only says so in words."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    text = str(exc).lower()
    return isinstance(exc, Exception) and ("no space left" in text or "disk is full" in text
                                           or "disk quota" in text
                                           or ("requested and" in text and "written" in text))  # numpy tofile


def _temp_prefix(name: str) -> str:
    """A temporary name's prefix that keeps the whole name within NAME_MAX (255 bytes) for any target name."""
    raw = os.fsencode(name)  # bytes as the file system sees them (a name read from disk may hold any byte)
    if len(raw) <= 120:
        return f".{name}."
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f".{raw[:80].decode(errors='ignore')}-{digest}."


def _temp_suffix(suffix: str) -> str:
    """At most 16 bytes of ``suffix`` (whole characters), then ``.tmp``: with the prefix and mkstemp's 8 random
    characters a temporary name stays under 130 bytes, within NAME_MAX for any target name."""
    raw = os.fsencode(suffix)[-16:]
    return raw.decode(errors="ignore") + ".tmp"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, on error (or SIGTERM, which
    the CLI turns into an exception) delete it.

    A reader never sees a half-written file, and a failed command leaves nothing behind. A full disk becomes
    one InputError naming the file and the free space left.
    """
    target = Path(path).expanduser()
    parent = ensure_writable_dir(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.name), suffix=_temp_suffix(suffix), dir=parent)
    except OSError as exc:
        raise InputError(f"cannot write in {str(parent)!r}: {exc.strerror or exc}; choose another output path") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        raise_if_terminated()  # a SIGTERM whose exception was swallowed: never commit the file
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if is_disk_full(exc):
            raise InputError(f"no space left to write {str(target)!r} ({free_space(parent)} free on its disk); "
                             "nothing was written: free some space and run the command again") from None
        raise


def free_space(path: str | os.PathLike) -> str:
    """Free bytes on the disk of ``path``, in words ("12.3 MB")."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return "unknown"
    return f"{free / 1e6:,.1f} MB"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
