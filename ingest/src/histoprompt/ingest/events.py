"""From a Kafka value to slide jobs: parse the S3 notification, filter, name the slide.

- non-create events are skipped;
- objects of a DICOM series (`instance-*.dcm`) wait for the series' manifest.json;
- a manifest.json event is the series; any other created object is a single-file slide;
- buckets and key prefixes outside the allow-list are rejected (dead-lettered).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from histoprompt.core import names
from histoprompt.core.errors import InvalidInputError
from histoprompt.core.schemas import S3Event, slide_id_for
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.settings import IngestSettings


@dataclass(frozen=True)
class SlideJob:
    """One slide to process. `key` is the manifest's for a series."""

    bucket: str
    key: str
    etag: str
    size: int
    kind: Literal["series", "single"]

    @property
    def slide_id(self) -> str:
        return slide_id_for(self.bucket, self.key, self.etag)


@dataclass(frozen=True)
class Skip:
    reason: Literal["not_create", "series_member"]


def parse_jobs(value: bytes | None, settings: IngestSettings) -> list[SlideJob | Skip]:
    """Jobs in one message, in record order. Raises SourceRejectedError for poison."""
    if value is None:
        raise SourceRejectedError("empty message", code="malformed_event")
    try:
        event = S3Event.parse(value)
    except InvalidInputError as err:
        raise SourceRejectedError(str(err), code="malformed_event") from err
    out: list[SlideJob | Skip] = []
    buckets = settings.allowed_buckets()
    prefixes = settings.ingest_allowed_prefixes
    for rec in event.records:
        if not rec.is_create:
            out.append(Skip("not_create"))
            continue
        key = rec.key
        if rec.bucket not in buckets:
            raise SourceRejectedError("bucket is not in the allow-list", code="forbidden_source")
        if prefixes and not any(key.startswith(p) for p in prefixes):
            raise SourceRejectedError(
                "key prefix is not in the allow-list", code="forbidden_source"
            )
        if not key or key.endswith("/") or ".." in key.split("/"):
            raise SourceRejectedError("object key is not a file", code="malformed_event")
        base = key.rsplit("/", 1)[-1]
        if base == names.SERIES_MANIFEST:
            out.append(SlideJob(rec.bucket, key, rec.etag, rec.s3.object.size, "series"))
        elif fnmatch.fnmatch(base, settings.ingest_series_member_glob):
            out.append(Skip("series_member"))
        else:
            out.append(SlideJob(rec.bucket, key, rec.etag, rec.s3.object.size, "single"))
    if not out:
        raise SourceRejectedError("notification has no records", code="malformed_event")
    return out
