"""One slide, end to end: idempotency check, read, mask, tile, infer, write.

Reading and decoding run in worker threads, `ingest_max_inflight` patch_embed requests fly
at once, so S3, decode and Triton overlap. Memory holds at most max_inflight + 1 batches of
tiles, the frame cache and the [N, D] embeddings, whatever the slide size.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from histoprompt.core.results import ResultStore, SlideResult
from histoprompt.core.schemas import (
    ErrorInfo,
    ModelRef,
    PathwayScore,
    ResultEvent,
    ResultManifest,
    SourceRef,
    Timings,
)
from histoprompt.core.version import __version__ as SOFTWARE_VERSION  # noqa: N812
from histoprompt.ingest.codecs import gpu_decoder_or_none
from histoprompt.ingest.errors import SlideError
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.metrics import IngestMetrics
from histoprompt.ingest.settings import IngestSettings
from histoprompt.ingest.sources import OpenedSlide, open_slide
from histoprompt.ingest.tiling import TilePlan, plan_tiles, read_tiles
from histoprompt.ingest.triton import ServedModel, TritonClient

if TYPE_CHECKING:
    from minio import Minio


@dataclass
class SlideOutcome:
    status: Literal["done", "failed", "skipped_duplicate"]
    event: ResultEvent | None
    n_tiles: int = 0
    stages: dict[str, float] = field(default_factory=dict)


class SlideProcessor:
    """Holds the shared clients; `process` handles one job (many may run concurrently)."""

    def __init__(
        self,
        settings: IngestSettings,
        minio: Minio,
        store: ResultStore,
        triton: TritonClient,
        served: ServedModel,
        gene_sets: list[str],
        metrics: IngestMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.minio = minio
        self.store = store
        self.triton = triton
        self.served = served
        self.gene_sets = gene_sets
        self.metrics = metrics
        self.log = get_logger()
        # One decoder per service: nvImageCodec on GPU nodes, None (imagecodecs) elsewhere.
        self.gpu_decoder = gpu_decoder_or_none(settings.ingest_decoder)

    def _event(self, job: SlideJob, status: Literal["done", "failed"], **kw: object) -> ResultEvent:
        return ResultEvent(
            slide_id=job.slide_id,
            source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
            model=ModelRef(name=self.served.name, version=self.served.version),
            status=status,
            **kw,  # type: ignore[arg-type]
        )

    async def process(self, job: SlideJob) -> SlideOutcome:
        sid, ver = job.slide_id, self.served.version
        done = await asyncio.to_thread(self.store.is_complete, sid, ver)
        if done:
            self.log.info("already done", extra={"slide_id": sid, "status": "skipped_duplicate"})
            return SlideOutcome("skipped_duplicate", None)
        t0 = time.perf_counter()
        self.log.info("slide started", extra={"slide_id": sid, "status": "started"})
        try:
            return await self._run(job, t0)
        except SlideError as err:
            total = time.perf_counter() - t0
            self.log.warning(
                "slide failed", extra={"slide_id": sid, "status": "failed", "code": err.code}
            )
            error = ErrorInfo(code=err.code, message=str(err))
            seconds = Timings(total=round(total, 4))
            # A SlideError is permanent for these bytes: record it, so a redelivery is a
            # duplicate and never a second result event.
            uri = await asyncio.to_thread(self._write_failure, job, error, seconds)
            event = self._event(job, "failed", result_uri=uri, seconds=seconds, error=error)
            return SlideOutcome("failed", event)

    def _write_failure(self, job: SlideJob, error: ErrorInfo, seconds: Timings) -> str:
        return self.store.write_failure(
            ResultManifest(
                slide_id=job.slide_id,
                source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
                model=ModelRef(name=self.served.name, version=self.served.version),
                status="failed",
                n_tiles=0,
                seconds=seconds,
                software_version=SOFTWARE_VERSION,
                synthetic=self.served.synthetic,
                error=error,
            )
        )

    async def _run(self, job: SlideJob, t0: float) -> SlideOutcome:
        sid = job.slide_id
        opened: OpenedSlide = await asyncio.to_thread(
            open_slide, self.minio, job, self.settings, self.gpu_decoder
        )
        try:
            t_open = time.perf_counter() - t0
            t1 = time.perf_counter()
            plan: TilePlan = await asyncio.to_thread(
                plan_tiles,
                opened.reader,
                self.served.spec,
                min_tissue=self.settings.ingest_min_tissue_fraction,
                mask_max_px=self.settings.ingest_mask_max_px,
                mpp_tolerance=self.settings.ingest_mpp_tolerance,
            )
            t_tile = time.perf_counter() - t1
            t2 = time.perf_counter()
            embeddings, t_read = await self._embed(opened, plan)
            out = await self.triton.slide_to_pathways(embeddings, self.gene_sets)
            t_infer = time.perf_counter() - t2
            gets = opened.gets
        finally:
            opened.close()
        t3 = time.perf_counter()
        uri = await asyncio.to_thread(self._write, job, plan, embeddings, out, t0, t_open + t_read)
        t_write = time.perf_counter() - t3
        total = time.perf_counter() - t0
        stages = {"read": t_open + t_read, "tile": t_tile, "infer": t_infer, "write": t_write}
        if self.metrics is not None:
            for stage, secs in stages.items():
                self.metrics.stage_seconds.labels(stage=stage).observe(secs)
            self.metrics.tiles.inc(plan.n_tiles)
        self.log.info(
            "slide done",
            extra={
                "slide_id": sid,
                "status": "done",
                "n_tiles": plan.n_tiles,
                "seconds": round(total, 3),
                "format": opened.reader.format,
                "level": plan.level,
                "gets": gets,
                "model_version": self.served.version,
            },
        )
        event = self._event(
            job,
            "done",
            result_uri=uri,
            n_tiles=plan.n_tiles,
            seconds=Timings(
                read=round(t_open + t_read, 4), infer=round(t_infer, 4), total=round(total, 4)
            ),
        )
        return SlideOutcome("done", event, plan.n_tiles, stages)

    async def _embed(self, opened: OpenedSlide, plan: TilePlan) -> tuple[np.ndarray, float]:
        """Tile embeddings [N, D] in plan order; returns them and the seconds spent reading."""
        batch = self.settings.ingest_batch_size
        sem = asyncio.Semaphore(self.settings.ingest_max_inflight)
        result = np.empty((plan.n_tiles, self.served.spec.embed_dim), dtype=np.float32)
        read_s = 0.0

        async def infer(start: int, tiles: np.ndarray) -> None:
            try:
                emb = await self.triton.patch_embed(tiles)
                if emb.shape != (tiles.shape[0], result.shape[1]):
                    raise SlideError(
                        f"patch_embed returned {emb.shape}, expected "
                        f"{(tiles.shape[0], result.shape[1])}",
                        code="infer_error",
                    )
                result[start : start + tiles.shape[0]] = emb
            finally:
                sem.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for start in range(0, plan.n_tiles, batch):
                stop = min(start + batch, plan.n_tiles)
                r0 = time.perf_counter()
                tiles = await asyncio.to_thread(read_tiles, opened.reader, plan, start, stop)
                read_s += time.perf_counter() - r0
                await sem.acquire()
                tasks.append(asyncio.create_task(infer(start, tiles)))
                # Surface a failed request early instead of after reading the whole slide.
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()  # type: ignore[misc]
            await asyncio.gather(*tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        return result, read_s

    def _write(
        self,
        job: SlideJob,
        plan: TilePlan,
        embeddings: np.ndarray,
        out: dict[str, np.ndarray],
        t0: float,
        read_s: float,
    ) -> str:
        from histoprompt.core import names

        slide_emb = out[names.TENSOR_SLIDE_EMBEDDING].reshape(-1).astype(np.float32)
        norm = float(np.linalg.norm(slide_emb))
        if norm > 0:
            slide_emb = slide_emb / norm
        attention = out[names.TENSOR_ATTENTION].reshape(-1).astype(np.float32)
        if attention.shape[0] != plan.n_tiles:
            raise SlideError(
                "slide_to_pathways returned the wrong attention length", code="infer_error"
            )
        scores = out[names.TENSOR_SCORES].reshape(-1)
        coverage = out[names.TENSOR_COVERAGE].reshape(-1)
        pathways = {
            name: PathwayScore(
                score=float(scores[i]),
                method=self.served.pathway_method,
                coverage=float(coverage[i]),
            )
            for i, name in enumerate(self.gene_sets)
        }
        tiles = pd.DataFrame(
            {
                "level": np.zeros(plan.n_tiles, dtype=np.int32),
                "x": plan.xy0[:, 0].astype(np.int64),
                "y": plan.xy0[:, 1].astype(np.int64),
                "tissue_fraction": plan.tissue.astype(np.float32),
                "attention": attention,
            }
        )
        total = time.perf_counter() - t0
        manifest = ResultManifest(
            slide_id=job.slide_id,
            source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
            model=ModelRef(name=self.served.name, version=self.served.version),
            status="done",
            n_tiles=plan.n_tiles,
            seconds=Timings(read=round(read_s, 4), total=round(total, 4)),
            software_version=SOFTWARE_VERSION,
            synthetic=self.served.synthetic,
        )
        result = SlideResult(
            tiles=tiles,
            tile_embeddings=embeddings,
            slide_embedding=slide_emb,
            pathways=pathways,
        )
        return self.store.write(manifest, result)
