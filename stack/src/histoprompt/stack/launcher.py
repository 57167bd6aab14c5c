"""up(), down(), status(), attach(): the local stack as a whole.

Services start concurrently (Kafka last, because formatting its storage blocks), and are
polled together until healthy, so each start-up time is measured on its own.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from histoprompt.core.settings import ENV_PREFIX, ConnectionSettings
from histoprompt.stack import kafka, minio_server, prometheus, s3_buckets, seaweed, triton
from histoprompt.stack.errors import StackError
from histoprompt.stack.handle import StackHandle
from histoprompt.stack.ports import wait_released
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import ServiceName, StackSettings
from histoprompt.stack.state import (
    StackState,
    read_state,
    remove_state,
    write_env_file,
    write_state,
)
from histoprompt.stack.supervisor import (
    ProcessRecord,
    ProcessSpec,
    StartAborted,
    failure,
    is_running,
    launch,
    service_log,
    stop_all,
    wait_until_healthy,
)
from histoprompt.stack.tls import TlsFiles, make_tls

PROBES: dict[ServiceName, Callable[[ConnectionSettings], None]] = {
    "seaweed": s3_buckets.probe,
    "minio": s3_buckets.probe,
    "triton": triton.probe,
    "prometheus": prometheus.probe,
    "kafka": kafka.probe,
}


CHECKS: dict[ServiceName, Callable[[StackSettings], object]] = {
    "seaweed": seaweed.check_installed,
    "minio": minio_server.check_installed,
    "triton": triton.check_installed,
    "prometheus": prometheus.check_installed,
    "kafka": kafka.check_installed,
}


class ServiceStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    running: bool
    healthy: bool
    detail: str
    log_path: Path
    startup_seconds: float | None = None


class StackStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    state_dir: Path
    env_file: Path | None = None
    services: list[ServiceStatus] = []

    @property
    def healthy(self) -> bool:
        return bool(self.services) and all(s.healthy for s in self.services)


def connection_env(
    settings: StackSettings, ports: StackPorts, state_dir: Path, model_repository: Path
) -> dict[str, str]:
    """The HISTOPROMPT_* values of a stack on `ports` (what stack.env holds)."""
    host = "127.0.0.1"
    values = {
        "KAFKA_BOOTSTRAP": f"{host}:{ports.kafka}",
        "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        "S3_ENDPOINT": f"{host}:{ports.s3}",
        "S3_ACCESS_KEY": settings.s3_access_key.get_secret_value(),
        "S3_SECRET_KEY": settings.s3_secret_key.get_secret_value(),
        "S3_SECURE": "false",
        "S3_REGION": settings.s3_region,
        "SLIDES_BUCKET": settings.slides_bucket,
        "RESULTS_BUCKET": settings.results_bucket,
        "MODELS_BUCKET": settings.models_bucket,
        "TRITON_URL": f"{host}:{ports.triton_grpc}",
        "TRITON_HTTP_URL": f"{host}:{ports.triton_http}",
        "TRITON_METRICS_URL": f"http://{host}:{ports.triton_metrics}/metrics",
        "PROMETHEUS_URL": f"http://{host}:{ports.prometheus}",
        # false when the S3 server sends the bucket notifications (MinIO): `submit` then
        # publishes nothing, or each slide would be processed twice.
        "PUBLISH_EVENTS": "false" if settings.s3_publishes_events else "true",
        "INGEST_METRICS_PORT": str(ports.ingest_metrics),
        "STACK_STATE_DIR": str(state_dir),
        "STACK_MODEL_REPOSITORY": str(model_repository),
    }
    if settings.stack_tls:
        values |= tls_connection_env(settings, TlsFiles.at(state_dir))
    return {ENV_PREFIX + k: v for k, v in values.items()}


def tls_connection_env(settings: StackSettings, files: TlsFiles) -> dict[str, str]:
    """The TLS mode's client settings: every service trusts only the stack's test CA."""
    password = settings.kafka_sasl_password
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism or "",
        "KAFKA_SASL_USERNAME": settings.kafka_sasl_username or "",
        "KAFKA_SASL_PASSWORD": password.get_secret_value() if password else "",
        "KAFKA_SSL_CAFILE": str(files.ca_cert),
        "S3_SECURE": "true",
        "S3_CA_FILE": str(files.ca_cert),
        "TRITON_SSL": "true",
        "TRITON_SSL_ROOT_CERT": str(files.ca_cert),
    }


def _prepare(
    name: ServiceName,
    settings: StackSettings,
    state_dir: Path,
    ports: StackPorts,
    model_repository: Path,
    env: dict[str, str],
) -> ProcessSpec:
    if name == "triton":
        return triton.prepare(settings, state_dir, ports, model_repository, env)
    if name == "seaweed":
        return seaweed.prepare(settings, state_dir, ports)
    if name == "minio":
        return minio_server.prepare(settings, state_dir, ports, notify=settings.s3_publishes_events)
    if name == "prometheus":
        return prometheus.prepare(settings, state_dir, ports)
    return kafka.prepare(settings, state_dir, ports)


def _fresh_dirs(state_dir: Path, services: tuple[ServiceName, ...]) -> None:
    """Each up() starts empty: old data (a Kafka cluster id, S3 volumes) would clash."""
    for name in services:
        shutil.rmtree(state_dir / name, ignore_errors=True)
        service_log(state_dir, name).unlink(missing_ok=True)


def up(settings: StackSettings | None = None) -> StackHandle:
    """Start the stack on free loopback ports, wait until healthy, write stack.env.

    Raises StackError naming the first service that fails, with its log's tail; every
    process started so far is stopped again before it raises.
    """
    # TLS mode: the SCRAM user is fixed before anything starts (broker, MinIO, stack.env).
    settings = (settings or StackSettings()).with_tls_credentials()
    t_up = time.monotonic()
    state_dir = settings.stack_state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = read_state(state_dir)
    if previous is not None:
        if any(is_running(r) for r in previous.processes.values()):
            raise StackError(
                f"a stack is already running from {state_dir}; stop it first with "
                "`histoprompt stack down` (or python -m histoprompt.stack down)"
            )
        # A crashed stack may leave children (e.g. a backend stub) whose leader is gone.
        stop_all(list(previous.processes.values()))
        remove_state(state_dir)
    services = settings.services()
    for name in services:
        # Before anything starts: a missing install fails fast, with the fixing command.
        CHECKS[name](settings)
    _fresh_dirs(state_dir, services)
    if settings.stack_tls:
        make_tls(state_dir, settings.stack_keytool)
    model_repository = (settings.stack_model_repository or state_dir / "model_repository").resolve()
    ports = StackPorts.allocate(ingest_metrics=settings.ingest_metrics_port)
    env = connection_env(settings, ports, state_dir, model_repository)
    env_file = settings.stack_env_file.resolve()
    state = StackState(
        state_dir=state_dir,
        env_file=env_file,
        model_repository=model_repository,
        ports=ports,
        env=env,
        started_at=datetime.now(UTC),
        kafka_class_archive=kafka.class_archive(settings) if "kafka" in services else None,
        launch=settings.model_dump(mode="json", include=settings.launch_fields()),
    )
    startup = _Startup(settings, state)
    try:
        startup.run(services)
    except BaseException:
        stop_all(list(reversed(startup.records.values())))
        remove_state(state_dir)
        raise
    seconds = dict(startup.seconds)
    seconds["total"] = time.monotonic() - t_up
    state = state.model_copy(
        update={"processes": dict(startup.records), "startup_seconds": seconds, "ready": True}
    )
    write_env_file(env_file, env)
    write_state(state)
    return StackHandle(state)


class _Startup:
    """Launches the services one by one and waits for them in parallel.

    Processes are forked from the calling thread only: a die-with-parent child is killed
    when the *thread* that forked it ends. Waiting happens in threads, so each service's
    time is its own, and Kafka's storage format overlaps the others' start-up.
    `records` holds every process started so far, also after a failure, for clean-up.
    """

    def __init__(self, settings: StackSettings, state: StackState) -> None:
        self.settings = settings
        self.state = state
        self.conn = StackHandle(state).settings
        self.records: dict[str, ProcessRecord] = {}
        self.seconds: dict[str, float] = {}
        self.errors: dict[str, BaseException] = {}
        self._abort = threading.Event()
        self._lock = threading.Lock()

    def run(self, services: tuple[ServiceName, ...]) -> None:
        """Start `services`; raise the first service's own error if any fails."""
        state = self.state
        waiters: list[threading.Thread] = []
        try:
            for name in services:
                t0 = time.monotonic()
                spec = _prepare(
                    name,
                    self.settings,
                    state.state_dir,
                    state.ports,
                    state.model_repository,
                    state.env,
                )
                self.records[name] = launch(
                    spec, die_with_parent=self.settings.stack_die_with_parent
                )
                # Recorded at once, so `down` from elsewhere can clean a half-started stack.
                write_state(state.model_copy(update={"processes": dict(self.records)}))
                waiter = threading.Thread(
                    target=self._wait, args=(name, t0), name=f"stack-wait-{name}", daemon=True
                )
                waiter.start()
                waiters.append(waiter)
        except BaseException:
            self._abort.set()
            raise
        finally:
            for waiter in waiters:
                waiter.join()
        own = [self.errors[n] for n in services if n in self.errors]
        causes = [e for e in own if not isinstance(e, StartAborted)] or own
        if causes:
            raise causes[0]

    def _wait(self, name: ServiceName, t0: float) -> None:
        record = self.records[name]
        try:
            wait_until_healthy(
                {name: record},
                {name: partial(PROBES[name], self.conn)},
                self.settings.stack_start_timeout,
                started={name: t0},
                abort=self._abort.is_set,
            )
            _finish(name, self.conn, self.settings, record)
        except BaseException as err:
            with self._lock:
                self.errors[name] = err
            self._abort.set()
        else:
            with self._lock:
                self.seconds[name] = time.monotonic() - t0


def _finish(
    name: ServiceName, conn: ConnectionSettings, settings: StackSettings, record: ProcessRecord
) -> None:
    """Create the buckets or topics once the service is healthy."""
    try:
        if name == "seaweed":
            s3_buckets.create_buckets(conn)
        elif name == "minio":
            minio_server.create_buckets(conn, notify=settings.s3_publishes_events)
        elif name == "kafka":
            kafka.create_topics(conn, settings.stack_kafka_incoming_partitions)
    except StackError:
        raise
    except Exception as err:
        raise failure(record, f"set-up after start failed: {type(err).__name__}: {err}") from err


def attach(state_dir: Path = Path(".stack")) -> StackHandle:
    """A handle on the stack already running from `state_dir`."""
    state = read_state(state_dir.resolve())
    if state is None or not state.ready:
        raise StackError(f"no running stack in {state_dir.resolve()}; start one with `stack up`")
    return StackHandle(state)


# How long `down` waits for the services' listening sockets to close after they stopped.
PORT_RELEASE_TIMEOUT_S = 15.0


def down(state_dir: Path = Path(".stack")) -> list[str]:
    """Stop the stack recorded in `state_dir`; returns the services that needed SIGKILL.

    Removes the state file and the stack's env file. Safe to call when nothing runs.
    """
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        return []
    killed = stop_all(list(reversed(state.processes.values())))
    served = set(state.ports.model_dump().values()) - {state.ports.ingest_metrics}
    wait_released(served, PORT_RELEASE_TIMEOUT_S)
    seaweed.remove_grpc_sockets(state.ports)
    if state.kafka_class_archive is not None:
        kafka.keep_class_archive(
            state_dir / kafka.NAME / kafka.DUMPED_ARCHIVE, state.kafka_class_archive
        )
    with contextlib.suppress(OSError):
        if state.env_file.is_file() and state.env["HISTOPROMPT_KAFKA_BOOTSTRAP"] in (
            state.env_file.read_text()
        ):
            state.env_file.unlink()
    remove_state(state_dir)
    return killed


def status(state_dir: Path = Path(".stack")) -> StackStatus:
    """Is each recorded service's process alive, and does its health check pass?"""
    state_dir = state_dir.resolve()
    state = read_state(state_dir)
    if state is None:
        return StackStatus(state_dir=state_dir)
    conn = StackHandle(state).settings
    out = []
    for name, record in state.processes.items():
        running = is_running(record)
        healthy, detail = False, "not running"
        if running:
            try:
                PROBES[name](conn)  # type: ignore[index]
            except Exception as err:  # noqa: BLE001 - reported, not raised
                detail = f"unhealthy: {type(err).__name__}: {err}"
            else:
                healthy, detail = True, "healthy"
        out.append(
            ServiceStatus(
                name=name,
                pid=record.pid,
                running=running,
                healthy=healthy,
                detail=detail,
                log_path=record.log_path,
                startup_seconds=state.startup_seconds.get(name),
            )
        )
    return StackStatus(state_dir=state_dir, env_file=state.env_file, services=out)
