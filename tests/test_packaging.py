"""pyproject.toml declares every third-party module the code, the tests and the benchmarks import.

A module that arrives only because another package depends on it (psutil through distributed,
say) disappears the day that package drops it; so each import is checked against what
pyproject.toml names: the package's own modules against ``dependencies`` and its extras, the
tests and benchmarks against ``dependencies`` and the ``dev`` extra. Imports guarded by
``except ImportError`` are optional and not counted.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # tomllib is 3.11's; the dev extra names tomli for 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("configs", "shards", "pipeline", "training", "evaluation")
# Import names that differ from the name of the distribution that provides them.
DISTRIBUTIONS = {
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
}


def _normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them: lower case, runs of -_. as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(requirements: list[str]) -> set[str]:
    """Requirement strings (``"torch>=2.2"``, ``"tomli>=2; python_version < '3.11'"``) -> names."""
    return {_normalise(re.match(r"[A-Za-z0-9._-]+", r.strip()).group()) for r in requirements}


def _optional(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside a ``try`` that catches ImportError: optional imports."""
    optional = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {
            n.id
            for handler in node.handlers
            if handler.type is not None
            for n in ast.walk(handler.type)
            if isinstance(n, ast.Name)
        }
        if caught & {"ImportError", "ModuleNotFoundError"}:
            optional |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return optional


def _ours(name: str, path: Path) -> bool:
    """A package or module at the repository's root, beside ``path``, or in tests/ or
    benchmarks/ (tests/evaluation/test_metrics.py imports benchmarks/metrics_reference.py)."""
    folders = (ROOT, path.parent, ROOT / "tests", ROOT / "benchmarks")
    return any((f / name).is_dir() or (f / f"{name}.py").is_file() for f in folders)


def third_party_imports(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports that are neither the standard library
    nor this repository's own."""
    tree = ast.parse(path.read_text(), filename=str(path))
    optional = _optional(tree)
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and not _ours(name, path)}


def _undeclared(files: list[Path], allowed: set[str]) -> list[str]:
    return sorted(
        f"{path.relative_to(ROOT)}: {name} (distribution {DISTRIBUTIONS.get(name, name)})"
        for path in files
        for name in third_party_imports(path)
        if _normalise(DISTRIBUTIONS.get(name, name)) not in allowed
    )


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_tests_and_benchmarks_import_only_declared_modules(project):
    allowed = _declared(project["dependencies"]) | _declared(
        project["optional-dependencies"]["dev"]
    )
    files = sorted((ROOT / "tests").rglob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    assert len(files) > 30
    assert _undeclared(files, allowed) == [], "add these to the dev extra of pyproject.toml"


def test_the_package_imports_only_declared_modules(project):
    extras = project["optional-dependencies"]
    allowed = _declared(project["dependencies"]).union(
        *(_declared(reqs) for extra, reqs in extras.items() if extra != "dev")
    )
    files = [ROOT / "indexnet_cli.py"] + sorted(
        path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    )
    assert _undeclared(files, allowed) == [], "add these to pyproject.toml's dependencies"


def test_the_check_sees_what_it_should(tmp_path):
    """An undeclared import is reported; the standard library, our modules and optional
    imports are not."""
    script = tmp_path / "probe.py"
    (tmp_path / "beside.py").write_text("")
    script.write_text(
        "import os, json\nimport numpy as np\nfrom cv2 import imread\nimport psutil.tests\n"
        "import beside\nfrom shards import codec\nfrom . import relative\n"
        "try:\n    import matplotlib\nexcept ImportError:\n    matplotlib = None\n"
    )
    assert third_party_imports(script) == {"numpy", "cv2", "psutil"}
    assert _declared(["tomli>=2.0; python_version < '3.11'", "Opencv_Python.headless"]) == {
        "tomli",
        "opencv-python-headless",
    }
