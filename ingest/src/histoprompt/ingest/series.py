"""DICOM-WSI series assembled from bucket notifications, without a manifest.

A scanner gateway writes a slide as several instance objects (one per pyramid level, plus
LABEL, OVERVIEW, THUMBNAIL), one notification each, and no manifest. Here:

- `observe(job)`: read the object's DICOM header by ranged GETs (never its pixels) and record
  the instance under its series (study + series UID, hashed) as one small JSON object in the
  results bucket, `pending/series/<series_key>/<sha256(key)[:24]>.json`. Anything that is not
  a DICOM-WSI instance is left to the single-file path, which reports it as before.
- `tick()`: called from the service's loop. A series whose newest pending object is older
  than `HISTOPROMPT_INGEST_SERIES_SETTLE_S` is complete. The first worker to create its claim
  `series/<series_key>/claim.json` (`If-None-Match: *`) publishes one `SeriesReady` on the
  incoming topic, then deletes the pending objects; the processing itself is then an
  ordinary Kafka message (retries, DLQ, at-least-once).

State lives in S3, not in a worker: a restart or a rebalance loses nothing, and any worker
can complete any series. A claim whose pending objects are still there after a settle window
(its worker died between the claim and the clean-up) is published again: the same
SeriesReady, so the same slide_id, and the result commit makes the duplicate a no-op. An
instance that arrives after its series was claimed is late: counted, logged, ignored.
Why S3 and not a compacted topic: docs/architecture.md, "Series assembly".
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, ValidationError

from histoprompt.core.errors import HistopromptError, NotFoundError
from histoprompt.core.results import s3_errors
from histoprompt.core.s3 import put_if_absent, read_object
from histoprompt.core.schemas import SeriesMember, SeriesReady, series_slide_id
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.logs import get_logger
from histoprompt.ingest.series_sweep import unseen_instances
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.instance_header import read_instance_header
from histoprompt.wsi.ranged import S3Object
from histoprompt.wsi.sources import read_series_manifest

if TYPE_CHECKING:
    from minio import Minio

PENDING_PREFIX = "pending/series/"
INSTANCE_OUTCOMES = ("joined", "late", "duplicate")
InstanceOutcome = Literal["joined", "late", "duplicate"]

Emit = Callable[[bytes, bytes], None]


def pending_key(series_key: str, object_key: str) -> str:
    digest = hashlib.sha256(object_key.encode()).hexdigest()[:24]
    return f"{PENDING_PREFIX}{series_key}/{digest}.json"


def claim_key(series_key: str) -> str:
    return f"series/{series_key}/claim.json"


class PendingInstance(BaseModel):
    """One pending object: the instance as its notification and header described it."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key: str
    etag: str
    size: int
    flavor: str
    width: int
    height: int
    n_frames: int


class SeriesClaim(BaseModel):
    """`series/<series_key>/claim.json`: what the claiming worker published, and which
    pending objects it covered (to tell a late instance from a redelivered one)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    ready: SeriesReady
    pending: list[str]


class SeriesAssembler:
    """Groups DICOM-WSI instances by series; one instance per `observe`, completion in `tick`."""

    def __init__(
        self,
        settings: IngestSettings,
        minio: Minio,
        emit: Emit,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.minio = minio
        self.bucket = settings.results_bucket
        self.settle_s = settings.ingest_series_settle_s
        self.tick_s = max(0.2, min(5.0, self.settle_s / 4))
        self._emit = emit
        self._last_tick = 0.0
        self.log = get_logger()
        registry = registry if registry is not None else CollectorRegistry()
        self.instances = Counter(
            "histoprompt_ingest_series_instances",
            "DICOM-WSI instances seen by series assembly, by outcome",
            ["outcome"],
            registry=registry,
        )
        for outcome in INSTANCE_OUTCOMES:
            self.instances.labels(outcome=outcome)
        self.assembled = Counter(
            "histoprompt_ingest_series_assembled",
            "Series completed by the settle window and published as one slide",
            registry=registry,
        )

    def close(self) -> None:
        """Close the emitter (its Kafka producer), if it has anything to close."""
        close = getattr(self._emit, "close", None)
        if callable(close):
            close()

    # -- one instance ------------------------------------------------------------------------

    def observe(self, job: SlideJob) -> InstanceOutcome | None:
        """Record `job`'s object in its series: `joined`; `duplicate` when it is a redelivery
        of an instance of a completed series, `late` when it is new to one. None: not a
        DICOM-WSI instance (or its header does not parse), so the object stays a single-file
        slide, whose reader says why."""
        try:
            obj = S3Object(self.minio, job.bucket, job.key)
            header = read_instance_header(obj)
        except SlideError:
            return None
        claim = self._read_claim(header.series_key)
        if claim is not None:
            known = {m.key: m.etag for m in claim.ready.members}
            # A manifest's claim knows its members by key only (a manifest has no etags).
            same = job.key in known and known[job.key] in (job.etag, "")
            outcome: InstanceOutcome = "duplicate" if same else "late"
            self.instances.labels(outcome=outcome).inc()
            self.log.warning(
                "instance after its series completed: ignored"
                if outcome == "late"
                else "instance redelivered after its series completed",
                extra={"slide_id": claim.ready.slide_id, "status": f"series_{outcome}"},
            )
            return outcome
        pending = PendingInstance(
            key=job.key,
            etag=job.etag,
            size=obj.size,
            flavor=header.flavor,
            width=header.width,
            height=header.height,
            n_frames=header.n_frames,
        )
        self._store_pending(header.series_key, pending)
        self.instances.labels(outcome="joined").inc()
        self.log.info(
            "series instance pending",
            extra={"status": "series_pending", "code": header.flavor.lower()},
        )
        return "joined"

    def close_by_manifest(self, job: SlideJob) -> None:
        """Rule (a): a `manifest.json` closes its series. When instances it lists are pending
        (a gateway that names instances freely and also writes a manifest), claim the series
        for the manifest's slide and drop them, so the settle window never emits them again.
        Pending objects of the series that it does not list stay, and are counted late. With
        none of its instances pending (`histoprompt submit`) nothing is written. Trouble with
        the manifest or its first instance is left to the slide's own processing."""
        base = job.key.rsplit("/", 1)[0] + "/"
        try:
            manifest = read_series_manifest(S3Object(self.minio, job.bucket, job.key))
            keys = [i.key if "/" in i.key else base + i.key for i in manifest.instances]
            header = read_instance_header(S3Object(self.minio, job.bucket, keys[0]))
        except SlideError:
            return
        prefix = f"{PENDING_PREFIX}{header.series_key}/"
        with s3_errors("listing pending series"):
            listed = [o.object_name or "" for o in self.minio.list_objects(self.bucket, prefix)]
        loaded = {name: self._read_pending(name) for name in listed}
        pending = [n for n, p in loaded.items() if p is not None and p.key in set(keys)]
        if not pending:
            return
        members = [
            SeriesMember(key=k, etag="", size=i.size, flavor="")
            for k, i in zip(keys, manifest.instances, strict=True)
        ]
        ready = SeriesReady(
            bucket=job.bucket,
            series_key=header.series_key,
            slide_id=job.slide_id,
            trigger="manifest",
            members=members,
        )
        claim = SeriesClaim(ready=ready, pending=pending).model_dump_json().encode()
        with s3_errors("claiming a series"):
            won = put_if_absent(self.minio, self.bucket, claim_key(header.series_key), claim)
        if won is None:
            self.log.warning(
                "manifest after its series completed: processed as its own slide",
                extra={"slide_id": job.slide_id, "status": "series_late"},
            )
            return
        self._remove(pending)
        self.log.info(
            "series closed by its manifest",
            extra={"slide_id": job.slide_id, "status": "series_ready"},
        )

    # -- completion ----------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> int:
        """Complete the series whose settle window has passed; the number published. At most
        one listing per `tick_s`; S3 or Kafka trouble is logged and retried next tick."""
        mono = time.monotonic()
        if now is None and mono - self._last_tick < self.tick_s:
            return 0
        self._last_tick = mono
        published = 0
        try:
            for series_key, objects in self.due(now).items():
                published += self._complete(series_key, objects)
        except (HistopromptError, OSError) as err:
            self.log.warning("series tick failed", extra={"code": getattr(err, "code", "io_error")})
        return published

    def due(self, now: float | None = None) -> dict[str, list[str]]:
        """series_key -> its pending objects, for series quiet for the settle window.

        Ages come from S3's LastModified (one clock for every worker) against this worker's
        UTC clock: skew shifts the window by the skew, never splits a series."""
        cutoff = (now if now is not None else time.time()) - self.settle_s
        newest: dict[str, float] = {}
        objects: dict[str, list[str]] = {}
        with s3_errors("listing pending series"):
            listed = list(self.minio.list_objects(self.bucket, PENDING_PREFIX, recursive=True))
        for obj in listed:
            name = obj.object_name or ""
            series_key = name[len(PENDING_PREFIX) :].split("/", 1)[0]
            modified = obj.last_modified or datetime.now(UTC)
            newest[series_key] = max(newest.get(series_key, 0.0), modified.timestamp())
            objects.setdefault(series_key, []).append(name)
        return {k: sorted(objects[k]) for k, t in newest.items() if t <= cutoff}

    def _complete(self, series_key: str, pending: list[str]) -> int:
        loaded = {name: self._read_pending(name) for name in pending}
        instances = [p for p in loaded.values() if p is not None]
        if not instances:
            return 0
        glob = self.settings.ingest_series_member_glob
        keys = [p.key for p in instances]
        for s in unseen_instances(self.minio, self.settings.slides_bucket, series_key, keys, glob):
            h = s.header
            swept = PendingInstance(
                key=s.key, etag=s.etag, size=s.size, flavor=h.flavor, width=h.width,
                height=h.height, n_frames=h.n_frames,
            )  # fmt: skip
            pending.append(self._store_pending(series_key, swept))
            instances.append(swept)
        members = [
            SeriesMember(key=p.key, etag=p.etag, size=p.size, flavor=p.flavor) for p in instances
        ]
        ready = SeriesReady(
            bucket=self.settings.slides_bucket,
            series_key=series_key,
            slide_id=series_slide_id(self.settings.slides_bucket, series_key, members),
            trigger="settle",
            members=members,
        )
        claim = SeriesClaim(ready=ready, pending=pending)
        with s3_errors("claiming a series"):
            won = put_if_absent(
                self.minio, self.bucket, claim_key(series_key), claim.model_dump_json().encode()
            )
        if won is None:
            return self._claimed_already(series_key, loaded)
        self._publish(ready)
        self._remove(pending)
        self.assembled.inc()
        self.log.info(
            "series assembled",
            extra={"slide_id": ready.slide_id, "status": "series_ready", "n_tiles": len(members)},
        )
        return 1

    def _claimed_already(self, series_key: str, loaded: dict[str, PendingInstance | None]) -> int:
        """Another worker (or a manifest) claimed it. Pending objects of instances it does
        not know are late; of ones it knows, redeliveries. Covered ones left behind mean the
        claimer died before its clean-up: publish its SeriesReady again (a manifest's claim
        is not: the manifest's own message comes back)."""
        claim = self._read_claim(series_key)
        if claim is None:
            return 0
        covered = set(claim.pending)
        keys = {m.key for m in claim.ready.members}
        stale = [name for name in loaded if name in covered]
        extra = [(name, p) for name, p in loaded.items() if name not in covered]
        for outcome in ("late", "duplicate"):
            names = [
                n for n, p in extra if (p is not None and p.key in keys) == (outcome != "late")
            ]
            if not names:
                continue
            self.instances.labels(outcome=outcome).inc(len(names))
            self.log.warning(
                f"instance after its series completed: {outcome}, ignored",
                extra={"slide_id": claim.ready.slide_id, "status": f"series_{outcome}"},
            )
            self._remove(names)
        if not stale or not self._older_than_settle(claim_key(series_key)):
            return 0
        if claim.ready.trigger == "settle":
            self._publish(claim.ready)
            self.log.warning(
                "series claim left unfinished: published again",
                extra={"slide_id": claim.ready.slide_id, "status": "series_ready"},
            )
        self._remove(stale)
        return 1 if claim.ready.trigger == "settle" else 0

    # -- S3 and Kafka --------------------------------------------------------------------------

    def _publish(self, ready: SeriesReady) -> None:
        self._emit(ready.series_key.encode(), ready.to_json())

    def _store_pending(self, series_key: str, pending: PendingInstance) -> str:
        key, data = pending_key(series_key, pending.key), pending.model_dump_json().encode()
        with s3_errors("writing a pending series instance"):
            self.minio.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type="application/json"
            )
        return key

    def _get(self, key: str) -> bytes | None:
        try:
            with s3_errors("reading series state"):
                return read_object(self.minio, self.bucket, key)
        except NotFoundError:
            return None

    def _read_pending(self, name: str) -> PendingInstance | None:
        raw = self._get(name)
        try:
            return PendingInstance.model_validate_json(raw) if raw is not None else None
        except ValidationError:  # not ours or cut short: skip it rather than block the tick
            self.log.warning("unreadable pending series object", extra={"code": "corrupt"})
            return None

    def _read_claim(self, series_key: str) -> SeriesClaim | None:
        raw = self._get(claim_key(series_key))
        return SeriesClaim.model_validate_json(raw) if raw is not None else None

    def _older_than_settle(self, key: str) -> bool:
        with s3_errors("reading a series claim"):
            stat = self.minio.stat_object(self.bucket, key)
        modified = stat.last_modified
        return modified is None or time.time() - modified.timestamp() >= self.settle_s

    def _remove(self, keys: list[str]) -> None:
        with s3_errors("removing pending series objects"):
            for key in keys:
                self.minio.remove_object(self.bucket, key)
