"""`histoprompt dlq list|replay`: every documented example through CliRunner, against
in-memory fakes of the DLQ topic, S3 and the producer (the real services:
tests/integration/test_dlq_replay.py). Replay sends each record once, as the bucket holds
the object now; no command prints an object key."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest
from typer.testing import CliRunner

from histoprompt.client import dlq, services
from histoprompt.client.cli import app
from histoprompt.core import names
from histoprompt.core.schemas import DlqEvent, DlqSlide, ErrorInfo, IncomingRef, slide_id_for

DLQ_EXAMPLES = [
    "histoprompt dlq list",
    "histoprompt dlq list --reason crash_loop --json",
    "histoprompt dlq replay --reason deadline_exceeded --dry-run",
    "histoprompt dlq replay --dry-run",
    "histoprompt dlq replay --slide 0123456789abcdef",
]
# SYNTHETIC keys; one names a made-up patient, as scanner paths sometimes do.
PHI_KEY = "scans/DOE^JANE/slide.svs"
SID = "0123456789abcdef"

pytestmark = pytest.mark.usefixtures("clean_histoprompt_env")
runner = CliRunner()


def run(example: str) -> Any:
    assert example in DLQ_EXAMPLES
    return runner.invoke(app, ["--json", *shlex.split(example)[1:]])


@dataclass
class _Stat:
    size: int
    etag: str


@dataclass
class _Obj:
    object_name: str


@dataclass
class FakeS3:
    objects: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)

    def stat_object(self, bucket: str, key: str) -> _Stat:
        from minio.error import S3Error

        if (bucket, key) not in self.objects:
            raise S3Error(None, "NoSuchKey", "missing", key, "r", "h")  # type: ignore[arg-type]
        data, etag = self.objects[(bucket, key)]
        return _Stat(len(data), f'"{etag}"')

    def put_object(self, bucket: str, key: str, data: Any, length: int, **kw: Any) -> None:
        self.objects[(bucket, key)] = (data.read(length), "m")

    def list_objects(self, bucket: str, prefix: str = "", recursive: bool = False) -> list[_Obj]:
        return [_Obj(k) for b, k in self.objects if b == bucket and k.startswith(prefix)]


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes, bytes]] = field(default_factory=list)

    def send(self, topic: str, key: bytes, value: bytes) -> Any:
        self.sent.append((topic, key, value))
        return self

    def get(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None


def _record(offset: int, code: str, slides: list[DlqSlide]) -> dlq.DlqRecord:
    event = DlqEvent(
        error=ErrorInfo(code=code, message=f"{code} happened"),
        attempts=2,
        first_seen="2026-12-01T00:00:00.000Z",
        last_seen="2026-12-01T00:01:00.000Z",
        incoming=IncomingRef(topic=names.TOPIC_INCOMING, partition=0, offset=9, size=3, sha256="a"),
        slides=slides,
    )
    return dlq.DlqRecord(0, offset, event)


def _slide(key: str, sid: str, etag: str = "old") -> DlqSlide:
    return DlqSlide(slide_id=sid, bucket="histoprompt-slides", key=key, etag=etag, size=3)


RECORDS = [
    _record(0, "crash_loop", [_slide(PHI_KEY, SID)]),
    _record(1, "deadline_exceeded", [_slide("scans/b.svs", "b" * 16)]),
    _record(2, "malformed_event", []),
    _record(3, "deadline_exceeded", [_slide("scans/gone.svs", "c" * 16)]),
]


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeS3, FakeProducer]:
    s3, producer = FakeS3(), FakeProducer()
    # The crash-looping slide was fixed: its object replaced (new bytes, new etag).
    s3.objects[("histoprompt-slides", PHI_KEY)] = (b"fixed", "new1")
    s3.objects[("histoprompt-slides", "scans/b.svs")] = (b"abc", "old")
    monkeypatch.setattr(dlq, "read_records", lambda settings: RECORDS)
    monkeypatch.setattr(services, "minio_client", lambda settings: s3)
    monkeypatch.setattr(services, "kafka_producer", lambda settings: producer)
    return s3, producer


def test_example_list_shows_reasons_and_counts_without_keys(fakes: Any) -> None:
    res = run("histoprompt dlq list")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["by_reason"] == {"crash_loop": 1, "deadline_exceeded": 2, "malformed_event": 1}
    assert [r["record"] for r in doc["records"]] == ["0:0", "0:1", "0:2", "0:3"]
    assert doc["records"][0]["slides"] == SID and doc["records"][2]["slides"] == "-"
    assert "DOE" not in res.output and "scans/" not in res.output


def test_example_list_by_reason(fakes: Any) -> None:
    res = run("histoprompt dlq list --reason crash_loop --json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert [r["record"] for r in doc["records"]] == ["0:0"]
    assert doc["by_reason"] == {"crash_loop": 1}
    assert doc["records"][0]["replayed"] == "no"


def test_example_dry_run_sends_nothing(fakes: tuple[FakeS3, FakeProducer]) -> None:
    s3, producer = fakes
    res = run("histoprompt dlq replay --reason deadline_exceeded --dry-run")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert [(r["record"], r["outcome"]) for r in rows] == [
        ("0:1", "would send"),
        ("0:3", "object missing"),
    ]
    assert rows[0]["sent_as"] == slide_id_for("histoprompt-slides", "scans/b.svs", "old")
    assert producer.sent == []
    assert not any(k.startswith(dlq.MARKERS) for _, k in s3.objects)


def test_example_replay_of_a_fixed_slide_sends_it_once_as_the_new_object(
    fakes: tuple[FakeS3, FakeProducer],
) -> None:
    s3, producer = fakes
    res = run("histoprompt dlq replay --slide 0123456789abcdef")
    assert res.exit_code == 0, res.output
    new_sid = slide_id_for("histoprompt-slides", PHI_KEY, "new1")
    [row] = json.loads(res.output)
    assert (row["record"], row["slide"], row["sent_as"], row["outcome"]) == (
        "0:0",
        SID,
        new_sid,
        "sent",
    )
    [(topic, key, value)] = producer.sent
    assert topic == names.TOPIC_INCOMING and key == new_sid.encode()
    obj = json.loads(value)["Records"][0]["s3"]["object"]
    assert (obj["eTag"], obj["size"]) == ("new1", 5)
    assert ("histoprompt-results", "dlq/replayed/0/0.json") in s3.objects
    assert "DOE" not in res.output

    again = run("histoprompt dlq replay --slide 0123456789abcdef")
    assert again.exit_code == 0, again.output
    assert [r["outcome"] for r in json.loads(again.output)] == ["already replayed"]
    assert len(producer.sent) == 1  # the second run sent nothing


def test_replay_of_everything_skips_what_cannot_be_replayed(
    fakes: tuple[FakeS3, FakeProducer],
) -> None:
    dry = run("histoprompt dlq replay --dry-run")
    assert dry.exit_code == 0, dry.output
    would = {r["record"]: r["outcome"] for r in json.loads(dry.output)}
    assert fakes[1].sent == []
    res = runner.invoke(app, ["--json", "dlq", "replay"])
    assert res.exit_code == 0, res.output
    outcomes = {r["record"]: r["outcome"] for r in json.loads(res.output)}
    assert outcomes == {
        "0:0": "sent",
        "0:1": "sent",
        "0:2": "nothing to replay",
        "0:3": "object missing",
    }
    assert would == outcomes | {"0:0": "would send", "0:1": "would send"}
    assert len(fakes[1].sent) == 2
