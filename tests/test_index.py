"""`ann-bench index build`, `ann-bench search` and the Python API (build_index / open_index)."""

import csv
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

import ann_bench
from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet, write_vectorset
from ann_bench.errors import InputError
from ann_bench.data.groundtruth import exact_knn

ALL = ["flat", "hnsw", "ivf", "ivfpq", "nsw", "annoy", "kdtree"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, text):
    assert r.exit_code == 2, r.output
    assert text in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.fixture(scope="module")
def keyed_set(tmp_path_factory):
    """2,000 x 12 euclidean, 50 queries, keys with odd characters, labels."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2000, 12)).astype(np.float32)
    Q = rng.standard_normal((50, 12)).astype(np.float32)
    path = tmp_path_factory.mktemp("keyed") / "set [1] $x.hdf5"
    write_vectorset(path, X, Q, "euclidean", train_keys=[f"img/{i}<{i % 7}>.png" for i in range(2000)],
                    test_keys=[f"q{i}" for i in range(50)], train_labels=np.arange(2000) % 5,
                    test_labels=np.arange(50) % 5, k=20)
    return path


def test_flat_index_returns_exactly_the_ground_truth(tmp_path, keyed_set):
    out = tmp_path / "flat idx"
    r = invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", out)
    assert r.exit_code == 0, r.output
    assert "recall check: recall@10 1.0000" in r.output
    saved = ann_bench.open_index(out)
    with VectorSet(keyed_set) as vs:
        D, I = saved.search(vs.load_test(), 10)
        assert np.array_equal(I, vs.neighbors[:, :10])
        assert np.allclose(D, vs.distances[:, :10], rtol=1e-5, atol=1e-5)
        assert list(saved.key_of(I[0])) == list(vs.keys("train")[vs.neighbors[0, :10]])


@pytest.mark.parametrize("backend", ALL)
def test_saved_and_reloaded_index_answers_identically(tmp_path, keyed_set, backend):
    with VectorSet(keyed_set) as vs:
        X, Q, keys = vs.load_train(), vs.load_test(), vs.keys("train")
    params = {"ivf": {"nlist": 16}, "ivfpq": {"nlist": 16, "m": 4}}.get(backend, {})
    built = ann_bench.build_index(X, backend=backend, metric="euclidean", keys=keys, **params)
    D1, I1 = built.search(Q, 10)
    built.save(tmp_path / backend)
    loaded = ann_bench.open_index(tmp_path / backend)
    D2, I2 = loaded.search(Q, 10)
    assert np.array_equal(I1, I2) and np.array_equal(D1, D2)
    assert list(loaded.keys) == list(keys)
    assert loaded.manifest["backend"] == backend and loaded.manifest["n"] == 2000
    assert (tmp_path / backend / "index.bin").stat().st_size == loaded.manifest["index_file"]["bytes"]


def test_api_search_params_metric_and_padding(tmp_path, rng):
    X = rng.standard_normal((300, 8)).astype(np.float32) * 1e-5  # tiny scale: distances still exact
    index = ann_bench.build_index(X, backend="hnsw", metric="angular", M=8, search={"ef": 16})
    assert index.search_defaults == {"ef": 16}
    D, I = index.search(X[:5], 3, ef=200)
    gD, gI = exact_knn(X, X[:5], "angular", 3)
    assert np.array_equal(I, gI) and np.allclose(D, gD, atol=1e-5)
    D, I = index.search(X[:2], 300, ef=300)  # k = n: every vector
    assert sorted(I[0]) == list(range(300))
    with pytest.raises(InputError, match="exceeds the 300"):  # k > n: refused, not an nq x k allocation
        index.search(X[:2], 400)
    with pytest.raises(InputError, match="8-d"):
        index.search(np.ones((2, 9), np.float32), 3)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full((1, 8), np.nan, np.float32), 3)
    with pytest.raises(InputError, match="unknown search parameter"):
        index.search(X[:1], 3, nprobe=3)
    with pytest.raises(InputError, match="unknown build parameter"):
        ann_bench.build_index(X, backend="hnsw", metric="angular", nlist=5)


def test_search_outputs_long_wide_and_every_format(tmp_path, keyed_set):
    idx = tmp_path / "idx"
    assert invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", idx).exit_code == 0
    with VectorSet(keyed_set) as vs:
        gt, train_keys, test_keys = vs.neighbors[:, :5], vs.keys("train"), vs.keys("test")
        gd = vs.distances[:, :5]
    r = invoke("search", idx, "--queries", keyed_set, "-k", 5, "-o", tmp_path / "n.csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(open(tmp_path / "n.csv", newline="")))
    assert len(rows) == 50 * 5 and rows[0]["query_key"] == "q0"
    assert [int(x["id"]) for x in rows[:5]] == list(gt[0])
    assert [x["key"] for x in rows[:5]] == list(train_keys[gt[0]])
    assert np.allclose([float(x["distance"]) for x in rows[:5]], gd[0], rtol=1e-6)

    r = invoke("search", idx, "--queries", keyed_set, "-k", 5, "--format", "wide", "-o", tmp_path / "w.tsv")
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "w.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["query_key", "key_1", "key_2", "key_3", "key_4", "key_5"]
    assert lines[1].split("\t") == ["q0", *train_keys[gt[0]]]

    r = invoke("search", idx, "--queries", keyed_set, "-k", 5, "-o", tmp_path / "n.jsonl")
    recs = [json.loads(x) for x in (tmp_path / "n.jsonl").read_text().splitlines()]
    assert recs[3]["query_key"] == test_keys[3] and recs[3]["ids"] == list(gt[3])

    r = invoke("search", idx, "--queries", keyed_set, "-k", 5, "-o", tmp_path / "n.npy")
    a = np.load(tmp_path / "n.npy", allow_pickle=False)
    assert np.array_equal(a["ids"], gt) and list(a["keys"][0]) == list(train_keys[gt[0]])

    pq = pytest.importorskip("pyarrow.parquet")
    r = invoke("search", idx, "--queries", keyed_set, "-k", 5, "-o", tmp_path / "n.parquet")
    assert r.exit_code == 0, r.output
    t = pq.read_table(tmp_path / "n.parquet").to_pylist()
    assert t[7]["ids"] == list(gt[7]) and t[7]["query_key"] == "q7"


def test_search_streams_in_chunks_and_vector_file_queries(tmp_path, keyed_set, monkeypatch):
    import ann_bench.search as search_mod

    monkeypatch.setattr(search_mod, "CHUNK", 7)  # 50 queries in 8 chunks
    idx = tmp_path / "idx"
    assert invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", idx).exit_code == 0
    with VectorSet(keyed_set) as vs:
        np.save(tmp_path / "q.npy", vs.load_test())
        gt = vs.neighbors[:, :4]
    r = invoke("search", idx, "--queries", tmp_path / "q.npy", "-k", 4, "-o", tmp_path / "n.npy")
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "n.npy")
    assert np.array_equal(a["ids"], gt) and a["query_key"][49] == "49"


def test_exclude_self_item_to_item(tmp_path, keyed_set):
    idx = tmp_path / "idx"
    assert invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", idx).exit_code == 0
    r = invoke("search", idx, "--queries", keyed_set, "--split", "train", "--exclude-self", "-k", 3,
               "-o", tmp_path / "rec.npy")
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "rec.npy")
    with VectorSet(keyed_set) as vs:
        X = vs.load_train()
    _, gI = exact_knn(X, X, "euclidean", 4)
    assert (a["ids"] != np.arange(2000)[:, None]).all()  # never itself
    assert np.array_equal(a["ids"], gI[:, 1:])  # the next three (no duplicate vectors in this set)
    # Test queries matched by row number to train rows would be wrong: refused without keys on both sides.
    X2 = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    unkeyed = write_vectorset(tmp_path / "u.hdf5", X2, X2[:5], "euclidean")
    assert invoke("index", "build", "--dataset", unkeyed, "--backend", "flat", "-o", tmp_path / "u").exit_code == 0
    r = invoke("search", tmp_path / "u", "--queries", unkeyed, "--exclude-self", "-o", tmp_path / "bad.csv")
    one_line_error(r, "--exclude-self matches each query")
    assert not (tmp_path / "bad.csv").exists()
    r = invoke("search", tmp_path / "u", "--queries", unkeyed, "--split", "train", "--exclude-self", "-k", 2,
               "-o", tmp_path / "ok.npy")
    assert r.exit_code == 0, r.output
    assert (np.load(tmp_path / "ok.npy")["ids"] != np.arange(100)[:, None]).all()


def test_vector_file_input_without_groundtruth_and_keys_file(tmp_path, rng):
    X = rng.standard_normal((500, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    (tmp_path / "keys.txt").write_text("".join(f"doc-{i}\n" for i in range(500)))
    r = invoke("index", "build", "--dataset", tmp_path / "x.npy", "--backend", "hnsw", "--metric", "ip",
               "--keys", tmp_path / "keys.txt", "-o", tmp_path / "ix")
    assert r.exit_code == 0, r.output
    assert "recall check" not in r.output  # no queries, no ground truth: nothing to check, nothing claimed
    saved = ann_bench.open_index(tmp_path / "ix")
    assert saved.metric == "ip" and saved.keys[7] == "doc-7"
    r = invoke("index", "build", "--dataset", tmp_path / "x.npy", "--backend", "hnsw", "-o", tmp_path / "iy")
    one_line_error(r, "--metric is required")


def test_from_best_takes_the_store_winner(tmp_path, keyed_set):
    store = tmp_path / "r.sqlite"
    r = invoke("run", "--dataset", keyed_set, "--backend", "hnsw", "--build", "M=4,12", "--search", "ef=10,80",
               "--runs", 1, "--in-process", "--results", store)
    assert r.exit_code == 0, r.output
    best = json.loads(invoke("best", "--recall", "0.9", "--results", store, "--json").output)["winner"]
    r = invoke("index", "build", "--dataset", keyed_set, "--from-best", "--recall", 0.9, "--results", store,
               "-o", tmp_path / "b")
    assert r.exit_code == 0, r.output
    m = ann_bench.open_index(tmp_path / "b").manifest
    from ann_bench.bench.results import params_str

    assert params_str(m["build_params"]) == best["build_params"]
    assert params_str(m["search_params"]) == best["search_params"]
    assert m["measured"]["recall"] == best["recall"] and m["measured"]["qps"] == best["qps"]
    assert "measured in the store" in r.output and "recall check" in r.output
    r = invoke("index", "build", "--from-best", "--recall", 0.9, "--results", store, "-o", tmp_path / "latest")
    assert r.exit_code == 0, r.output  # no --dataset: the set of the store's latest run
    assert ann_bench.open_index(tmp_path / "latest").manifest["source"]["dataset_hash"] == m["source"]["dataset_hash"]
    one_line_error(invoke("index", "build", "--backend", "flat", "-o", tmp_path / "d"), "--dataset")
    r = invoke("index", "build", "--dataset", keyed_set, "--from-best", "--recall", 1.01, "--results", store,
               "-o", tmp_path / "c")
    assert r.exit_code == 2 and not (tmp_path / "c").exists()


def test_index_directory_safety(tmp_path, keyed_set):
    idx = tmp_path / "idx"
    assert invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", idx).exit_code == 0
    one_line_error(invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", idx), "--force")
    r = invoke("index", "build", "--dataset", keyed_set, "--backend", "hnsw", "-o", idx, "--force")
    assert r.exit_code == 0 and ann_bench.open_index(idx).manifest["backend"] == "hnsw"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no temporary left beside it
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    one_line_error(invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", mine, "--force"),
                   "did not write")
    assert (mine / "thesis.tex").read_text() == "precious"
    one_line_error(invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", keyed_set),
                   "is a file")
    one_line_error(invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", keyed_set.parent,
                          "--force"), "holds an input")
    # search never overwrites its inputs, nor an index file
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", keyed_set), "also an input")
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", idx / "manifest.json"), "also an input")
    other = tmp_path / "notes.csv"
    other.write_text("a,b\n1,2\n")
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", other), "--force")
    assert other.read_text() == "a,b\n1,2\n"
    # A file of the user's with search's own header is still the user's: search replaces nothing without --force,
    # its own earlier output included (no format it writes has room for a marker).
    mine = tmp_path / "mine.csv"
    mine.write_text("query_key,rank,key,id,distance\nq,1,a,0,0.5\n")
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", mine), "a neighbours file of `ann-bench search` carries no ann-bench marker to tell an earlier one from a file of yours: pass --force")
    assert mine.read_text() == "query_key,rank,key,id,distance\nq,1,a,0,0.5\n"
    out = tmp_path / "nn.csv"
    assert invoke("search", idx, "--queries", keyed_set, "-o", out).exit_code == 0
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", out), "a neighbours file of `ann-bench search` carries no ann-bench marker to tell an earlier one from a file of yours: pass --force")
    assert invoke("search", idx, "--queries", keyed_set, "-o", out, "--force").exit_code == 0


def test_tampered_or_wrong_inputs_one_line(tmp_path, keyed_set, rng):
    idx = tmp_path / "idx"
    assert invoke("index", "build", "--dataset", keyed_set, "--backend", "hnsw", "-o", idx).exit_code == 0
    np.save(tmp_path / "q9.npy", rng.standard_normal((4, 9)).astype(np.float32))
    r = invoke("search", idx, "--queries", tmp_path / "q9.npy", "-o", tmp_path / "o.csv")
    one_line_error(r, "9-d but the index holds 12-d")
    X = rng.standard_normal((100, 12)).astype(np.float32)
    ang = write_vectorset(tmp_path / "ang.hdf5", X, X[:3], "angular")
    one_line_error(invoke("search", idx, "--queries", ang, "-o", tmp_path / "o.csv"), "metric 'angular'")
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", tmp_path / "o.xlsx"), "extension")
    one_line_error(invoke("search", tmp_path / "nothing", "--queries", keyed_set, "-o", tmp_path / "o.csv"),
                   "does not exist")
    assert not (tmp_path / "o.csv").exists()
    with open(idx / "index.bin", "r+b") as fh:  # one flipped byte: refused, not searched
        fh.seek(100)
        b = fh.read(1)
        fh.seek(100)
        fh.write(bytes([b[0] ^ 0xFF]))
    one_line_error(invoke("search", idx, "--queries", keyed_set, "-o", tmp_path / "o.csv"), "sha256")
    os.truncate(idx / "index.bin", 10)
    one_line_error(invoke("index", "info", idx), "truncated")


def test_kdtree_index_file_holds_no_pickle(tmp_path, rng):
    X = rng.standard_normal((200, 3)).astype(np.float32)
    saved = ann_bench.build_index(X, backend="kdtree", metric="euclidean")
    saved.save(tmp_path / "kd")
    with np.load(tmp_path / "kd" / "index.bin", allow_pickle=False) as z:  # would raise on an object array
        assert int(z["m"]) == 3


def test_keys_survive_embed_combine_index_search(tmp_path):
    """Image paths named by embed stay the names search prints, through data combine and index build."""
    from PIL import Image

    root = tmp_path / "shop"
    rng = np.random.default_rng(3)
    for cls in ("shoe", "bag $[x]"):
        (root / cls).mkdir(parents=True)
        for i in range(15):
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / cls / f"p{i}.png")
    a, e = tmp_path / "a.hdf5", tmp_path / "e.hdf5"
    assert invoke("embed", "--model", "digits-cnn", "--input", root, "-o", a, "--test-size", 5).exit_code == 0
    r = invoke("data", "combine", a, a, "--weights", "1,2", "-o", e)
    assert r.exit_code == 0, r.output
    r = invoke("index", "build", "--dataset", e, "--backend", "hnsw", "-o", tmp_path / "ix")
    assert r.exit_code == 0, r.output
    r = invoke("search", tmp_path / "ix", "--queries", e, "-k", 3, "--format", "wide", "-o", tmp_path / "rec.csv")
    assert r.exit_code == 0, r.output
    with VectorSet(e) as vs:
        train_keys, test_keys = set(vs.keys("train")), list(vs.keys("test"))
    rows = list(csv.reader(open(tmp_path / "rec.csv", newline="")))
    assert [row[0] for row in rows[1:]] == test_keys
    assert all(k in train_keys and k.endswith(".png") and "/" in k for row in rows[1:] for k in row[1:])
    r = invoke("search", tmp_path / "ix", "--queries", e, "--split", "train", "--exclude-self", "-k", 3,
               "-o", tmp_path / "i2i.jsonl")
    assert r.exit_code == 0, r.output
    for line in (tmp_path / "i2i.jsonl").read_text().splitlines():
        rec = json.loads(line)
        assert rec["query_key"] not in rec["keys"] and len(rec["keys"]) == 3


def test_a_backend_that_cannot_save_is_built_anew_and_refused_as_an_index(tmp_path, keyed_set):
    pytest.importorskip("nmslib")
    one_line_error(invoke("index", "build", "--dataset", keyed_set, "--backend", "nsw", "--impl", "nmslib",
                          "-o", tmp_path / "ix"), "cannot be saved")
    assert not (tmp_path / "ix").exists()
    store = tmp_path / "r.sqlite"
    for _ in range(2):  # with --index-cache: measured both times, nothing cached, no failed row
        r = invoke("run", "--dataset", keyed_set, "--backend", "nsw:nmslib", "--build", "f=8", "--search", "ef=20",
                   "--index-cache", "--force", "--runs", 1, "--results", store)
        assert r.exit_code == 0, r.output
    from ann_bench.bench.results import ResultStore

    with ResultStore(store, create=False) as s:
        rows = s.records()
    assert [r.status for r in rows] == ["ok"] and rows[0].index_cached == 0


def test_a_nan_query_is_named_by_its_row_in_the_file(tmp_path, keyed_set, monkeypatch):
    import ann_bench.search as search_mod

    monkeypatch.setattr(search_mod, "CHUNK", 4)  # the bad row sits in the third chunk
    assert invoke("index", "build", "--dataset", keyed_set, "--backend", "flat", "-o", tmp_path / "ix").exit_code == 0
    Q = np.ones((12, 12), np.float32)
    Q[9, 3] = np.nan
    np.save(tmp_path / "q.npy", Q)
    one_line_error(invoke("search", tmp_path / "ix", "--queries", tmp_path / "q.npy", "-o", tmp_path / "o.csv"),
                   "queries q.npy: row 9 holds NaN")
    assert not (tmp_path / "o.csv").exists()
