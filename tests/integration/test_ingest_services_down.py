"""Ingest workers while Kafka and S3 go down, on a private stack (the session stack's
services stay up):

- SIGTERM after Kafka and S3 stopped mid-slide: the worker exits within its shutdown
  deadline (it once logged the release and then ran on for over a minute, its threads
  blocked on the dead services).
- A worker killed after its result was written but before its event went out (Kafka down):
  the redelivery publishes the event from the stored result, once, and nothing is computed
  twice. Checked through the results store and the results topic.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ingest_worker import read_until, spawn_worker
from helpers.private_stack import pinned_stack_settings
from helpers.stack_slides import fresh_group_settings, put_slide

from histoprompt.core import names
from histoprompt.core.results import ResultStore
from histoprompt.core.s3 import make_minio
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack import down, up
from histoprompt.stack.feed import (
    TopicWatcher,
    Uploaded,
    make_producer,
    publish_upload,
    results_of,
)
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.ingest_demo import load_demo_model

pytestmark = pytest.mark.integration

DEADLINE_S = 5.0
# Interpreter start-up is not in it, exit is: the margin is for the process to be reaped.
MARGIN_S = 1.5


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    state_dir = tmp_path_factory.mktemp("stack-down")
    settings = pinned_stack_settings(state_dir, ("s3", "triton", "kafka"), "seaweed")
    handle = up(settings)
    try:
        load_demo_model(
            handle.triton_grpc, handle.model_repository, tmp_path_factory.mktemp("demo")
        )
        yield handle
    finally:
        down(state_dir)


def _s3_name(stack: StackHandle) -> str:
    return next(n for n in stack.state.processes if n in ("seaweed", "minio"))


def _long_slide(
    stack: StackHandle, group_prefix: str, tmp_path: Path
) -> tuple[IngestSettings, Uploaded]:
    """Settings in a fresh consumer group, and a slide put in S3 (not yet announced)."""
    settings = fresh_group_settings(stack, group_prefix)
    # ~1000 tiles: still in flight when the services go (SYNTHETIC slide)
    path = write_tiff(tmp_path / "long.svs", 4096, 4096, levels=2, tile=512)
    return settings, put_slide(settings, "down", path)


def test_sigterm_with_kafka_and_s3_down_exits_within_the_deadline(
    private_stack: StackHandle, tmp_path: Path
) -> None:
    stack = private_stack
    settings, up_ = _long_slide(stack, "down", tmp_path)
    group = settings.ingest_group_id
    worker = spawn_worker(
        stack.env_file, group, HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S=str(DEADLINE_S)
    )
    try:
        producer = make_producer(settings)
        publish_upload(producer, up_)
        producer.close()
        lines = read_until(worker, '"slide started"', timeout=180)
        assert any("slide started" in ln for ln in lines), lines[-20:]
        for name in ("kafka", _s3_name(stack)):
            stack.stop_service(name)
        t0 = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=DEADLINE_S + 60)
        took = time.monotonic() - t0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        for name in (_s3_name(stack), "kafka"):
            stack.start_service(name)
    time.sleep(0.2)  # the reader thread drains the last lines
    print(f"exit {code} after {took:.2f} s (deadline {DEADLINE_S} s)")  # noqa: T201
    assert took < DEADLINE_S + MARGIN_S, (took, lines[-10:])
    assert code == 0, lines[-10:]
    assert any('"stopped"' in ln for ln in lines), lines[-10:]


def test_a_result_whose_event_never_went_out_is_announced_by_its_redelivery(
    private_stack: StackHandle, tmp_path: Path
) -> None:
    stack = private_stack
    settings, up_ = _long_slide(stack, "announce", tmp_path)
    group = settings.ingest_group_id
    store = ResultStore(make_minio(settings), settings.results_bucket)
    # A short session: the killed member leaves the group quickly once Kafka is back.
    quick = {"HISTOPROMPT_INGEST_SESSION_TIMEOUT_S": "6"}
    producer = make_producer(settings)
    publish_upload(producer, up_)
    producer.close()
    first = spawn_worker(stack.env_file, group, **quick)
    try:
        lines = read_until(first, '"slide started"', timeout=180)
        assert any(up_.slide_id in ln and "slide started" in ln for ln in lines), lines[-20:]
        stack.stop_service("kafka")
        deadline = time.monotonic() + 300
        while not store.versions(up_.slide_id):  # the result is written with Kafka down
            assert time.monotonic() < deadline and first.poll() is None, lines[-20:]
            time.sleep(0.5)
        first.kill()  # before its event could ever go out
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        stack.start_service("kafka")
    manifest = store.read_manifest(up_.slide_id)
    assert manifest.written_by is not None and manifest.written_by.startswith(group + "/")
    watcher = TopicWatcher(settings, names.TOPIC_RESULTS)
    second = spawn_worker(stack.env_file, group, **quick)
    try:
        second_lines = read_until(second, "result event sent again", timeout=240)
        watcher.wait_for(
            lambda s: any(e.slide_id == up_.slide_id for e in results_of(s)), timeout_s=60
        )
        time.sleep(2.0)
        watcher.poll(1.0)  # a second event would be here by now
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
        watcher.close()
    events = [e for e in results_of(watcher.seen) if e.slide_id == up_.slide_id]
    assert len(events) == 1 and events[0].status == "done", events
    assert events[0].n_tiles == manifest.n_tiles and len(store.versions(up_.slide_id)) == 1
    assert not any("slide started" in ln for ln in second_lines), "computed twice"
    print(f"\nevent announced on redelivery: {manifest.n_tiles} tiles, one result")  # noqa: T201
