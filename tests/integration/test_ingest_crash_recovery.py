"""Crashes and long slides on the real local stack.

- A message whose processing kills the worker (SIGKILL mid-slide, as the kernel's OOM killer
  would) is counted across worker restarts and reaches the DLQ as `crash_loop` after
  HISTOPROMPT_INGEST_MAX_DELIVERIES deliveries, without being processed again.
- A slide that runs longer than the liveness threshold and longer than max.poll.interval is
  neither killed (/healthz stays 200) nor delivered twice (one start, one result, no rebalance).
  (With the batch-time polling switched off, the same test fails: "delivered twice".)
- A slide past HISTOPROMPT_INGEST_SLIDE_DEADLINE_S is dead-lettered once as
  `deadline_exceeded`, not retried.
- A second member joining mid-slide rebalances the group: the service finishes the slide
  (one result) and commits the slide's partition only if it still owns it; if it moved, the
  new owner gets the message from the old committed offset.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.ingest_logs import capture_ingest_logs
from helpers.ingest_worker import Worker
from helpers.stack_slides import fresh_group_settings, put_slide

from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.ingest.deliveries import PREFIX as DELIVERIES_PREFIX
from histoprompt.stack.feed import (
    TopicWatcher,
    dlq_of,
    make_producer,
    publish_upload,
    results_of,
)
from histoprompt.stack.ingest_demo import running_service
from histoprompt.stack.ports import free_port

pytestmark = pytest.mark.integration


def test_crash_looping_message_reaches_dlq_as_crash_loop_across_restarts(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    dlq: TopicWatcher,
    tmp_path: Path,
) -> None:
    settings = fresh_group_settings(stack, "ingest-crash")
    group = settings.ingest_group_id
    minio = make_minio(settings)
    # hundreds of tiles at one tile per request: in flight for seconds, so the kill (as soon
    # as the start is logged) lands mid-slide
    path = write_tiff(tmp_path / "kills.svs", 3072, 3072, levels=2, tile=512)
    up = put_slide(settings, "ingest-crash", path)
    env = {
        # Static membership: a restarted worker takes its partitions back at once, instead of
        # waiting out the dead member's session.
        "HISTOPROMPT_INGEST_GROUP_INSTANCE_ID": "crash-test-0",
        "HISTOPROMPT_INGEST_MAX_DELIVERIES": "2",
        "HISTOPROMPT_INGEST_BATCH_SIZE": "1",
        "HISTOPROMPT_INGEST_MAX_INFLIGHT": "1",
    }
    producer = make_producer(settings)
    workers: list[Worker] = []
    try:
        publish_upload(producer, up)
        for _ in range(2):  # each delivery kills its worker mid-slide
            w = Worker(stack, group, **env)
            workers.append(w)
            assert w.wait_for("slide started", up.slide_id, timeout=60), w.lines[-20:]
            w.kill()
            killed_at = time.monotonic()
        last = Worker(stack, group, **env)
        workers.append(last)
        seen = dlq.wait_for(
            lambda s: any(e.error.code == "crash_loop" for e in dlq_of(s)), timeout_s=60
        )
        to_dlq_s = time.monotonic() - killed_at
        [event] = [e for e in dlq_of(seen) if e.error.code == "crash_loop"]
        assert event.attempts == 2
        assert [(x.slide_id, x.key) for x in event.slides] == [(up.slide_id, up.key)]
        assert event.first_seen <= event.last_seen
        # the third delivery was not processed: no start logged for it
        assert last.wait_for("dead-lettered", "crash_loop", timeout=10)
        assert not any("slide started" in ln for ln in last.lines)
        # committed and forgotten: no count left for this group
        prefix = f"{DELIVERIES_PREFIX}/{group}/"
        deadline = time.monotonic() + 10
        while left := list(minio.list_objects(settings.results_bucket, prefix, recursive=True)):
            assert time.monotonic() < deadline, [o.object_name for o in left]
            time.sleep(0.2)
        print(f"\nkill -> crash_loop DLQ event: {to_dlq_s:.2f} s")  # noqa: T201
    finally:
        producer.close()
        for w in workers:
            w.stop()


@pytest.fixture
def log_capture() -> Iterator[io.StringIO]:
    with capture_ingest_logs() as buf:
        yield buf


LIVENESS_S = 1.5
MAX_POLL_S = 2.0


def test_slide_longer_than_liveness_and_max_poll_is_neither_killed_nor_redelivered(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    results: TopicWatcher,
    log_capture: io.StringIO,
    tmp_path: Path,
) -> None:
    port = free_port()
    settings = fresh_group_settings(
        stack,
        "ingest-long",
        ingest_metrics_port=port,
        ingest_liveness_timeout_s=LIVENESS_S,
        ingest_max_poll_interval_s=MAX_POLL_S,
        # kafka-python checks max.poll.interval on each heartbeat (a quarter of the session):
        # the broker's smallest session, so a stalled poll loop would leave within the slide.
        ingest_session_timeout_s=6.0,
        # One tile per request, one request in flight: the real path, slowly.
        ingest_batch_size=1,
        ingest_max_inflight=1,
        ingest_shutdown_deadline_s=5.0,
    )
    # ~1200 tissue tiles: one-tile requests reach 80-210 tiles/s on 2 cores, so the slide
    # runs 6-15 s, well past MAX_POLL_S + 1 even on a quiet machine (600 tiles once took 3.0 s)
    path = write_tiff(tmp_path / "long.svs", 7168, 7168, levels=2, tile=512)
    up = put_slide(settings, "ingest-long", path)
    producer = make_producer(settings)
    health: list[int] = []
    with running_service(settings, timeout_s=60, settle_s=1.0) as svc:
        publish_upload(producer, up)
        producer.close()
        t0 = time.monotonic()
        started = None
        deadline = t0 + 120
        with httpx.Client(timeout=2.0) as http:
            while not any(e.slide_id == up.slide_id for e in results_of(results.seen)):
                assert time.monotonic() < deadline, "no result within 120 s"
                results.poll(0.25)
                if started is None and up.slide_id in log_capture.getvalue():
                    started = time.monotonic()
                if started is not None:
                    health.append(http.get(f"http://127.0.0.1:{port}/healthz").status_code)
        slide_s = time.monotonic() - (started or t0)
        results.poll(1.0)
        rebalance_logs = [ln for ln in log_capture.getvalue().splitlines() if '"rebalance"' in ln]
        assert svc.health.alive()
    logged = [json.loads(ln) for ln in log_capture.getvalue().splitlines() if ln.startswith("{")]
    mine = [d for d in logged if d.get("slide_id") == up.slide_id]
    assert [d["status"] for d in mine if d.get("status") in ("started", "done")] == [
        "started",
        "done",
    ], mine
    assert not any(d.get("status") == "skipped_duplicate" for d in mine), "delivered twice"
    events = [e for e in results_of(results.seen) if e.slide_id == up.slide_id]
    assert len(events) == 1 and events[0].status == "done"
    # longer than both thresholds, alive all along, and the group never rebalanced
    assert slide_s > MAX_POLL_S + 1.0 > LIVENESS_S, slide_s
    assert health and set(health) == {200}, health
    revoked = [ln for ln in rebalance_logs if "revoked" in ln and '"partition": []' not in ln]
    assert revoked == [], revoked
    print(f"\nslide {slide_s:.1f} s ({events[0].n_tiles} tiles), {len(health)} /healthz 200")  # noqa: T201


def test_slide_past_its_deadline_is_dead_lettered_once(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    dlq: TopicWatcher,
    results: TopicWatcher,
    log_capture: io.StringIO,
    tmp_path: Path,
) -> None:
    settings = fresh_group_settings(
        stack,
        "ingest-deadline",
        ingest_metrics_port=0,
        ingest_slide_deadline_s=0.3,
        ingest_batch_size=1,
        ingest_max_inflight=1,
        ingest_shutdown_deadline_s=5.0,
    )
    # a few hundred tiles at one tile per request: seconds, well past a 0.3 s deadline (short
    # enough that a warm, batched stack cannot finish first; the slide still starts)
    path = write_tiff(tmp_path / "slow.svs", 3072, 3072, levels=2, tile=512)
    up = put_slide(settings, "ingest-dl", path)
    producer = make_producer(settings)
    with running_service(settings, timeout_s=60, settle_s=1.0):
        publish_upload(producer, up)
        producer.close()
        seen = dlq.wait_for(
            lambda s: any(e.error.code == "deadline_exceeded" for e in dlq_of(s)), timeout_s=60
        )
        results.poll(1.0)
    [event] = [e for e in dlq_of(seen) if e.error.code == "deadline_exceeded"]
    assert event.attempts == 1 and "HISTOPROMPT_INGEST_SLIDE_DEADLINE_S" in event.error.message
    assert [(x.slide_id, x.key) for x in event.slides] == [(up.slide_id, up.key)]
    assert not any(e.slide_id == up.slide_id for e in results_of(results.seen))
    starts = [ln for ln in log_capture.getvalue().splitlines() if "slide started" in ln]
    assert len([ln for ln in starts if up.slide_id in ln]) == 1  # not retried


def test_rebalance_mid_slide_commits_only_partitions_still_owned(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    results: TopicWatcher,
    log_capture: io.StringIO,
    tmp_path: Path,
) -> None:
    from kafka import KafkaConsumer, TopicPartition

    settings = fresh_group_settings(
        stack,
        "ingest-rebalance",
        ingest_metrics_port=0,
        ingest_session_timeout_s=6.0,
        ingest_max_poll_interval_s=10.0,
        ingest_batch_size=1,
        ingest_max_inflight=1,
        ingest_shutdown_deadline_s=5.0,
    )
    group = settings.ingest_group_id
    path = write_tiff(tmp_path / "moved.svs", 5120, 5120, levels=2, tile=512)
    up = put_slide(settings, "ingest-rb", path)
    producer = make_producer(settings)
    # A second member that only looks: what the group gives it, it receives.
    other = KafkaConsumer(
        group_id=group,
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1500,
        **settings.kafka_config(),
    )
    other.partitions_for_topic(names.TOPIC_INCOMING)  # a leader without them assigns nothing
    other.subscribe([names.TOPIC_INCOMING])
    received: list[tuple[int, int]] = []
    probe = KafkaConsumer(**settings.kafka_config())
    tps = [TopicPartition(names.TOPIC_INCOMING, p) for p in range(4)]
    ends_before = {tp.partition: o for tp, o in probe.end_offsets(tps).items()}
    with running_service(settings, timeout_s=60, settle_s=1.0) as svc:
        publish_upload(producer, up)
        producer.close()
        ends_after = {tp.partition: o for tp, o in probe.end_offsets(tps).items()}
        probe.close()
        deadline = time.monotonic() + 60
        while up.slide_id not in log_capture.getvalue():
            assert time.monotonic() < deadline, "the slide never started"
            time.sleep(0.05)
        # joins mid-slide: the group rebalances while the batch is held
        while not any(e.slide_id == up.slide_id for e in results_of(results.seen)):
            assert time.monotonic() < deadline + 60, "no result"
            polled = other.poll(timeout_ms=200)
            received += [(r.partition, r.offset) for rs in polled.values() for r in rs]
            results.poll(0.05)
        for _ in range(15):  # the settle after the result, and what the other member gets
            polled = other.poll(timeout_ms=200)
            received += [(r.partition, r.offset) for rs in polled.values() for r in rs]
        owned_by_other = {tp.partition for tp in other.assignment()}
        committed = {p: other.committed(TopicPartition(names.TOPIC_INCOMING, p)) for p in range(4)}
        assert svc.health.alive()
    other.close()
    logged = log_capture.getvalue()
    moved = [ln for ln in logged.splitlines() if "partitions revoked" in ln]
    assert any('"partition": []' not in ln for ln in moved), "no rebalance happened"
    [event] = [e for e in results_of(results.seen) if e.slide_id == up.slide_id]
    assert event.status == "done"
    assert "commit failed" not in logged
    [partition] = [p for p in range(4) if ends_after[p] > ends_before[p]]
    offset = ends_before[partition]
    assert owned_by_other and len(owned_by_other) < 4
    if partition in owned_by_other:
        # moved: the old owner committed nothing there, the new one got the message again
        assert committed[partition] == offset and received == [(partition, offset)]
    else:
        # kept: committed past the message, which the other member never saw
        assert committed[partition] == offset + 1 and received == []
    print(f"\nother member owns {sorted(owned_by_other)}, received {received}")  # noqa: T201
