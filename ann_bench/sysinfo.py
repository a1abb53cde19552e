"""Library versions and host facts recorded with every result."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import sys

from ann_bench import __version__

PACKAGES = ("numpy", "faiss-cpu", "hnswlib", "annoy", "scipy", "numba", "h5py", "torch", "usearch", "voyager",
            "nmslib", "nmslib-metabrainz", "pynndescent", "ngt", "diskannpy", "scann", "optuna")


@functools.cache
def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Installed versions of the libraries ann-bench measures through, and of ``extra`` distributions (absent
    ones are left out)."""
    out = {"python": platform.python_version(), "ann-bench": __version__}
    for name in PACKAGES + extra:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


@functools.cache
def host() -> dict[str, object]:
    """Host name, OS, CPU model, core count and memory."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
    }
