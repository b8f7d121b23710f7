"""The house rules the code must keep: no import cycle, no module over 600 lines, in exporter/, bench/
and tests/ (the benchmarks and the tests are code the project maintains too).

Read from the source (the AST of every module), so imports inside functions count too: a cycle hidden
in a function-level import still ties the two modules together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.conftest import ROOT

#: the folder (fixed by the project layout) and the import package it installs as (pyproject package-dir)
SOURCE = "exporter"
PACKAGE = "mqtt_cert_exporter"
#: every folder the rules hold for, and the package its modules import as
TREES = {SOURCE: PACKAGE, "bench": "bench", "tests": "tests"}
MAX_LINES = 600

#: Modules still over MAX_LINES, with who is shrinking them. Shrink this list; never grow it.
#: An entry that is no longer over the limit fails the test, so the list cannot go stale.
OVER_MAX_LINES: Mapping[str, str] = {}

#: Import edges that close a known cycle, with who is removing them. Same rules as above: an entry
#: whose import is gone fails the test. (Empty since issue 15: config no longer imports the probe.)
CYCLE_EDGES_ALLOWED: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path, folder: str = SOURCE) -> str:
    parts = (TREES[folder], *path.relative_to(ROOT / folder).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path, folder): path for folder in TREES for path in sorted((ROOT / folder).rglob("*.py"))
    }


def imported(name: str, path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """The modules of ours that ``name`` imports anywhere in its source (functions included).

    ``from package import submodule`` imports the submodule; ``from module import thing`` the module.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
            ]
        else:
            continue
        yield from (target for target in targets if target in known and target != name)


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: set(imported(name, path, known)) for name, path in known.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] when the graph is acyclic (iterative depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
                on_path.add(child)
    return []


def test_the_import_graph_is_read_from_every_kind_of_import() -> None:
    """The graph sees absolute, relative and function-level imports: a check that sees none is no check."""
    graph = import_graph()
    assert (
        "mqtt_cert_exporter.report.assessment" in graph["mqtt_cert_exporter.report"]
    )  # from mqtt_cert_exporter.report.assessment import
    assert (
        "mqtt_cert_exporter.probe.wire.websocket" in graph["mqtt_cert_exporter.probe.wire.transport"]
    )  # from package import submodule
    assert "mqtt_cert_exporter.check" in graph["mqtt_cert_exporter.cli"]  # an import inside main()
    assert "bench.loadlab" in graph["bench.compare"]  # bench/ is read too
    assert "tests.lab.transport" in graph["tests.conftest"]  # and tests/
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_import_cycle() -> None:
    graph = import_graph()
    stale = sorted(edge for edge in CYCLE_EDGES_ALLOWED if edge[1] not in graph.get(edge[0], set()))
    assert stale == [], "these imports are gone: remove them from CYCLE_EDGES_ALLOWED"
    for source, target in CYCLE_EDGES_ALLOWED:
        graph[source].discard(target)
    assert find_cycle(graph) == []


def test_no_module_over_600_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    over = sorted(name for name, lines in sizes.items() if lines > MAX_LINES and name not in OVER_MAX_LINES)
    assert over == [], {name: sizes[name] for name in over}
    shrunk = sorted(name for name in OVER_MAX_LINES if sizes.get(name, 0) <= MAX_LINES)
    assert shrunk == [], "these are within the limit now: remove them from OVER_MAX_LINES"


def test_nothing_imports_the_source_folder_by_its_name() -> None:
    """exporter/ installs as mqtt_cert_exporter; from a checkout `exporter` is importable too, so a stray
    an import of `exporter.x` would pass here and break every installed copy."""
    stray = []
    sources = [
        *(ROOT / SOURCE).rglob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
        *(ROOT / "bench").rglob("*.py"),
    ]
    for path in sorted(sources):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            stray += [
                f"{path.relative_to(ROOT)}:{node.lineno}" for name in names if name.split(".")[0] == SOURCE
            ]
    assert not stray
