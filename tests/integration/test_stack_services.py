"""Stopping and starting one service of the running stack: same ports, same data.

The Prometheus round trip through the CLI runs in `make test` (a few seconds); the Kafka,
S3 and Triton round trips are marked `chaos_full` (tens of seconds; `make chaos` runs them,
and the chaos faults use the same calls).
"""

from __future__ import annotations

import io
import subprocess
import sys
import uuid

import pytest
import tritonclient.grpc as grpcclient

from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.stack import status
from histoprompt.stack.feed import make_producer
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.ports import listening_ports

pytestmark = pytest.mark.integration


def _run(stack: StackHandle, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "histoprompt.stack", *args, "--state-dir", str(stack.state_dir)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _health(stack: StackHandle) -> dict[str, bool]:
    return {s.name: s.healthy for s in status(stack.state_dir).services}


def test_cli_stops_and_starts_prometheus_on_its_port(stack: StackHandle) -> None:
    port = stack.state.ports.prometheus
    stopped = _run(stack, "stop-service", "prometheus")
    assert stopped.returncode == 0, stopped.stderr
    assert "prometheus stopped" in stopped.stdout
    assert port not in listening_ports()
    assert _health(stack)["prometheus"] is False
    started = _run(stack, "start-service", "prometheus")
    assert started.returncode == 0, started.stderr
    assert "prometheus healthy after" in started.stdout
    assert port in listening_ports()
    assert all(_health(stack).values()), _health(stack)
    unknown = _run(stack, "stop-service", "nosuch")
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no service 'nosuch'")


@pytest.mark.chaos
@pytest.mark.chaos_full
def test_kafka_restart_keeps_messages_and_committed_offsets(stack: StackHandle) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    producer = make_producer(stack.settings)
    marker = uuid.uuid4().hex.encode()
    meta = producer.send(names.TOPIC_RESULTS, value=marker).get(timeout=30)
    producer.close()
    group = f"restart-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(names.TOPIC_RESULTS, meta.partition)
    consumer = KafkaConsumer(
        group_id=group, enable_auto_commit=False, **stack.settings.kafka_config()
    )
    consumer.commit({tp: OffsetAndMetadata(meta.offset, "", -1)})
    consumer.close()

    stack.stop_service("kafka")
    assert _health(stack)["kafka"] is False
    seconds = stack.start_service("kafka")

    consumer = KafkaConsumer(
        group_id=group, enable_auto_commit=False, **stack.settings.kafka_config()
    )
    try:
        assert consumer.committed(tp) == meta.offset
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        got = consumer.poll(timeout_ms=10000, max_records=1)
    finally:
        consumer.close()
    assert [r.value for rs in got.values() for r in rs] == [marker]
    print(f"\nkafka healthy again after {seconds:.1f} s")  # noqa: T201


@pytest.mark.chaos
@pytest.mark.chaos_full
def test_s3_restart_keeps_objects(stack: StackHandle) -> None:
    minio = make_minio(stack.settings)
    key = f"restart/{uuid.uuid4().hex}.bin"
    minio.put_object(stack.settings.results_bucket, key, io.BytesIO(b"kept"), 4)
    server = next(n for n in stack.state.processes if n in ("seaweed", "minio"))
    stack.stop_service(server)
    with pytest.raises(Exception):  # noqa: B017, PT011 - any client error: nothing listens
        make_minio(stack.settings).stat_object(stack.settings.results_bucket, key)
    stack.start_service(server)
    data = make_minio(stack.settings).get_object(stack.settings.results_bucket, key).read()
    assert data == b"kept"


@pytest.mark.chaos
@pytest.mark.chaos_full
def test_triton_restart_reloads_the_loaded_models(
    stack: StackHandle, stack_test_models: tuple[str, ...]
) -> None:
    stack.stop_service("triton")
    assert stack.state.triton_models and set(stack_test_models) <= set(stack.state.triton_models)
    stack.start_service("triton")
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        assert all(client.is_model_ready(m) for m in stack_test_models)
    finally:
        client.close()
