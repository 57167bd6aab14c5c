"""Package dependency rules: which histoprompt packages each workspace member may import.

Read from the sources with `ast`, so imports inside functions and under TYPE_CHECKING count
too: a lazy import still needs the other package installed, and a type-only one still ties
the two packages' release cycles together.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# member -> the project packages it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "wsi": frozenset({"core"}),
    "serving": frozenset({"core"}),
    "ingest": frozenset({"core", "wsi"}),
    "client": frozenset({"core", "wsi"}),
    "export": frozenset({"core", "serving"}),
    "stack": frozenset({"core"}),
}

# (importing file, imported package) -> why this one edge outside ALLOWED is acceptable
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("client/src/histoprompt/client/group.py", "stack"): (
        "optional `histoprompt stack` subcommand, imported lazily; ImportError -> install hint"
    ),
    ("stack/src/histoprompt/stack/ingest_demo.py", "ingest"): (
        "`make demo` step, dev workspace only: lazy imports, histoprompt-stack depends on neither"
    ),
    ("stack/src/histoprompt/stack/ingest_demo.py", "export"): (
        "`make demo` step, dev workspace only: lazy imports, histoprompt-stack depends on neither"
    ),
}

# what the Triton python-backend image installs: the model.py files may import nothing else
MODEL_PY_ALLOWED = frozenset({"core", "serving"})


def project_imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every absolute `histoprompt.*` import anywhere in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "histoprompt":  # `from histoprompt import core`
                modules = [f"histoprompt.{alias.name}" for alias in node.names]
            else:
                modules = [node.module]
        else:
            continue
        for module in modules:
            if module.startswith("histoprompt."):
                yield node.lineno, module


def _package(module: str) -> str:
    return module.split(".")[1]


def _member_sources(member: str) -> list[Path]:
    return sorted((ROOT / member / "src" / "histoprompt" / member).rglob("*.py"))


def _violations(files: list[Path], owner: str, allowed: frozenset[str]) -> list[str]:
    found = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for line, module in project_imports(path.read_text(encoding="utf-8")):
            package = _package(module)
            if package in (owner, *allowed) or (rel, package) in EXCEPTIONS:
                continue
            found.append(f"{rel}:{line} imports {module}")
    return found


def test_the_collector_sees_lazy_type_only_and_from_package_imports() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import histoprompt.core.names\n"
        "from histoprompt import wsi\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n"
        "    from histoprompt.stack.handle import StackHandle\n"
        "def f():\n"
        "    from histoprompt.export.bundle import build_demo_bundle\n"
        "class C:\n"
        "    def m(self):\n"
        "        import histoprompt.ingest.service as svc\n"
    )
    assert list(project_imports(source)) == [
        (2, "histoprompt.core.names"),
        (3, "histoprompt.wsi"),
        (6, "histoprompt.stack.handle"),
        (8, "histoprompt.export.bundle"),
        (11, "histoprompt.ingest.service"),
    ]


@pytest.mark.parametrize("member", sorted(ALLOWED))
def test_member_imports_only_the_packages_it_may_depend_on(member: str) -> None:
    files = _member_sources(member)
    assert files, f"no sources under {member}/src/histoprompt/{member}/"
    bad = _violations(files, member, ALLOWED[member])
    allowed = ", ".join(sorted(ALLOWED[member])) or "no other project package"
    assert not bad, f"histoprompt.{member} may import {allowed}; found:\n" + "\n".join(bad)


def test_every_listed_exception_is_still_needed() -> None:
    stale = []
    for (rel, package), _reason in EXCEPTIONS.items():
        path = ROOT / rel
        used = path.is_file() and any(
            _package(m) == package for _, m in project_imports(path.read_text(encoding="utf-8"))
        )
        if not used:
            stale.append(f"{rel} -> histoprompt.{package}")
    assert not stale, "remove these from EXCEPTIONS, they no longer occur:\n" + "\n".join(stale)


def test_triton_model_py_files_import_only_core_and_serving() -> None:
    files = sorted((ROOT / "model_repository").glob("*/1/model.py"))
    assert files, "no model_repository/*/1/model.py found"
    bad = _violations(files, "serving", MODEL_PY_ALLOWED)
    assert not bad, "the Triton image ships histoprompt.core and .serving only:\n" + "\n".join(bad)
