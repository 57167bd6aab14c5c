"""Real bucket-notification shapes on histoprompt.slides.incoming: MinIO's (captured from the
pinned MinIO server's Kafka target) and AWS S3's (the documented event message structure).

Both URL-encode the object key as a form value: a space is `+`, a literal `+` is `%2B`,
`%` is `%25`, non-ASCII is UTF-8 `%XX`; MinIO also encodes `/` as `%2F`, AWS does not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.schemas import S3Event, slide_id_for
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.settings import IngestSettings

SAMPLES = Path(__file__).parent / "assets" / "s3_events"


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


# Captured verbatim from `minio server` (2026-02-12 pseudo-version) on the local stack:
# `put_object("histoprompt-slides", "uploads/a b/ü+x%.svs", ...)`.
MINIO_PUT = _sample("minio_put.json")

# The same server, a 12 MiB object put in three 5 MiB parts: the etag is `<md5>-<parts>`.
MINIO_MULTIPART = _sample("minio_multipart.json")

# AWS S3 event message structure (version 2.1), as S3 sends it to SQS, SNS or Lambda: no
# `s3:` prefix on eventName, `/` not encoded in the key.
AWS_MULTIPART = _sample("aws_multipart.json")

# What S3 sends once when a notification configuration is saved: no Records.
AWS_TEST_EVENT = _sample("aws_test_event.json")

# EventBridge's "Object Created" shape: its key is NOT URL-encoded, so it is not accepted.
EVENTBRIDGE = _sample("eventbridge_object_created.json")


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings(_env_file=None, slides_bucket="histoprompt-slides")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("raw", "key", "size", "etag", "event_name"),
    [
        (
            MINIO_PUT,
            "uploads/a b/ü+x%.svs",
            5,
            "5d41402abc4b2a76b9719d911017c592",
            "s3:ObjectCreated:Put",
        ),
        (
            MINIO_MULTIPART,
            "uploads/multi part.svs",
            12582912,
            "191a9b95dc0ec4b217b1dcb654c0df39-3",
            "s3:ObjectCreated:CompleteMultipartUpload",
        ),
        (
            AWS_MULTIPART,
            "scanner-01/site A/über 1+2.svs",
            734003200,
            "a1f3c2e0b9d84c6e8f7a6b5c4d3e2f10-44",
            "ObjectCreated:CompleteMultipartUpload",
        ),
    ],
    ids=["minio-put", "minio-multipart", "aws-multipart"],
)
def test_real_notifications_become_the_right_slide_job(
    settings: IngestSettings, raw: str, key: str, size: int, etag: str, event_name: str
) -> None:
    (record,) = S3Event.parse(raw).records
    assert record.event_name == event_name
    assert record.is_create
    assert record.key == key  # decoded once: `+` is a space, %2B a plus, %25 a percent
    (job,) = parse_jobs(raw.encode(), settings)
    assert isinstance(job, SlideJob)
    assert (job.bucket, job.key, job.etag, job.size, job.kind) == (
        "histoprompt-slides",
        key,
        etag,
        size,
        "single",
    )
    assert job.slide_id == slide_id_for("histoprompt-slides", key, etag)


def test_minio_top_level_key_is_not_used() -> None:
    """MinIO's `Key` (`bucket/key`, decoded) is also the Kafka message key; the record's
    key is the contract, so a producer without the top-level fields parses the same."""
    event = json.loads(MINIO_PUT)
    bare = {"Records": event["Records"]}
    assert S3Event.parse(json.dumps(bare)).records[0].key == "uploads/a b/ü+x%.svs"


def test_keys_are_decoded_exactly_once() -> None:
    """A key that itself looks encoded survives: `%2541` in the event is the key `%41`."""
    event = json.loads(MINIO_PUT)
    event["Records"][0]["s3"]["object"]["key"] = "a%2F%2541+%2B.svs"
    assert S3Event.parse(json.dumps(event)).records[0].key == "a/%41 +.svs"


def test_make_round_trips_through_the_minio_encoding() -> None:
    """The CLI's own event (S3Event.make) encodes as MinIO and AWS do, so it decodes back."""
    for key in ("uploads/a b/ü+x%.svs", "x/über 1+2 %41.svs", "plain/slide.svs"):
        made = S3Event.make("histoprompt-slides", key, 1, "e")
        assert S3Event.parse(json.dumps(made)).records[0].key == key


@pytest.mark.parametrize("raw", [AWS_TEST_EVENT, EVENTBRIDGE], ids=["s3-test-event", "eventbridge"])
def test_shapes_that_are_not_notifications_are_malformed(raw: str) -> None:
    """No Records: S3's configuration test event and EventBridge's shape are dead-lettered
    as malformed_event (README: route S3 -> SQS -> Kafka, not EventBridge)."""
    with pytest.raises(InvalidInputError) as info:
        S3Event.parse(raw)
    assert info.value.code == "malformed_event"
