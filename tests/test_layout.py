"""The layout's rule (DESIGN.md): every import arrow in ann_bench/bench points down, never back up — no module
imports (at module level, inside a function, or for type checking) a module that imports it back."""

import ast
from pathlib import Path

import ann_bench

BENCH = Path(ann_bench.__file__).parent / "bench"
TUNE = "ann_bench.bench.tune"  # being rewritten into a package: its own arrows are checked there


def _modules() -> dict[str, Path]:
    out = {}
    for path in BENCH.rglob("*.py"):
        parts = list(path.relative_to(BENCH.parent.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """{module: the modules under ann_bench/bench it imports}. Importing ``a.b`` also runs package ``a``'s
    ``__init__``: that is Python's doing, not an arrow of the code, and is not counted."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {t for t in map(resolve, names) if t is not None and t != module}
    return graph


def _in_tune(module: str) -> bool:
    return module == TUNE or module.startswith(TUNE + ".")


def test_no_module_in_bench_imports_one_that_imports_it_back():
    graph = import_graph()
    assert {"ann_bench.bench.runner", "ann_bench.bench.jobs", "ann_bench.bench.executors"} <= graph.keys()
    circles = []
    for start in sorted(m for m in graph if not _in_tune(m)):
        seen, todo, path = set(), [start], {start: [start]}
        while todo:
            node = todo.pop()
            for nxt in graph[node]:
                if _in_tune(nxt):
                    continue
                if nxt == start:
                    circles.append(" -> ".join(path[node] + [start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    path[nxt] = path[node] + [nxt]
                    todo.append(nxt)
    assert not circles, "import circles in ann_bench/bench:\n" + "\n".join(circles)


def test_the_shared_job_types_sit_below_runner_tune_and_the_executors():
    graph = import_graph()
    assert not {m for m in graph["ann_bench.bench.jobs"]
                if m == "ann_bench.bench.runner" or m.startswith("ann_bench.bench.executors") or _in_tune(m)}
    for module in graph:
        if module.startswith("ann_bench.bench.executors"):
            assert "ann_bench.bench.runner" not in graph[module] and not any(map(_in_tune, graph[module])), module
    assert not {m for m in graph["ann_bench.bench.worker"] if m == "ann_bench.bench.runner" or _in_tune(m)}


def test_runner_still_exports_the_shared_types():
    from ann_bench.bench import jobs, runner

    for name in ("RunOptions", "Reporter", "parse_size", "check_k", "check_labels", "JobRecorder", "SweepSummary",
                 "index_cache_dir", "MODES", "EXECUTORS", "SEED_MAX"):
        assert getattr(runner, name) is getattr(jobs, name), name
