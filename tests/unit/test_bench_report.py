"""tests/perf/_report.py: a benchmark's BENCHMARKS.md section is replaced in place, other
sections are kept byte for byte, and every section carries its run stamp."""

from __future__ import annotations

import re
from pathlib import Path

# tests/ is on sys.path under pytest (tests/conftest.py has no package above it); the
# benchmarks import the same file as tests.perf._report from the repository root.
from perf._report import write_section

DOC = """# Benchmarks

## Alpha

old alpha

## Models (x)

old models

| a | b |

## Omega

omega stays
"""


def test_replaces_only_its_own_section_and_stamps_it(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(DOC)
    write_section("Models (x)", ["new models", "", "| c | d |"], path=path)
    text = path.read_text()
    assert text.count("## Models (x)") == 1
    assert "old models" not in text and "| a | b |" not in text
    assert "## Alpha\n\nold alpha\n\n## Models (x)\n\nnew models\n\n| c | d |\n\n" in text
    assert text.endswith("## Omega\n\nomega stays\n")
    stamp = re.search(r"Measured (\S+ \S+ UTC); load average ([\d.]+) / ([\d.]+) / ([\d.]+)", text)
    assert stamp is not None
    assert re.search(r"machine \S+, \d+ cores\.", text)
    # A rerun replaces the stamped section again rather than adding a second one.
    write_section("Models (x)", ["newer"], path=path)
    again = path.read_text()
    assert again.count("## Models (x)") == 1 and again.count("Measured ") == 1
    assert "newer" in again and "new models" not in again


def test_appends_a_new_section_and_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(DOC)
    write_section("Models", ["m"], path=path)  # a prefix of "Models (x)" is another title
    text = path.read_text()
    assert "old models" in text and text.count("## Models\n") == 1
    assert text.index("## Omega") < text.index("## Models\n")
    fresh = tmp_path / "none" / "B.md"
    fresh.parent.mkdir()
    write_section("Only", ["x"], path=fresh)
    assert fresh.read_text().startswith("# Benchmarks\n\n## Only\n\nx\n\nMeasured ")
