"""Ingest errors. `code` is the stable reason carried into result events, the DLQ and metrics.

SlideError: this slide can never succeed (bad bytes, no tissue, too large): fail it, move on.
TransientError: a backing service hiccup: retry with backoff, then dead-letter.
SourceRejectedError: the event itself is unusable (malformed, not allowed): dead-letter now.
"""

from __future__ import annotations

from histoprompt.core.errors import HistopromptError


class IngestError(HistopromptError):
    """Root of the ingest service's errors."""

    code = "ingest_error"


class SlideError(IngestError):
    """A slide that can never be processed; the code names why (e.g. `not_dicom`)."""

    code = "bad_slide"


class SourceRejectedError(IngestError):
    """An event that names no processable object (malformed, outside the allow-list)."""

    code = "rejected"


class TransientError(IngestError):
    """A retryable failure of S3, Kafka or Triton."""

    code = "unavailable"


class ShutdownRequested(IngestError):
    """Raised inside a slide's work when SIGTERM's deadline has come: release the slide."""

    code = "shutdown"
