"""`histoprompt results SLIDE_ID`: the stored pathway scores of one slide."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from histoprompt.client.state import get_state
from histoprompt.core.errors import InvalidInputError
from histoprompt.core.names import check_slide_id

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.results import ResultStore


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


COLUMNS = ["gene_set", "score", "method", "coverage"]
# Readable scores (core.readable_scores): shown when the stored result has them.
READABLE = ["percentile", "z"]


def result_store(settings: ClientSettings) -> ResultStore:
    """The core ResultStore on the results bucket (all S3 layout logic lives there)."""
    from histoprompt.client.services import minio_client
    from histoprompt.core.results import ResultStore

    return ResultStore(minio_client(settings), settings.results_bucket)


def pathway_rows(slide_id: str, settings: ClientSettings, version: str | None) -> dict[str, Any]:
    """Manifest summary plus pathway rows sorted by score (highest first)."""
    store = result_store(settings)
    ver = version or store.latest_version(slide_id)
    manifest = store.read_manifest(slide_id, ver)
    if manifest.status == "failed":
        why = f"{manifest.error.code}: {manifest.error.message}" if manifest.error else "unknown"
        raise InvalidInputError(f"slide {slide_id} failed in ingest ({why}); it has no scores")
    pathways = store.read_pathways(slide_id, ver)
    rows = [
        {
            "gene_set": name,
            "score": p.score,
            "method": p.method,
            "coverage": p.coverage,
            "percentile": p.percentile,
            "z": p.z,
        }
        for name, p in sorted(pathways.items(), key=lambda kv: kv[1].score, reverse=True)
    ]
    return {
        "slide_id": slide_id,
        "model": {"name": manifest.model.name, "version": manifest.model.version},
        "status": manifest.status,
        "n_tiles": manifest.n_tiles,
        "synthetic": manifest.synthetic,
        "created": manifest.created,
        "pathways": rows,
    }


def results(
    ctx: typer.Context,
    slide_id: Annotated[
        str, typer.Argument(help="The slide_id `submit` printed.", callback=check_slide_id)
    ],
    fmt: Annotated[
        Format | None,
        typer.Option("--format", "-f", help="table (default), json, csv or parquet."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
    version: Annotated[
        str | None, typer.Option("--model-version", help="A model version (default: newest).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Pathway scores of a processed slide, highest first, with method and coverage.

    \b
    Example: histoprompt results 0123456789abcdef --format csv --out scores.csv
    """
    state = get_state(ctx)
    chosen = Format.json if (as_json or state.json) and fmt is None else (fmt or Format.table)
    if chosen is Format.parquet and out is None:
        raise typer.BadParameter("parquet is binary: give --out FILE", param_hint="--format")
    data = pathway_rows(slide_id, state.settings(), version)
    rows: list[dict[str, Any]] = data["pathways"]
    columns = COLUMNS + [c for c in READABLE if any(r.get(c) is not None for r in rows)]
    rows = [{k: r[k] for k in columns} for r in rows]
    if chosen is Format.parquet:
        import pandas as pd

        assert out is not None
        pd.DataFrame(rows, columns=columns).to_parquet(out, index=False)
    elif chosen is Format.csv:
        import csv
        import io

        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _emit(buf.getvalue(), out)
    elif chosen is Format.json:
        import json

        _emit(json.dumps(data, indent=2) + "\n", out)
    elif out is not None:
        _emit("\t".join(columns) + "\n" + "".join(_tsv(r) for r in rows), out)
    else:
        synthetic = " [synthetic]" if data["synthetic"] else ""
        title = (
            f"slide {slide_id} · model {data['model']['name']} {data['model']['version']}"
            f" · {data['n_tiles']} tiles{synthetic}"
        )
        state.output().table(rows, columns, title=title)
    if out is not None:
        from histoprompt.client.output import note

        note(f"wrote {len(rows)} pathway scores to {out}")


def _tsv(row: dict[str, Any]) -> str:
    from histoprompt.client.output import plain_value

    return "\t".join(plain_value(v) for v in row.values()) + "\n"


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
