"""Where generated data and results go."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_RESULTS = Path("results") / "ann-bench.sqlite"


def cache_dir() -> Path:
    """The cache directory: ``$ANN_BENCH_CACHE``, else ``$XDG_CACHE_HOME/ann-bench``, else ``~/.cache/ann-bench``."""
    env = os.environ.get("ANN_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ann-bench"
