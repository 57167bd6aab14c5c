"""Errors of slide reading. `code` is the stable reason carried into results, the DLQ, metrics.

SlideError: these bytes can never be read as a slide (not DICOM, truncated, too large, no
tissue, a request Triton rejects for this slide): fail the slide, never retry it.
A backing store that is down is `histoprompt.core.errors.TransientError` (retry).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from histoprompt.core.errors import (
    ConfigError,
    HistopromptError,
    NotFoundError,
    PermissionDeniedError,
    TransientError,
)

__all__ = [
    "DecoderUnavailableError",
    "ObjectMissingError",
    "SlideError",
    "StoreDeniedError",
    "TruncatedReadError",
    "WsiError",
    "parse_guard",
]


class WsiError(HistopromptError):
    """Root of histoprompt.wsi's errors."""

    code = "wsi_error"


class SlideError(WsiError):
    """A slide that can never be processed; the code names why (e.g. `not_dicom`)."""

    code = "bad_slide"


class TruncatedReadError(SlideError):
    """A read past the end of an object, or a short read: the object is not what it claims."""

    code = "truncated"


class ObjectMissingError(SlideError, NotFoundError):
    """A slide object that is not (or no longer) in the store."""

    code = "missing_object"


class StoreDeniedError(TransientError, PermissionDeniedError):
    """The store refused the credentials: retried by ingest (a rotated secret may come back),
    reported as an auth failure by the CLI."""

    code = "s3_error"


class DecoderUnavailableError(WsiError, ConfigError):
    """The decoder asked for (HISTOPROMPT_INGEST_DECODER=gpu) cannot run here: its extra is
    not installed or no CUDA device is visible. A configuration error: never retried."""

    code = "decoder_unavailable"


@contextmanager
def parse_guard(what: str, code: str) -> Iterator[None]:
    """A third-party parser's failure (tifffile, pydicom and the codecs raise many types on
    a corrupt file) -> SlideError `code`, naming `what` and the type only: the message may
    quote the file's bytes. A HistopromptError passes through: a failed ranged read (S3
    down: transient) is not a corrupt file."""
    try:
        yield
    except HistopromptError:
        raise
    except Exception as err:
        raise SlideError(f"{what}: {type(err).__name__}", code=code) from err
