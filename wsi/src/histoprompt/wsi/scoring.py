"""The slide processor both the ingest service and `histoprompt predict` run: plan the tile
grid, stream tiles in batches through `patch_embed`, pool and score with `slide_to_pathways`.

Reading and decoding run on one worker thread per slide (histoprompt.wsi.read_ahead) while
up to `max_inflight` patch_embed requests fly, so storage, decode and inference overlap.
Memory holds at most max_inflight + 1 batches of tiles and the [N, D] embeddings, whatever
the slide size.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from histoprompt.core import names
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.read_ahead import ReadAhead
from histoprompt.wsi.shared_tiles import SharedMemoryInference, embed_tiles_shared
from histoprompt.wsi.slide import SlideReader
from histoprompt.wsi.tiling import TilePlan, plan_tiles

__all__ = ["ScoredSlide", "ScoringOptions", "SlideInference", "embed_tiles", "score_slide"]

READ_AHEAD_BATCHES = 32
"""Batches whose frames are fetched together, bounded by ReadLimits.read_ahead_bytes: only
compressed frames are held ahead, so the byte budget, not this count, bounds the memory.
A wider window merges more frames into each GET (8 batches gave the data-path benchmark's
slide more GETs)."""


class SlideInference(Protocol):
    """The two served calls a slide needs (histoprompt.wsi.triton.TritonClient is one)."""

    async def patch_embed(self, tiles: NDArray[Any]) -> NDArray[Any]: ...

    async def slide_to_pathways(
        self, embeddings: NDArray[Any], gene_sets: Sequence[str]
    ) -> dict[str, NDArray[Any]]: ...


@dataclass(frozen=True)
class ScoringOptions:
    """Tiling and batching knobs; the defaults are the ingest service's."""

    min_tissue: float = 0.25
    mask_max_px: int = 1024
    mpp_tolerance: float = 0.1
    batch_size: int = 32
    max_inflight: int = 4
    shared_memory: bool = False
    """patch_embed inputs through system shared memory (Triton on this host; see
    histoprompt.wsi.shared_tiles), when the inference client supports it."""


@dataclass
class ScoredSlide:
    """One slide's plan, tile embeddings [N, D] and slide_to_pathways outputs."""

    plan: TilePlan
    embeddings: NDArray[Any]
    outputs: dict[str, NDArray[Any]]
    seconds: dict[str, float] = field(default_factory=dict)
    """Stage seconds: tile (mask and grid), read (tile reads and decode), infer."""

    @property
    def attention(self) -> NDArray[Any]:
        att = self.outputs[names.TENSOR_ATTENTION].reshape(-1).astype(np.float32)
        if att.shape[0] != self.plan.n_tiles:
            raise SlideError(
                "slide_to_pathways returned the wrong attention length", code="infer_error"
            )
        return att


async def embed_tiles(
    reader: SlideReader,
    plan: TilePlan,
    inference: SlideInference,
    embed_dim: int,
    options: ScoringOptions,
) -> tuple[NDArray[Any], float]:
    """Tile embeddings [N, D] in plan order, and the seconds spent reading tiles."""
    if options.shared_memory and isinstance(inference, SharedMemoryInference):
        return await embed_tiles_shared(
            reader,
            plan,
            inference,
            embed_dim,
            options.batch_size,
            options.max_inflight,
            READ_AHEAD_BATCHES,
        )
    sem = asyncio.Semaphore(options.max_inflight)
    ahead = ReadAhead(READ_AHEAD_BATCHES * options.batch_size)
    result = np.empty((plan.n_tiles, embed_dim), dtype=np.float32)
    read_s = 0.0

    async def infer(start: int, tiles: NDArray[Any]) -> None:
        try:
            emb = await inference.patch_embed(tiles)
            if emb.shape != (tiles.shape[0], embed_dim):
                raise SlideError(
                    f"patch_embed returned {emb.shape}, expected {(tiles.shape[0], embed_dim)}",
                    code="infer_error",
                )
            result[start : start + tiles.shape[0]] = emb
        finally:
            sem.release()

    tasks: list[asyncio.Task[None]] = []
    try:
        for start in range(0, plan.n_tiles, options.batch_size):
            stop = min(start + options.batch_size, plan.n_tiles)
            r0 = time.perf_counter()
            tiles = await ahead.read_async(reader, plan, start, stop)
            read_s += time.perf_counter() - r0
            await sem.acquire()
            tasks.append(asyncio.create_task(infer(start, tiles)))
            # Surface a failed request early instead of after reading the whole slide.
            for t in tasks:
                if t.done() and (exc := t.exception()) is not None:
                    raise exc
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        raise
    finally:
        ahead.close()
    return result, read_s


async def score_slide(
    reader: SlideReader,
    spec: EncoderSpec,
    inference: SlideInference,
    gene_sets: Sequence[str],
    options: ScoringOptions,
) -> ScoredSlide:
    """Plan, embed and score one opened slide."""
    t0 = time.perf_counter()
    plan = await asyncio.to_thread(
        plan_tiles,
        reader,
        spec,
        min_tissue=options.min_tissue,
        mask_max_px=options.mask_max_px,
        mpp_tolerance=options.mpp_tolerance,
    )
    t_tile = time.perf_counter() - t0
    t1 = time.perf_counter()
    embeddings, t_read = await embed_tiles(reader, plan, inference, spec.embed_dim, options)
    outputs = await inference.slide_to_pathways(embeddings, list(gene_sets))
    t_infer = time.perf_counter() - t1
    return ScoredSlide(
        plan, embeddings, outputs, {"tile": t_tile, "read": t_read, "infer": t_infer}
    )
