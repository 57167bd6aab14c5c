"""`histoprompt` against the real local stack: what a submit leaves in S3 and Kafka, and bad
input (not a slide, unknown slide, wrong credentials, unreachable services) as one line and
the documented exit code, with nothing uploaded half-way. Slides here are SYNTHETIC."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from histoprompt.client.cli import app
from histoprompt.client.errors import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_UNAVAILABLE
from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.core.schemas import S3Event, SeriesManifest, slide_id_for
from histoprompt.stack import StackHandle

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_histoprompt_env")]

runner = CliRunner()


def cli(stack: StackHandle, *args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, ["--env-file", str(stack.env_file), *args], env=env)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from histoprompt.export.synthetic_tiff import write_tiff
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    root = tmp_path_factory.mktemp("cli-slides")
    write_tiff(root / "synthetic.svs", 512, 384, levels=2, tile=128)
    write_dicom_series(root / "series", DicomSeriesSpec(512, 384, levels=2, tile=128))
    (root / "notes.txt").write_text("not a slide")
    return {"svs": root / "synthetic.svs", "series": root / "series", "txt": root / "notes.txt"}


def slide_objects(stack: StackHandle) -> list[str]:
    client = make_minio(stack.settings)
    return sorted(
        o.object_name or ""
        for o in client.list_objects(stack.settings.slides_bucket, prefix="", recursive=True)
    )


@pytest.fixture
def incoming(stack: StackHandle) -> Iterator[Any]:
    """A consumer on the incoming topic, positioned at its current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**stack.settings.kafka_config(), group_id=None)
    parts = consumer.partitions_for_topic(names.TOPIC_INCOMING) or set()
    tps = [TopicPartition(names.TOPIC_INCOMING, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_end()
    for tp in tps:
        consumer.position(tp)
    yield consumer
    consumer.close()


def take(consumer: Any, n: int, timeout_s: float = 20.0) -> list[Any]:
    import time

    got: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=500).values():
            got.extend(recs)
    return got


def test_submit_uploads_and_publishes_the_event(
    stack: StackHandle, slides: dict[str, Path], incoming: Any
) -> None:
    res = cli(stack, "--json", "submit", str(slides["svs"]), str(slides["series"]))
    assert res.exit_code == 0, res.output
    up_svs, up_series = json.loads(res.stdout)
    client = make_minio(stack.settings)
    bucket = stack.settings.slides_bucket
    body = client.get_object(bucket, up_svs["key"]).read()
    assert body == slides["svs"].read_bytes()
    manifest = SeriesManifest.model_validate_json(
        client.get_object(bucket, up_series["key"]).read()
    )
    local = sorted(slides["series"].glob("*.dcm"))
    assert [i.size for i in manifest.instances] == [p.stat().st_size for p in local]
    for inst, path in zip(manifest.instances, local, strict=True):
        assert client.get_object(bucket, inst.key).read() == path.read_bytes()
    records = take(incoming, 2)
    assert sorted(r.key.decode() for r in records) == sorted([up_svs["key"], up_series["key"]])
    for rec in records:
        (record,) = S3Event.parse(rec.value).records
        assert record.is_create and record.bucket == bucket
        up = up_svs if record.key == up_svs["key"] else up_series
        assert slide_id_for(record.bucket, record.key, record.etag) == up["slide_id"]
        assert record.s3.object.size == up["size"]


def test_publish_events_off_publishes_nothing(
    stack: StackHandle, slides: dict[str, Path], incoming: Any
) -> None:
    res = cli(stack, "submit", str(slides["svs"]), env={"HISTOPROMPT_PUBLISH_EVENTS": "false"})
    assert res.exit_code == 0, res.output
    assert len(res.stdout.split()) == 1
    assert take(incoming, 1, timeout_s=3.0) == []


def test_not_a_slide_uploads_nothing(stack: StackHandle, slides: dict[str, Path]) -> None:
    before = slide_objects(stack)
    res = cli(stack, "submit", str(slides["svs"]), str(slides["txt"]))
    assert res.exit_code == EXIT_INVALID
    assert res.stderr.count("\n") == 1 and "not a slide" in res.stderr
    assert slide_objects(stack) == before


def test_unknown_slide_is_not_found_on_real_s3(stack: StackHandle) -> None:
    for args in (
        ["results", "0" * 16],
        ["query", "0" * 16, "-g", "HYPOXIA"],
        ["heatmap", "0" * 16],
    ):
        res = cli(stack, *args)
        assert res.exit_code == EXIT_NOT_FOUND, (args, res.output)
        assert res.stderr.startswith("error: no result for slide 0000000000000000")


def test_wrong_credentials_are_invalid_input_and_upload_nothing(
    stack: StackHandle, slides: dict[str, Path]
) -> None:
    bad = {"HISTOPROMPT_S3_SECRET_KEY": "not-the-secret"}
    res = cli(stack, "results", "0" * 16, env=bad)
    assert res.exit_code == EXIT_INVALID and "refused the credentials" in res.stderr
    before = slide_objects(stack)
    res = cli(stack, "submit", str(slides["svs"]), env=bad)
    assert res.exit_code == EXIT_INVALID and "HISTOPROMPT_S3_SECRET_KEY" in res.stderr
    assert slide_objects(stack) == before


def test_unreachable_services_exit_3(stack: StackHandle, slides: dict[str, Path]) -> None:
    port = free_port()
    res = cli(stack, "--s3-endpoint", f"127.0.0.1:{port}", "results", "0" * 16)
    assert res.exit_code == EXIT_UNAVAILABLE and "S3 unreachable" in res.stderr
    res = cli(stack, "--kafka-bootstrap", f"127.0.0.1:{port}", "watch", "--once")
    assert res.exit_code == EXIT_UNAVAILABLE and "Kafka unreachable" in res.stderr
    before = slide_objects(stack)
    res = cli(stack, "--kafka-bootstrap", f"127.0.0.1:{port}", "submit", str(slides["svs"]))
    assert res.exit_code == EXIT_UNAVAILABLE
    assert slide_objects(stack) == before  # Kafka is checked before the upload
    res = cli(stack, "--triton-url", f"127.0.0.1:{port}", "--json", "status")
    assert res.exit_code == EXIT_UNAVAILABLE
    states = {s["service"]: s["ok"] for s in json.loads(res.stdout)["services"]}
    assert states == {"triton": False, "kafka": True, "s3": True, "prometheus": True}


def test_gene_set_input_errors_need_no_service(stack: StackHandle) -> None:
    res = cli(stack, "query", "0" * 16, "-g", "NOT_A_HALLMARK")
    assert res.exit_code == EXIT_NOT_FOUND and "unknown gene set" in res.stderr
    res = cli(stack, "query", "0" * 16, "--genes", ",")
    assert res.exit_code == EXIT_INVALID and "empty" in res.stderr


def test_interrupted_series_upload_leaves_nothing_on_real_s3(
    stack: StackHandle, slides: dict[str, Path], monkeypatch: pytest.MonkeyPatch, incoming: Any
) -> None:
    """Ctrl-C after the first instance: that instance is removed again, no manifest, no event."""
    from histoprompt.client import services

    real = services.minio_client
    calls = {"put": 0}

    class Interrupting:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        def put_object(self, *args: Any, **kw: Any) -> Any:
            calls["put"] += 1
            if calls["put"] == 2:
                raise KeyboardInterrupt
            return self._inner.put_object(*args, **kw)

    monkeypatch.setattr(services, "minio_client", lambda s: Interrupting(real(s)))
    before = slide_objects(stack)
    res = cli(stack, "submit", str(slides["series"]))
    assert res.exit_code == 130 and calls["put"] == 2
    assert slide_objects(stack) == before
    assert take(incoming, 1, timeout_s=3.0) == []
