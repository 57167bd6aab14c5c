"""TLS end to end, secrets and PHI, on one local stack in TLS mode (HISTOPROMPT_STACK_TLS).

The stack runs MinIO over https (its bucket notifications reach Kafka over SASL_SSL), Kafka
over SASL_SSL with SCRAM-SHA-512 (and SSL), Triton gRPC over TLS, all under a CA made at start.
`histoprompt-ingest run` (a real process) and the `histoprompt` CLI connect through each:
- a SYNTHETIC slide and a SYNTHETIC DICOM-WSI series whose every instance carries PatientName
  and PatientID go through ingest; `status` and `results` read them back;
- a second PHI series fails (a missing instance) and a third reaches the DLQ (a worker whose
  slide deadline is too short for it), so both failure paths carry PHI-bearing slides;
- a wrong CA for each service and a wrong password for Kafka and S3 end ingest and the CLI
  with one `error:` line and exit code 4, and nothing is processed;
- then everything the stack wrote (service logs, ingest's log, S3 result objects, the results
  and DLQ topics, ingest's /metrics, CLI output) is scanned: no secret and no PHI value in it.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.ingest_logs import capture_ingest_logs
from helpers.private_stack import pinned_stack_settings
from minio.error import S3Error
from pydantic import SecretStr

from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.core.settings import ConnectionSettings
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series
from histoprompt.stack.feed import (
    TopicWatcher,
    Uploaded,
    dlq_of,
    put_file,
    results_of,
    skip_group_to_end,
    upload_series,
)
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.tls import TlsFiles, make_ca

pytestmark = pytest.mark.integration

TIMEOUT_S = 90.0
TOKEN = secrets.token_hex(6)
# Distinctive secrets, so a leak anywhere is found by a plain substring scan.
S3_SECRET = f"s3-secret-{TOKEN}-x"
KAFKA_PASSWORD = f"kafka-pw-{TOKEN}-x"
# SYNTHETIC identifiers: no real patient; distinctive so a scan cannot match by chance.
PHI = {"PatientName": f"SYNTHDOE^JANE{TOKEN}", "PatientID": f"SYNTHMRN{TOKEN}"}
PHI_PARTS = [part for value in PHI.values() for part in value.split("^")]
CLI = str(Path(sys.executable).parent / "histoprompt")


@dataclass
class TlsStack:
    handle: StackHandle
    settings: ConnectionSettings
    env_file: Path
    other_ca: Path
    ingest_log: Path
    ingest: subprocess.Popen[bytes]
    outputs: list[str]  # CLI output collected for the final scan
    done: list[str]  # slide ids processed over TLS


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOPROMPT_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    """One TLS-mode stack (MinIO) and one ingest worker on it, for the whole module."""
    from histoprompt.stack import StackError, down, up
    from histoprompt.stack.ingest_demo import load_demo_model
    from histoprompt.stack.settings import ALL_SERVICES

    state_dir = tmp_path_factory.mktemp("tls-stack")
    settings = pinned_stack_settings(
        state_dir,
        ALL_SERVICES,
        "minio",
        stack_tls=True,
        s3_secret_key=SecretStr(S3_SECRET),
        kafka_sasl_password=SecretStr(KAFKA_PASSWORD),
    )
    try:
        handle = up(settings)
    except StackError as err:
        pytest.fail(f"the TLS stack did not start:\n{err}", pytrace=False)
    ingest: subprocess.Popen[bytes] | None = None
    t0 = time.monotonic()
    try:
        conn = handle.settings
        group = f"tls-{TOKEN}"
        skip_group_to_end(conn, group)
        log = state_dir / "logs" / "ingest.log"
        # The worker starts first (it waits for the served model itself), so its start-up
        # overlaps the demo model's build and load.
        with log.open("wb") as out:
            ingest = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "histoprompt.ingest", "run"],
                env=_clean_env(
                    HISTOPROMPT_ENV_FILE=str(handle.env_file),
                    HISTOPROMPT_INGEST_GROUP_ID=group,
                    HISTOPROMPT_INGEST_BATCH_SIZE="16",
                    HISTOPROMPT_INGEST_CONCURRENCY="2",
                    HISTOPROMPT_INGEST_MAX_ATTEMPTS="2",
                    # Also the model wait's first step (it doubles, at most 10 s).
                    HISTOPROMPT_INGEST_RETRY_BASE_S="0.1",
                    HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S="10",
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        load_demo_model(
            conn.triton_url,
            handle.model_repository,
            tmp_path_factory.mktemp("demo"),
            grpc_options=conn.triton_grpc_options(),
        )
        other = tmp_path_factory.mktemp("other-ca")
        make_ca(other / "ca.crt", other / "ca.key", "a CA the stack never used")
        _wait_ready(handle, ingest, log)
        up_s = handle.state.startup_seconds.get("total", 0.0)
        print(f"TLS stack up {up_s:.1f} s; model and ingest ready {time.monotonic() - t0:.1f} s")
        yield TlsStack(handle, conn, handle.env_file, other / "ca.crt", log, ingest, [], [])
    finally:
        if ingest is not None and ingest.poll() is None:
            ingest.terminate()
            try:
                ingest.wait(timeout=20)
            except subprocess.TimeoutExpired:
                ingest.kill()
                ingest.wait()
        down(state_dir)


def _wait_ready(handle: StackHandle, proc: subprocess.Popen[bytes], log: Path) -> None:
    url = f"http://127.0.0.1:{handle.ingest_metrics_port}/readyz"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                time.sleep(1.0)  # its consumer joins the group
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"ingest over TLS not ready (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def _cli(stack: TlsStack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - the project's own CLI
        [CLI, "--env-file", str(stack.env_file), *args],
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    stack.outputs += [done.stdout, done.stderr]
    return done


def _wait_results(watcher: TopicWatcher, ids: set[str]) -> dict[str, object]:
    seen = watcher.wait_for(lambda s: ids <= {e.slide_id for e in results_of(s)}, TIMEOUT_S)
    events = {e.slide_id: e for e in results_of(seen) if e.slide_id in ids}
    assert set(events) == ids, f"no result for {ids - set(events)}"
    return events  # type: ignore[return-value]


def _phi_series(tmp: Path) -> list[Path]:
    spec = DicomSeriesSpec(width=768, height=512, levels=2, tile=256, phi=dict(PHI))
    paths = write_dicom_series(tmp, spec)
    import pydicom

    for path in paths:  # the series carries the identifiers in every instance
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(ds.PatientName) == PHI["PatientName"] and ds.PatientID == PHI["PatientID"]
    return paths


def test_slide_and_phi_series_over_tls_then_cli(tls_stack: TlsStack, tmp_path: Path) -> None:
    """Ingest reads S3 over https, consumes and publishes over SASL_SSL, infers over gRPC TLS;
    MinIO's own notifications arrive over SASL_SSL; the CLI reads the results back."""
    conn = tls_stack.settings
    minio = make_minio(conn)
    results = TopicWatcher(conn, names.TOPIC_RESULTS)
    try:
        bucket = conn.slides_bucket
        slide = put_file(
            minio,
            bucket,
            f"tls/{uuid.uuid4().hex[:10]}/slide.tiff",
            write_tiff(tmp_path / "slide.tiff", 800, 640),
        )
        series = upload_series(
            minio, bucket, f"tls/{uuid.uuid4().hex[:10]}", _phi_series(tmp_path / "s")
        )
        broken = upload_series(
            minio, bucket, f"tls/{uuid.uuid4().hex[:10]}", _phi_series(tmp_path / "b"), skip=[1]
        )
        # No publish here: MinIO sends the notifications itself, over SASL_SSL.
        events = _wait_results(results, {slide.slide_id, series.slide_id, broken.slide_id})
    finally:
        results.close()
    assert events[slide.slide_id].status == "done"  # type: ignore[attr-defined]
    assert events[series.slide_id].status == "done"  # type: ignore[attr-defined]
    failed = events[broken.slide_id]
    assert failed.status == "failed" and failed.error.code == "missing_instance"  # type: ignore[attr-defined]
    assert events[series.slide_id].n_tiles > 0  # type: ignore[attr-defined]
    tls_stack.done.append(series.slide_id)

    status = _cli(tls_stack, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    checks = {c["service"]: c for c in json.loads(status.stdout)["services"]}
    assert all(c["ok"] for c in checks.values()), checks
    assert {"kafka", "s3", "triton"} <= set(checks)
    # Kafka's SSL listener (no SASL), from the same keytool-made keystore.
    ssl_only = _cli(
        tls_stack,
        "status",
        "--json",
        HISTOPROMPT_KAFKA_BOOTSTRAP=f"127.0.0.1:{tls_stack.handle.state.ports.kafka_ssl}",
        HISTOPROMPT_KAFKA_SECURITY_PROTOCOL="SSL",
        HISTOPROMPT_KAFKA_SASL_MECHANISM="",
    )
    kafka = next(c for c in json.loads(ssl_only.stdout)["services"] if c["service"] == "kafka")
    assert ssl_only.returncode == 0 and kafka["ok"], (ssl_only.stdout, ssl_only.stderr)
    shown = _cli(tls_stack, "results", series.slide_id, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    assert rows, "results printed nothing"


@dataclass(frozen=True)
class Wrong:
    name: str
    env: dict[str, str]
    mentions: str  # the setting the error line names


def _wrong_cases(stack: TlsStack) -> list[Wrong]:
    ca = str(stack.other_ca)
    return [
        Wrong("kafka-ca", {"HISTOPROMPT_KAFKA_SSL_CAFILE": ca}, "KAFKA_SSL_CAFILE"),
        Wrong("kafka-password", {"HISTOPROMPT_KAFKA_SASL_PASSWORD": "not-it"}, "SASL"),
        Wrong("s3-ca", {"HISTOPROMPT_S3_CA_FILE": ca}, "S3_CA_FILE"),
        Wrong("s3-secret", {"HISTOPROMPT_S3_SECRET_KEY": "not-it"}, "S3_SECRET_KEY"),
        Wrong("triton-ca", {"HISTOPROMPT_TRITON_SSL_ROOT_CERT": ca}, "TRITON_SSL_ROOT_CERT"),
    ]


def _one_error_line(text: str, case: Wrong) -> None:
    lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, (case.name, text)
    assert "Traceback" not in text, (case.name, text)
    assert case.mentions in lines[0], (case.name, lines[0])
    for secret in (S3_SECRET, KAFKA_PASSWORD, "not-it"):
        assert secret not in text, (case.name, "secret in the error output")


def test_wrong_ca_or_password_exits_4_and_processes_nothing(
    tls_stack: TlsStack, tmp_path: Path
) -> None:
    conn = tls_stack.settings
    cases = _wrong_cases(tls_stack)
    group = f"wrong-{TOKEN}"
    skip_group_to_end(conn, group)
    before = _committed(conn, group)
    # A slide waits in the incoming topic for the group: a worker that got through would
    # take it and commit past it.
    put_file(
        make_minio(conn),
        conn.slides_bucket,
        f"tls/{uuid.uuid4().hex[:10]}/waiting.tiff",
        write_tiff(tmp_path / "w.tiff", 640, 512),
    )
    procs = {}
    for case in cases:  # all at once: each exits at its start-up check
        procs[case.name] = subprocess.Popen(  # noqa: S603 - our own module
            [sys.executable, "-m", "histoprompt.ingest", "run"],
            env=_clean_env(
                HISTOPROMPT_ENV_FILE=str(tls_stack.env_file),
                HISTOPROMPT_INGEST_GROUP_ID=group,
                HISTOPROMPT_INGEST_METRICS_PORT="0",
                **case.env,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    for case in cases:
        out, err = procs[case.name].communicate(timeout=90)
        text = (out + err).decode()
        tls_stack.outputs.append(text)
        assert procs[case.name].returncode == 4, (case.name, text)
        _one_error_line(text, case)
    # Nothing consumed: the group's offsets stand where they were before the slide arrived.
    assert _committed(conn, group) == before
    assert all(offset is not None for offset in before.values())

    cli_cases = {
        "kafka-ca": ("watch", "--once"),
        "kafka-password": ("watch", "--once"),
        "s3-ca": ("results", "f" * 16),
        "s3-secret": ("results", "f" * 16),
        # A processed slide: query reads its stored result, then asks Triton.
        "triton-ca": ("query", tls_stack.done[0], "-g", "HYPOXIA"),
    }
    clis = {
        case.name: subprocess.Popen(  # noqa: S603 - the project's own CLI
            [CLI, "--env-file", str(tls_stack.env_file), *cli_cases[case.name]],
            env=_clean_env(**case.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case in cases
    }
    for case in cases:
        out, err = clis[case.name].communicate(timeout=120)
        tls_stack.outputs += [out, err]
        assert clis[case.name].returncode == 4, (case.name, out, err)
        _one_error_line(err, case)


def _committed(conn: ConnectionSettings, group: str) -> dict[int, int | None]:
    """The group's committed offset on each incoming partition (read, never committed)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **conn.kafka_config())
    try:
        parts = sorted(consumer.partitions_for_topic(names.TOPIC_INCOMING) or {0})
        return {p: consumer.committed(TopicPartition(names.TOPIC_INCOMING, p)) for p in parts}
    finally:
        consumer.close()


def test_phi_series_in_the_dlq(tls_stack: TlsStack, tmp_path: Path) -> None:
    """A worker whose slide deadline is too short dead-letters a PHI-bearing series."""
    from histoprompt.ingest.settings import IngestSettings
    from histoprompt.stack.ingest_demo import running_service

    conn = tls_stack.settings
    group = f"dlq-{TOKEN}"
    skip_group_to_end(conn, group)
    settings = IngestSettings.load(
        tls_stack.env_file,
        ingest_group_id=group,
        ingest_metrics_port=0,
        ingest_slide_deadline_s=0.05,
        ingest_shutdown_deadline_s=10.0,
    )
    dlq = TopicWatcher(conn, names.TOPIC_DLQ)
    try:
        with capture_ingest_logs() as logs, running_service(settings, settle_s=1.0):
            up: Uploaded = upload_series(
                make_minio(conn), conn.slides_bucket, f"tls/{uuid.uuid4().hex[:10]}",
                _phi_series(tmp_path / "d"),
            )  # fmt: skip
            seen = dlq.wait_for(
                lambda s: any(e.error.code == "deadline_exceeded" for e in dlq_of(s)), TIMEOUT_S
            )
        tls_stack.outputs.append(logs.getvalue())
    finally:
        dlq.close()
    prefix = up.key.rsplit("/", 1)[0]
    mine = [v for _, v in seen if prefix.encode() in v]  # its slides name the series' keys
    codes = [e.error.code for e in dlq_of([(None, v) for v in mine])]
    assert "deadline_exceeded" in codes, (codes, prefix)


def _topic_values(conn: ConnectionSettings, topic: str) -> list[bytes]:
    """Every record of `topic` from its beginning to its current end."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(enable_auto_commit=False, **conn.kafka_config())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in consumer.poll(timeout_ms=500).values():
                values += [m.value or b"" for m in batch]
        return values
    finally:
        consumer.close()


def test_nothing_the_stack_wrote_holds_a_secret_or_phi(tls_stack: TlsStack) -> None:
    """Runs last: scans every log, result object, event, DLQ record, metric and CLI output."""
    conn = tls_stack.settings
    blobs: dict[str, bytes] = {}
    for path in sorted((tls_stack.handle.state_dir / "logs").glob("*")):
        blobs[f"log {path.name}"] = path.read_bytes()
    assert {"log kafka.log", "log minio.log", "log triton.log", "log ingest.log"} <= set(blobs)
    minio = make_minio(conn)
    for obj in minio.list_objects(conn.results_bucket, recursive=True):
        try:
            resp = minio.get_object(conn.results_bucket, obj.object_name or "")
        except S3Error as err:  # a delivery record the worker removed since the listing
            assert err.code == "NoSuchKey", err
            continue
        try:
            blobs[f"s3 {obj.object_name}"] = resp.read()
        finally:
            resp.close()
            resp.release_conn()
    for topic in (names.TOPIC_RESULTS, names.TOPIC_DLQ, names.TOPIC_INCOMING):
        values = _topic_values(conn, topic)
        assert values or topic == names.TOPIC_DLQ, f"{topic} is empty: nothing to scan"
        blobs[f"topic {topic}"] = b"\n".join(values)
    metrics = httpx.get(f"http://127.0.0.1:{tls_stack.handle.ingest_metrics_port}/metrics")
    blobs["ingest /metrics"] = metrics.content
    assert b"histoprompt_ingest_slides_total" in metrics.content
    blobs["cli and in-process output"] = "\n".join(tls_stack.outputs).encode()
    assert any(k.startswith("s3 ") for k in blobs), "no result objects to scan"

    # The scan can find what it looks for: the secrets are in use (stack.env holds them for
    # the clients), and the PHI is in the slides the bucket stores.
    env_text = tls_stack.env_file.read_bytes()
    assert S3_SECRET.encode() in env_text and KAFKA_PASSWORD.encode() in env_text
    stored = [
        o.object_name or ""
        for o in minio.list_objects(conn.slides_bucket, prefix="tls/", recursive=True)
        if (o.object_name or "").endswith(".dcm")
    ]
    resp = minio.get_object(conn.slides_bucket, stored[0])
    try:
        data = resp.read()
    finally:
        resp.close()
        resp.release_conn()
    assert all(part.encode() in data for part in PHI_PARTS)

    keystore = TlsFiles.at(tls_stack.handle.state_dir).keystore_password()
    secrets_ = {"S3 secret key": S3_SECRET, "Kafka password": KAFKA_PASSWORD, "keystore": keystore}
    leaks = [
        f"{what} in {where}"
        for where, blob in blobs.items()
        for what, value in secrets_.items()
        if value.encode() in blob
    ]
    # PHI belongs to the incoming topic only as far as the bucket's own notification goes
    # (keys and sizes, no DICOM content); it is scanned like the rest.
    leaks += [
        f"PHI {part!r} in {where}"
        for where, blob in blobs.items()
        for part in PHI_PARTS
        if part.encode() in blob
    ]
    print(f"scanned {len(blobs)} sources, {sum(map(len, blobs.values()))} bytes")
    assert not leaks, leaks
