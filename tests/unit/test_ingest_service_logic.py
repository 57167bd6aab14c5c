"""Service logic through its seams (in-memory EventSource, ResultSink and DeliveryLog, a fake
Processor): retries then DLQ, poison, failed slides, duplicates, commits stop at released work,
which is redelivered, liveness while a slide is in flight, polling on while a batch runs, no
commit on a revoked partition, the slide deadline, and crash loops counted across workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from helpers.ingest_seams import event_value, fast_settings, incoming_message

from histoprompt.core import names
from histoprompt.core.errors import TransientError
from histoprompt.core.schemas import ErrorInfo, ModelRef, Timings
from histoprompt.ingest.events import SlideJob
from histoprompt.ingest.health import Health
from histoprompt.ingest.memory_io import (
    InMemoryDeliveryLog,
    InMemoryEventSource,
    InMemoryResultSink,
)
from histoprompt.ingest.pipeline import SlideOutcome
from histoprompt.ingest.ports import commit_plan
from histoprompt.ingest.service import IngestService

TOPIC = names.TOPIC_INCOMING
SLIDES = "histoprompt_ingest_slides_total"


@dataclass
class FakeProcessor:
    """Fails the first `fail_times` calls; never returns for keys in `hang`."""

    fail_times: int = 0
    status: str = "done"
    hang: frozenset[str] = frozenset()
    slow_s: float = 0.0
    calls: list[str] = field(default_factory=list)

    async def process(self, job: SlideJob) -> SlideOutcome:
        self.calls.append(job.key)
        if job.key in self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(self.slow_s)
        if len(self.calls) <= self.fail_times:
            raise TransientError("Triton UNAVAILABLE", code="triton_unavailable")
        if self.status == "skipped_duplicate":
            return SlideOutcome("skipped_duplicate")
        model = ModelRef(name="tiny", version="v1")
        uri = f"s3://results/{job.slide_id}"
        if self.status == "failed":
            error = ErrorInfo(code="not_wsi", message="a CT, not a slide")
            return SlideOutcome("failed", model, uri, seconds=Timings(total=0.1), error=error)
        return SlideOutcome("done", model, uri, 3, Timings(total=1.0))


def _slides(svc: IngestService, status: str) -> float | None:
    return svc.registry.get_sample_value(SLIDES, {"status": status})


def _consume_until(
    svc: IngestService,
    source: InMemoryEventSource,
    sink: InMemoryResultSink,
    proc: FakeProcessor,
    until: Callable[[], bool],
    during: Callable[[], None] | None = None,
    deliveries: InMemoryDeliveryLog | None = None,
) -> None:
    """Consume until `until()` holds, then stop and wait for the loop to return."""

    async def drive() -> None:
        task = asyncio.create_task(svc.consume(source, sink, proc, deliveries))
        deadline = time.monotonic() + 10
        while not until():
            if task.done():
                task.result()
                pytest.fail("consume returned before the condition held")
            assert time.monotonic() < deadline, "condition not reached in 10 s"
            await asyncio.sleep(0.005)
        if during is not None:
            during()
        svc.request_stop()
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(drive())


def test_transient_errors_retry_then_dead_letter() -> None:
    svc = IngestService(fast_settings(ingest_max_attempts=3))
    source, sink, proc = (
        InMemoryEventSource([incoming_message(event_value())]),
        InMemoryResultSink(),
        FakeProcessor(10),
    )
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert len(proc.calls) == 3
    assert sink.results == [] and len(sink.dlq) == 1
    key, dlq = sink.dlq[0]
    [slide] = dlq.slides
    assert key == slide.slide_id.encode()  # not the incoming key (it may be the object key)
    assert dlq.attempts == 3 and dlq.error.code == "triton_unavailable"
    assert (slide.bucket, slide.key, slide.etag) == ("b", "x/slide.svs", "e")
    assert dlq.incoming is not None and (dlq.incoming.partition, dlq.incoming.offset) == (0, 0)
    assert source.committed == {(TOPIC, 0): 1}
    assert _slides(svc, "dlq") == 1


def test_transient_error_then_success_publishes_one_result() -> None:
    svc = IngestService(fast_settings(ingest_max_attempts=3))
    source, sink, proc = (
        InMemoryEventSource([incoming_message(event_value())]),
        InMemoryResultSink(),
        FakeProcessor(1),
    )
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert [e.status for e in sink.results] == ["done"] and sink.dlq == []
    event = sink.results[0]
    assert (event.source.bucket, event.source.key, event.n_tiles) == ("b", "x/slide.svs", 3)
    assert event.result_uri == f"s3://results/{event.slide_id}"
    assert _slides(svc, "done") == 1


def test_unacknowledged_result_event_is_resent_without_reprocessing_the_slide() -> None:
    svc = IngestService(fast_settings(ingest_max_attempts=3))
    source, sink, proc = (
        InMemoryEventSource([incoming_message(event_value())]),
        InMemoryResultSink(fail_next=1),
        FakeProcessor(),
    )
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert len(proc.calls) == 1
    assert [e.status for e in sink.results] == ["done"]
    assert _slides(svc, "done") == 1


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (b"\xff\xfe not json", "malformed_event"),
        (event_value(bucket="elsewhere"), "forbidden_source"),
        (None, "malformed_event"),
    ],
)
def test_poison_goes_to_dlq_at_once_with_its_reason(value: bytes | None, code: str) -> None:
    svc = IngestService(fast_settings())
    source, sink, proc = (
        InMemoryEventSource([incoming_message(value)]),
        InMemoryResultSink(),
        FakeProcessor(),
    )
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert proc.calls == []
    [(key, dlq)] = sink.dlq
    assert dlq.error.code == code and dlq.attempts == 1
    # Nothing of a refused message is kept but its fingerprint: no slides, no key.
    assert dlq.slides == [] and key is None
    assert dlq.incoming is not None and dlq.incoming.size == len(value or b"")
    assert source.committed == {(TOPIC, 0): 1}


def test_failed_slide_publishes_a_failed_result_event() -> None:
    svc = IngestService(fast_settings())
    source, sink = InMemoryEventSource([incoming_message(event_value())]), InMemoryResultSink()
    _consume_until(svc, source, sink, FakeProcessor(status="failed"), lambda: bool(sink.results))
    [event] = sink.results
    assert event.status == "failed" and event.error is not None
    assert event.error.code == "not_wsi" and event.model.version == "v1"
    assert sink.dlq == []
    assert _slides(svc, "failed") == 1


def test_duplicate_is_skipped_without_an_event_and_committed() -> None:
    svc = IngestService(fast_settings())
    source, sink = InMemoryEventSource([incoming_message(event_value())]), InMemoryResultSink()
    proc = FakeProcessor(status="skipped_duplicate")
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert sink.results == [] and sink.dlq == []
    assert _slides(svc, "skipped_duplicate") == 1


def test_commit_stops_at_the_first_released_message_which_is_redelivered() -> None:
    at = [(0, 5, "a"), (0, 6, "hangs"), (0, 7, "c"), (1, 3, "d")]
    msgs = [incoming_message(event_value(f"x/{k}.svs"), offset=o, partition=p) for p, o, k in at]
    settings = fast_settings(ingest_concurrency=4, ingest_shutdown_deadline_s=0.5)
    svc = IngestService(settings)
    source, sink = InMemoryEventSource(msgs), InMemoryResultSink()
    proc = FakeProcessor(hang=frozenset({"x/hangs.svs"}))
    _consume_until(svc, source, sink, proc, lambda: len(sink.results) == 3)
    # Partition 0: offset 5 done, 6 released, so 7 waits with it although it finished.
    assert source.committed == {(TOPIC, 0): 6, (TOPIC, 1): 4}
    assert sorted(e.source.key for e in sink.results) == ["x/a.svs", "x/c.svs", "x/d.svs"]

    again = IngestService(settings)
    _consume_until(
        again, source, sink, FakeProcessor(), lambda: source.committed.get((TOPIC, 0)) == 8
    )
    redelivered = [(m.partition, m.offset) for m in source.delivered[len(msgs) :]]
    assert redelivered == [(0, 6), (0, 7)]


def test_liveness_beats_and_readiness_holds_while_a_slide_is_in_flight() -> None:
    svc = IngestService(
        fast_settings(ingest_liveness_timeout_s=0.2, ingest_shutdown_deadline_s=0.5)
    )
    source, sink = (
        InMemoryEventSource([incoming_message(event_value("x/slow.svs"))]),
        InMemoryResultSink(),
    )
    proc = FakeProcessor(hang=frozenset({"x/slow.svs"}))
    beats: list[float] = []
    sampled_at: list[float] = []

    def in_flight_a_while() -> bool:
        now = time.monotonic()
        if proc.calls and (not sampled_at or now - sampled_at[-1] >= 0.1):
            sampled_at.append(now)
            beats.append(svc.health.last_beat)
            assert svc.health.ready and svc.health.alive()
        return len(beats) >= 4

    _consume_until(svc, source, sink, proc, in_flight_a_while)
    assert len(set(beats)) == 4, beats
    assert not svc.health.ready
    assert source.committed == {}  # released at the deadline, not committed


def test_lag_is_reported_from_the_source() -> None:
    svc = IngestService(fast_settings(ingest_concurrency=1))
    source = InMemoryEventSource(
        [incoming_message(event_value(f"x/{i}.svs"), offset=i) for i in range(5)]
    )
    sink = InMemoryResultSink()
    _consume_until(svc, source, sink, FakeProcessor(), lambda: bool(sink.results))
    # Measured after the first batch of one: four behind.
    assert svc.registry.get_sample_value("histoprompt_ingest_consumer_lag") == 4


def test_run_returns_zero_when_stopped_before_it_starts() -> None:
    svc = IngestService(fast_settings())
    svc.request_stop()
    assert svc.run(install_signals=False) == 0
    assert not svc.health.ready


def test_commit_plan_is_per_partition_up_to_the_first_unhandled() -> None:
    batch = [
        incoming_message(b"", offset=o, partition=p)
        for p, o in [(0, 7), (0, 5), (0, 6), (1, 3), (2, 9)]
    ]
    handled = [m for m in batch if (m.partition, m.offset) != (0, 6) and m.partition != 2]
    plan = commit_plan(batch, handled)
    assert plan.commit == {(TOPIC, 0): 6, (TOPIC, 1): 4}
    assert plan.rewind == {(TOPIC, 0): 6, (TOPIC, 2): 9}


def test_a_message_whose_workers_died_goes_to_dlq_as_crash_loop_without_processing() -> None:
    msg = incoming_message(event_value("x/kills-the-worker.svs"), offset=4)
    deliveries = InMemoryDeliveryLog()
    for _ in range(2):  # two workers took it and died mid-slide: counted, never released
        deliveries.arrive(msg)
    svc = IngestService(fast_settings(ingest_max_deliveries=2))
    source, sink, proc = InMemoryEventSource([msg]), InMemoryResultSink(), FakeProcessor()
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed), deliveries=deliveries)
    assert proc.calls == []
    [(key, dlq)] = sink.dlq
    assert key == dlq.slides[0].slide_id.encode()
    assert dlq.error.code == "crash_loop" and dlq.attempts == 2
    assert deliveries.counts == {}  # committed: forgotten
    assert _slides(svc, "dlq") == 1


def test_deliveries_a_worker_ends_are_not_counted_as_crashes() -> None:
    done = incoming_message(event_value("x/a.svs"), offset=0)
    hangs = incoming_message(event_value("x/hangs.svs"), offset=0, partition=1)
    deliveries = InMemoryDeliveryLog()
    settings = fast_settings(
        ingest_concurrency=2, ingest_shutdown_deadline_s=0.3, ingest_max_deliveries=1
    )
    for _ in range(3):  # three graceful stops releasing the same slide: never a crash loop
        svc = IngestService(settings)
        source, sink = InMemoryEventSource([done, hangs]), InMemoryResultSink()
        proc = FakeProcessor(hang=frozenset({"x/hangs.svs"}))
        _consume_until(
            svc,
            source,
            sink,
            proc,
            lambda: len(proc.calls) == 2 and bool(sink.results),  # noqa: B023
            deliveries=deliveries,
        )
        assert sorted(proc.calls) == ["x/a.svs", "x/hangs.svs"]
        assert source.committed == {(TOPIC, 0): 1} and sink.dlq == []
        assert deliveries.counts == {}  # committed: forgotten; released: un-counted


def test_slide_past_its_deadline_is_dead_lettered_once_without_retry() -> None:
    svc = IngestService(fast_settings(ingest_slide_deadline_s=0.1, ingest_max_attempts=3))
    source, sink = InMemoryEventSource([incoming_message(event_value())]), InMemoryResultSink()
    proc = FakeProcessor(hang=frozenset({"x/slide.svs"}))
    _consume_until(svc, source, sink, proc, lambda: bool(source.committed))
    assert proc.calls == ["x/slide.svs"]
    [(_, dlq)] = sink.dlq
    assert dlq.error.code == "deadline_exceeded" and dlq.attempts == 1
    assert "HISTOPROMPT_INGEST_SLIDE_DEADLINE_S" in dlq.error.message
    assert sink.results == []


def test_polling_goes_on_with_partitions_held_while_a_slide_runs() -> None:
    settings = fast_settings(ingest_max_poll_interval_s=2, ingest_liveness_timeout_s=0.4)
    svc = IngestService(settings)
    source, sink = InMemoryEventSource([incoming_message(event_value())]), InMemoryResultSink()
    proc = FakeProcessor(slow_s=1.0)
    seen: list[tuple[bool, int, bool]] = []

    def sample() -> bool:
        if proc.calls and not sink.results:
            seen.append((source.held, source.keep_alives, svc.health.alive()))
        return bool(source.committed)

    _consume_until(svc, source, sink, proc, sample)
    assert seen and all(held and alive for held, _, alive in seen)
    # polled at least every 0.1 s (liveness / 4) through a 1 s slide
    assert seen[-1][1] >= 5
    assert not source.held and source.committed == {(TOPIC, 0): 1}
    assert len(source.delivered) == 1 and [e.status for e in sink.results] == ["done"]


def test_no_commit_on_a_partition_revoked_while_its_slide_ran() -> None:
    msgs = [
        incoming_message(event_value("x/a.svs"), offset=3),
        incoming_message(event_value("x/b.svs"), offset=8, partition=1),
    ]
    svc = IngestService(fast_settings(ingest_concurrency=2))
    source, sink = InMemoryEventSource(msgs), InMemoryResultSink()
    proc = FakeProcessor(slow_s=0.3)
    revoked: list[bool] = []

    def until() -> bool:
        if len(proc.calls) == 2 and not revoked:
            source.revoke(TOPIC, 0)  # a rebalance gives partition 0 to another member
            revoked.append(True)
        return len(sink.results) == 2 and not source.held

    _consume_until(svc, source, sink, proc, until)
    assert source.committed == {(TOPIC, 1): 9}
    source.assign(TOPIC, 0)
    again = IngestService(fast_settings())
    _consume_until(again, source, sink, FakeProcessor(), lambda: (TOPIC, 0) in source.committed)
    assert [(m.partition, m.offset) for m in source.delivered] == [(0, 3), (1, 8), (0, 3)]


def test_liveness_fails_when_the_consumer_stops_polling() -> None:
    health = Health(liveness_timeout_s=0.05)
    health.beat()
    health.polled()
    assert health.alive()
    time.sleep(0.06)
    health.beat()  # the loop turns, but nothing polls
    assert not health.alive()
    health.polled()
    assert health.alive()
