"""S3 notification parsing into slide jobs: encoded keys, skips, series, poison."""

from __future__ import annotations

import json

import pytest

from histoprompt.core.schemas import S3Event, slide_id_for
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import Skip, SlideJob, parse_jobs
from histoprompt.ingest.settings import IngestSettings


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings(_env_file=None, slides_bucket="slides")  # type: ignore[call-arg]


def _event(key: str, bucket: str = "slides", name: str = "s3:ObjectCreated:Put") -> bytes:
    return json.dumps(S3Event.make(bucket, key, 10, '"abc"', event_name=name)).encode()


def test_url_encoded_key_is_decoded(settings: IngestSettings) -> None:
    raw = _event("up/a b+c%/slide.svs")
    assert b"a+b%2Bc%25" in raw  # what MinIO sends
    (job,) = parse_jobs(raw, settings)
    assert isinstance(job, SlideJob)
    assert job.key == "up/a b+c%/slide.svs"
    assert job.kind == "single"
    assert job.etag == "abc"
    assert job.slide_id == slide_id_for("slides", "up/a b+c%/slide.svs", "abc")


def test_non_create_and_series_members_are_skipped(settings: IngestSettings) -> None:
    assert parse_jobs(_event("x/slide.svs", name="s3:ObjectRemoved:Delete"), settings) == [
        Skip("not_create")
    ]
    assert parse_jobs(_event("x/instance-0001.dcm"), settings) == [Skip("series_member")]


def test_manifest_is_a_series(settings: IngestSettings) -> None:
    (job,) = parse_jobs(_event("up/tok/manifest.json"), settings)
    assert isinstance(job, SlideJob) and job.kind == "series"


def test_aws_style_event_name(settings: IngestSettings) -> None:
    (job,) = parse_jobs(_event("a.svs", name="ObjectCreated:CompleteMultipartUpload"), settings)
    assert isinstance(job, SlideJob)


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[]", b'{"Records": [{"eventName": 1}]}', b'{"Records": []}', None]
)
def test_malformed_is_rejected(settings: IngestSettings, raw: bytes | None) -> None:
    with pytest.raises(SourceRejectedError) as info:
        parse_jobs(raw, settings)
    assert info.value.code == "malformed_event"


def test_allow_lists(settings: IngestSettings) -> None:
    with pytest.raises(SourceRejectedError) as info:
        parse_jobs(_event("a.svs", bucket="elsewhere"), settings)
    assert info.value.code == "forbidden_source"
    strict = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        ingest_allowed_buckets="b1, b2",
        ingest_allowed_prefixes="scanner/",
    )
    assert strict.allowed_buckets() == ("b1", "b2")
    assert isinstance(parse_jobs(_event("scanner/a.svs", bucket="b2"), strict)[0], SlideJob)
    with pytest.raises(SourceRejectedError):
        parse_jobs(_event("other/a.svs", bucket="b2"), strict)


def test_a_prefix_is_a_folder() -> None:
    """`scanner` admits scanner/... only, not a sibling folder that starts the same."""
    s = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        slides_bucket="slides",
        ingest_allowed_prefixes="scanner",
    )
    assert s.ingest_allowed_prefixes == ("scanner/",)
    assert isinstance(parse_jobs(_event("scanner/a.svs"), s)[0], SlideJob)
    with pytest.raises(SourceRejectedError) as info:
        parse_jobs(_event("scanner-evil/a.svs"), s)
    assert info.value.code == "forbidden_source"


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTOPROMPT_INGEST_CONCURRENCY", "3")
    monkeypatch.setenv("HISTOPROMPT_INGEST_ALLOWED_PREFIXES", "a/,b/")
    s = IngestSettings(_env_file=None)  # type: ignore[call-arg]
    assert s.ingest_concurrency == 3
    assert s.ingest_allowed_prefixes == ("a/", "b/")
