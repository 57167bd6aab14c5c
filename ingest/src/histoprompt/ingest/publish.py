"""Every event the service emits is built and sent here: a slide's result event from its
outcome, and a dead-letter event from the message it could not handle.

The pipeline writes results to S3 and says what happened (SlideOutcome); it never builds an
event. Both functions block until the broker acknowledges (callers use `asyncio.to_thread`).
"""

from __future__ import annotations

import contextlib
import hashlib

from histoprompt.core.schemas import (
    DlqEvent,
    DlqSlide,
    ErrorInfo,
    IncomingRef,
    ResultEvent,
    SeriesReady,
    SourceRef,
    Timings,
    utcnow,
)
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.pipeline import SlideOutcome
from histoprompt.ingest.ports import Message, ResultSink
from histoprompt.ingest.settings import IngestSettings

# A DLQ reason is one line for people (`histoprompt dlq list`), not a traceback.
MESSAGE_MAX = 300


def result_event(job: SlideJob, outcome: SlideOutcome) -> ResultEvent | None:
    """The event announcing `outcome`; None for a duplicate (its event went out before)."""
    if outcome.status == "skipped_duplicate" or outcome.model is None:
        return None
    return ResultEvent(
        slide_id=job.slide_id,
        source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
        model=outcome.model,
        status=outcome.status,
        result_uri=outcome.result_uri,
        n_tiles=outcome.n_tiles,
        seconds=outcome.seconds or Timings(),
        error=outcome.error,
    )


def publish_outcome(sink: ResultSink, job: SlideJob, outcome: SlideOutcome) -> bool:
    """Publish the outcome's result event; False when there was none to publish."""
    event = result_event(job, outcome)
    if event is None:
        return False
    sink.publish_result(event)
    return True


def dlq_slides(msg: Message, settings: IngestSettings) -> list[DlqSlide]:
    """The slides `msg` names, as a replay needs them; none when it is malformed or refused
    (its value is then not worth keeping, and may name anything)."""
    try:
        jobs = parse_jobs(msg.value, settings)
    except SourceRejectedError:
        return []
    ready = None
    if msg.value is not None:
        with contextlib.suppress(ValueError):
            ready = SeriesReady.model_validate_json(msg.value)
    return [
        DlqSlide(
            slide_id=job.slide_id,
            bucket=job.bucket,
            key=job.key,
            etag=job.etag,
            size=job.size,
            series=ready if job.kind == "instances" else None,
        )
        for job in jobs
        if isinstance(job, SlideJob)
    ]


def scrub(message: str, keys: list[str]) -> str:
    """One line, at most MESSAGE_MAX characters, without the object keys (or their file
    names) of the message: a scanner's key may hold a patient's name."""
    for key in keys:
        for part in (key, key.rsplit("/", 1)[-1]):
            if part:
                message = message.replace(part, "<key>")
    line = " ".join(message.split())
    return line if len(line) <= MESSAGE_MAX else line[: MESSAGE_MAX - 1] + "…"


def dlq_event(
    msg: Message, error: ErrorInfo, attempts: int, first_seen: str, settings: IngestSettings
) -> DlqEvent:
    """Why `msg` failed, its slides and where it was; never its value (docs/architecture.md)."""
    value = msg.value or b""
    slides = dlq_slides(msg, settings)
    keys = [sl.key for sl in slides]
    keys += [m.key for sl in slides if sl.series is not None for m in sl.series.members]
    return DlqEvent(
        error=ErrorInfo(code=error.code, message=scrub(error.message, keys)),
        attempts=attempts,
        first_seen=first_seen,
        last_seen=utcnow(),
        incoming=IncomingRef(
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            size=len(value),
            sha256=hashlib.sha256(value).hexdigest(),
        ),
        slides=slides,
    )


def dead_letter(
    sink: ResultSink,
    msg: Message,
    error: ErrorInfo,
    attempts: int,
    first_seen: str,
    settings: IngestSettings,
) -> None:
    """Publish the DLQ event keyed by its first slide's id (the incoming key may be the
    object key, `<bucket>/<key>` from MinIO): no key for a message without slides."""
    event = dlq_event(msg, error, attempts, first_seen, settings)
    key = event.slides[0].slide_id.encode() if event.slides else None
    sink.publish_dlq(event, key)
