"""Hostile input to index directories, `index build`, `search` and the Python API (issue 31): each case is one
clear line (InputError / exit 2, no traceback, no output written) or an answer equal to brute force."""

import json
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ann_bench
from ann_bench.cli import cli
from ann_bench.data.catalogue import sha256_file
from ann_bench.data.vectorset import write_vectorset
from ann_bench.errors import InputError
from ann_bench.index import manifest_digest

N, DIM = 300, 8


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, *texts):
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: "), r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output, r.output
    for text in texts:
        assert text in r.output, r.output


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A 300 x 8 euclidean set with unique item keys (HDF5 and .npy) and a flat and an hnsw index of it."""
    root = tmp_path_factory.mktemp("strict")
    rng = np.random.default_rng(31)
    X = rng.standard_normal((N, DIM)).astype(np.float32)
    Q = rng.standard_normal((20, DIM)).astype(np.float32)
    keys = [f"item-{i}" for i in range(N)]
    write_vectorset(root / "set.hdf5", X, Q, "euclidean", train_keys=keys, test_keys=[f"q{i}" for i in range(20)],
                    k=10)
    np.save(root / "x.npy", X)
    np.save(root / "q.npy", Q)
    ann_bench.build_index(X, backend="flat", metric="euclidean", keys=keys).save(root / "flat")
    ann_bench.build_index(X, backend="hnsw", metric="euclidean", keys=keys, M=8).save(root / "hnsw")
    return {"root": root, "X": X, "Q": Q, "keys": keys, "set": root / "set.hdf5"}


def copy_index(data, tmp_path, name="flat"):
    shutil.copytree(data["root"] / name, tmp_path / name)
    return tmp_path / name


def rewrite_manifest(path, change, *, redigest=False):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    if redigest:
        manifest["digest"] = manifest_digest(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


# ---- 1. the index directory is verified as a whole ----------------------------------------------------------
@pytest.mark.parametrize("name", ["flat", "hnsw"])
def test_hand_edited_manifest_dimension_is_refused(tmp_path, data, name):
    idx = copy_index(data, tmp_path, name)
    rewrite_manifest(idx, lambda m: m.update(dimension=DIM // 2))
    with pytest.raises(InputError, match="modified after ann-bench wrote it .*manifest.json.*rebuild it"):
        ann_bench.open_index(idx)
    np.save(tmp_path / "q4.npy", data["Q"][:, : DIM // 2])
    out = tmp_path / "o.csv"
    one_line_error(invoke("search", idx, "--queries", tmp_path / "q4.npy", "-o", out), "modified after")
    assert not out.exists()
    one_line_error(invoke("index", "info", idx), "modified after")


@pytest.mark.parametrize("edit", ["n", "metric", "search_params", "digest", "drop_digest", "not_json"])
def test_any_manifest_edit_is_refused(tmp_path, data, edit):
    idx = copy_index(data, tmp_path)
    if edit == "not_json":
        (idx / "manifest.json").write_text((idx / "manifest.json").read_text()[:-20])
    else:
        rewrite_manifest(idx, {"n": lambda m: m.update(n=N - 1), "metric": lambda m: m.update(metric="ip"),
                               "search_params": lambda m: m.update(search_params={"x": 1}),
                               "digest": lambda m: m.update(digest="0" * 64),
                               "drop_digest": lambda m: m.pop("digest")}[edit])
    with pytest.raises(InputError, match="modified after ann-bench wrote it"):
        ann_bench.open_index(idx)


def test_edited_keys_or_index_file_is_refused(tmp_path, data):
    idx = copy_index(data, tmp_path)
    keys = json.loads((idx / "keys.json").read_text())
    keys[0], keys[1] = keys[1], keys[0]  # same size, other content
    (idx / "keys.json").write_text(json.dumps(keys))
    with pytest.raises(InputError, match="keys.json does not match the manifest's sha256"):
        ann_bench.open_index(idx)
    idx2 = copy_index(data, tmp_path / "b")
    (idx2 / "keys.json").unlink()
    with pytest.raises(InputError, match="keys.json is missing"):
        ann_bench.open_index(idx2)
    idx3 = copy_index(data, tmp_path / "c")
    raw = bytearray((idx3 / "index.bin").read_bytes())
    raw[-5] ^= 0xFF
    (idx3 / "index.bin").write_bytes(bytes(raw))
    with pytest.raises(InputError, match="index.bin does not match the manifest's sha256"):
        ann_bench.open_index(idx3)


def test_format_1_directory_is_refused_with_a_rebuild_hint_and_force_replaces_it(tmp_path, data):
    idx = copy_index(data, tmp_path)
    rewrite_manifest(idx, lambda m: (m.update(ann_bench_index=1), m.pop("digest"), m.pop("keys_file")))
    with pytest.raises(InputError, match="format 1.*rebuild it"):
        ann_bench.open_index(idx)
    r = invoke("index", "build", "--dataset", data["set"], "--backend", "flat", "-o", idx, "--force")
    assert r.exit_code == 0, r.output
    assert ann_bench.open_index(idx).manifest["ann_bench_index"] == 2


def test_reloaded_index_saves_again_with_a_fresh_digest(tmp_path, data):
    loaded = ann_bench.open_index(data["root"] / "hnsw")
    loaded.save(tmp_path / "again")
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert "load_s" not in manifest and manifest["digest"] == manifest_digest(manifest)
    again = ann_bench.open_index(tmp_path / "again")
    assert np.array_equal(again.search(data["Q"], 5)[1], loaded.search(data["Q"], 5)[1])


# ---- 2. huge, complex and string vectors ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_index_build_from_npy_times_1e19_is_refused(tmp_path, data, dtype):
    np.save(tmp_path / "big.npy", data["X"].astype(dtype) * 1e19)
    out = tmp_path / "idx"
    one_line_error(invoke("index", "build", "--dataset", tmp_path / "big.npy", "--metric", "euclidean",
                          "--backend", "hnsw", "-o", out), "big.npy", "rescale")
    assert not out.exists()
    np.save(tmp_path / "huge.npy", data["X"].astype(np.float64) * 1e39)
    one_line_error(invoke("index", "build", "--dataset", tmp_path / "huge.npy", "--metric", "euclidean",
                          "--backend", "flat", "-o", out), "too large for float32")


@pytest.mark.parametrize("case", ["1e19", "1e39", "complex", "strings", "empty"])
def test_search_refuses_bad_query_files(tmp_path, data, case):
    Q = data["Q"]
    arr = {"1e19": Q * np.float32(1e19), "1e39": Q.astype(np.float64) * 1e39,
           "complex": Q.astype(np.complex64) + 1j, "strings": np.array([["a"] * DIM] * 3),
           "empty": np.zeros((0, DIM), np.float32)}[case]
    np.save(tmp_path / "bad.npy", arr)
    out = tmp_path / "o.csv"
    r = invoke("search", data["root"] / "flat", "--queries", tmp_path / "bad.npy", "-o", out)
    one_line_error(r, {"1e19": "rescale", "1e39": "too large for float32", "complex": "complex",
                       "strings": "strings", "empty": "no vectors"}[case])
    assert not out.exists()


@pytest.mark.parametrize("Q", [
    pytest.param(lambda Q: Q * np.float32(1e19), id="1e19"),
    pytest.param(lambda Q: Q.astype(np.complex128), id="complex"),
    pytest.param(lambda Q: ["a"] * DIM, id="list-of-strings"),
    pytest.param(lambda Q: [["a"] * DIM], id="rows-of-strings"),
    pytest.param(lambda Q: "abc", id="string"),
    pytest.param(lambda Q: [[1.0] * DIM, [1.0]], id="ragged"),
    pytest.param(lambda Q: Q[:0], id="empty"),
])
def test_api_search_refuses_bad_queries(data, Q):
    saved = ann_bench.open_index(data["root"] / "flat")
    with pytest.raises(InputError):
        saved.search(Q(data["Q"]), 5)


# ---- 3. k and threads -------------------------------------------------------------------------------------
def test_k_beyond_n_is_refused_in_api_and_cli(tmp_path, data):
    saved = ann_bench.open_index(data["root"] / "flat")
    for k in (10**9, N + 1, 0, -1, 2.5, True, "3"):
        with pytest.raises(InputError):
            saved.search(data["Q"], k)
    D, I = saved.search(data["Q"], N)  # k = n: every item, nothing padded
    assert (I >= 0).all() and np.isfinite(D).all()
    out = tmp_path / "o.csv"
    one_line_error(invoke("search", data["root"] / "flat", "--queries", data["set"], "-k", 10**9, "-o", out),
                   "exceeds the 300")
    assert not out.exists()


def test_threads_out_of_range_refused_in_api_and_cli(tmp_path, data):
    for threads in (100_000, 0, True, 2.0):
        with pytest.raises(InputError, match="threads"):
            ann_bench.open_index(data["root"] / "flat", threads=threads)
        with pytest.raises(InputError, match="threads"):
            ann_bench.build_index(data["X"], backend="flat", threads=threads)
    out = tmp_path / "o.csv"
    r = invoke("search", data["root"] / "flat", "--queries", data["set"], "--threads", 100_000, "-o", out)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


def _commands(group, path=()):
    import click

    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, path + (name,))
        else:
            yield path + (name,), command


def test_every_commands_seed_and_threads_are_range_checked_before_work(tmp_path):
    # Issue 31: --seed -1 / 2**64 were tracebacks in synth, import, embed, evaluate and train, and --threads
    # 100000 segfaulted search/evaluate; every command's option is an IntRange now, answered by click in one line.
    import click

    seen = set()
    for path, command in _commands(cli):
        for param in command.params:
            name = param.name
            if name in ("seed", "threads", "build_threads"):
                seen.add((path, name))
                assert isinstance(param.type, click.IntRange), (path, name)
                bad = (-1, 2**31, 2**64) if name == "seed" else (0, 1025, 100_000)
                for value in bad:
                    with pytest.raises(click.BadParameter):
                        param.type.convert(value, param, None)
    commands_with_seed = {p[-1] for p, n in seen if n == "seed"}
    assert {"synth", "import", "embed", "evaluate", "train", "run", "tune", "build"} <= commands_with_seed
    assert {"search", "evaluate", "tune", "run", "build"} <= {p[-1] for p, n in seen if n == "threads"}
    for args in (("data", "synth", tmp_path / "s.hdf5", "--n", 50, "--dim", 4, "--queries", 5, "--seed", -1),
                 ("evaluate", tmp_path / "s.hdf5", "--seed", 2**64),
                 ("evaluate", tmp_path / "s.hdf5", "--threads", 100_000)):
        one_line_error(invoke(*args), "is not in the range")
    assert list(tmp_path.iterdir()) == []


# ---- 4. --force replaces only ann-bench's own, verified directory ------------------------------------------
def test_force_never_deletes_a_file_of_the_users(tmp_path, data):
    idx = copy_index(data, tmp_path)
    (idx / "notes.txt").write_text("mine")
    before = (idx / "index.bin").read_bytes()
    r = invoke("index", "build", "--dataset", data["set"], "--backend", "hnsw", "-o", idx, "--force")
    one_line_error(r, "notes.txt")
    assert (idx / "notes.txt").read_text() == "mine" and (idx / "index.bin").read_bytes() == before
    with pytest.raises(InputError, match="notes.txt"):
        ann_bench.build_index(data["X"], backend="flat").save(idx, force=True)
    (idx / "notes.txt").unlink()
    (idx / "sub").mkdir()
    one_line_error(invoke("index", "build", "--dataset", data["set"], "--backend", "flat", "-o", idx, "--force"),
                   "'sub'")
    (idx / "sub").rmdir()
    r = invoke("index", "build", "--dataset", data["set"], "--backend", "hnsw", "-o", idx, "--force")
    assert r.exit_code == 0, r.output
    assert ann_bench.open_index(idx).manifest["backend"] == "hnsw"
    assert sorted(p.name for p in idx.iterdir()) == ["index.bin", "keys.json", "manifest.json"]


def test_force_refuses_a_directory_it_cannot_verify(tmp_path, data):
    idx = tmp_path / "mine"
    idx.mkdir()
    (idx / "index.bin").write_bytes(b"my own file")
    manifest = json.loads((data["root"] / "flat" / "manifest.json").read_text())
    (idx / "manifest.json").write_text(json.dumps(manifest))  # a copied manifest over another file
    r = invoke("index", "build", "--dataset", data["set"], "--backend", "flat", "-o", idx, "--force")
    one_line_error(r, "modified after", "remove it yourself")
    assert (idx / "index.bin").read_bytes() == b"my own file"


def test_a_directory_with_a_foreign_manifest_says_so(tmp_path, data):
    # It said "(no manifest.json)" beside the manifest.json it had just read.
    idx = tmp_path / "theirs"
    idx.mkdir()
    (idx / "manifest.json").write_text('{"name": "my project"}')
    for force in ((), ("--force",)):
        r = invoke("index", "build", "--dataset", data["set"], "--backend", "flat", "-o", idx, *force)
        one_line_error(r, "its manifest.json is not an ann-bench index manifest", "never replaces it")
    assert (idx / "manifest.json").read_text() == '{"name": "my project"}'


def test_an_output_name_too_long_is_one_line_naming_it_before_the_build(tmp_path, data, monkeypatch):
    # It was refused only after the build, at the rename of the temporary directory, naming that directory
    # (".xxx….tmp", with a byte count of that name) instead of -o.
    import ann_bench.index as index_module

    def no_build(*a, **kw):
        raise AssertionError("built before the output name was checked")

    long_name = tmp_path / ("x" * 300)
    with monkeypatch.context() as m:
        m.setattr(index_module, "build_index", no_build)
        r = invoke("index", "build", "--dataset", data["set"], "--backend", "flat", "-o", long_name)
    one_line_error(r, "error: -o '", "the file name is 300 bytes long")
    one_line_error(invoke("index", "build", "--dataset", data["set"], "--backend", "flat", "-o", long_name / "sub"),
                   "a folder name in the path is 300 bytes long")
    with pytest.raises(InputError, match="300 bytes long"):
        ann_bench.build_index(data["X"], backend="flat", metric="euclidean").save(long_name)
    assert list(tmp_path.iterdir()) == []


# ---- 5. item keys are unique ------------------------------------------------------------------------------
def test_duplicate_keys_refused_at_build(tmp_path, data):
    keys = list(data["keys"])
    keys[7] = keys[3]
    (tmp_path / "keys.txt").write_text("\n".join(keys) + "\n")
    out = tmp_path / "idx"
    r = invoke("index", "build", "--dataset", data["root"] / "x.npy", "--metric", "euclidean", "--keys",
               tmp_path / "keys.txt", "--backend", "flat", "-o", out)
    one_line_error(r, "'item-3'", "rows 3 and 7")
    assert not out.exists()
    r = invoke("index", "build", "--dataset", data["set"], "--keys", tmp_path / "keys.txt", "--backend", "flat",
               "-o", out)
    one_line_error(r, "rows 3 and 7")
    with pytest.raises(InputError, match="rows 3 and 7"):
        ann_bench.build_index(data["X"], backend="flat", keys=keys)
    shutil.copy(data["set"], tmp_path / "dup.hdf5")  # a set written elsewhere, its train keys repeating
    with h5py.File(tmp_path / "dup.hdf5", "r+") as f:
        del f["train_keys"]
        f.create_dataset("train_keys", data=keys, dtype=h5py.string_dtype("utf-8"))
    one_line_error(invoke("index", "build", "--dataset", tmp_path / "dup.hdf5", "--backend", "flat", "-o", out),
                   "dup.hdf5", "rows 3 and 7")
    assert not out.exists()


def test_duplicate_keys_refused_at_open_even_when_checksums_agree(tmp_path, data):
    idx = copy_index(data, tmp_path)
    keys = list(data["keys"])
    keys[9] = keys[2]
    (idx / "keys.json").write_text(json.dumps(keys))
    size, sha = (idx / "keys.json").stat().st_size, sha256_file(idx / "keys.json")
    rewrite_manifest(idx, lambda m: m["keys_file"].update(bytes=size, sha256=sha), redigest=True)
    with pytest.raises(InputError, match="duplicate item key 'item-2'.*rows 2 and 9"):
        ann_bench.open_index(idx)


def test_exclude_self_with_repeated_query_keys_keeps_k_neighbours(tmp_path, data):
    """Queries may repeat (the same item asked twice): each still gets its k nearest other items. (Built as a
    Queries object: whether a --query-keys *file* may repeat a key is the key reader's policy.)"""
    from ann_bench.search import Queries, search_to_file

    rows = [3, 3, 5, 3]
    Q = data["X"][rows]
    qkeys = np.array([f"item-{r}" for r in rows], dtype=object)
    queries = Queries("repeated", len(rows), DIM, qkeys, None, lambda a, b: Q[a:b], keys_given=True)
    saved = _flat(data)
    out = tmp_path / "o.npy"
    summary = search_to_file(saved, queries, out, k=5, exclude_self=True)
    assert summary.excluded_self == len(rows)
    got = np.load(out)
    assert (got["ids"] >= 0).all() and np.isfinite(got["distances"]).all()
    for row, ids in zip(rows, got["ids"]):
        assert row not in ids
        d = ((data["X"].astype(np.float64) - data["X"][row]) ** 2).sum(1)
        d[row] = np.inf
        assert np.array_equal(ids, np.argsort(d, kind="stable")[:5])


# ---- 6. --from-best -k picks the stored k -----------------------------------------------------------------
def test_from_best_k_selects_the_stored_k(tmp_path, data):
    store = tmp_path / "r.sqlite"
    for k in (5, 10):
        r = invoke("run", "--dataset", data["set"], "--backend", "flat", "-k", k, "--results", store, "-q")
        assert r.exit_code == 0, r.output
    one_line_error(invoke("index", "build", "--from-best", "--recall", 0.9, "--results", store, "-o",
                          tmp_path / "a"), "several k")
    for k in (10, 5):
        out = tmp_path / f"k{k}"
        r = invoke("index", "build", "--from-best", "--recall", 0.9, "--results", store, "-k", k, "-o", out)
        assert r.exit_code == 0, r.output
        manifest = ann_bench.open_index(out).manifest
        assert manifest["measured"]["k"] == k and manifest["recall_check"]["k"] == k
    one_line_error(invoke("index", "build", "--from-best", "--recall", 0.9, "--results", store, "-k", 7, "-o",
                          tmp_path / "b"), "k=7")


# ---- 7. properties: any array and any k, through the API and the CLI -------------------------------------
DTYPES = st.sampled_from(["float16", "float32", "float64", "int8", "int64", "uint8", "bool", "complex64", "<U3"])
SHAPES = st.one_of(st.tuples(st.integers(0, 4), st.sampled_from([DIM, DIM - 1, DIM + 1])),
                   st.sampled_from([(DIM,), (3,), (0,), (2, DIM, 1), (1, 1, DIM)]))
FLOATS = st.one_of(st.floats(-10, 10, width=32), st.sampled_from([0.0, np.nan, np.inf, -np.inf, 1e19, -1e30, 1e39,
                                                                   1e-20, 1e-40, 3e38, 1e-300]))


@st.composite
def query_arrays(draw):
    """Half the time well-formed real (n, d) queries (values mostly moderate, now and then huge or tiny), else
    any dtype and shape."""
    if draw(st.booleans()):
        dtype = np.dtype(draw(st.sampled_from(["float16", "float32", "float64", "int16"])))
        shape = (draw(st.integers(1, 4)), DIM)
        if dtype.kind == "i":
            return draw(hnp.arrays(dtype, shape, elements=st.integers(-1000, 1000)))
        scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e-12, 1e-18, 1e6, 1e15, 1e18]))
        values = draw(hnp.arrays(np.float64, shape, elements=st.floats(-10, 10))) * scale
        with np.errstate(all="ignore"):
            return values.astype(dtype)
    dtype = np.dtype(draw(DTYPES))
    shape = draw(SHAPES)
    if dtype.kind == "U":
        return draw(hnp.arrays(dtype, shape, elements=st.sampled_from(["a", "1.5", "x y"])))
    if dtype.kind == "b":
        return draw(hnp.arrays(dtype, shape))
    if dtype.kind in "iu":
        return draw(hnp.arrays(dtype, shape, elements=st.integers(np.iinfo(dtype).min, np.iinfo(dtype).max)))
    with np.errstate(all="ignore"):
        values = draw(hnp.arrays(np.float64, shape, elements=FLOATS))
        return values.astype(dtype)


K = st.one_of(st.integers(1, 12), st.integers(1, N), st.sampled_from([-1, 0, N, N + 1, 10**9, 2**63 - 1]))


def assert_brute_force(X, Q, D, I, k):
    """The answer of an exact index: every returned item within float32 rounding of the true k-th distance,
    distinct, and its distance right; ties may come in any order."""
    Q64 = np.asarray(Q, dtype=np.float32).reshape(-1, X.shape[1]).astype(np.float64)
    X64 = X.astype(np.float64)
    assert I.shape == D.shape == (len(Q64), k)
    for q, drow, irow in zip(Q64, D, I):
        assert (irow >= 0).all() and len(set(irow.tolist())) == k
        d2 = ((X64 - q) ** 2).sum(1)
        slack = 1e-5 * (q @ q + (X64 ** 2).sum(1).max()) + 1e-30
        kth = np.sort(d2)[k - 1]
        assert (d2[irow] <= kth + slack).all()
        assert np.allclose(drow.astype(np.float64) ** 2, d2[irow], rtol=1e-4, atol=slack)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(Q=query_arrays(), k=K)
def test_property_api_search_is_brute_force_or_one_input_error(data, Q, k):
    saved = _flat(data)
    try:
        D, I = saved.search(Q, k)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert_brute_force(data["X"], Q, D, I, k)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(Q=query_arrays(), k=st.one_of(st.integers(1, 12), st.sampled_from([-1, 0, N, N + 1, 10**9])))
def test_property_cli_search_is_brute_force_or_one_line_and_no_output(data, Q, k):
    work = data["root"] / "cli-property"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    np.save(work / "q.npy", Q)
    out = work / "o.npy"
    r = invoke("search", data["root"] / "flat", "--queries", work / "q.npy", "-k", k, "-o", out)
    if r.exit_code != 0:
        one_line_error(r)
        assert not out.exists()
        return
    got = np.load(out)
    assert_brute_force(data["X"], Q, got["distances"], got["ids"], k)


_FLAT = {}


def _flat(data):
    if "flat" not in _FLAT:
        _FLAT["flat"] = ann_bench.open_index(data["root"] / "flat")
    return _FLAT["flat"]
