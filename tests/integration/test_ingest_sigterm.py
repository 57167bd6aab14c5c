"""SIGTERM mid-slide: the service releases the slide within its deadline and exits 0; a
restarted service finishes it, and exactly one result event and one result exist."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.ingest_worker import read_until, spawn_worker
from helpers.stack_slides import fresh_group_settings, put_slide

from histoprompt.core.results import ResultStore
from histoprompt.core.s3 import make_minio
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.stack.feed import (
    TopicWatcher,
    make_producer,
    publish_upload,
    results_of,
)

pytestmark = pytest.mark.integration


def _wait_results(watcher: TopicWatcher, ids: set[str], timeout: float) -> None:
    seen = watcher.wait_for(lambda s: ids <= {e.slide_id for e in results_of(s)}, timeout)
    assert ids <= {e.slide_id for e in results_of(seen)}


def _spawn(stack, group: str, deadline_s: float) -> subprocess.Popen[str]:  # noqa: ANN001
    return spawn_worker(
        stack.env_file,
        group,
        HISTOPROMPT_INGEST_BATCH_SIZE="8",
        HISTOPROMPT_INGEST_MAX_INFLIGHT="1",
        HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S=str(deadline_s),
    )


def test_sigterm_mid_slide_then_restart_finishes_exactly_once(
    stack,  # noqa: ANN001
    served_model,  # noqa: ANN001
    results: TopicWatcher,
    tmp_path: Path,
) -> None:
    settings = fresh_group_settings(stack, "ingest-sigterm")
    group = settings.ingest_group_id
    minio = make_minio(settings)
    producer = make_producer(settings)
    # big enough that the slide is still in flight when SIGTERM lands and after the 2 s
    # shutdown deadline (about 900 kept tiles; 4096^2 px, about 400, took 2.1 s warm)
    path = write_tiff(tmp_path / "long.svs", 6144, 6144, levels=2, tile=512)
    up = put_slide(settings, "ingest-sigterm", path)
    first = _spawn(stack, group, deadline_s=2.0)
    try:
        publish_upload(producer, up)
        lines = read_until(first, '"slide started"', timeout=180)
        assert any(up.slide_id in ln and "slide started" in ln for ln in lines), lines[-20:]
        t0 = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        time.sleep(0.2)  # the reader thread drains the last lines
        assert any("released in-flight slides" in ln for ln in lines), lines[-10:]
        assert time.monotonic() - t0 < 2.0 + 8.0  # deadline plus Kafka/gRPC close
    finally:
        if first.poll() is None:
            first.kill()
    # Read what the first service may have published (bounded), then: no result yet.
    seen = results.wait_for(
        lambda s: any(e.slide_id == up.slide_id for e in results_of(s)), timeout_s=5.0
    )
    assert not any(e.slide_id == up.slide_id for e in results_of(seen))
    producer.close()
    second = _spawn(stack, group, deadline_s=10.0)
    second_lines = read_until(second, "never-logged", timeout=0)
    try:
        _wait_results(results, {up.slide_id}, timeout=300)
        time.sleep(3.0)
        results.poll(1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    events = [e for e in results_of(results.seen) if e.slide_id == up.slide_id]
    assert len(events) == 1 and events[0].status == "done"
    store = ResultStore(minio, settings.results_bucket)
    assert store.read_manifest(up.slide_id).n_tiles == events[0].n_tiles
    logged = [json.loads(ln) for ln in second_lines if ln.startswith("{")]
    assert any(d.get("slide_id") == up.slide_id and d.get("status") == "done" for d in logged)
