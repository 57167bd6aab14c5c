"""Service logic with fakes: retries then DLQ, failed slides, commits stop at released work."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from kafka.structs import TopicPartition

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import DlqEvent, ModelRef, ResultEvent, S3Event, SourceRef
from histoprompt.ingest.pipeline import SlideOutcome
from histoprompt.ingest.service import IngestService
from histoprompt.ingest.settings import IngestSettings


@dataclass
class Msg:
    value: bytes | None
    offset: int = 0
    partition: int = 0
    topic: str = names.TOPIC_INCOMING
    key: bytes | None = b"k"
    timestamp: int = 0


class FakeFuture:
    def get(self, timeout: float) -> None:
        return None


@dataclass
class FakeProducer:
    sent: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)

    def send(self, topic: str, key: bytes | None, value: bytes) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture()


@dataclass
class FakeProcessor:
    fail_times: int = 0
    calls: int = 0

    async def process(self, job: Any) -> SlideOutcome:
        self.calls += 1
        if self.calls <= self.fail_times:
            raise TransientError("Triton UNAVAILABLE", code="triton_unavailable")
        event = ResultEvent(
            slide_id=job.slide_id,
            source=SourceRef(bucket=job.bucket, key=job.key, etag=job.etag),
            model=ModelRef(name="tiny", version="v1"),
            status="done",
        )
        return SlideOutcome("done", event, 3)


def _settings(**kw: Any) -> IngestSettings:
    return IngestSettings(  # type: ignore[call-arg]
        _env_file=None, slides_bucket="b", ingest_retry_base_s=0.001, **kw
    )


def _value(key: str = "x/slide.svs") -> bytes:
    return json.dumps(S3Event.make("b", key, 1, "e")).encode()


def test_transient_errors_retry_then_dead_letter() -> None:
    svc = IngestService(_settings(ingest_max_attempts=3))
    prod, proc = FakeProducer(), FakeProcessor(fail_times=10)
    asyncio.run(svc._handle(Msg(_value()), prod, proc))  # type: ignore[arg-type]
    assert proc.calls == 3
    assert [t for t, _, _ in prod.sent] == [names.TOPIC_DLQ]
    dlq = DlqEvent.model_validate_json(prod.sent[0][2])
    assert dlq.attempts == 3 and dlq.error.code == "triton_unavailable"
    assert dlq.original["Records"][0]["s3"]["bucket"]["name"] == "b"
    assert svc.metrics.slides.labels(status="dlq")._value.get() == 1


def test_transient_error_then_success_publishes_one_result() -> None:
    svc = IngestService(_settings(ingest_max_attempts=3))
    prod, proc = FakeProducer(), FakeProcessor(fail_times=1)
    asyncio.run(svc._handle(Msg(_value()), prod, proc))  # type: ignore[arg-type]
    assert [t for t, _, _ in prod.sent] == [names.TOPIC_RESULTS]
    assert svc.metrics.slides.labels(status="done")._value.get() == 1


def test_malformed_goes_to_dlq_at_once() -> None:
    svc = IngestService(_settings())
    prod, proc = FakeProducer(), FakeProcessor()
    asyncio.run(svc._handle(Msg(b"\xff\xfe not json"), prod, proc))  # type: ignore[arg-type]
    assert proc.calls == 0
    dlq = DlqEvent.model_validate_json(prod.sent[0][2])
    assert dlq.error.code == "malformed_event" and dlq.attempts == 1


class FakeConsumer:
    def __init__(self) -> None:
        self.committed: dict[Any, Any] = {}
        self.seeks: list[tuple[Any, int]] = []

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.committed.update(offsets)

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


def test_commit_stops_at_the_first_released_message() -> None:
    svc = IngestService(_settings())
    msgs = [Msg(b"", offset=o, partition=p) for p, o in [(0, 5), (0, 6), (0, 7), (1, 3)]]
    handled = {id(msgs[0]), id(msgs[2]), id(msgs[3])}  # partition 0 offset 6 was released
    consumer = FakeConsumer()
    svc._commit(consumer, msgs, handled)
    tp0, tp1 = TopicPartition(names.TOPIC_INCOMING, 0), TopicPartition(names.TOPIC_INCOMING, 1)
    assert consumer.committed[tp0].offset == 6  # offset 5 done; 6 must be redelivered
    assert consumer.committed[tp1].offset == 4
    assert consumer.seeks == [(tp0, 6)]
