"""Output: rich tables on a terminal, tab-separated text when piped, JSON with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = ["Output", "note", "plain_value"]


def plain_value(value: Any) -> str:
    """A cell as text: floats to 4 significant decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


@dataclass(frozen=True)
class Output:
    """Where and how a command prints its results (stdout); messages go to stderr."""

    json_mode: bool
    rich: bool
    stream: TextIO

    @classmethod
    def detect(cls, json_mode: bool = False, stream: TextIO | None = None) -> Output:
        out = stream if stream is not None else sys.stdout
        return cls(json_mode=json_mode, rich=not json_mode and out.isatty(), stream=out)

    def json(self, data: Any) -> None:
        self.stream.write(json.dumps(data, indent=2, default=str) + "\n")
        self.stream.flush()

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str],
        title: str | None = None,
        json_data: Any = None,
    ) -> None:
        """Print rows; JSON mode prints `json_data` (default: the rows)."""
        if self.json_mode:
            self.json(list(rows) if json_data is None else json_data)
        elif self.rich:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=title)
            for col in columns:
                table.add_column(col, justify="right" if _numeric(rows, col) else "left")
            for row in rows:
                table.add_row(*(plain_value(row.get(c)) for c in columns))
            Console(file=self.stream).print(table)
        else:
            self.stream.write("\t".join(columns) + "\n")
            for row in rows:
                self.stream.write("\t".join(plain_value(row.get(c)) for c in columns) + "\n")
            self.stream.flush()

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _numeric(rows: Sequence[Mapping[str, Any]], col: str) -> bool:
    return bool(rows) and all(isinstance(r.get(col), int | float) for r in rows)


def note(message: str) -> None:
    """A human message on stderr (never mixed into piped results)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
