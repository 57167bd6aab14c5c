"""Per-tile pathway scores from the served models (docs/architecture.md, "Tile-level scores").

* `context` (default): each tile's 3 x 3 neighbourhood bag through `tile_context`, then
  `pathway_query`; up to `BATCH` tiles per request, two requests per batch.
* `one-tile-bag` (baseline): each tile alone through `slide_embed` (one request per tile),
  then `pathway_query` in batches.
* `st-head`: the ST-trained head `tile_head` on the tile embeddings, one request per batch;
  only the sets it was trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from histoprompt.client.settings import ClientSettings
    from histoprompt.core.genesets import GeneSet

__all__ = ["BATCH", "METHODS", "score_tiles", "tile_scores"]

BATCH: Final = 256
METHODS: Final = ("context", "one-tile-bag", "st-head")


def tile_scores(
    settings: ClientSettings,
    tile_embeddings: NDArray[Any],
    gene_set: GeneSet,
    *,
    xy: NDArray[Any] | None = None,
    method: str = "context",
) -> NDArray[Any]:
    """float64 [n_tiles] scores of `gene_set`, rows in `tile_embeddings` order."""
    return score_tiles(settings, tile_embeddings, gene_set, xy=xy, method=method)[0]


def score_tiles(
    settings: ClientSettings,
    tile_embeddings: NDArray[Any],
    gene_set: GeneSet,
    *,
    xy: NDArray[Any] | None = None,
    method: str = "context",
) -> tuple[NDArray[Any], NDArray[Any] | None]:
    """(scores [n_tiles], percentiles against the reference [n_tiles] or None).

    `xy` (level-0 top-left corners, [n_tiles, 2]) places tiles on the grid for `context`.
    The percentiles are `pathway_query`'s PERCENTILE: where each tile's score falls among the
    reference samples' raw ssGSEA scores of the set (None for `st-head`, whose mean-z units
    have no reference distribution, or when the server gives none).
    """
    import numpy as np

    from histoprompt.client.pathway_query import request_strings
    from histoprompt.core.errors import InvalidInputError
    from histoprompt.core.genesets import load_hallmark

    emb = np.asarray(tile_embeddings, dtype=np.float32)
    if method == "st-head":
        return _st_head(settings, emb, gene_set), None
    if method == "context":
        if xy is None:
            raise InvalidInputError("method context needs the tiles' coordinates")
        aligned = _context_embeddings(settings, emb, np.asarray(xy))
    elif method == "one-tile-bag":
        aligned = _one_tile_bags(settings, emb)
    else:
        raise InvalidInputError(f"unknown tile method {method!r}; one of {', '.join(METHODS)}")
    request = request_strings([gene_set], set(load_hallmark()))
    scores = np.empty(len(aligned), dtype=np.float64)
    pct = np.empty(len(aligned), dtype=np.float64)
    for start in range(0, len(aligned), BATCH):
        chunk = aligned[start : start + BATCH]
        got = query_batch(settings, chunk, request)
        scores[start : start + len(chunk)], pct[start : start + len(chunk)] = got
    return scores, (pct if np.isfinite(pct).all() else None)


def _context_embeddings(
    settings: ClientSettings, emb: NDArray[Any], xy: NDArray[Any]
) -> NDArray[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.services import triton_client, triton_errors
    from histoprompt.core import names
    from histoprompt.core.tile_context import neighbourhood_index

    index = neighbourhood_index(xy)
    parts: list[NDArray[Any]] = []
    client = triton_client(settings)
    try:
        with triton_errors(settings, f"running {names.MODEL_TILE_CONTEXT}"):
            for start in range(0, len(emb), BATCH):
                bags = np.ascontiguousarray(emb[index[start : start + BATCH]])
                inp = grpcclient.InferInput(
                    names.TENSOR_TILE_NEIGHBOURHOOD, list(bags.shape), "FP32"
                )
                inp.set_data_from_numpy(bags)
                res = client.infer(
                    names.MODEL_TILE_CONTEXT,
                    [inp],
                    outputs=[grpcclient.InferRequestedOutput(names.TENSOR_TILE_ALIGNED)],
                )
                parts.append(np.asarray(res.as_numpy(names.TENSOR_TILE_ALIGNED)))
    finally:
        client.close()
    out: NDArray[Any] = np.concatenate(parts).reshape(len(emb), -1)
    return out


def _one_tile_bags(settings: ClientSettings, emb: NDArray[Any]) -> NDArray[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.services import triton_client, triton_errors
    from histoprompt.core import names

    out: list[NDArray[Any]] = []
    client = triton_client(settings)
    try:
        with triton_errors(settings, f"running {names.MODEL_SLIDE_EMBED} per tile"):
            for row in emb:
                inp = grpcclient.InferInput(names.TENSOR_TILE_EMBEDDING, [1, row.shape[0]], "FP32")
                inp.set_data_from_numpy(row.reshape(1, -1))
                res = client.infer(
                    names.MODEL_SLIDE_EMBED,
                    [inp],
                    outputs=[grpcclient.InferRequestedOutput(names.TENSOR_SLIDE_EMBEDDING)],
                )
                out.append(np.asarray(res.as_numpy(names.TENSOR_SLIDE_EMBEDDING)).reshape(-1))
    finally:
        client.close()
    return np.stack(out)


def _st_head(settings: ClientSettings, emb: NDArray[Any], gene_set: GeneSet) -> NDArray[Any]:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.services import triton_client, triton_errors
    from histoprompt.core import names
    from histoprompt.core.errors import InvalidInputError

    parts: list[NDArray[Any]] = []
    sets: list[str] = []
    client = triton_client(settings)
    try:
        with triton_errors(settings, f"running {names.MODEL_TILE_HEAD}"):
            for start in range(0, len(emb), BATCH):
                rows = np.ascontiguousarray(emb[start : start + BATCH])
                inp = grpcclient.InferInput(names.TENSOR_TILE_EMBEDDING, list(rows.shape), "FP32")
                inp.set_data_from_numpy(rows)
                res = client.infer(names.MODEL_TILE_HEAD, [inp])
                parts.append(np.asarray(res.as_numpy(names.TENSOR_SCORES), dtype=np.float64))
                labels = res.as_numpy(names.TENSOR_GENE_SETS)[0]
                sets = [x.decode() if isinstance(x, bytes) else str(x) for x in labels]
    finally:
        client.close()
    if gene_set.name not in sets:
        raise InvalidInputError(
            f"the ST-trained tile head scores {', '.join(sets)}, not {gene_set.name}; "
            "use --method context"
        )
    out: NDArray[Any] = np.concatenate(parts)[:, sets.index(gene_set.name)]
    return out


def query_batch(
    settings: ClientSettings, embs: NDArray[Any], request: list[str]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """`pathway_query` on aligned rows [B, E]: the first set's scores [B] and percentiles
    against the reference [B] (NaN when the server has none)."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from histoprompt.client.services import triton_client, triton_errors
    from histoprompt.core import names

    inputs = [
        grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, list(embs.shape), "FP32"),
        grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(request)], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(np.ascontiguousarray(embs, dtype=np.float32))
    inputs[1].set_data_from_numpy(np.array([r.encode() for r in request], dtype=np.object_))
    client = triton_client(settings)
    try:
        with triton_errors(settings, f"querying {names.MODEL_PATHWAY_QUERY}"):
            res = client.infer(names.MODEL_PATHWAY_QUERY, inputs)
    finally:
        client.close()
    scores = np.asarray(res.as_numpy(names.TENSOR_SCORES), dtype=np.float64)
    raw_pct = res.as_numpy(names.TENSOR_PERCENTILE)
    pct = np.full(scores.shape, np.nan) if raw_pct is None else np.asarray(raw_pct, np.float64)
    n = embs.shape[0]
    return scores.reshape(n, -1)[:, 0], pct.reshape(n, -1)[:, 0]
