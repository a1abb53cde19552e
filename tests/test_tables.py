"""Tables fit 80-120 columns: short parameter forms, figures never cut, columns dropped in a stated order."""

import io

from rich.console import Console

from ann_bench.cli.results import results_table
from ann_bench.cli.tables import short_value, varying
from ann_bench.bench.results import Record


def rows():
    out = []
    for refine in (0, 10):
        for nprobe, recall in ((8, 0.912345), (16, 0.999971)):
            out.append(Record(dataset_hash="h" * 16, dataset_name="synth-1000000x128-euclidean-c100-s42",
                              backend="ivfpq", impl="faiss",
                              build_params={"nlist": 4096, "train_per_list": 64, "m": 32, "nbits": 8, "rerank": True},
                              search_params={"nprobe": nprobe, "refine": refine}, k=10, mode="batch", threads=1,
                              recall=recall, recall_ab=recall, qps=123456.7, p99_ms=None, build_s=812.25,
                              index_bytes=654_321_000))
    out.append(Record(dataset_hash="h" * 16, dataset_name="synth-1000000x128-euclidean-c100-s42", backend="hnsw",
                      impl="hnswlib", build_params={"M": 16, "ef_construction": 200}, search_params={"ef": 640},
                      k=10, mode="batch", threads=1, recall=0.99999, recall_ab=1.0, qps=987.6, build_s=3021.5,
                      index_bytes=1_000_000_000))
    return out


def rendered(width, wide=False):
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(results_table(rows(), "r.sqlite").render(width, wide=wide))
    return console.export_text()


def test_short_forms_and_what_varies():
    assert short_value("ef_construction", 200) == "efC200" and short_value("M", 16) == "M16"
    assert short_value("rerank", True) == "rerank=yes" and short_value("preset", "ivf-sq8") == "preset=ivf-sq8"
    assert short_value("epsilon", -0.1) == "eps=-0.1"
    assert varying([{"a": 1, "b": 2}, {"a": 1, "b": 3}]) == {"b"}


def test_results_fit_80_and_120_columns_without_cutting_a_figure():
    for width in (80, 120):
        text = rendered(width)
        assert max(len(line) for line in text.splitlines()) <= width
        assert "…" not in text
        for figure in ("0.9123", "0.99997", "123,457", "0.99999"):
            assert figure in text, (width, figure, text)
        # refine=0 and refine=10 rows are told apart; the fixed nlist/m/nbits go to the caption
        assert "nprobe8 refine0" in text and "nprobe8 refine10" in text
        assert "nlist4096" in text and "ivfpq[faiss]:" in text
    narrow = rendered(80)
    assert "columns left out to fit 80 columns" in narrow
    wide = rendered(80, wide=True)
    assert "recall ab" in wide and "columns left out" not in wide
