"""The worker leaves within its shutdown deadline whatever is down: every client call blocked
forever (settle, delivery counts, DLQ publish, close) is abandoned at the deadline; the Kafka
clients' own calls are bounded against a broker nobody answers at; a failed first try is
retried (tenacity's attempt swallows the error: a bug once made it an UnboundLocalError)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from helpers.ingest_logs import capture_ingest_logs
from helpers.ingest_seams import event_value, fast_settings, incoming_message

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import DlqEvent, ErrorInfo, ModelRef, ResultEvent, SourceRef
from histoprompt.ingest import kafka_io
from histoprompt.ingest.handler import MessageHandler
from histoprompt.ingest.memory_io import (
    InMemoryDeliveryLog,
    InMemoryEventSource,
    InMemoryResultSink,
)
from histoprompt.ingest.ports import Message
from histoprompt.ingest.service import IngestService
from histoprompt.ingest.settings import IngestSettings
from histoprompt.ingest.shutdown import run_bounded

TOPIC = names.TOPIC_INCOMING
UNREACHABLE = "127.0.0.1:9"  # discard port: nothing listens on loopback


def _msg(offset: int = 0) -> Message:
    return incoming_message(event_value(f"x/{offset}.svs"), offset)


class _Wedged:
    """Every call of `names` blocks until `release` is set (a service that went away)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.entered: list[str] = []

    def block(self, name: str) -> None:
        self.entered.append(name)
        self.release.wait()


class WedgedSource(InMemoryEventSource):
    def __init__(self, msgs: list[Message], wedge: _Wedged) -> None:
        super().__init__(msgs)
        self.wedge = wedge

    def settle(self, batch: Sequence[Message], handled: Sequence[Message]) -> list[Message]:
        self.wedge.block("settle")
        return super().settle(batch, handled)


class WedgedSink(InMemoryResultSink):
    def __init__(self, wedge: _Wedged) -> None:
        super().__init__()
        self.wedge = wedge

    def publish_dlq(self, event: DlqEvent, key: bytes | None) -> None:
        self.wedge.block("publish_dlq")


class WedgedLog(InMemoryDeliveryLog):
    def __init__(self, wedge: _Wedged) -> None:
        super().__init__()
        self.wedge = wedge

    def release(self, msg: Message) -> None:
        self.wedge.block("release")


class FailingProcessor:
    """S3 is down: every try fails, so the message heads for the DLQ (whose publish hangs)."""

    async def process(self, job: object) -> object:
        raise TransientError("S3 unreachable", code="s3_unavailable")


def test_stop_with_every_client_call_wedged_leaves_within_the_deadline() -> None:
    deadline_s = 1.0
    svc = IngestService(fast_settings(ingest_shutdown_deadline_s=deadline_s, ingest_max_attempts=2))
    release = threading.Event()
    wedge = _Wedged(release)
    source = WedgedSource([_msg()], wedge)

    async def main() -> int:
        task = asyncio.create_task(
            svc.consume(source, WedgedSink(wedge), FailingProcessor(), WedgedLog(wedge))  # type: ignore[arg-type]
        )
        while "publish_dlq" not in wedge.entered:
            await asyncio.sleep(0.01)
        svc.request_stop()
        await task
        return 0

    t0 = time.monotonic()
    try:
        with capture_ingest_logs() as logs:
            assert run_bounded(main(), svc._exit_by, hard_exit=False) == 0
        took = time.monotonic() - t0
    finally:
        release.set()  # let the abandoned threads end before pytest exits
    # Blocked in the DLQ publish, then in settle: both abandoned, nothing committed.
    assert wedge.entered[:2] == ["publish_dlq", "settle"], wedge.entered
    assert source.committed == {}
    assert took < deadline_s + 0.5, took
    lines = [json.loads(ln) for ln in logs.getvalue().splitlines()]
    assert any(d["msg"] == "abandoned at the shutdown deadline" for d in lines), lines
    assert any(d["msg"] == "abandoned blocked calls at the shutdown deadline" for d in lines)


def test_a_failed_first_try_of_a_retried_call_is_retried_not_crashed() -> None:
    settings = fast_settings(ingest_max_attempts=3)
    sink = InMemoryResultSink(fail_next=1)
    handler = MessageHandler(
        settings,
        sink,
        FailingProcessor(),
        InMemoryDeliveryLog(),
        IngestService(settings).metrics,  # type: ignore[arg-type]
    )
    asyncio.run(handler.handle(_msg()))
    # The DLQ publish failed once, then went out on its second try.
    assert len(sink.dlq) == 1
    assert sink.dlq[0][1].error.code == "s3_unavailable"


class _Unreachable(IngestSettings):
    """A broker address nobody answers at; the API version given, so the constructors do not
    spend their bootstrap timeout probing it (a broker that died after start-up)."""

    def kafka_config(self) -> dict[str, Any]:
        return super().kafka_config() | {"api_version": (3, 0)}


@pytest.fixture
def short_kafka_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SEND_TIMEOUT_S",
        "CLOSE_TIMEOUT_S",
        "COMMIT_TIMEOUT_S",
        "LAG_TIMEOUT_S",
        "METADATA_TIMEOUT_S",
    ):
        monkeypatch.setattr(kafka_io, name, 1.0)


@pytest.mark.usefixtures("short_kafka_timeouts")
def test_kafka_calls_and_close_are_bounded_when_the_broker_is_gone() -> None:
    settings = _Unreachable.model_validate(
        {"slides_bucket": "b", "kafka_bootstrap": UNREACHABLE, "ingest_metrics_port": 0}
    )
    sink = kafka_io.KafkaResultSink(settings)
    source = kafka_io.KafkaEventSource(settings)
    event = ResultEvent(
        slide_id="0" * 16,
        source=SourceRef(bucket="b", key="x/s.svs", etag="e"),
        model=ModelRef(name="tiny", version="v1"),
        status="failed",
        error=ErrorInfo(code="not_wsi", message="m"),
    )
    t0 = time.monotonic()
    with pytest.raises(TransientError) as err:
        sink.publish_result(event)
    assert err.value.code == "kafka_unavailable"
    took = {"send": time.monotonic() - t0}
    t0 = time.monotonic()
    assert source.poll(1, 0.2) == []
    assert source.lag() in (0, None)
    took["poll+lag"] = time.monotonic() - t0
    t0 = time.monotonic()
    source.close()
    sink.close()
    took["close"] = time.monotonic() - t0
    assert took["send"] < 1.0 + 1.0 and took["poll+lag"] < 2.0 + 1.0, took
    assert took["close"] < 2 * 1.0 + 0.5, took


def test_the_watchdog_ends_a_wedged_process_past_its_deadline_with_exit_70() -> None:
    import subprocess
    import sys

    wedged = (
        "import time\n"
        "from histoprompt.ingest.shutdown import Watchdog\n"
        "Watchdog(margin_s=0.2).arm(time.monotonic() + 0.3)\n"
        "time.sleep(30)\n"  # the wedged loop
    )
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", wedged], capture_output=True, timeout=20)
    took = time.monotonic() - t0
    assert done.returncode == 70, done.stderr[-500:]
    assert took < 10, took
