"""`histoprompt query SLIDE_ID`: any gene set as a prompt, scored on a stored slide."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from histoprompt.client.catalog import complete_gene_set
from histoprompt.client.commands import JsonFlag, SlideId
from histoprompt.client.state import get_state

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.genesets import GeneSet


class Method(StrEnum):
    soft_knn = "soft-knn"
    predictor = "predictor"
    prototype = "prototype"


COLUMNS = ["gene_set", "score", "method", "coverage", "percentile", "genes", "unknown"]


def collect_gene_sets(
    settings: ClientSettings,
    names_: list[str],
    gene_lists: list[str],
    gmt: Path | None,
) -> list[GeneSet]:
    """Resolve every requested set (unknown name: exit 2; empty list: exit 4)."""
    from histoprompt.client.catalog import gene_set_catalog
    from histoprompt.core.genesets import GeneSetCollection, parse_gene_list

    sets: list[GeneSet] = []
    if names_:
        catalog = gene_set_catalog(settings)
        sets += [catalog.lookup(n) for n in names_]
    for i, text in enumerate(gene_lists, start=1):
        sets.append(parse_gene_list(text, name="custom" if len(gene_lists) == 1 else f"custom_{i}"))
    if gmt is not None:
        from histoprompt.core.errors import InvalidInputError

        # A path the user typed, like submit's and --config's: invalid input (4), not a
        # missing service-side object (2).
        if not gmt.is_file():
            raise InvalidInputError(f"GMT file {gmt} does not exist")
        sets += list(GeneSetCollection.from_gmt(gmt).values())
    seen: dict[str, GeneSet] = {}
    for gs in sets:
        seen.setdefault(gs.name, gs)
    return list(seen.values())


def query(
    ctx: typer.Context,
    slide_id: SlideId,
    gene_set: Annotated[
        list[str] | None,
        typer.Option(
            "--gene-set",
            "-g",
            help="A set name (repeatable); HALLMARK_ is optional.",
            autocompletion=complete_gene_set,
        ),
    ] = None,
    genes: Annotated[
        list[str] | None,
        typer.Option("--genes", help='Gene list "A,B,C" or JSON {"name","genes"} (repeatable).'),
    ] = None,
    gmt: Annotated[Path | None, typer.Option("--gmt", help="Every set in this GMT file.")] = None,
    method: Annotated[
        Method | None, typer.Option("--method", "-m", help="Scoring method (model default).")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--model-version", help="A model version (default: newest).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Score gene sets on a stored slide through Triton pathway_query; shows coverage.

    \b
    Example: histoprompt query 0123456789abcdef -g E2F_TARGETS --genes CD3E,CD8A,GZMB,PRF1,IFNG
    """
    from histoprompt.client.commands.results import result_store
    from histoprompt.client.pathway_query import (
        QueryRow,
        reference_genes,
        request_strings,
        run_pathway_query,
    )
    from histoprompt.core.genesets import load_hallmark

    if not (gene_set or genes or gmt):
        raise typer.BadParameter("give --gene-set, --genes or --gmt", param_hint="gene sets")
    state = get_state(ctx)
    settings = state.settings()
    sets = collect_gene_sets(settings, gene_set or [], genes or [], gmt)
    embedding = result_store(settings).read_slide_embedding(slide_id, version)
    bundled = set(load_hallmark())
    scores, coverage, used, pct = run_pathway_query(
        settings, embedding, request_strings(sets, bundled), method.value if method else None
    )
    ref = reference_genes(settings)
    known = set(ref) if ref is not None else None
    rows = [
        QueryRow(
            gene_set=gs.name,
            score=float(s),
            method=used,
            coverage=float(c),
            genes=len(gs.genes),
            unknown=None if known is None else tuple(g for g in gs.genes if g not in known),
            percentile=float(p) if p == p else None,  # NaN: not on the ssGSEA scale
        )
        for gs, s, c, p in zip(sets, scores, coverage, pct, strict=True)
    ]
    rows.sort(key=lambda r: r.score, reverse=True)
    out = state.output(as_json)
    table = [
        {
            **r.as_dict(),
            "genes": f"{r.found}/{r.genes}",
            "percentile": "-" if r.percentile is None else f"{r.percentile:.1f}",
            "unknown": "-" if r.unknown is None else ",".join(r.unknown) or "none",
        }
        for r in rows
    ]
    out.table(
        table,
        COLUMNS,
        title=f"slide {slide_id}: {len(rows)} gene sets",
        json_data={"slide_id": slide_id, "results": [r.as_dict() for r in rows]},
    )
