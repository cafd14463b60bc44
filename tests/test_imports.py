"""The import graph runs one way: no cycle between modules, packages or training's subpackages.

Every import statement counts, lazy ones inside functions included: a lazy import that breaks a
cycle hides a layering mistake. The layers, bottom to top:

- ``configs`` (typed settings) <- ``shards`` (the format, the index, the reader) <- ``pipeline``
  (compositing, writes shards) and ``training`` (reads shards, never ``pipeline``) <-
  ``evaluation`` (runs training's models on shards; its metrics need no torch);
- inside ``training``: ``models`` (the families) <- ``data`` (the data path) <- ``run`` (the
  trainer); at its top level ``distributed`` (below all), ``checkpoint`` and ``inference`` (on
  ``models``, for ``run`` and ``evaluation``) and ``cli`` (above all).

``indexnet_cli`` mounts every package's ``cli``. Only ``cli`` modules import typer; ``shards``,
``configs`` and ``pipeline`` never import torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGES = ("configs", "shards", "pipeline", "training", "evaluation")
# the packages each package may import (besides itself)
ALLOWED = {
    "configs": set(),
    "shards": {"configs"},
    "pipeline": {"configs", "shards"},
    "training": {"configs", "shards"},
    "evaluation": {"configs", "shards", "training"},
}
# training's subpackages and top-level modules: each may import those listed (besides itself)
TRAINING_ALLOWED: dict[str, set[str] | None] = {
    "training": set(),  # its __init__ loads the public names lazily, by name
    "training.distributed": set(),
    "training.models": set(),
    "training.checkpoint": {"training.models"},
    "training.inference": {"training.models"},
    "training.data": {"training.models", "training.distributed"},
    "training.run": {
        "training.models",
        "training.data",
        "training.distributed",
        "training.checkpoint",
        "training.inference",
    },
    "training.cli": None,  # the command line: any of them
    "training.__main__": {"training.cli"},
}


def _modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages (and the root CLI), by dotted name."""
    found = {"indexnet_cli": root / "indexnet_cli.py"}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports, anywhere in it (``from a import b`` counts ``a.b``
    when that is a module, else ``a``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules(REPO)
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _collapse(graph: dict[str, set[str]], group) -> dict[str, set[str]]:
    """The graph between groups of modules (``group(module)`` -> a group or None to leave out)."""
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = group(module)
        if source is None:
            continue
        edges.setdefault(source, set())
        for target in map(group, targets):
            if target is not None and target != source:
                edges[source].add(target)
    return edges


def _subpackage(module: str) -> str | None:
    """training's subpackage or top-level module of a module of training (else None)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "training" else None


def test_the_scan_sees_the_code(graph):
    assert len(graph) > 70
    assert "training.models.registry" in graph["training.models.build"]
    assert "training.run.trainer" in graph["training.cli"]  # a lazy import, inside a function


def test_no_import_cycle_between_modules(graph):
    assert _cycles(graph) == []


def test_packages_import_only_the_layers_below(graph):
    edges = _collapse(graph, lambda m: m.split(".")[0] if m.split(".")[0] in PACKAGES else None)
    assert _cycles(edges) == []
    for package, targets in edges.items():
        assert targets <= ALLOWED[package], f"{package} imports {targets - ALLOWED[package]}"


def test_training_subpackages_are_layered(graph):
    edges = _collapse(graph, _subpackage)
    assert set(edges) == set(TRAINING_ALLOWED)  # a new room of training is placed in the layers
    for subpackage, allowed in TRAINING_ALLOWED.items():
        extra = edges[subpackage] - (set(edges) if allowed is None else allowed)
        assert not extra, f"{subpackage} imports {extra}"
    assert _cycles(edges) == []


def test_a_cycle_is_found():
    """The check itself: a three-module loop and a two-package loop are reported."""
    loop = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(loop) == [["a", "b", "c"]]
    assert _cycles({"x": {"y"}, "y": {"x"}}) == [["x", "y"]]
    assert _cycles({"x": {"y"}, "y": set()}) == []


def test_only_cli_modules_import_typer_and_the_base_layers_no_torch():
    for name, path in _modules(REPO).items():
        tops = {n.split(".")[0] for n in _third_party(path)}
        if "typer" in tops:
            assert name.endswith(".cli") or name == "indexnet_cli", f"{name} imports typer"
        if name.split(".")[0] in ("configs", "shards", "pipeline"):
            assert "torch" not in tops, f"{name} imports torch"


def _third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module)
    return names


def test_benchmarks_use_only_the_public_api():
    """benchmarks/ measures what users run: no private names of ours and nothing from tests/."""
    ours = {*PACKAGES, "tests", "indexnet_cli"}
    for path in sorted((REPO / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                top = node.module.split(".")[0]
                if top not in ours:
                    continue
                assert top != "tests", f"{path.name} imports {node.module}"
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
            elif isinstance(node, ast.Import):
                tops = {alias.name.split(".")[0] for alias in node.names}
                assert "tests" not in tops, f"{path.name} imports tests"
