"""Ranged reads over S3 for ingest: histoprompt.core.ranged with ingest's error codes.

The generic pieces (coalescing, `read_ranges`, the block-cached `RangedFile`) live in
histoprompt.core.ranged and are re-exported here. The byte sources translate core errors into
ingest's: a missing or truncated object is a `SlideError` (never retried), any other S3
failure a `TransientError` (retried), with the codes ingest has always reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from histoprompt.core import ranged as core_ranged
from histoprompt.core.errors import NotFoundError, PermissionDeniedError, ServiceUnavailableError
from histoprompt.core.ranged import ByteSource, RangedFile, Span, TruncatedReadError, coalesce
from histoprompt.core.ranged import read_ranges as read_ranges
from histoprompt.ingest.errors import SlideError, TransientError

__all__ = [
    "ByteSource",
    "BytesSource",
    "RangedFile",
    "S3Object",
    "Span",
    "coalesce",
    "read_ranges",
]


@contextmanager
def _ingest_errors(missing: str, failed: str) -> Iterator[None]:
    try:
        yield
    except TruncatedReadError as err:
        raise SlideError(str(err), code="truncated") from err
    except NotFoundError as err:
        raise SlideError(missing, code="missing_object") from err
    except PermissionDeniedError as err:
        raise TransientError(f"{failed}: {err}", code="s3_error") from err
    except ServiceUnavailableError as err:
        if err.code == "s3_unavailable":
            raise TransientError("S3 unreachable", code="s3_unavailable") from err
        raise TransientError(f"{failed}: {err}", code="s3_error") from err


class S3Object(core_ranged.S3Object):
    """One S3 object read by ranged GETs (thread-safe), failing with ingest's errors."""

    def _stat(self) -> int:
        with _ingest_errors("a slide object is missing", "S3 stat failed"):
            return super()._stat()

    def read_range(self, offset: int, length: int) -> bytes:
        with _ingest_errors("a slide object vanished", "S3 ranged GET failed"):
            return super().read_range(offset, length)


class BytesSource(core_ranged.BytesSource):
    """A ByteSource over bytes in memory (unit tests, tiny objects), failing with SlideError."""

    def read_range(self, offset: int, length: int) -> bytes:
        with _ingest_errors("an in-memory object is missing", "read failed"):
            return super().read_range(offset, length)
