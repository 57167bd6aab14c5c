"""docs/evaluation/report.md carries the spatial validation (issue 14, item 4): the section is
computed from `run_validation`'s table (here a small hand-made frame, no benchmark run), its
CSVs are written, and a rerun replaces the section in place without touching the rest."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from histoprompt.export.protocol_report import (
    SPATIAL_CSV,
    SPATIAL_SUMMARY_CSV,
    SPATIAL_TITLE,
    spatial_markdown,
    write_spatial_section,
)


def _table(shift: float = 0.0) -> pd.DataFrame:
    rows = []
    for s, slide in enumerate(("SYN-SPATIAL-0001", "SYN-SPATIAL-0002")):
        for p, program in enumerate(("hypoxia", "stroma")):
            for m, method in enumerate(("st_head", "one_tile_bag", "context")):
                rows.append(
                    {
                        "slide": slide,
                        "program": program,
                        "gene_set": f"HALLMARK_{program.upper()}",
                        "method": method,
                        "spearman": 0.1 * m + 0.01 * p + 0.002 * s + shift,
                        "auroc": 0.6 + 0.05 * m,
                        "n_tiles": 168 + s,
                    }
                )
    return pd.DataFrame(rows)


def test_section_is_computed_from_the_table(tmp_path: Path) -> None:
    assert spatial_markdown(tmp_path) == []  # no CSV, no table: no section
    md = "\n".join(spatial_markdown(tmp_path, _table()))
    assert md.startswith(SPATIAL_TITLE + "\n")
    assert "on 2 slides (168-169 tissue tiles each)" in md
    # summary in METHODS order: one_tile_bag (m=1) mean Spearman 0.1 + 0.005 + 0.001
    rows = [ln for ln in md.splitlines() if ln.startswith("| one_tile_bag |")]
    assert rows[0] == "| one_tile_bag | 0.106 | 0.650 | 2 |"
    assert md.index("| one_tile_bag |") < md.index("| context |") < md.index("| st_head |")
    assert "| program | one_tile_bag | context | st_head |" in md
    assert "| stroma | 0.111 | 0.211 | 0.011 |" in md  # mean Spearman per program


def test_write_replaces_the_section_in_place(tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text(
        "# SYNTHETIC evaluation protocol\n\n## Retrieval\n\nr\n\n## Plots\n\n![a](a.png)\n"
    )
    write_spatial_section(_table(), tmp_path)
    first = report.read_text()
    assert first.index("## Retrieval") < first.index(SPATIAL_TITLE) < first.index("## Plots")
    assert "\n\n\n" not in first
    assert (tmp_path / SPATIAL_CSV).is_file() and (tmp_path / SPATIAL_SUMMARY_CSV).is_file()
    # the CSV alone regenerates the same section (as write_protocol_report does)
    assert "\n".join(spatial_markdown(tmp_path)) in first
    write_spatial_section(_table(shift=0.5), tmp_path)
    second = report.read_text()
    assert second.count(SPATIAL_TITLE) == 1
    assert "| one_tile_bag | 0.606 |" in second and "| one_tile_bag | 0.106 |" not in second
    assert second.startswith("# SYNTHETIC evaluation protocol\n\n## Retrieval\n\nr\n\n")
    assert second.endswith("## Plots\n\n![a](a.png)\n")
