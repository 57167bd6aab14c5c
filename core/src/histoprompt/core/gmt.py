"""GMT files: one gene set per line, `NAME <tab> DESCRIPTION <tab> GENE <tab> GENE ...`.

The reader keeps gene symbols as written (normalisation is `genesets.normalise_symbols`'s
job) and rejects lines it cannot read, naming the file and line, instead of skipping them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from histoprompt.core.errors import InvalidInputError

__all__ = ["GeneSet", "GmtFormatError", "parse_gmt", "read_gmt", "write_gmt", "format_gmt"]


class GmtFormatError(InvalidInputError):
    """A GMT file or text that is not valid GMT."""

    code = "invalid_gmt"


@dataclass(frozen=True)
class GeneSet:
    """A named list of gene symbols; `description` is the GMT's second column (often a URL)."""

    name: str
    genes: tuple[str, ...]
    description: str = field(default="", compare=False)

    def __len__(self) -> int:
        return len(self.genes)


def parse_gmt(text: str, source: str = "<text>") -> dict[str, GeneSet]:
    """Parse GMT text into name -> GeneSet, in file order.

    A line needs a name, a description and at least one gene; a repeated name is an error
    because silently keeping either copy would change a user's scores.
    """
    sets: dict[str, GeneSet] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        name = fields[0].strip()
        genes = tuple(g.strip() for g in fields[2:] if g.strip())
        if not name:
            raise GmtFormatError(f"{source}:{lineno}: gene set has no name")
        if len(fields) < 3 or not genes:
            raise GmtFormatError(
                f"{source}:{lineno}: gene set {name!r} has no genes "
                "(GMT lines are NAME<tab>DESCRIPTION<tab>GENE<tab>GENE...)"
            )
        if name in sets:
            raise GmtFormatError(f"{source}:{lineno}: gene set {name!r} appears twice")
        sets[name] = GeneSet(name=name, genes=genes, description=fields[1].strip())
    if not sets:
        raise GmtFormatError(f"{source}: no gene sets found")
    return sets


def read_gmt(path: Path | str) -> dict[str, GeneSet]:
    """Read a GMT file (UTF-8)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise GmtFormatError(f"GMT file {p} does not exist") from err
    except UnicodeDecodeError as err:
        raise GmtFormatError(f"GMT file {p} is not UTF-8 text") from err
    return parse_gmt(text, source=str(p))


def _reads_back(cell: str) -> bool:
    """parse_gmt returns this cell unchanged: one line (str.splitlines also splits on \\r,
    \\v, \\x1c-\\x1e, \\x85, \\u2028...), no tab, no surrounding whitespace."""
    return "\t" not in cell and len(cell.splitlines() or [""]) == 1 and cell == cell.strip()


def format_gmt(sets: Iterable[GeneSet]) -> str:
    """GMT text for gene sets, refusing (GmtFormatError) a set that parse_gmt would not read
    back as written: a field with a tab or a line break, surrounding whitespace, an empty
    gene, or a name starting with `#` (a comment line)."""
    lines = []
    for gs in sets:
        cells = [gs.name, gs.description, *gs.genes]
        if not all(_reads_back(c) for c in cells):
            raise GmtFormatError(
                f"gene set {gs.name!r} has a tab, a line break or surrounding whitespace in a field"
            )
        if not gs.name or gs.name.startswith("#") or not gs.genes or not all(gs.genes):
            raise GmtFormatError(f"gene set {gs.name!r} has no name, a # name or an empty gene")
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def write_gmt(sets: Iterable[GeneSet], path: Path | str) -> Path:
    """Write gene sets as a GMT file; returns the path."""
    p = Path(path)
    p.write_text(format_gmt(sets), encoding="utf-8")
    return p
