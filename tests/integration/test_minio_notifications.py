"""Real bucket notifications: a MinIO-backed stack (HISTOPROMPT_STACK_S3_SERVER=minio, MinIO's
own Kafka target) sends every ObjectCreated event of the slides bucket to
histoprompt.slides.incoming. `histoprompt submit` publishes nothing of its own there; the
ingest service processes the slide from MinIO's event alone.

The MinIO stack (MinIO and Kafka) is started once for this module and stopped after it,
with no process or port left. The one end-to-end result borrows the session stack's
Triton for the served demo model (Triton reads nothing from S3 for it).
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from helpers.private_stack import checked_stack, pinned_stack_settings

from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.core.schemas import ResultEvent, S3Event, slide_id_for
from histoprompt.stack.feed import TopicWatcher, results_of

if TYPE_CHECKING:
    from histoprompt.ingest.settings import IngestSettings
    from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

EVENT_TIMEOUT_S = 15.0
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def minio_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    """MinIO (with its Kafka notification target) and Kafka on free loopback ports."""
    state_dir = tmp_path_factory.mktemp("minio-stack")
    settings = pinned_stack_settings(state_dir, ("s3", "kafka"), "minio")
    with checked_stack(settings, "MinIO stack") as handle:
        yield handle


@pytest.fixture
def incoming(minio_stack: StackHandle) -> Iterator[TopicWatcher]:
    watcher = TopicWatcher(minio_stack.settings, names.TOPIC_INCOMING)
    yield watcher
    watcher.close()


def _events(watcher: TopicWatcher, count: int) -> list[tuple[bytes | None, bytes]]:
    """At least `count` messages on the topic (fails after EVENT_TIMEOUT_S), then a last
    short poll, so an extra message (a second publisher) is seen too."""
    seen = watcher.wait_for(lambda s: len(s) >= count, EVENT_TIMEOUT_S)
    assert len(seen) >= count, f"{len(seen)} of {count} notifications arrived: {seen}"
    watcher.poll(1.0)
    return watcher.seen


def _prefix() -> str:
    return f"minio-test/{uuid.uuid4().hex[:8]}"


def test_stack_env_turns_cli_publishing_off(minio_stack: StackHandle) -> None:
    env = minio_stack.env_file.read_text()
    assert "HISTOPROMPT_PUBLISH_EVENTS=false" in env.splitlines()
    assert set(minio_stack.startup_seconds) >= {"minio", "kafka"}


def test_minio_listens_on_loopback_only(minio_stack: StackHandle) -> None:
    from histoprompt.stack.ports import listening_addresses
    from histoprompt.stack.supervisor import group_pids

    record = minio_stack.state.processes["minio"]
    sockets = listening_addresses(group_pids(record.pid))
    assert minio_stack.state.ports.s3 in {port for _, port in sockets}
    # MinIO adds every loopback address of the host for its port (::1 too, for its
    # console); nothing listens on another interface.
    assert all(ipaddress.ip_address(host).is_loopback for host, _ in sockets), sockets
    assert "127.0.0.1" in {host for host, _ in sockets}


def test_multipart_upload_sends_complete_multipart_upload(
    minio_stack: StackHandle, incoming: TopicWatcher, ingest_settings_minio: IngestSettings
) -> None:
    from histoprompt.ingest.events import SlideJob, parse_jobs

    client = make_minio(minio_stack.settings)
    bucket, key = minio_stack.settings.slides_bucket, f"{_prefix()}/large slide.svs"
    data = os.urandom(11 * MIB)
    res = client.put_object(bucket, key, io.BytesIO(data), len(data), part_size=5 * MIB)
    etag = (res.etag or "").strip('"')
    assert etag.endswith("-3"), f"not a 3-part upload: {etag}"
    ((msg_key, value),) = _events(incoming, 1)
    assert msg_key == f"{bucket}/{key}".encode()  # MinIO keys its messages bucket/key
    (record,) = S3Event.parse(value).records
    assert record.event_name == "s3:ObjectCreated:CompleteMultipartUpload"
    (job,) = parse_jobs(value, ingest_settings_minio)
    assert job == SlideJob(bucket, key, etag, len(data), "single")


def test_keys_with_spaces_and_non_ascii(
    minio_stack: StackHandle, incoming: TopicWatcher, ingest_settings_minio: IngestSettings
) -> None:
    from histoprompt.ingest.events import SlideJob, parse_jobs

    client = make_minio(minio_stack.settings)
    bucket, prefix = minio_stack.settings.slides_bucket, _prefix()
    keys = [
        f"{prefix}/scanner 01/Prüfung 2026/slide 1+2 (100%).svs",
        f"{prefix}/病理/スライド 3.svs",
        f"{prefix}/a%2Fb+c/%41.svs",
    ]
    etags = {}
    for key in keys:
        res = client.put_object(bucket, key, io.BytesIO(key.encode()), len(key.encode()))
        etags[key] = (res.etag or "").strip('"')
    seen = _events(incoming, len(keys))
    assert len(seen) == len(keys), [v for _, v in seen]
    jobs = [job for _, value in seen for job in parse_jobs(value, ingest_settings_minio)]
    assert sorted(jobs, key=lambda j: keys.index(j.key)) == [
        SlideJob(bucket, key, etags[key], len(key.encode()), "single") for key in keys
    ]
    assert {j.slide_id for j in jobs} == {slide_id_for(bucket, k, etags[k]) for k in keys}


@pytest.fixture(scope="module")
def ingest_settings_minio(minio_stack: StackHandle) -> IngestSettings:
    from histoprompt.ingest.settings import IngestSettings

    return IngestSettings.load(
        minio_stack.env_file,
        ingest_group_id=f"minio-test-{uuid.uuid4().hex[:8]}",
        ingest_metrics_port=minio_stack.ingest_metrics_port,
    )


@pytest.fixture(scope="module")
def ingest_on_minio(
    minio_stack: StackHandle,
    stack: StackHandle,
    served_model: object,
    ingest_settings_minio: IngestSettings,
) -> Iterator[None]:
    """The ingest service consuming the MinIO stack's incoming topic, reading slides from
    MinIO, inferring on the session stack's Triton."""
    from histoprompt.stack.feed import skip_group_to_end
    from histoprompt.stack.ingest_demo import running_service

    settings = ingest_settings_minio.model_copy(
        update={"triton_url": stack.triton_grpc, "ingest_shutdown_deadline_s": 10.0}
    )
    skip_group_to_end(settings, settings.ingest_group_id)
    with running_service(settings, timeout_s=120, settle_s=2.0):
        yield


def _submit(minio_stack: StackHandle, path: Path) -> dict[str, str]:
    """`histoprompt submit PATH --json` against the MinIO stack's stack.env."""
    from typer.testing import CliRunner

    from histoprompt.client.cli import app

    out = CliRunner().invoke(
        app, ["--env-file", str(minio_stack.env_file), "submit", str(path), "--json"]
    )
    assert out.exit_code == 0, out.output
    (uploaded,) = json.loads(out.stdout)
    return dict(uploaded)


def _result_for(watcher: TopicWatcher, slide_id: str) -> ResultEvent:
    seen = watcher.wait_for(lambda s: any(e.slide_id == slide_id for e in results_of(s)), 90.0)
    watcher.poll(1.0)  # a second result for the slide would show up here
    results = [e for e in results_of(seen) if e.slide_id == slide_id]
    assert len(results) == 1, f"{len(results)} result events for {slide_id}: {results}"
    return results[0]


@pytest.mark.usefixtures("ingest_on_minio", "clean_histoprompt_env")
def test_submit_publishes_nothing_and_the_notification_is_processed(
    minio_stack: StackHandle, incoming: TopicWatcher, tmp_path: Path
) -> None:
    """`histoprompt submit` uploads; MinIO's event alone reaches the ingest service, which
    writes a done result for the CLI's slide_id."""
    from histoprompt.export.synthetic_tiff import write_tiff

    results = TopicWatcher(minio_stack.settings, names.TOPIC_RESULTS)
    try:
        uploaded = _submit(minio_stack, write_tiff(tmp_path / "slide.svs", 800, 640, levels=2))
        result = _result_for(results, uploaded["slide_id"])
    finally:
        results.close()
    # Exactly one message on the incoming topic, and it is MinIO's (the CLI's own event
    # would carry eventSource histoprompt:s3 and no top-level EventName).
    ((msg_key, value),) = _events(incoming, 1)
    event = json.loads(value)
    assert event["EventName"] == "s3:ObjectCreated:Put"
    assert event["Records"][0]["eventSource"] == "minio:s3"
    assert msg_key == f"{uploaded['bucket']}/{uploaded['key']}".encode()
    assert result.status == "done", result
    assert result.n_tiles > 0
    assert result.source.key == uploaded["key"]


@pytest.mark.usefixtures("ingest_on_minio", "clean_histoprompt_env")
def test_submitted_series_gives_one_result_from_real_notifications(
    minio_stack: StackHandle, incoming: TopicWatcher, tmp_path: Path
) -> None:
    """With real notifications every instance of a series notifies too (the CLI would only
    publish the manifest's event): the series is still exactly one slide and one result."""
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    paths = write_dicom_series(tmp_path / "series", DicomSeriesSpec(512, 384, levels=2, tile=128))
    results = TopicWatcher(minio_stack.settings, names.TOPIC_RESULTS)
    try:
        uploaded = _submit(minio_stack, tmp_path / "series")
        result = _result_for(results, uploaded["slide_id"])
        others = [e for e in results_of(results.seen) if e.slide_id != uploaded["slide_id"]]
    finally:
        results.close()
    seen = _events(incoming, len(paths) + 1)
    assert len(seen) == len(paths) + 1, "one notification per instance and the manifest"
    assert {json.loads(v)["Records"][0]["eventSource"] for _, v in seen} == {"minio:s3"}
    assert result.status == "done", result
    assert result.source.key == uploaded["key"]
    assert others == [], f"instances were processed as slides of their own: {others}"
