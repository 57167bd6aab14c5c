"""Unit tests for the wire contracts of docs/architecture.md (Kafka messages, S3 manifests)."""

from __future__ import annotations

import json
import re

import pytest

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.schemas import ResultEvent, S3Event, slide_id_for


def test_slide_id_is_16_hex_and_ignores_etag_quotes() -> None:
    a = slide_id_for("b", "k/x.svs", "abc")
    assert re.fullmatch(r"[0-9a-f]{16}", a)
    assert a == slide_id_for("b", "k/x.svs", '"abc"')
    assert a != slide_id_for("b", "k/x.svs", "abd")


def test_s3_event_roundtrip_decodes_url_encoded_key() -> None:
    raw = json.dumps(S3Event.make("slides", "site a/slide 1+2.svs", 10, "e1"))
    ev = S3Event.parse(raw)
    rec = ev.records[0]
    assert rec.is_create
    assert rec.key == "site a/slide 1+2.svs"
    assert rec.bucket == "slides" and rec.etag == "e1" and rec.s3.object.size == 10


def test_non_create_event_is_recognised() -> None:
    raw = json.dumps(S3Event.make("b", "k", 1, "e", event_name="s3:ObjectRemoved:Delete"))
    assert not S3Event.parse(raw).records[0].is_create


@pytest.mark.parametrize("raw", [b"{not json", b'{"Records": [{"eventName": 1}]}', b"[]"])
def test_malformed_event_raises_one_clear_error(raw: bytes) -> None:
    with pytest.raises(InvalidInputError) as info:
        S3Event.parse(raw)
    assert info.value.code == "malformed_event"
    assert "not an S3 event notification" in str(info.value)


def test_result_event_serialises_schema_alias() -> None:
    ev = ResultEvent(
        slide_id="0" * 16,
        source={"bucket": "b", "key": "k", "etag": "e"},
        model={"name": "m", "version": "1"},
        status="done",
    )
    data = json.loads(ev.to_json())
    assert data["schema"] == 1 and data["status"] == "done" and data["error"] is None
