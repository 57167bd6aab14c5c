"""One slide job, end to end: idempotency check, open from S3, score (histoprompt.wsi.scoring,
the same processor `histoprompt predict` runs), write the result to S3.

A `single` job is first offered to series assembly (histoprompt.ingest.series): a DICOM-WSI
instance joins its series there (outcome `series_instance`, no event) and its slide is
processed when the series' SeriesReady comes back as an `instances` job. Built inside the
service's event loop, the processor runs assembly's settle tick as a task on that loop; the
task ends with the loop. Results are committed exclusively (core.results): of two processors
of one slide, one writes the result and the other's outcome is `skipped_duplicate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from histoprompt.core.results import ResultAlreadyCommitted, ResultStore, SlideResult
from histoprompt.core.schemas import (
    ErrorInfo,
    ModelRef,
    PathwayScore,
    ResultManifest,
    SourceRef,
    Timings,
)
from histoprompt.core.version import __version__ as SOFTWARE_VERSION  # noqa: N812
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.metrics import IngestMetrics
from histoprompt.ingest.series import SeriesAssembler
from histoprompt.ingest.series_emit import KafkaEmitter
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.decoders import select_decoder
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.scoring import ScoredSlide, ScoringOptions, score_slide
from histoprompt.wsi.sources import OpenedSlide, open_instances, open_slide
from histoprompt.wsi.triton import ServedModel, TritonClient

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

    from minio import Minio
    from numpy.typing import NDArray


def pathway_scores(
    out: Mapping[str, NDArray[Any]], gene_sets: Sequence[str], method: str
) -> dict[str, PathwayScore]:
    """`pathways.json` entries from slide_to_pathways' outputs. percentile and z come from
    PERCENTILE / ZSCORE; they stay None where the served ensemble lacks the output (an older
    repository) or the value is NaN (a method off the reference's ssGSEA scale)."""
    from histoprompt.core import names

    scores = out[names.TENSOR_SCORES].reshape(-1)
    coverage = out[names.TENSOR_COVERAGE].reshape(-1)
    pct, z = (out.get(t) for t in (names.TENSOR_PERCENTILE, names.TENSOR_ZSCORE))

    def readable(values: NDArray[Any] | None, i: int) -> float | None:
        if values is None:
            return None
        v = float(np.asarray(values).reshape(-1)[i])
        return v if np.isfinite(v) else None

    return {
        name: PathwayScore(
            score=float(scores[i]),
            method=method,
            coverage=float(coverage[i]),
            percentile=readable(pct, i),
            z=readable(z, i),
        )
        for i, name in enumerate(gene_sets)
    }


@dataclass
class SlideOutcome:
    """What happened to one slide; histoprompt.ingest.publish turns it into the result event.

    `model`, `result_uri` and `seconds` are set for done and failed; `error` for failed."""

    status: Literal["done", "failed", "skipped_duplicate", "series_instance"]
    model: ModelRef | None = None
    result_uri: str | None = None
    n_tiles: int = 0
    seconds: Timings | None = None
    error: ErrorInfo | None = None
    stages: dict[str, float] = field(default_factory=dict)


def announce_again(store: ResultStore, job: SlideJob, version: str) -> SlideOutcome | None:
    """The stored result's outcome when this very delivery wrote it, else None.

    A worker that dies between committing a result and its event (or its offset) leaves the
    message uncommitted; its redelivery finds the result whole and would skip it, and the
    event would never go out. The manifest names the delivery that wrote it: the same one
    again announces the stored result (consumers of the results topic see the event at least
    once, and may see it twice, never a second result). Any other delivery of the slide (a
    second notification, a replay) is a plain duplicate."""
    if not job.delivery:
        return None
    manifest = store.read_manifest(job.slide_id, version)
    if manifest.written_by != job.delivery:
        return None
    return SlideOutcome(
        manifest.status,
        manifest.model,
        store.uri(job.slide_id, version),
        manifest.n_tiles,
        manifest.seconds,
        manifest.error,
    )


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
        series: SeriesAssembler | None = None,
    ) -> None:
        self.settings = settings
        self.minio = minio
        self.store = store
        self.triton = triton
        self.served = served
        self.gene_sets = gene_sets
        self.metrics = metrics
        self.log = get_logger()
        # One decoder per service: nvImageCodec on GPU nodes, imagecodecs elsewhere.
        self.gpu_decoder = select_decoder(settings.ingest_decoder, log=self.log)
        self.series = series
        self._ticker: asyncio.Task[None] | None = None
        if series is None and minio is not None:
            registry = metrics.registry if metrics is not None else None
            self.series = SeriesAssembler(settings, minio, KafkaEmitter(settings), registry)
        with contextlib.suppress(RuntimeError):  # no running loop: the caller ticks itself
            self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    async def _tick_forever(self) -> None:
        """Series assembly's settle tick, for as long as the service's loop runs."""
        series = self.series
        if series is None:
            return
        try:
            while True:
                try:
                    await asyncio.to_thread(series.tick)
                except Exception as err:  # a bug must not stop assembly for good: tick again
                    self.log.error("series tick crashed", exc_info=err, extra={"code": "internal"})
                await asyncio.sleep(series.tick_s)
        finally:
            await asyncio.to_thread(series.close)

    def _scoring_options(self) -> ScoringOptions:
        # A request above patch_embed's max_batch_size would be rejected by Triton.
        options = self.settings.scoring_options()
        return replace(options, batch_size=min(options.batch_size, self.served.max_batch_size))

    def _model(self) -> ModelRef:
        return ModelRef(name=self.served.encoder, version=self.served.version)

    async def process(self, job: SlideJob) -> SlideOutcome:
        series = self.series if job.kind == "single" else None
        seen = await asyncio.to_thread(series.observe, job) if series is not None else None
        if seen == "duplicate":  # redelivered after its series completed
            return SlideOutcome("skipped_duplicate")
        if seen is not None:  # joined its series, or late for it: the series has the result
            return SlideOutcome("series_instance")
        if job.kind == "series" and self.series is not None:
            await asyncio.to_thread(self.series.close_by_manifest, job)
        sid, ver = job.slide_id, self.served.version
        done = await asyncio.to_thread(self.store.is_complete, sid, ver)
        if done:
            again = await asyncio.to_thread(announce_again, self.store, job, ver)
            if again is not None:
                self.log.info(
                    "result event sent again", extra={"slide_id": sid, "status": "resent"}
                )
                return again
            self.log.info("already done", extra={"slide_id": sid, "status": "skipped_duplicate"})
            return SlideOutcome("skipped_duplicate")
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
            try:
                uri = await asyncio.to_thread(self._write_failure, job, error, seconds)
            except ResultAlreadyCommitted:
                return self._lost(sid)
            return SlideOutcome("failed", self._model(), uri, seconds=seconds, error=error)
        except ResultAlreadyCommitted:
            return self._lost(sid)

    def _lost(self, slide_id: str) -> SlideOutcome:
        """Another processor committed this slide's result first: publish nothing."""
        self.log.info(
            "result committed by another processor",
            extra={"slide_id": slide_id, "status": "skipped_duplicate"},
        )
        return SlideOutcome("skipped_duplicate")

    def _write_failure(self, job: SlideJob, error: ErrorInfo, seconds: Timings) -> str:
        return self.store.write_failure(
            ResultManifest(
                slide_id=job.slide_id,
                source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
                model=self._model(),
                status="failed",
                n_tiles=0,
                seconds=seconds,
                software_version=SOFTWARE_VERSION,
                synthetic=self.served.synthetic,
                error=error,
                written_by=job.delivery or None,
            ),
            exclusive=True,
        )

    async def _run(self, job: SlideJob, t0: float) -> SlideOutcome:
        sid = job.slide_id
        limits = self.settings.read_limits()
        opened: OpenedSlide
        if job.kind == "instances":
            opened = await asyncio.to_thread(
                open_instances,
                self.minio,
                job.bucket,
                job.readable_members(),
                limits,
                self.gpu_decoder,
            )
        else:
            opened = await asyncio.to_thread(open_slide, self.minio, job, limits, self.gpu_decoder)
        try:
            t_open = time.perf_counter() - t0
            scored = await score_slide(
                opened.reader,
                self.served.spec,
                self.triton,
                self.gene_sets,
                self._scoring_options(),
            )
            gets = opened.gets
        finally:
            opened.close()
        plan = scored.plan
        t_read, t_infer = t_open + scored.seconds["read"], scored.seconds["infer"]
        t3 = time.perf_counter()
        uri = await asyncio.to_thread(self._write, job, scored, t0, t_read)
        t_write = time.perf_counter() - t3
        total = time.perf_counter() - t0
        stages = {"read": t_read, "tile": scored.seconds["tile"], "infer": t_infer}
        stages["write"] = t_write
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
                "pyramid_level": plan.level,
                "gets": gets,
                "model_version": self.served.version,
            },
        )
        seconds = Timings(read=round(t_read, 4), infer=round(t_infer, 4), total=round(total, 4))
        return SlideOutcome("done", self._model(), uri, plan.n_tiles, seconds, stages=stages)

    def _write(self, job: SlideJob, scored: ScoredSlide, t0: float, read_s: float) -> str:
        from histoprompt.core import names

        plan, out = scored.plan, scored.outputs
        slide_emb = out[names.TENSOR_SLIDE_EMBEDDING].reshape(-1).astype(np.float32)
        norm = float(np.linalg.norm(slide_emb))
        if norm > 0:
            slide_emb = slide_emb / norm
        attention = scored.attention
        pathways = pathway_scores(out, self.gene_sets, self.served.pathway_method)
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
            model=self._model(),
            status="done",
            n_tiles=plan.n_tiles,
            seconds=Timings(read=round(read_s, 4), total=round(total, 4)),
            software_version=SOFTWARE_VERSION,
            synthetic=self.served.synthetic,
            written_by=job.delivery or None,
        )
        result = SlideResult(
            tiles=tiles,
            tile_embeddings=scored.embeddings,
            slide_embedding=slide_emb,
            pathways=pathways,
        )
        return self.store.write(manifest, result, exclusive=True)
