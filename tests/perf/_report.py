"""BENCHMARKS.md sections for the benchmarks: one `## <title>` section per benchmark, replaced
in place on a rerun (appended the first time), each stamped with when and on what it ran."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"


def stamp() -> str:
    """When and where: UTC time, load averages (the box may be shared), machine and cores."""
    one, five, fifteen = os.getloadavg()
    return (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
        f"{one:.1f} / {five:.1f} / {fifteen:.1f} (1/5/15 min) at the end of the run; machine "
        f"{platform.machine()}, {os.cpu_count()} cores."
    )


def render_section(title: str, body_lines: list[str]) -> str:
    """The section's markdown: heading, body, stamp."""
    body = "\n".join(body_lines).strip("\n")
    return f"## {title}\n\n{body}\n\n{stamp()}\n"


def replace_section(document: str, section: str, title: str) -> str:
    """`document` with its `## <title>` section (up to the next `## ` heading) replaced by
    `section`, or `section` appended when there is none."""
    pattern = re.compile(rf"^## {re.escape(title)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(document):
        # A function replacement: backslashes in the section stay literal.
        new = pattern.sub(lambda _: section + "\n", document, count=1)
    else:
        new = document.rstrip("\n") + "\n\n" + section
    return new.rstrip("\n") + "\n"


def write_section(title: str, body_lines: list[str], *, path: Path = BENCHMARKS) -> None:
    """Replace or append the `## <title>` section of BENCHMARKS.md (or `path`), stamped."""
    document = path.read_text() if path.is_file() else "# Benchmarks\n"
    path.write_text(replace_section(document, render_section(title, body_lines), title))
    print(f"written: section {title!r} of {path}", flush=True)
