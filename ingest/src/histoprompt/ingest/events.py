"""From a Kafka value to slide jobs: parse the S3 notification, filter, name the slide.

- non-create events are skipped;
- objects of a `histoprompt submit` series (`instance-*.dcm`) wait for its manifest.json;
- a manifest.json event is the series; any other created object is a `single` job, which
  the processor first offers to series assembly (histoprompt.ingest.series): a DICOM-WSI
  instance joins its series there, anything else is a single-file slide;
- a `SeriesReady` value (published by series assembly) is an `instances` job: exactly the
  series' instances, opened together;
- buckets and key prefixes outside the allow-list, and keys that are path tricks
  (histoprompt.core.object_keys), are rejected (dead-lettered).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from histoprompt.core import names
from histoprompt.core.errors import InvalidInputError
from histoprompt.core.object_keys import key_problem
from histoprompt.core.schemas import (
    NON_VOLUME_FLAVORS,
    S3Event,
    SeriesMember,
    SeriesReady,
    series_slide_id,
    slide_id_for,
)
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.settings import IngestSettings

JobKind = Literal["series", "single", "instances"]


@dataclass(frozen=True)
class SlideJob:
    """One slide to process. `key` is the manifest's for a series, and the largest VOLUME
    instance's for an assembled series (`instances`, whose `members` are all its instances)."""

    bucket: str
    key: str
    etag: str
    size: int
    kind: JobKind
    members: tuple[SeriesMember, ...] = ()
    series_key: str = ""
    # The message it came from, `<group>/<topic>/<partition>/<offset>` (set by the handler):
    # recorded in the result's manifest, so a redelivery of that same message can tell that
    # its own write landed and its event may not have gone out.
    delivery: str = ""

    @property
    def slide_id(self) -> str:
        if self.kind == "instances":
            return series_slide_id(self.bucket, self.series_key, list(self.members))
        return slide_id_for(self.bucket, self.key, self.etag)

    def readable_members(self) -> list[tuple[str, int]]:
        """(key, size) of the instances a reader opens: the VOLUME levels, or the THUMBNAIL
        when the series has no VOLUME; never LABEL or OVERVIEW."""
        for flavors in ({"VOLUME"}, {"THUMBNAIL"}):
            found = [(m.key, m.size) for m in self.members if m.flavor in flavors]
            if found:
                return found
        return []


@dataclass(frozen=True)
class Skip:
    reason: Literal["not_create", "series_member"]


def _check_source(bucket: str, key: str, settings: IngestSettings) -> None:
    """Before any GET: the bucket and prefix allow-lists, then the key itself (path tricks
    that would step out of an allowed prefix once some tool treats the key as a path)."""
    if bucket not in settings.allowed_buckets():
        raise SourceRejectedError("bucket is not in the allow-list", code="forbidden_source")
    problem = key_problem(key)
    if problem is not None:
        raise SourceRejectedError(f"object key refused: {problem}", code="unsafe_key")
    prefixes = settings.ingest_allowed_prefixes
    if prefixes and not any(key.startswith(p) for p in prefixes):
        raise SourceRejectedError("key prefix is not in the allow-list", code="forbidden_source")


def series_job(ready: SeriesReady, settings: IngestSettings) -> SlideJob:
    """The job of an assembled series; its members pass the same allow-list as events."""
    for m in ready.members:
        _check_source(ready.bucket, m.key, settings)
    volumes = [m for m in ready.members if m.flavor not in NON_VOLUME_FLAVORS]
    # The source named in results: the largest readable instance (level 0 of the pyramid).
    head = max(volumes or ready.members, key=lambda m: m.size)
    return SlideJob(
        ready.bucket,
        head.key,
        head.etag,
        head.size,
        "instances",
        tuple(sorted(ready.members, key=lambda m: m.key)),
        ready.series_key,
    )


def _parse(value: bytes) -> S3Event | SeriesReady:
    try:
        return S3Event.parse(value)
    except InvalidInputError as err:
        try:
            return SeriesReady.model_validate_json(value)
        except ValidationError:
            raise SourceRejectedError(str(err), code="malformed_event") from err


def parse_jobs(value: bytes | None, settings: IngestSettings) -> list[SlideJob | Skip]:
    """Jobs in one message, in record order. Raises SourceRejectedError for poison."""
    if value is None:
        raise SourceRejectedError("empty message", code="malformed_event")
    event = _parse(value)
    if isinstance(event, SeriesReady):
        return [series_job(event, settings)]
    out: list[SlideJob | Skip] = []
    for rec in event.records:
        if not rec.is_create:
            out.append(Skip("not_create"))
            continue
        key = rec.key
        _check_source(rec.bucket, key, settings)
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
