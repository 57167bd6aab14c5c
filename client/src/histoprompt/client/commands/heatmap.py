"""`histoprompt heatmap SLIDE_ID`: attention or tile-level pathway scores over the slide."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from histoprompt.client.state import get_state

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.genesets import GeneSet


def tile_scores(
    settings: ClientSettings, tile_embeddings: NDArray[Any], gene_set: GeneSet
) -> NDArray[Any]:
    """Per-tile scores: each tile pooled alone by `slide_embed`, then `pathway_query`.

    A tile's own slide embedding lives in the aligned space the prompts score in, so this
    shows where in the slide a pathway's signal sits (float [n_tiles]).
    """
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.pathway_query import request_strings
    from histoprompt.client.services import triton_client, triton_errors
    from histoprompt.core import names
    from histoprompt.core.genesets import load_hallmark

    client = triton_client(settings)
    embs: list[NDArray[Any]] = []
    try:
        with triton_errors(settings, f"running {names.MODEL_SLIDE_EMBED} per tile"):
            for row in np.asarray(tile_embeddings, dtype=np.float32):
                inp = grpcclient.InferInput(names.TENSOR_TILE_EMBEDDING, [1, row.shape[0]], "FP32")
                inp.set_data_from_numpy(row.reshape(1, -1))
                res = client.infer(
                    names.MODEL_SLIDE_EMBED,
                    [inp],
                    outputs=[grpcclient.InferRequestedOutput(names.TENSOR_SLIDE_EMBEDDING)],
                )
                embs.append(np.asarray(res.as_numpy(names.TENSOR_SLIDE_EMBEDDING)).reshape(-1))
    finally:
        client.close()
    request = request_strings([gene_set], set(load_hallmark()))
    scores = np.empty(len(embs), dtype=np.float64)
    # pathway_query takes a batch of embeddings; chunk to keep requests small.
    for start in range(0, len(embs), 256):
        chunk = np.stack(embs[start : start + 256])
        s, _ = _query_batch(settings, chunk, request)
        scores[start : start + len(chunk)] = s
    return scores


def _query_batch(
    settings: ClientSettings, embs: NDArray[Any], request: list[str]
) -> tuple[NDArray[Any], NDArray[Any]]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.services import triton_client, triton_errors
    from histoprompt.core import names

    inputs = [
        grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, list(embs.shape), "FP32"),
        grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(request)], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(embs.astype(np.float32))
    inputs[1].set_data_from_numpy(np.array([r.encode() for r in request], dtype=np.object_))
    client = triton_client(settings)
    try:
        with triton_errors(settings, f"querying {names.MODEL_PATHWAY_QUERY}"):
            res = client.infer(names.MODEL_PATHWAY_QUERY, inputs)
    finally:
        client.close()
    scores = np.asarray(res.as_numpy(names.TENSOR_SCORES), dtype=np.float64)
    return scores.reshape(embs.shape[0], -1)[:, 0], np.asarray(res.as_numpy(names.TENSOR_COVERAGE))


def heatmap(
    ctx: typer.Context,
    slide_id: Annotated[str, typer.Argument(help="A processed slide's id.")],
    gene_set: Annotated[
        str | None,
        typer.Option(
            "--gene-set", "-g", help="Colour by this set's tile scores (default: attention)."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="PNG path (default heatmap-SLIDE_ID.png).")
    ] = None,
    size: Annotated[int, typer.Option(min=64, max=8192, help="Longest side in pixels.")] = 1024,
    version: Annotated[
        str | None, typer.Option("--model-version", help="A model version (default: newest).")
    ] = None,
) -> None:
    """A PNG of the slide thumbnail with attention (or a gene set's tile scores) overlaid.

    \b
    Example: histoprompt heatmap 0123456789abcdef --gene-set HYPOXIA --out hypoxia.png
    """
    from histoprompt.client.commands.results import result_store
    from histoprompt.client.heatmap_render import render_heatmap
    from histoprompt.client.output import note
    from histoprompt.client.thumbnail import slide_view
    from histoprompt.core.errors import InvalidInputError

    state = get_state(ctx)
    settings = state.settings()
    gs = None
    if gene_set is not None:
        from histoprompt.client.catalog import gene_set_catalog

        gs = gene_set_catalog(settings).lookup(gene_set)
    store = result_store(settings)
    ver = version or store.latest_version(slide_id)
    manifest = store.read_manifest(slide_id, ver)
    tiles = store.read_tiles(slide_id, ver)
    if tiles.empty:
        raise InvalidInputError(f"slide {slide_id} has no tiles to draw")
    if gs is None:
        values = tiles["attention"].to_numpy()
        what = "attention"
    else:
        values = tile_scores(settings, store.read_tile_embeddings(slide_id, ver), gs)
        what = f"{gs.name} tile scores"
    from histoprompt.client.services import minio_client

    geometry, thumb = slide_view(minio_client(settings), manifest.source, tiles)
    image = render_heatmap(tiles, values, geometry, thumb, max_side=size)
    path = out or Path(f"heatmap-{slide_id}.png")
    image.save(path, format="PNG")
    synthetic = " (synthetic)" if manifest.synthetic else ""
    note(
        f"wrote {path}: {image.width}x{image.height} px, {what} over {len(tiles)} tiles"
        f"{synthetic}; "
        f"slide {geometry.width}x{geometry.height} px from {geometry.source}"
        + ("" if thumb is not None else ", no thumbnail")
    )
    typer.echo(str(path))
