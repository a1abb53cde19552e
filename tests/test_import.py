"""Vector file formats, `data import`, and `data fetch` against a local HTTP server."""

import hashlib
import http.server
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from ann_bench.data import catalogue
from ann_bench.cli import cli
from ann_bench.data.vectorset import VectorSet, validate, write_vectorset
from ann_bench.errors import InputError
from ann_bench.data.formats import (read_bin_groundtruth, read_idx, read_vectors, write_bin, write_bin_groundtruth,
                               write_idx, write_vecs)
from ann_bench.data.groundtruth import exact_knn
from ann_bench.data.importing import import_dataset


@pytest.fixture
def vecs(rng):
    return rng.normal(size=(500, 12)).astype(np.float32), rng.normal(size=(20, 12)).astype(np.float32)


@pytest.mark.parametrize("suffix, dtype", [(".fvecs", np.float32), (".bvecs", np.uint8), (".ivecs", np.int32),
                                           (".fbin", np.float32), (".u8bin", np.uint8), (".i8bin", np.int8),
                                           (".ibin", np.int32), (".npy", np.float32), ("-idx2-ubyte.gz", np.uint8)])
def test_format_round_trip(tmp_path, rng, suffix, dtype):
    X = (rng.normal(size=(37, 5)) * 40).clip(-100, 100).astype(dtype)
    path = tmp_path / f"x{suffix}"
    if suffix.endswith("vecs"):
        write_vecs(path, X)
    elif suffix.endswith("bin"):
        write_bin(path, X)
    elif suffix == ".npy":
        np.save(path, X)
    else:
        write_idx(path, X)
    Y = read_vectors(path)
    assert Y.shape == X.shape
    np.testing.assert_array_equal(np.asarray(Y), X)
    if suffix != "-idx2-ubyte.gz":
        assert isinstance(Y, np.memmap) or isinstance(Y.base, np.memmap) or Y.base is not None


def test_malformed_files(tmp_path):
    (tmp_path / "a.fvecs").write_bytes(np.array([3], "<i4").tobytes() + b"\0" * 5)
    with pytest.raises(InputError, match="not a multiple of the record size"):
        read_vectors(tmp_path / "a.fvecs")
    (tmp_path / "b.fbin").write_bytes(np.array([10, 4], "<u4").tobytes() + b"\0" * 8)
    with pytest.raises(InputError, match="header says 10 x 4"):
        read_vectors(tmp_path / "b.fbin")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(InputError, match="unknown vector file format"):
        read_vectors(tmp_path / "c.txt")
    (tmp_path / "d-idx1-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InputError, match="not an IDX file"):
        read_idx(tmp_path / "d-idx1-ubyte")


def test_bin_groundtruth_round_trip(tmp_path, rng):
    I = rng.integers(0, 100, size=(4, 3))
    D = rng.random((4, 3)).astype(np.float32)
    write_bin_groundtruth(tmp_path / "gt.bin", I, D)
    I2, D2 = read_bin_groundtruth(tmp_path / "gt.bin")
    np.testing.assert_array_equal(I2, I)
    np.testing.assert_array_equal(D2, D)


def test_import_with_queries_and_verified_groundtruth(tmp_path, vecs):
    X, Q = vecs
    write_bin(tmp_path / "base.fbin", X)
    write_bin(tmp_path / "query.fbin", Q)
    D, I = exact_knn(X, Q, "euclidean", 10)
    write_bin_groundtruth(tmp_path / "gt.bin", I, D)
    out = import_dataset(tmp_path / "base.fbin", tmp_path / "o.hdf5", "euclidean", queries=tmp_path / "query.fbin",
                         groundtruth=tmp_path / "gt.bin", k=10)
    with VectorSet(out) as vs:
        assert validate(vs).ok and vs.gt_depth == 10
        np.testing.assert_array_equal(vs.neighbors, I)
    wrong = I.copy()
    wrong[:, 0] = (wrong[:, 0] + 1) % 500
    write_vecs(tmp_path / "wrong.ivecs", wrong)
    with pytest.raises(InputError, match="supplied ground truth is not exact"):
        import_dataset(tmp_path / "base.fbin", tmp_path / "w.hdf5", "euclidean", queries=tmp_path / "query.fbin",
                       groundtruth=tmp_path / "wrong.ivecs", k=10)
    assert not (tmp_path / "w.hdf5").exists()


def test_import_split_is_seeded_and_memory_mapped(tmp_path, vecs):
    X, _ = vecs
    write_vecs(tmp_path / "base.fvecs", X)
    labels = np.arange(500) % 7
    np.save(tmp_path / "labels.npy", labels)
    a = import_dataset(tmp_path / "base.fvecs", tmp_path / "a.hdf5", "angular", labels=tmp_path / "labels.npy",
                       test_size=50, seed=3)
    b = import_dataset(tmp_path / "base.fvecs", tmp_path / "b.hdf5", "angular", test_size=50, seed=3)
    with VectorSet(a) as va, VectorSet(b) as vb:
        assert va.n_train == 450 and va.n_test == 50 and validate(va).ok
        np.testing.assert_array_equal(va.test, vb.test)
        # Every base vector lands in exactly one side, labels follow their vectors.
        rows = {tuple(r) for r in np.vstack([va.load_train(), va.test])}
        assert len(rows) == 500
        test_rows = [int(np.flatnonzero((X == q).all(1))[0]) for q in va.test]
        np.testing.assert_array_equal(va.labels("test"), labels[test_rows])


def test_import_hdf5_revalidates(tmp_path, small_arrays):
    train, test, _, _ = small_arrays
    src = write_vectorset(tmp_path / "src.hdf5", train, test, "euclidean")
    out = import_dataset(src, tmp_path / "copy.hdf5", "euclidean")
    with VectorSet(src) as a, VectorSet(out) as b:
        assert a.content_hash() == b.content_hash()
        np.testing.assert_array_equal(a.neighbors, b.neighbors)


def test_import_cli_bad_inputs(tmp_path, vecs):
    X, Q = vecs
    write_bin(tmp_path / "base.fbin", X)
    write_bin(tmp_path / "q.fbin", Q[:, :5])
    runner = CliRunner()
    for args, message in [
        (["--queries", str(tmp_path / "q.fbin")], "are 5-d but the base is 12-d"),
        (["--test-size", "500"], "--test-size must be in [1, 499]"),
        (["--metric", "hamming"], "unknown metric"),
    ]:
        argv = ["data", "import", str(tmp_path / "base.fbin"), "-o", str(tmp_path / "o.hdf5"), "--metric",
                "euclidean", *args]
        r = runner.invoke(cli, argv)
        assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o.hdf5").exists()


# ---- fetch --------------------------------------------------------------------------------------------
class _Server:
    """A loopback HTTP server with Range support that can cut the first response short."""

    def __init__(self, root):
        self.root, self.cut_after, self.requests = root, None, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                path = server.root / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut_after is not None:
                    body, server.cut_after = body[: server.cut_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


@pytest.fixture
def served(tmp_path, monkeypatch, small_arrays):
    train, test, _, _ = small_arrays
    root = tmp_path / "www"
    root.mkdir()
    write_vectorset(root / "tiny-16-euclidean.hdf5", train, test, "euclidean")
    monkeypatch.setitem(catalogue.CATALOGUE, "tiny-16-euclidean",
                        catalogue.Entry("tiny-16-euclidean", 16, 3000, 100, "euclidean", 1))
    server = _Server(root)
    yield server, root
    server.close()


def test_fetch_resumes_an_interrupted_download(served):
    server, root = served
    size = (root / "tiny-16-euclidean.hdf5").stat().st_size
    server.cut_after = size // 3
    with pytest.raises(InputError, match="interrupted"):
        catalogue.fetch("tiny-16-euclidean", mirror=server.url)
    part = catalogue.cached_path("tiny-16-euclidean").with_suffix(".hdf5.part")
    assert part.stat().st_size == size // 3 and not catalogue.cached_path("tiny-16-euclidean").exists()
    path = catalogue.fetch("tiny-16-euclidean", mirror=server.url)
    assert server.requests[-2][1] == f"bytes={size // 3}-"  # resumed with a Range request (then .sha256)
    assert path.read_bytes() == (root / "tiny-16-euclidean.hdf5").read_bytes()
    recorded = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(path.read_bytes()).hexdigest()
    assert catalogue.fetch("tiny-16-euclidean", mirror=server.url) == path  # cached: no new request
    assert len(server.requests) == 3


def test_fetch_checksum_mismatch(served):
    server, root = served
    (root / "tiny-16-euclidean.hdf5.sha256").write_text("0" * 64 + "  tiny-16-euclidean.hdf5\n")
    with pytest.raises(InputError, match="checksum mismatch"):
        catalogue.fetch("tiny-16-euclidean", mirror=server.url)
    assert not list(catalogue.datasets_dir().iterdir())


def test_fetch_unknown_name_and_unreachable_mirror(monkeypatch):
    with pytest.raises(InputError, match="unknown dataset 'sift'"):
        catalogue.fetch("sift")
    monkeypatch.setattr(catalogue, "fashion_mnist_dir", lambda: None)
    with pytest.raises(InputError, match="cannot download"):
        catalogue.fetch("mnist-784-euclidean", mirror="http://127.0.0.1:9")


def test_fashion_mnist_builder(tmp_path, rng, monkeypatch):
    # The Debian package's layout, in miniature.
    src = tmp_path / "fm"
    src.mkdir()
    for split, n in (("train", 300), ("t10k", 40)):
        write_idx(src / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8))
        write_idx(src / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=n).astype(np.uint8))
    monkeypatch.setenv(catalogue.FASHION_MNIST_ENV, str(src))
    path = catalogue.fetch("fashion-mnist-784-euclidean")
    with VectorSet(path) as vs:
        assert (vs.n_train, vs.n_test, vs.dim, vs.metric) == (300, 40, 784, "euclidean")
        assert vs.has_labels and validate(vs).ok
        np.testing.assert_array_equal(vs.test[0], read_idx(src / "t10k-images-idx3-ubyte.gz")[0].reshape(-1))


def test_fetch_refuses_a_file_of_another_shape_than_the_catalogue(served, monkeypatch):
    """A mirror serving a 3,000-vector file as a 1,000,000-vector catalogue entry: one line, nothing kept."""
    server, root = served
    monkeypatch.setitem(catalogue.CATALOGUE, "tiny-16-euclidean",
                        catalogue.Entry("tiny-16-euclidean", 16, 1_000_000, 100, "euclidean", 1))
    with pytest.raises(InputError, match="expected 1,000,000 train"):
        catalogue.fetch("tiny-16-euclidean", mirror=server.url)
    assert not catalogue.cached_path("tiny-16-euclidean").exists()
    assert not list(catalogue.datasets_dir().glob("tiny-16-euclidean*"))


@pytest.mark.parametrize("name", ["ANN_BENCH_FASHION_MNIST_DIR", "ANN_BENCH_FASHION_MNIST"])
def test_one_fashion_mnist_folder_for_fetch_and_train(tmp_path, monkeypatch, name):
    from embeddings.training import data as training_data

    for other in ("ANN_BENCH_FASHION_MNIST_DIR", "ANN_BENCH_FASHION_MNIST"):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, str(tmp_path))
    assert catalogue.fashion_mnist_source() == tmp_path
    with pytest.raises(InputError, match=str(tmp_path)):
        training_data._fashion_mnist()
