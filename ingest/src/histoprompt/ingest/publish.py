"""Every event the service emits is built and sent here: a slide's result event from its
outcome, and a dead-letter event from the message it could not handle.

The pipeline writes results to S3 and says what happened (SlideOutcome); it never builds an
event. Both functions block until the broker acknowledges (callers use `asyncio.to_thread`).
"""

from __future__ import annotations

import json
from typing import Any

from histoprompt.core.schemas import DlqEvent, ErrorInfo, ResultEvent, SourceRef, Timings, utcnow
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.pipeline import SlideOutcome
from histoprompt.ingest.ports import Message, ResultSink


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


def dlq_event(msg: Message, error: ErrorInfo, attempts: int, first_seen: str) -> DlqEvent:
    """The message as received (JSON when it parses, else its text) and why it failed."""
    try:
        original: Any = json.loads(msg.value) if msg.value is not None else None
    except (ValueError, UnicodeDecodeError):
        original = (msg.value or b"").decode("utf-8", errors="replace")
    return DlqEvent(
        original=original,
        error=error,
        attempts=attempts,
        first_seen=first_seen,
        last_seen=utcnow(),
    )


def dead_letter(
    sink: ResultSink, msg: Message, error: ErrorInfo, attempts: int, first_seen: str
) -> None:
    sink.publish_dlq(dlq_event(msg, error, attempts, first_seen), msg.key)
