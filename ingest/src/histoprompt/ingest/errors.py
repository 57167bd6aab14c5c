"""Ingest errors. `code` is the stable reason carried into result events, the DLQ and metrics.

SourceRejectedError: the event itself is unusable (malformed, not allowed): dead-letter now.
A slide that can never succeed is `histoprompt.wsi.errors.SlideError` (fail it, move on); a
backing-service hiccup is `histoprompt.core.errors.TransientError` (retry, then dead-letter).
"""

from __future__ import annotations

from histoprompt.core.errors import HistopromptError

__all__ = ["DeadlineExceededError", "IngestError", "SourceRejectedError"]


class IngestError(HistopromptError):
    """Root of the ingest service's errors."""

    code = "ingest_error"


class SourceRejectedError(IngestError):
    """An event that names no processable object (malformed, outside the allow-list)."""

    code = "rejected"


class DeadlineExceededError(IngestError):
    """A slide ran past HISTOPROMPT_INGEST_SLIDE_DEADLINE_S: dead-lettered, not retried (the
    same slide would take as long again); a replay after raising the deadline processes it."""

    code = "deadline_exceeded"
