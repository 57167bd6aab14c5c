"""`histoprompt predict PATH`: a local slide straight to Triton, no Kafka and no S3.

The slide reader, tissue mask, tiler and Triton batcher are the ingest service's own
(package histoprompt-ingest), imported lazily: the CLI never re-implements tiling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from histoprompt.client.state import get_state


def predict(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A local .svs/.tiff file or DICOM-WSI folder.")],
    gene_set: Annotated[
        list[str] | None,
        typer.Option("--gene-set", "-g", help="Sets to score (default: all Hallmarks)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Score a local slide directly through Triton (quick look; nothing is stored).

    \b
    Example: histoprompt predict slide.svs -g HYPOXIA -g E2F_TARGETS
    """
    from histoprompt.client.local_predict import predict_local
    from histoprompt.client.slides import inspect_slide

    state = get_state(ctx)
    slide = inspect_slide(path)
    settings = state.settings()
    requests: dict[str, str] = {}
    if gene_set:
        from histoprompt.client.catalog import gene_set_catalog
        from histoprompt.client.pathway_query import request_strings
        from histoprompt.core.genesets import load_hallmark

        sets = [gene_set_catalog(settings).lookup(n) for n in gene_set]
        strings = request_strings(sets, set(load_hallmark()))
        requests = {gs.name: r for gs, r in zip(sets, strings, strict=True)}
    result = predict_local(settings, slide, requests)
    rows = sorted(result.rows, key=lambda r: float(r["score"]), reverse=True)
    state.output(as_json).table(
        rows,
        ["gene_set", "score", "coverage"],
        title=f"{path.name}: {result.n_tiles} tiles, {result.seconds:.1f} s (not stored)",
        json_data={"path": str(path), "n_tiles": result.n_tiles, "results": rows},
    )
