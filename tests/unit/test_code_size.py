"""Size limits on the packages' sources: modules up to 400 lines, functions up to 80.

Past those sizes a module usually holds two responsibilities and a function several steps
that deserve names; an exception is listed here with its reason, so that it stays a decision.
A function's lines run from its first decorator to its last line (docstring included).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80

# "member/src/.../module.py" -> reason
MODULE_EXCEPTIONS: dict[str, str] = {}

# "member/src/.../module.py::Qualified.name" -> reason
FUNCTION_EXCEPTIONS: dict[str, str] = {}


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.glob("*/src/**/*.py") if ".venv" not in p.parts)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def module_lines(source: str) -> int:
    return len(source.splitlines())


def function_sizes(source: str) -> Iterator[tuple[str, int, int]]:
    """(qualified name, first line, length) of every def / async def, methods and nested too."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                end = child.end_lineno or child.lineno
                name = f"{prefix}{child.name}"
                yield name, first, end - first + 1
                yield from walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(ast.parse(source), "")


def test_function_sizes_count_decorators_docstrings_methods_and_nested_defs() -> None:
    source = (
        "import functools\n"
        "@functools.cache\n"
        "def top():\n"
        '    """doc"""\n'
        "    def inner():\n"
        "        return 1\n"
        "    return inner\n"
        "class K:\n"
        "    async def m(self):\n"
        "        pass\n"
    )
    assert list(function_sizes(source)) == [
        ("top", 2, 6),
        ("top.inner", 5, 2),
        ("K.m", 9, 2),
    ]
    assert module_lines(source) == 10


def test_no_module_over_the_limit() -> None:
    files = _sources()
    assert files, "no sources under */src/"
    too_long = [
        f"{_rel(p)}: {n} lines"
        for p in files
        if (n := module_lines(p.read_text(encoding="utf-8"))) > MAX_MODULE_LINES
        and _rel(p) not in MODULE_EXCEPTIONS
    ]
    assert not too_long, (
        f"modules over {MAX_MODULE_LINES} lines (split them, or list one in "
        "MODULE_EXCEPTIONS with its reason):\n" + "\n".join(too_long)
    )


def test_no_function_over_the_limit() -> None:
    too_long = []
    for path in _sources():
        for name, line, length in function_sizes(path.read_text(encoding="utf-8")):
            key = f"{_rel(path)}::{name}"
            if length > MAX_FUNCTION_LINES and key not in FUNCTION_EXCEPTIONS:
                too_long.append(f"{_rel(path)}:{line} {name}: {length} lines")
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines (split them, or list one in "
        "FUNCTION_EXCEPTIONS with its reason):\n" + "\n".join(too_long)
    )


def test_every_listed_exception_still_exceeds_its_limit() -> None:
    stale = []
    for rel in MODULE_EXCEPTIONS:
        path = ROOT / rel
        if not path.is_file() or module_lines(path.read_text(encoding="utf-8")) <= MAX_MODULE_LINES:
            stale.append(rel)
    for key in FUNCTION_EXCEPTIONS:
        rel, _, name = key.partition("::")
        path = ROOT / rel
        source = path.read_text(encoding="utf-8") if path.is_file() else ""
        sizes = {n: size for n, _, size in function_sizes(source)}
        if sizes.get(name, 0) <= MAX_FUNCTION_LINES:
            stale.append(key)
    assert not stale, "within the limits now, remove them from the exceptions:\n" + "\n".join(stale)
