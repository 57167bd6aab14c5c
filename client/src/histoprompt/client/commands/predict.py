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
    result = predict_local(state.settings(), slide, gene_set or [])
    rows = sorted(result.rows, key=lambda r: float(r["score"]), reverse=True)
    state.output(as_json).table(
        rows,
        ["gene_set", "score", "coverage"],
        title=f"{path.name}: {result.n_tiles} tiles, {result.seconds:.1f} s (not stored)",
        json_data={"path": str(path), "n_tiles": result.n_tiles, "results": rows},
    )
