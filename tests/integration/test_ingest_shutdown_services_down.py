"""SIGTERM after Kafka and S3 have gone down mid-slide: the worker exits within its shutdown
deadline (it once logged the release and then ran on for over a minute, its threads blocked
on the dead services). A private stack of its own: the session stack's services stay up."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.ingest_process import read_until, spawn_worker

from histoprompt.core.s3 import make_minio
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.ingest.settings import IngestSettings
from histoprompt.stack import StackSettings, down, up
from histoprompt.stack.feed import make_producer, publish_upload, put_file
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.ingest_demo import load_demo_model
from histoprompt.stack.supervisor import stop

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 5.0
# Interpreter start-up is not in it, exit is: the margin is for the process to be reaped.
MARGIN_S = 1.5


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    state_dir = tmp_path_factory.mktemp("stack-down")
    settings = StackSettings(
        stack_state_dir=state_dir,
        stack_env_file=state_dir / "stack.env",
        stack_model_repository=state_dir / "model_repository",
        stack_services=("s3", "triton", "kafka"),
        stack_s3_server="seaweed",
        ingest_metrics_port=None,
        stack_kafka_libs=REPO_ROOT / ".cache" / "kafka" / "libs",
        stack_die_with_parent=True,
    )
    handle = up(settings)
    try:
        yield handle
    finally:
        down(state_dir)


def test_sigterm_with_kafka_and_s3_down_exits_within_the_deadline(
    private_stack: StackHandle, tmp_path: Path
) -> None:
    stack = private_stack
    load_demo_model(stack.triton_grpc, stack.model_repository, tmp_path / "demo")
    settings = IngestSettings.load(stack.env_file)
    minio = make_minio(settings)
    # ~1000 tiles: still in flight when the services go (SYNTHETIC slide)
    path = write_tiff(tmp_path / "long.svs", 4096, 4096, levels=2, tile=512)
    up_ = put_file(minio, settings.slides_bucket, f"down/{uuid.uuid4().hex[:12]}/long.svs", path)
    worker = spawn_worker(
        stack.env_file,
        f"down-{uuid.uuid4().hex[:8]}",
        HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S=str(DEADLINE_S),
    )
    try:
        producer = make_producer(settings)
        publish_upload(producer, up_)
        producer.close()
        lines = read_until(worker, '"slide started"', timeout=180)
        assert any("slide started" in ln for ln in lines), lines[-20:]
        s3_name = next(n for n in stack.state.processes if n in ("seaweed", "minio"))
        for name in ("kafka", s3_name):
            stop(stack.state.processes[name])
        t0 = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=DEADLINE_S + 60)
        took = time.monotonic() - t0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    time.sleep(0.2)  # the reader thread drains the last lines
    print(f"exit {code} after {took:.2f} s (deadline {DEADLINE_S} s)")
    assert took < DEADLINE_S + MARGIN_S, (took, lines[-10:])
    assert code == 0, lines[-10:]
    assert any('"stopped"' in ln for ln in lines), lines[-10:]
