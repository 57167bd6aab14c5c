"""`histoprompt predict`: a local slide through the slide processor the ingest service runs
(histoprompt.wsi.scoring) and the served models, with no Kafka and no S3."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings
    from histoprompt.client.slides import SlideFiles

__all__ = ["LocalPrediction", "predict_local"]


@dataclass(frozen=True)
class LocalPrediction:
    rows: list[dict[str, Any]]
    n_tiles: int
    seconds: float


def predict_local(
    settings: ClientSettings, slide: SlideFiles, gene_sets: dict[str, str]
) -> LocalPrediction:
    """Tile and score a local slide.

    `gene_sets` maps display names to GENE_SETS request strings (empty: all Hallmarks).
    """
    import asyncio

    from histoprompt.core.errors import InvalidInputError, ServiceUnavailableError
    from histoprompt.wsi.errors import SlideError

    try:
        return asyncio.run(_predict(settings, slide, gene_sets))
    except SlideError as err:
        raise InvalidInputError(f"{slide.path}: {err} ({err.code})") from err
    except ServiceUnavailableError as err:
        raise ServiceUnavailableError(f"Triton at {settings.triton_url}: {err}") from err


async def _predict(
    settings: ClientSettings, slide: SlideFiles, gene_sets: dict[str, str]
) -> LocalPrediction:
    import asyncio

    from histoprompt.core import names
    from histoprompt.core.allocator import tune_malloc
    from histoprompt.core.genesets import load_hallmark
    from histoprompt.wsi.limits import ReadLimits
    from histoprompt.wsi.scoring import ScoringOptions, score_slide
    from histoprompt.wsi.sources import open_local
    from histoprompt.wsi.triton import TritonClient

    tune_malloc()  # a slide's decoded frames churn the heap: see histoprompt.core.allocator
    t0 = time.perf_counter()
    opened = await asyncio.to_thread(open_local, list(slide.files), ReadLimits())
    triton = TritonClient(
        settings.triton_url,
        timeout_s=300.0,
        attempts=2,
        base_s=0.2,
        tls=settings.triton_grpc_options(),
    )
    try:
        served = await triton.served_model()
        wanted = gene_sets or {n: n for n in load_hallmark()}
        # patch_embed rejects requests above its max_batch_size.
        options = ScoringOptions(batch_size=min(ScoringOptions().batch_size, served.max_batch_size))
        scored = await score_slide(
            opened.reader, served.spec, triton, list(wanted.values()), options
        )
    finally:
        opened.close()
        await triton.close()
    scores = scored.outputs[names.TENSOR_SCORES].reshape(-1)
    coverage = scored.outputs[names.TENSOR_COVERAGE].reshape(-1)
    rows = [
        {"gene_set": n, "score": float(scores[i]), "coverage": float(coverage[i])}
        for i, n in enumerate(wanted)
    ]
    return LocalPrediction(rows, scored.plan.n_tiles, time.perf_counter() - t0)
