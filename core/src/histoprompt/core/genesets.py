"""Gene sets as prompts: the bundled Hallmarks, user GMTs, CLI/JSON gene lists, coverage.

A query is one string: a set name from a collection (`HALLMARK_E2F_TARGETS`, or `E2F_TARGETS`),
a comma-separated list (`"CD3E,CD8A,GZMB,PRF1,IFNG"`), or JSON (`{"name": ..., "genes": [...]}`
or a bare JSON list). Symbols are normalised (upper case, stripped, de-duplicated, order kept)
and every resolved set reports its coverage against the reference's genes.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.errors import InvalidInputError, NotFoundError
from histoprompt.core.gmt import GeneSet, parse_gmt, read_gmt

__all__ = [
    "HALLMARK_COLLECTION",
    "MAX_GENES",
    "MIN_GENES_FOUND",
    "Coverage",
    "GeneIndex",
    "GeneSet",
    "GeneSetCollection",
    "GeneSetError",
    "GeneSetSizeError",
    "LowCoverageError",
    "MalformedGeneSetError",
    "ResolvedGeneSet",
    "UnknownGeneSetError",
    "gene_set_key",
    "load_hallmark",
    "normalise_symbols",
    "parse_gene_list",
    "parse_query",
]

MIN_GENES_FOUND = 5
"""Fewer reference genes than this and an enrichment score is mostly noise."""
MAX_GENES = 2000
"""Larger sets are no longer pathways (and would make a request arbitrarily expensive)."""
HALLMARK_COLLECTION = "h.all.v7.0"
_HALLMARK_FILE = "h.all.v7.0.symbols.gmt"
_HALLMARK_PREFIX = "HALLMARK_"


class GeneSetError(InvalidInputError):
    """A gene-set query that can never be scored."""

    code = "invalid_gene_set"


class MalformedGeneSetError(GeneSetError):
    """A JSON or comma-separated gene list that cannot be parsed."""

    code = "malformed_gene_set"


class GeneSetSizeError(GeneSetError):
    """Empty, or larger than MAX_GENES."""

    code = "gene_set_size"


class LowCoverageError(GeneSetError):
    """Fewer than MIN_GENES_FOUND of the set's genes are in the reference."""

    code = "low_coverage"


class UnknownGeneSetError(NotFoundError):
    """A set name that no loaded collection holds."""

    code = "unknown_gene_set"

    def __init__(self, name: str, suggestions: Sequence[str], source: str) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(
            f"unknown gene set {name!r} in {source}{hint} "
            'Pass a known name, or a JSON list {"name": ..., "genes": [...]}.'
        )
        self.name = name
        self.suggestions = tuple(suggestions)


def normalise_symbols(genes: Iterable[str]) -> tuple[str, ...]:
    """Upper-case, strip, drop empties and duplicates (first occurrence wins)."""
    seen: dict[str, None] = {}
    for g in genes:
        sym = str(g).strip().upper()
        if sym:
            seen.setdefault(sym, None)
    return tuple(seen)


def _checked(name: str, genes: Iterable[str], description: str = "") -> GeneSet:
    norm = normalise_symbols(genes)
    if not norm:
        raise GeneSetSizeError(f"gene set {name!r} is empty")
    if len(norm) > MAX_GENES:
        raise GeneSetSizeError(
            f"gene set {name!r} has {len(norm)} genes; at most {MAX_GENES} are allowed"
        )
    return GeneSet(name=name, genes=norm, description=description)


def gene_set_key(genes: Iterable[str]) -> str:
    """Content key of a gene set: sha256 over its sorted normalised symbols (name-free)."""
    norm = sorted(normalise_symbols(genes))
    return hashlib.sha256("\n".join(norm).encode()).hexdigest()[:24]


class GeneSetCollection(Mapping[str, GeneSet]):
    """Named gene sets (e.g. one GMT). Lookup is case-insensitive and `HALLMARK_` is optional."""

    def __init__(self, sets: Mapping[str, GeneSet], source: str) -> None:
        self._sets = {name: _checked(name, gs.genes, gs.description) for name, gs in sets.items()}
        # casefold, not upper: U+2126 OHM SIGN upper-cases to itself, its lower case to omega
        self._upper = {name.casefold(): name for name in self._sets}
        self.source = source

    @classmethod
    def from_gmt(cls, path: Path | str) -> GeneSetCollection:
        return cls(read_gmt(path), source=str(path))

    def __getitem__(self, name: str) -> GeneSet:
        return self._sets[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sets)

    def __len__(self) -> int:
        return len(self._sets)

    def merged(self, other: GeneSetCollection) -> GeneSetCollection:
        """This collection plus `other` (other wins on a clash)."""
        return GeneSetCollection({**self._sets, **other._sets}, f"{self.source}+{other.source}")

    def lookup(self, name: str) -> GeneSet:
        """The set named `name`; UnknownGeneSetError with close matches otherwise."""
        key = name.strip().casefold()
        prefix = _HALLMARK_PREFIX.casefold()
        for candidate in (key, prefix + key):
            if candidate in self._upper:
                return self._sets[self._upper[candidate]]
        short = {n.removeprefix(prefix): n for n in self._upper}
        close = difflib.get_close_matches(key, list(self._upper), n=3, cutoff=0.6)
        close += [
            short[m]
            for m in difflib.get_close_matches(key, list(short), n=3, cutoff=0.6)
            if short[m] not in close
        ]
        raise UnknownGeneSetError(name, [self._upper[c] for c in close[:3]], self.source)


def load_hallmark() -> GeneSetCollection:
    """The bundled MSigDB Hallmark v7.0 sets (CC BY 4.0; Liberzon et al., Cell Syst 2015)."""
    text = resources.files("histoprompt.core.data").joinpath(_HALLMARK_FILE).read_text("utf-8")
    return GeneSetCollection(parse_gmt(text, source=_HALLMARK_FILE), source=HALLMARK_COLLECTION)


def _from_json(text: str) -> GeneSet:
    try:
        obj: Any = json.loads(text)
    except RecursionError as err:  # nested deeper than the interpreter's stack
        raise MalformedGeneSetError("gene list JSON is nested too deeply") from err
    except json.JSONDecodeError as err:
        raise MalformedGeneSetError(
            f"gene list is not valid JSON ({err.msg} at char {err.pos}); expected "
            '{"name": "...", "genes": ["A", "B", ...]}'
        ) from err
    name = "custom"
    if isinstance(obj, dict):
        extra = set(obj) - {"name", "genes", "description"}
        if extra:
            raise MalformedGeneSetError(f"gene list JSON has unexpected keys {sorted(extra)}")
        if "genes" not in obj:
            raise MalformedGeneSetError('gene list JSON needs a "genes" list')
        name = obj.get("name", name)
        if not isinstance(name, str) or not name.strip():
            raise MalformedGeneSetError('gene list JSON "name" must be a non-empty string')
        genes = obj["genes"]
    else:
        genes = obj
    if not isinstance(genes, list) or not all(isinstance(g, str) for g in genes):
        raise MalformedGeneSetError('gene list JSON "genes" must be a list of strings')
    return _checked(name.strip(), genes)


def parse_gene_list(text: str, name: str = "custom") -> GeneSet:
    """A gene list from JSON (`{"name","genes"}` or `[...]`) or comma/whitespace-separated text."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        return _from_json(stripped)
    genes = [g for part in stripped.split(",") for g in part.split()]
    return _checked(name, genes)


def parse_query(query: str, collection: GeneSetCollection) -> GeneSet:
    """Resolve one query string to a normalised GeneSet (no reference check yet)."""
    stripped = query.strip()
    if not stripped:
        raise GeneSetSizeError("empty gene-set query")
    if stripped.startswith(("{", "[")) or "," in stripped:
        return parse_gene_list(stripped)
    return collection.lookup(stripped)


@dataclass(frozen=True)
class Coverage:
    """How many of a set's genes the reference has, and which it lacks."""

    found: int
    total: int
    unknown: tuple[str, ...]

    @property
    def fraction(self) -> float:
        return self.found / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "total": self.total,
            "fraction": self.fraction,
            "unknown": list(self.unknown),
        }


@dataclass(frozen=True)
class ResolvedGeneSet:
    """A gene set matched to a reference: column indices into its gene order, coverage, key."""

    gene_set: GeneSet
    indices: NDArray[Any]  # int64 [found], sorted
    coverage: Coverage
    key: str

    @property
    def name(self) -> str:
        return self.gene_set.name


class GeneIndex:
    """Symbol -> column lookup for a reference's gene order (symbols normalised)."""

    def __init__(self, genes: Sequence[str]) -> None:
        norm = [str(g).strip().upper() for g in genes]
        if len(set(norm)) != len(norm):
            dupes = sorted({g for g in norm if norm.count(g) > 1})[:5]
            raise InvalidInputError(f"reference gene list has duplicate symbols, e.g. {dupes}")
        self.genes: tuple[str, ...] = tuple(norm)
        self._pos = {g: i for i, g in enumerate(norm)}

    def __len__(self) -> int:
        return len(self.genes)

    def __contains__(self, symbol: object) -> bool:
        return isinstance(symbol, str) and symbol in self._pos

    def coverage(self, gene_set: GeneSet) -> Coverage:
        unknown = tuple(g for g in gene_set.genes if g not in self._pos)
        return Coverage(len(gene_set.genes) - len(unknown), len(gene_set.genes), unknown)

    def resolve(self, gene_set: GeneSet, min_found: int = MIN_GENES_FOUND) -> ResolvedGeneSet:
        """Match a set to the reference; LowCoverageError when fewer than `min_found` match."""
        cov = self.coverage(gene_set)
        if cov.found < min_found:
            shown = ", ".join(cov.unknown[:10]) + (" ..." if len(cov.unknown) > 10 else "")
            raise LowCoverageError(
                f"gene set {gene_set.name!r}: only {cov.found} of {cov.total} genes are in the "
                f"reference (at least {min_found} needed); unknown: {shown}"
            )
        idx = np.array(sorted(self._pos[g] for g in gene_set.genes if g in self._pos), np.int64)
        return ResolvedGeneSet(gene_set, idx, cov, gene_set_key(gene_set.genes))
