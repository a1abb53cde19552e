"""Where a command may write: the one check every command runs on its output path before any work.

Rules (issue 15: no user file is ever overwritten or converted by accident; issue 31: ownership by a marker):

1. never over one of the command's own inputs — compared as files (device and inode), so a symlink, a hard
   link or another spelling of the same path is caught;
2. never over a results store or an HDF5 file, whatever the command — except that a command whose output
   *is* a dataset (``data synth``, ``data import``, ``embed``) may replace a dataset it is not reading;
3. over any other existing file only when ann-bench wrote that file as this kind of output — recognised by the
   marker ann-bench writes into each output (:data:`KINDS`), never by a guess from its first bytes — else only
   with ``--force``, and only the file the user named (``-o``). A file written by an older ann-bench without a
   marker counts as foreign;
4. a file written *beside* the named output (``train -o t.pt`` also writes ``t.metrics.json``) is checked by
   :func:`check_derived`: written only where there is none, or where ann-bench wrote one of that kind;
   ``--force`` never extends to it;
5. a name longer than the file system allows (NAME_MAX bytes for the last component, PATH_MAX for the whole
   path) is refused before any work.

The file is then written to a temporary name and renamed into place (:mod:`ann_bench.atomic`).
"""

from __future__ import annotations

import json
import os
import pickletools
import re
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ann_bench import __version__
from ann_bench.errors import InputError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# The markers ann-bench writes (one place: the writers take them from here).
SOFTWARE = f"ann-bench {__version__}"  # PNG tEXt "Software", SVG/PDF "Creator", HTML <meta name="generator">
EXPORT_COLUMN = "ann_bench"  # the last column of a CSV export and a key of each JSON export row
EXPORT_TAG = f"results-export {__version__}"  # its value
CHECKPOINT_MARKER = {"kind": "checkpoint", "version": __version__}  # the first key "ann_bench" of the dict
METRICS_MARKER = {"kind": "train-metrics", "version": __version__}  # key "ann_bench" of NAME.metrics.json
DATASET_ATTR = "ann_bench_version"  # a root attribute of every VectorSet ann-bench writes


def json_marker(kind: str) -> dict:
    """The value of the top-level ``"ann_bench"`` key of a JSON document of ``kind`` that ann-bench writes."""
    return {"kind": kind, "version": __version__}


def _read(path: Path, n: int, tail: bool = False) -> bytes:
    try:
        with open(path, "rb") as fh:
            if tail:
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - n))
            return fh.read(n)
    except OSError:
        return b""


def _is_dataset(path: Path) -> bool:
    if not _read(path, 8).startswith(HDF5_MAGIC):
        return False
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return DATASET_ATTR in f.attrs and "train" in f
    except Exception:  # noqa: BLE001 - any unreadable HDF5 file is not one we wrote
        return False


def _png_software(path: Path) -> str | None:
    """The PNG's tEXt "Software" value (chunks before the image data only)."""
    data = _read(path, 1 << 16)
    if not data.startswith(PNG_MAGIC):
        return None
    pos = 8
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        ctype = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        if ctype == b"tEXt" and b"\x00" in body:
            key, _, value = body.partition(b"\x00")
            if key == b"Software":
                return value.decode("latin-1")
        if ctype in (b"IDAT", b"IEND"):
            return None
        pos += 12 + length
    return None


def _is_plot(path: Path) -> bool:
    head = _read(path, 8192)
    if head.startswith(PNG_MAGIC):
        return (_png_software(path) or "").startswith("ann-bench ")
    if head.startswith(b"%PDF"):
        return b"/Creator (ann-bench " in _read(path, 1 << 16, tail=True)
    return re.search(rb"<dc:creator>\s*<cc:Agent>\s*<dc:title>ann-bench ", head) is not None


def _is_report(path: Path) -> bool:
    return b'<meta name="generator" content="ann-bench ' in _read(path, 8192)


RUNBOOK_MARKER = b"# ann-bench runbook"  # the first line of a runbook `stream make-runbook` writes


def _is_runbook(path: Path) -> bool:
    return _read(path, len(RUNBOOK_MARKER)) == RUNBOOK_MARKER


def _is_export(path: Path) -> bool:
    head = _read(path, 1 << 16)
    if head.lstrip()[:1] == b"[":  # a JSON export: a list of rows, each carrying the marker key
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return (isinstance(rows, list) and bool(rows)
                and all(isinstance(r, dict) and str(r.get(EXPORT_COLUMN, "")).startswith("results-export ")
                        for r in rows))
    header = head.split(b"\n", 1)[0].rstrip(b"\r").split(b",")  # a CSV export: key, ..., ann_bench
    return len(header) > 2 and header[0] == b"key" and header[-1] == EXPORT_COLUMN.encode()


def _json_kind(path: Path, kind: str, limit: int = 1 << 26) -> bool:
    try:
        if path.stat().st_size > limit:
            return False
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("ann_bench"), dict) and doc["ann_bench"].get("kind") == kind


def _is_checkpoint(path: Path) -> bool:
    """A torch zip checkpoint whose pickled dict starts with ``"ann_bench": {"kind": "checkpoint", ...}``; the
    pickle is only disassembled (pickletools), never unpickled."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [i for i in z.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"]
            if len(names) != 1 or names[0].file_size > 1 << 26:
                return False
            data = z.read(names[0])
        strings = []
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str) and "UNICODE" in op.name:
                strings.append(arg)
                if len(strings) == 3:
                    break
    except Exception:  # noqa: BLE001 - a broken zip or pickle is not a checkpoint of ours
        return False
    return strings == ["ann_bench", "kind", "checkpoint"]


def _never(path: Path) -> bool:
    """For a kind of output whose formats have no room for a marker: never recognised as ann-bench's."""
    return False


# kind -> (description, True when ann-bench wrote the existing file as an output of that kind)
KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "dataset": ("a dataset written by ann-bench", _is_dataset),
    "plot": ("a plot written by ann-bench (PNG/SVG/PDF)", _is_plot),
    "report": ("an HTML report written by ann-bench", _is_report),
    "export": ("a results export (CSV/JSON) written by ann-bench", _is_export),
    "checkpoint": ("a checkpoint written by `ann-bench train`", _is_checkpoint),
    "train-metrics": ("a metrics file written by `ann-bench train`", lambda p: _json_kind(p, "train-metrics")),
    # `search` writes CSV/TSV/JSON lines/.npy/Parquet for other programs to read: a marker would be a column or
    # field of their own data, and a header that looks like ours is a guess, so an existing file is replaced only
    # with --force (as `index build` replaces its own directory).
    "neighbours": ("a neighbours file of `ann-bench search`", _never),
    "runbook": ("a runbook written by `ann-bench stream make-runbook`", _is_runbook),
}
OLDER = "files of ann-bench versions before this marker count as foreign"


def _name_limits(path: Path) -> tuple[int, int]:
    """(NAME_MAX, PATH_MAX) in bytes of the file system ``path`` would be on (its nearest existing folder)."""
    folder = path.parent
    while not os.path.isdir(folder) and folder != folder.parent:  # isdir: False, not OSError, on a long path
        folder = folder.parent
    limits = []
    for name, fallback in (("PC_NAME_MAX", 255), ("PC_PATH_MAX", 4096)):
        try:
            limits.append(int(os.pathconf(folder, name)) or fallback)
        except (OSError, ValueError, AttributeError):
            limits.append(fallback)
    return limits[0], limits[1]


def check_name(path: str | os.PathLike, option: str = "-o", what: str = "") -> Path:
    """``path`` as a Path when the file system can hold a file of that name; InputError (one line) otherwise:
    a NUL character, a last component over NAME_MAX bytes, a whole path over PATH_MAX bytes."""
    text = os.fspath(path)
    label = what or f"{option} {text[:60] + '…' if len(text) > 60 else text!r}"
    if "\x00" in text:
        raise InputError(f"{label}: a file name cannot contain a NUL character; choose another name")
    out = Path(text).expanduser()
    try:
        name, whole = os.fsencode(out.name), os.fsencode(os.path.abspath(out))
    except UnicodeError:
        raise InputError(f"{label}: the name cannot be encoded for this file system; choose another name") from None
    name_max, path_max = _name_limits(Path(os.path.abspath(out)))
    if len(name) > name_max:
        raise InputError(f"{label}: the file name is {len(name)} bytes long, more than this file system allows "
                         f"({name_max}); choose a shorter name")
    folder = next((c for c in os.fsencode(os.path.dirname(os.path.abspath(out))).split(b"/") if len(c) > name_max),
                  None)
    if folder is not None:
        raise InputError(f"{label}: a folder name in the path is {len(folder)} bytes long, more than this file "
                         f"system allows ({name_max}); choose a shorter path")
    if len(whole) >= path_max:
        raise InputError(f"{label}: the path is {len(whole)} bytes long, more than this file system allows "
                         f"({path_max - 1}); choose a shorter path")
    return out


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

    out = check_name(output, option)
    target = _identity(out)  # stat the output once: an image folder's inputs can be many thousand files
    for source in inputs:
        if source is not None and target is not None and _identity(Path(source).expanduser()) == target:
            raise InputError(f"{option} {str(out)!r} is also an input of this command ({str(source)!r}); "
                             "writing it would destroy the input: choose another output path")
    if not os.path.lexists(out):
        return out
    _check_existing(out, option)
    if is_results_store(out):
        raise InputError(f"{option} {str(out)!r} is an ann-bench results store; ann-bench never writes over one: "
                         "choose another output path")
    if kind != "dataset" and _read(out, 8).startswith(HDF5_MAGIC):
        raise InputError(f"{option} {str(out)!r} is an HDF5 file (a dataset?); ann-bench never writes over one "
                         f"with {KINDS[kind][0].split(' written')[0]}: choose another output path")
    if not force and KINDS[kind][1] is _never:
        raise InputError(f"{option} {str(out)!r} already exists, and {KINDS[kind][0]} carries no ann-bench marker "
                         "to tell an earlier one from a file of yours: pass --force to replace it, or choose another "
                         "output path")
    if not force and not KINDS[kind][1](out):
        raise InputError(f"{option} {str(out)!r} exists and is not {KINDS[kind][0]} (no ann-bench marker; "
                         f"{OLDER}); pass --force to replace it, or choose another output path")
    return out


def check_derived(path: str | os.PathLike, kind: str, named: str | os.PathLike, option: str = "-o",
                  inputs: Iterable[str | os.PathLike | None] = ()) -> Path:
    """``path``, a file a command writes beside the output the user named (``named``), when it may be written:
    there is none, or ann-bench wrote it as ``kind``. ``--force`` never applies: the user did not name it."""
    out = Path(path).expanduser()
    hint = f"choose another {option} than {str(named)!r}"
    check_name(out, option, what=f"{str(out)!r} (written beside {option} {str(named)!r})")
    target = _identity(out)
    for source in inputs:
        if source is not None and target is not None and _identity(Path(source).expanduser()) == target:
            raise InputError(f"{str(out)!r} would be written beside {option} {str(named)!r} but is an input of this "
                             f"command ({str(source)!r}): {hint}")
    if not os.path.lexists(out):
        return out
    _check_existing(out, option, what=f"{str(out)!r} (written beside {option} {str(named)!r})")
    if not KINDS[kind][1](out):
        raise InputError(f"{str(out)!r} would be written beside {option} {str(named)!r} but exists and is not "
                         f"{KINDS[kind][0]} (no ann-bench marker; {OLDER}); ann-bench never replaces a file you "
                         f"did not name, even with --force: move it away or {hint}")
    return out


def _check_existing(out: Path, option: str, what: str = "") -> None:
    label = what or f"{option} {str(out)!r}"
    if out.is_dir():
        raise InputError(f"{label} is a directory; give a file name")
    if not out.exists():  # a dangling symlink: writing would create its target somewhere else
        raise InputError(f"{label} is a broken symbolic link; remove it or choose another path")
    if not out.is_file():
        raise InputError(f"{label} is not a regular file; choose another output path")
