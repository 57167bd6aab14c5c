"""Wire schemas (docs/architecture.md, sections 3 and 4): S3 events, result/DLQ events, manifests.

All are pydantic models; parse at the boundary and pass typed objects inside.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from histoprompt.core.errors import InvalidInputError

SCHEMA_VERSION = 1
# The DLQ record dropped the message as received for its slides and a fingerprint (issue 17).
DLQ_SCHEMA_VERSION = 2


def slide_id_for(bucket: str, key: str, etag: str) -> str:
    """First 16 hex chars of sha256 over `bucket/key@etag`; never derived from patient data."""
    digest = hashlib.sha256(f"{bucket}/{key}@{etag.strip(chr(34))}".encode()).hexdigest()
    return digest[:16]


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class S3Bucket(_Frozen):
    name: str


class S3Object(_Frozen):
    key: str
    size: int = 0
    etag: str = Field("", alias="eTag")
    version_id: str | None = Field(None, alias="versionId")


class S3Entity(_Frozen):
    bucket: S3Bucket
    object: S3Object


class S3Record(_Frozen):
    event_name: str = Field(alias="eventName")
    s3: S3Entity

    @property
    def is_create(self) -> bool:
        # AWS sends "ObjectCreated:Put", MinIO "s3:ObjectCreated:Put".
        return self.event_name.removeprefix("s3:").startswith("ObjectCreated:")

    @property
    def bucket(self) -> str:
        return self.s3.bucket.name

    @property
    def key(self) -> str:
        """The object key, URL-decoded as S3 notifications encode it."""
        return unquote_plus(self.s3.object.key)

    @property
    def etag(self) -> str:
        return self.s3.object.etag.strip('"')


class S3Event(_Frozen):
    records: list[S3Record] = Field(alias="Records")

    @classmethod
    def parse(cls, raw: bytes | str) -> S3Event:
        """Parse a notification; malformed JSON or shape raises InvalidInputError."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise InvalidInputError(
                f"not an S3 event notification: {first.get('msg')} at {where or 'top level'}",
                code="malformed_event",
            ) from err

    @staticmethod
    def make(
        bucket: str, key: str, size: int, etag: str, event_name: str = "s3:ObjectCreated:Put"
    ) -> dict[str, Any]:
        """An AWS/MinIO-format notification for one object (used when notifications are off)."""
        from urllib.parse import quote_plus

        return {
            "Records": [
                {
                    "eventVersion": "2.0",
                    "eventSource": "histoprompt:s3",
                    "eventTime": utcnow(),
                    "eventName": event_name,
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag},
                    },
                }
            ]
        }


class SourceRef(_Frozen):
    bucket: str
    key: str
    etag: str


class ModelRef(_Frozen):
    name: str
    version: str


class Timings(_Frozen):
    read: float = 0.0
    infer: float = 0.0
    total: float = 0.0


class ErrorInfo(_Frozen):
    code: str
    message: str


class ResultEvent(_Frozen):
    """Value on `histoprompt.slides.results`."""

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    slide_id: str
    source: SourceRef
    model: ModelRef
    status: Literal["done", "failed"]
    result_uri: str | None = None
    n_tiles: int = 0
    seconds: Timings = Timings()
    error: ErrorInfo | None = None

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class IncomingRef(_Frozen):
    """Where a dead-lettered message was on the incoming topic, and a fingerprint of its
    value: the value itself is not kept (it may carry anything, including patient data)."""

    topic: str
    partition: int
    offset: int
    size: int = Field(ge=0, description="bytes of the value")
    sha256: str = Field(description="hex sha256 of the value (of b'' for an empty one)")


class DlqSlide(_Frozen):
    """One slide of a dead-lettered message: what `histoprompt dlq replay` sends again."""

    slide_id: str
    bucket: str
    key: str = Field(description="the object key (the manifest's for a series); see DlqEvent")
    etag: str
    size: int = 0
    series: SeriesReady | None = Field(None, description="an assembled series: sent as is")


class DlqEvent(_Frozen):
    """Value on `histoprompt.slides.dlq` (DLQ_SCHEMA_VERSION 2): why a message could not be
    handled, its slides (bucket, key, etag: what a replay needs) and where it was, never
    the message as received. Malformed or refused messages have no slides."""

    schema_: int = Field(DLQ_SCHEMA_VERSION, alias="schema")
    error: ErrorInfo
    attempts: int
    first_seen: str
    last_seen: str
    incoming: IncomingRef | None = None
    slides: list[DlqSlide] = []

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()


class PathwayScore(_Frozen):
    score: float
    method: str
    coverage: float
    percentile: float | None = Field(
        None, description="0-100: where the score falls among the reference's scores of the set"
    )
    z: float | None = Field(None, description="(score - reference mean) / reference sd")


class ResultManifest(_Frozen):
    """`manifest.json`, written last in a result prefix: its presence means the result is whole."""

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    slide_id: str
    source: SourceRef
    model: ModelRef
    status: Literal["done", "failed"]
    n_tiles: int
    seconds: Timings
    software_version: str
    created: str = Field(default_factory=utcnow)
    objects: list[str] = Field(default_factory=list)
    synthetic: bool = Field(False, description="true when the slide or model is synthetic")
    error: ErrorInfo | None = Field(None, description="why a failed slide failed")
    written_by: str | None = Field(
        None, description="the delivery that wrote it: <group>/<topic>/<partition>/<offset>"
    )


class SeriesInstance(_Frozen):
    key: str
    size: int = Field(ge=0)


class SeriesManifest(_Frozen):
    """`manifest.json` of a DICOM-WSI series upload, written last by the uploader."""

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    kind: Literal["dicom-wsi-series"] = "dicom-wsi-series"
    instances: list[SeriesInstance] = Field(min_length=1)


# ImageType flavors a slide reader never reads pixels of; they join a series for its identity.
NON_VOLUME_FLAVORS = frozenset({"LABEL", "OVERVIEW"})


class SeriesMember(_Frozen):
    """One instance of an assembled DICOM-WSI series, as its bucket notification named it."""

    key: str
    etag: str
    size: int = Field(ge=0)
    flavor: str = Field(description="ImageType value 3: VOLUME, LABEL, OVERVIEW, THUMBNAIL")


def series_slide_id(bucket: str, series_key: str, members: list[SeriesMember]) -> str:
    """slide_id of an assembled series: the first 16 hex characters of sha256 over
    `<bucket>/dicom-series/<series_key>@<etags, sorted, comma-joined>`.

    A series of one instance is a single-file slide: its id is that object's
    (`slide_id_for`), the id `histoprompt submit` computes for a single DICOM file."""
    if len(members) == 1:
        return slide_id_for(bucket, members[0].key, members[0].etag)
    etags = ",".join(sorted(m.etag.strip('"') for m in members))
    return hashlib.sha256(f"{bucket}/dicom-series/{series_key}@{etags}".encode()).hexdigest()[:16]


class SeriesReady(_Frozen):
    """Value on `histoprompt.slides.incoming` (key: series_key) that ingest itself publishes
    when a DICOM-WSI series assembled from bucket notifications is complete."""

    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    kind: Literal["dicom-wsi-series-ready"] = "dicom-wsi-series-ready"
    bucket: str
    series_key: str = Field(description="sha256 of the study and series UIDs, 32 hex")
    slide_id: str
    trigger: Literal["settle", "manifest"]
    members: list[SeriesMember] = Field(min_length=1)

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()
