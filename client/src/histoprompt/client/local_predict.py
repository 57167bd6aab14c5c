"""`histoprompt predict`: a local slide through the ingest package's own reader, tissue mask,
tiler and Triton client, with no Kafka and no S3.

histoprompt-ingest is a separate package, imported lazily; without it the command says what
to install. Nothing here re-implements reading or tiling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histoprompt.client.errors import ClientError

if TYPE_CHECKING:
    from histoprompt.client.settings import ClientSettings
    from histoprompt.client.slides import SlideFiles

__all__ = ["LocalFile", "LocalPrediction", "predict_local"]

INSTALL_HINT = (
    "`histoprompt predict` runs the ingest service's slide reader, tiler and Triton client "
    "locally: pip install histoprompt-ingest (in this repo: uv sync --all-packages)"
)


@dataclass(frozen=True)
class LocalPrediction:
    rows: list[dict[str, Any]]
    n_tiles: int
    seconds: float


class LocalFile:
    """The ingest ByteSource protocol over a local file (size, gets, read_range)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.size = path.stat().st_size
        self.gets = 0
        self.bytes_read = 0

    def read_range(self, offset: int, length: int) -> bytes:
        with self._path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(length)
        self.gets += 1
        self.bytes_read += len(data)
        return data


def predict_local(
    settings: ClientSettings, slide: SlideFiles, gene_sets: dict[str, str]
) -> LocalPrediction:
    """Tile and score a local slide; ClientError when histoprompt-ingest is missing.

    `gene_sets` maps display names to GENE_SETS request strings (empty: all Hallmarks).
    """
    import asyncio

    try:
        from histoprompt.ingest.errors import SlideError, TransientError
    except ImportError as err:
        raise ClientError(INSTALL_HINT) from err
    from histoprompt.core.errors import InvalidInputError, ServiceUnavailableError

    try:
        return asyncio.run(_predict(settings, slide, gene_sets))
    except SlideError as err:
        raise InvalidInputError(f"{slide.path}: {err} ({err.code})") from err
    except TransientError as err:
        raise ServiceUnavailableError(f"Triton at {settings.triton_url}: {err}") from err


async def _predict(
    settings: ClientSettings, slide: SlideFiles, gene_sets: dict[str, str]
) -> LocalPrediction:
    import asyncio

    import numpy as np

    from histoprompt.core.settings import ConnectionSettings
    from histoprompt.ingest.dicom import DicomSlide
    from histoprompt.ingest.ranged import RangedFile
    from histoprompt.ingest.service import hallmark_names
    from histoprompt.ingest.settings import IngestSettings
    from histoprompt.ingest.sources import limits_from
    from histoprompt.ingest.tiff import TiffSlideReader
    from histoprompt.ingest.tiling import plan_tiles, read_tiles
    from histoprompt.ingest.triton import TritonClient

    conn = {k: getattr(settings, k) for k in ConnectionSettings.model_fields}
    ingest = IngestSettings(_env_file=None, **conn)
    t0 = time.perf_counter()
    sources = [LocalFile(p) for p in slide.files]
    reader: Any
    if slide.kind == "tiff":
        fileobj = RangedFile(sources[0], ingest.ingest_block_size, ingest.ingest_block_cache_blocks)
        reader = TiffSlideReader(fileobj, ingest.ingest_max_pixels)
    else:
        reader = DicomSlide(sources, limits_from(ingest))
    triton = TritonClient(settings.triton_url, timeout_s=300.0, attempts=2, base_s=0.2)
    try:
        served = await triton.served_model()
        plan = await asyncio.to_thread(
            plan_tiles,
            reader,
            served.spec,
            min_tissue=ingest.ingest_min_tissue_fraction,
            mask_max_px=ingest.ingest_mask_max_px,
            mpp_tolerance=ingest.ingest_mpp_tolerance,
        )
        parts = []
        for start in range(0, plan.n_tiles, ingest.ingest_batch_size):
            stop = min(start + ingest.ingest_batch_size, plan.n_tiles)
            tiles = await asyncio.to_thread(read_tiles, reader, plan, start, stop)
            parts.append(await triton.patch_embed(tiles))
        wanted = gene_sets or {n: n for n in hallmark_names()}
        out = await triton.slide_to_pathways(np.concatenate(parts), list(wanted.values()))
    finally:
        reader.close()
        await triton.close()
    from histoprompt.core import names

    scores = out[names.TENSOR_SCORES].reshape(-1)
    coverage = out[names.TENSOR_COVERAGE].reshape(-1)
    rows = [
        {"gene_set": n, "score": float(scores[i]), "coverage": float(coverage[i])}
        for i, n in enumerate(wanted)
    ]
    return LocalPrediction(rows, plan.n_tiles, time.perf_counter() - t0)
