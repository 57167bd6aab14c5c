"""What a DLQ record holds (docs/architecture.md, DlqEvent): the slides a replay needs and a
fingerprint of the message, never the message itself; reasons scrubbed of object keys."""

from __future__ import annotations

import hashlib
import json

from histoprompt.core import names
from histoprompt.core.schemas import DlqEvent, ErrorInfo, S3Event, SeriesMember, SeriesReady
from histoprompt.ingest.ports import Message
from histoprompt.ingest.publish import MESSAGE_MAX, dlq_event, scrub
from histoprompt.ingest.settings import IngestSettings

# SYNTHETIC identifiers: a scanner path with a made-up patient name in it.
PHI_KEY = "scanner7/DOE^JANE_1970-01-01/slide 3.svs"
SETTINGS = IngestSettings.model_validate({"slides_bucket": "b", "ingest_metrics_port": 0})


def _event(value: bytes | None, message: str) -> DlqEvent:
    msg = Message(value, b"b/" + PHI_KEY.encode(), names.TOPIC_INCOMING, 2, 41)
    error = ErrorInfo(code="s3_unavailable", message=message)
    return dlq_event(msg, error, 3, "2026-12-01T00:00:00.000Z", SETTINGS)


def test_a_slide_record_keeps_what_replay_needs_and_no_raw_message() -> None:
    raw = S3Event.make("b", PHI_KEY, 123, "etag1")
    raw["Records"][0]["userIdentity"] = {"principalId": "scanner-gateway-7"}
    value = json.dumps(raw).encode()
    event = _event(value, f"GET b/{PHI_KEY} failed:\n  connection refused to slide 3.svs")
    [slide] = event.slides
    assert (slide.bucket, slide.key, slide.etag, slide.size) == ("b", PHI_KEY, "etag1", 123)
    assert event.incoming is not None
    assert event.incoming.sha256 == hashlib.sha256(value).hexdigest()
    assert (event.incoming.partition, event.incoming.offset) == (2, 41)
    wire = event.to_json().decode()
    assert "scanner-gateway-7" not in wire and "userIdentity" not in wire
    # The key is in slides[].key only: the reason text lost it and its file name.
    assert wire.count("DOE^JANE") == 1
    assert event.error.message == "GET b/<key> failed: connection refused to <key>"


def test_a_malformed_message_keeps_only_its_fingerprint() -> None:
    event = _event(b"PatientName=DOE^JANE not json", "not an S3 event")
    assert event.slides == []
    assert "DOE" not in event.to_json().decode()


def test_an_assembled_series_is_kept_whole_for_replay_and_scrubbed_of_member_keys() -> None:
    members = [
        SeriesMember(key=f"scan/DOE^JANE/level{i}.dcm", etag=f"e{i}", size=10 - i, flavor="VOLUME")
        for i in range(2)
    ]
    ready = SeriesReady(
        bucket="b", series_key="a" * 32, slide_id="x", trigger="settle", members=members
    )
    event = _event(ready.to_json(), "reading scan/DOE^JANE/level1.dcm timed out")
    [slide] = event.slides
    assert slide.series is not None and slide.series.members == members
    assert event.error.message == "reading <key> timed out"


def test_scrub_bounds_the_reason_to_one_line() -> None:
    assert scrub("a\nb\tc", []) == "a b c"
    long = scrub("x" * 1000, [])
    assert len(long) == MESSAGE_MAX and long.endswith("…")
