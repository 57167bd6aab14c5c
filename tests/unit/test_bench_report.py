"""tests/perf/_report.py: a benchmark's BENCHMARKS.md section is replaced in place, other
sections are kept byte for byte, and every section carries its run stamp."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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


def test_marking_a_history_row_rerenders_only_the_history_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    # ingest_cpu imports its siblings as tests.perf.*, as the benchmarks run it
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    from tests.perf.ingest_cpu import history_lines, mark, rerender_history

    row = {
        "change": "wsi: a change",
        "commit": "abc1234",
        "measured": "2026-12-02 06:00 UTC",
        "n_tiles": 518,
        "cpu_ms_per_tile": 0.9,
        "groups_ms_per_tile": {"ingest": 0.5, "triton": 0.3, "minio": 0.1},
        "tiles_per_s": 1500.0,
        "runs": 3,
    }
    history = tmp_path / "history.json"
    history.write_text(json.dumps([row]))
    table = "\n".join(history_lines([row])).rstrip("\n")
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"## Ingest (x)\n\nbefore\n\n{table}\n\nafter | stays\n\n## Omega\n")
    mark("wsi: a change", "no: slower", path=history)
    assert rerender_history(doc, path=history)
    text = doc.read_text()
    assert "| wsi: a change | no: slower | abc1234 |" in text
    assert text.count("| wsi: a change |") == 1
    assert text.startswith("## Ingest (x)\n\nbefore\n\n**History**")
    assert text.endswith("\n\nafter | stays\n\n## Omega\n")
    assert not rerender_history(tmp_path / "history.json", path=history)  # no table there
