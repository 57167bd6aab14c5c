"""S3 access held to the allow-listed buckets and prefixes, and keys that are path tricks
refused before any GET: each refused kind as a bucket notification carries it (MinIO's real
shape, URL-encoded), the DLQ record it becomes, and series manifests naming other folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.ingest_seams import fast_settings, incoming_message
from test_ingest_service_logic import FakeProcessor, _consume_until

from histoprompt.core.object_keys import MAX_KEY_BYTES, key_problem
from histoprompt.core.schemas import S3Event
from histoprompt.ingest.errors import SourceRejectedError
from histoprompt.ingest.events import SlideJob, parse_jobs
from histoprompt.ingest.memory_io import InMemoryEventSource, InMemoryResultSink
from histoprompt.ingest.service import IngestService
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.sources import manifest_member_key

MINIO_PUT = (Path(__file__).parent / "assets" / "s3_events" / "minio_put.json").read_text()

# (id, the key as it sits URL-encoded in the notification, the rule that refuses it)
REFUSED = [
    ("dot-dot", "up/..%2Fother/x.svs", "dot segment"),
    ("dot-dot-segment", "up/../other/x.svs", "dot segment"),
    ("single-dot", "up/./x.svs", "dot segment"),
    ("absolute", "%2Fetc%2Fpasswd", "absolute path"),
    ("backslash", "up%5C..%5Cx.svs", "backslash"),
    ("nul", "up/x.svs%00.png", "control or format"),
    ("control", "up/x%0A.svs", "control or format"),
    ("bidi-override", "up/x%E2%80%AEsvs.exe", "control or format"),
    ("zero-width", "up/%E2%80%8B/x.svs", "control or format"),
    ("overlong-utf8", "up/%C0%AE%C0%AE/x.svs", "not valid UTF-8"),
    ("invalid-utf8", "up/%FF%FE.svs", "not valid UTF-8"),
    ("encoded-dot-dot", "up/%252e%252e/x.svs", "after URL-decoding"),
    ("encoded-slash", "up/..%252fx.svs", "after URL-decoding"),
    ("encoded-nul", "up/x%2500.svs", "after URL-decoding"),
    ("double-encoded-dot-dot", "up/%25252e%25252e/x.svs", "after URL-decoding"),
    ("triple-encoded-slash", "up/..%2525252fx.svs", "after URL-decoding"),
    ("encoded-fullwidth-dots", "up/%25EF%25BC%258E%25EF%25BC%258E/x.svs", "after NFKC"),
    ("nested-too-deep", "up/%" + "25" * 10 + "41.svs", "levels deep"),
    ("fullwidth-dots", "up/%EF%BC%8E%EF%BC%8E/x.svs", "after NFKC"),
    ("fullwidth-solidus", "up%EF%BC%8F..%EF%BC%8Fx.svs", "after NFKC"),
    ("one-dot-leader", "up/%E2%80%A4%E2%80%A4/x.svs", "after NFKC"),
    ("empty-segment", "up//x.svs", "empty path segment"),
    ("folder", "up/folder%2F", "folder"),
    ("too-long", "a" * (MAX_KEY_BYTES + 1), "longer than"),
]


def _minio_event(encoded_key: str, bucket: str = "histoprompt-slides") -> bytes:
    """MinIO's captured notification with another (already URL-encoded) key."""
    event = json.loads(MINIO_PUT)
    event["Records"][0]["s3"]["object"]["key"] = encoded_key
    event["Records"][0]["s3"]["bucket"]["name"] = bucket
    return json.dumps(event).encode()


@pytest.fixture
def settings() -> IngestSettings:
    return IngestSettings(_env_file=None, slides_bucket="histoprompt-slides")  # type: ignore[call-arg]


@pytest.mark.parametrize(("encoded", "rule"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_each_kind_of_path_trick_is_refused(
    settings: IngestSettings, encoded: str, rule: str
) -> None:
    with pytest.raises(SourceRejectedError) as info:
        parse_jobs(_minio_event(encoded), settings)
    assert info.value.code == "unsafe_key"
    assert rule in info.value.message
    key = S3Event.parse(_minio_event(encoded)).records[0].key
    assert key not in info.value.message  # the reason names the rule, never the key


@pytest.mark.parametrize(
    "key",
    [
        "uploads/a b/ü+x%.svs",
        "scanner-01/site A/über 1+2.svs",
        "x/%41 +.svs",
        "x/100%25 sure/%2541.svs",  # literal percent signs that decode to ordinary names
        "x/%" + "25" * 7 + "41.svs",  # "A" encoded 8 times: nested, within MAX_DECODES
        "a/..b/c..d/x.y.svs",
        "café/e\u0301.svs",  # NFD and NFC are both ordinary keys
        "a" * MAX_KEY_BYTES,
    ],
)
def test_ordinary_keys_pass(key: str) -> None:
    assert key_problem(key) is None


def test_access_is_held_to_the_allow_lists() -> None:
    strict = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        ingest_allowed_buckets="scans",
        ingest_allowed_prefixes="scanner/",
    )
    assert isinstance(parse_jobs(_minio_event("scanner/a.svs", "scans"), strict)[0], SlideJob)
    for encoded, bucket, code in [
        ("scanner/a.svs", "histoprompt-slides", "forbidden_source"),
        ("other/a.svs", "scans", "forbidden_source"),
        ("scanner/../other/a.svs", "scans", "unsafe_key"),  # inside the prefix as a string
        ("scanner/%2e%2e/other/a.svs", "scans", "unsafe_key"),
    ]:
        with pytest.raises(SourceRejectedError) as info:
            parse_jobs(_minio_event(encoded, bucket), strict)
        assert info.value.code == code, encoded


@pytest.mark.parametrize(("encoded", "rule"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_keys_go_to_the_dlq_with_their_reason(encoded: str, rule: str) -> None:
    svc = IngestService(fast_settings(slides_bucket="histoprompt-slides"))
    source = InMemoryEventSource([incoming_message(_minio_event(encoded))])
    sink, proc = InMemoryResultSink(), FakeProcessor()
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert proc.calls == []  # nothing was read
    [(_, dlq)] = sink.dlq
    assert dlq.error.code == "unsafe_key" and rule in dlq.error.message
    assert dlq.attempts == 1
    assert sink.results == []


def test_a_series_manifest_names_only_its_own_folder() -> None:
    assert (
        manifest_member_key("up/t/manifest.json", "instance-0000.dcm") == "up/t/instance-0000.dcm"
    )
    assert manifest_member_key("up/t/manifest.json", "up/t/i1.dcm") == "up/t/i1.dcm"
    assert manifest_member_key("manifest.json", "i1.dcm") == "i1.dcm"
    for member in ["other/i1.dcm", "up/t/sub/i1.dcm", "up/t/../../x.dcm", "/up/t/i1.dcm", "a\\b"]:
        with pytest.raises(SlideError) as info:
            manifest_member_key("up/t/manifest.json", member)
        assert info.value.code == "unsafe_key", member
