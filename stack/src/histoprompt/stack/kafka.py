"""Apache Kafka 4.x, KRaft single node (broker + controller), from the Maven jars.

The jars come from deploy/kafka/pom.xml (`make install-kafka`). Storage is formatted with
`kafka.tools.StorageTool`, the node runs as `kafka.Kafka`, both on loopback listeners.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from histoprompt.core.names import ALL_TOPICS, TOPIC_INCOMING
from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import SCRAM_MECHANISM, StackSettings
from histoprompt.stack.supervisor import ProcessSpec, log_tail, service_dirs, service_log
from histoprompt.stack.tls import TlsFiles

if TYPE_CHECKING:
    from kafka.admin import KafkaAdminClient

NAME = "kafka"
DUMPED_ARCHIVE = "classes.jsa"
FORMAT_TIMEOUT_S = 120.0
_TOPIC_ALREADY_EXISTS = 36

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not value.startswith("-"):  # Kafka's own Uuid rejects a leading dash
            return value


def tls_properties(ports: StackPorts, files: TlsFiles) -> dict[str, str]:
    """The TLS mode's listeners: SASL_SSL with SCRAM-SHA-512 on `kafka` (what clients use),
    SSL on `kafka_ssl` (between brokers, and for clients without SASL), the controller on
    plaintext loopback. The keystore (made by keytool) also holds the CA as trusted."""
    password = files.keystore_password()
    return {
        "listeners": (
            f"SASL_SSL://127.0.0.1:{ports.kafka},SSL://127.0.0.1:{ports.kafka_ssl},"
            f"CONTROLLER://127.0.0.1:{ports.kafka_controller}"
        ),
        "advertised.listeners": (
            f"SASL_SSL://127.0.0.1:{ports.kafka},SSL://127.0.0.1:{ports.kafka_ssl}"
        ),
        "inter.broker.listener.name": "SSL",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL",
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        # The broker side of SCRAM checks against the credentials in the metadata log; the
        # login module needs no user of its own.
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(files.keystore),
        "ssl.keystore.password": password,
        "ssl.key.password": password,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(files.keystore),
        "ssl.truststore.password": password,
        "ssl.client.auth": "none",
    }


def stored_cluster_id(data_dir: Path) -> str | None:
    """The cluster id in formatted storage (meta.properties), None when unformatted."""
    try:
        lines = (data_dir / "meta.properties").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "cluster.id":
            return value.strip()
    return None


def server_properties(ports: StackPorts, data_dir: Path, tls: TlsFiles | None = None) -> str:
    """server.properties of a single combined broker/controller on 127.0.0.1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{ports.kafka_controller}",
        "listeners": (
            f"PLAINTEXT://127.0.0.1:{ports.kafka},CONTROLLER://127.0.0.1:{ports.kafka_controller}"
        ),
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports.kafka}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        # Single node: internal topics cannot have more than one replica, and one
        # offsets partition makes the first consumer group form in well under a second.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 * 1024 * 1024),
    }
    if tls is not None:
        props |= tls_properties(ports, tls)
    return "".join(f"{k}={v}\n" for k, v in props.items())


def class_archive(settings: StackSettings) -> Path:
    """Where the broker's class-data-sharing archive is cached, keyed by jars and JVM.

    A JVM that finds the archive stale (other jars, another JDK build) ignores it and
    starts without it, so a wrong key costs time, never correctness.
    """
    libs = settings.project_path(settings.stack_kafka_libs)
    java = shutil.which(settings.stack_java) or settings.stack_java
    key = hashlib.sha256()
    for jar in sorted(libs.glob("*.jar")):
        key.update(f"{jar.name}:{jar.stat().st_size}\n".encode())
    with contextlib.suppress(OSError):
        real = Path(java).resolve()
        key.update(f"{real}:{real.stat().st_mtime_ns}".encode())
    return libs.parent / f"kafka-classes-{key.hexdigest()[:16]}.jsa"


def keep_class_archive(dumped: Path, target: Path) -> None:
    """Move the archive the broker dumped at exit into the cache, unless one is there."""
    if dumped.is_file() and not target.exists():
        with contextlib.suppress(OSError):
            os.replace(dumped, target)


def _java_argv(
    settings: StackSettings, log4j: Path, main: str, *args: str, cds: tuple[str, ...] = ()
) -> list[str]:
    libs = settings.project_path(settings.stack_kafka_libs)
    return [
        settings.stack_java,
        f"-Xmx{settings.stack_kafka_heap}",
        "-Xms128m",
        "-XX:+UseSerialGC",
        # C1 only: the broker starts about twice as fast on a small box; it is a test broker.
        "-XX:TieredStopAtLevel=1",
        # Class-data sharing: about 40% off the JVM's start-up once an archive exists.
        *cds,
        "-Xlog:cds=off",
        "-Xlog:cds+dynamic=off",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{libs}/*",
        main,
        *args,
    ]


def check_installed(settings: StackSettings) -> None:
    """Raise a StackError that says how to install what is missing."""
    libs = settings.project_path(settings.stack_kafka_libs)
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(
            f"no Kafka jars in {libs}; fetch them with: make install-kafka", service=NAME
        )
    if shutil.which(settings.stack_java) is None:
        raise StackError(
            f"{settings.stack_java} is not on PATH; install Java 17 with: "
            "apt-get install -y openjdk-17-jre-headless",
            service=NAME,
        )


def prepare(settings: StackSettings, state_dir: Path, ports: StackPorts) -> ProcessSpec:
    """Write the config, format the KRaft storage and return how to start the node."""
    check_installed(settings)
    home, data = service_dirs(state_dir, NAME)
    config = home / "server.properties"
    tls = TlsFiles.at(state_dir) if settings.stack_tls else None
    config.write_text(server_properties(ports, data, tls))
    config.chmod(0o600)  # the keystore password
    log4j = home / "log4j2.properties"
    log4j.write_text(_LOG4J2)
    log_path = service_log(state_dir, NAME)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    archive = class_archive(settings)
    use_archive: tuple[str, ...] = ()
    if archive.is_file():
        use_archive = (f"-XX:SharedArchiveFile={archive}",)
        broker_cds = use_archive
    else:
        # The first broker writes the archive when it stops; down() moves it to the cache.
        broker_cds = (f"-XX:ArchiveClassesAtExit={home / DUMPED_ARCHIVE}",)
    fmt = _java_argv(
        settings,
        log4j,
        "kafka.tools.StorageTool",
        "format",
        "--cluster-id",
        # A restarted broker (stack.services) keeps its data: its own id, or format refuses.
        stored_cluster_id(data) or cluster_id(),
        "--config",
        str(config),
        "--ignore-formatted",
        *_scram_args(settings),
        cds=use_archive,
    )
    with log_path.open("ab") as log:
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv
                fmt, stdout=log, stderr=subprocess.STDOUT, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise StackError(
                f"formatting KRaft storage failed: {err}",
                service=NAME,
                log_path=log_path,
                log_tail=log_tail(log_path),
            ) from err
    if done.returncode != 0:
        raise StackError(
            f"formatting KRaft storage failed (exit code {done.returncode})",
            service=NAME,
            log_path=log_path,
            log_tail=log_tail(log_path),
        )
    return ProcessSpec(
        name=NAME,
        argv=_java_argv(settings, log4j, "kafka.Kafka", str(config), cds=broker_cds),
        log_path=log_path,
        env={"KAFKA_LOG4J_OPTS": "", "LOG_DIR": str(home)},
        stop_timeout=20.0,
    )


def _scram_args(settings: StackSettings) -> tuple[str, ...]:
    """`--add-scram` for the TLS mode's SASL user: KRaft keeps SCRAM credentials in its
    metadata log, so they are written when the storage is formatted."""
    if not settings.stack_tls:
        return ()
    user = settings.kafka_sasl_username
    secret = settings.kafka_sasl_password
    if not user or secret is None:
        raise StackError("TLS mode needs a Kafka SASL user and password", service=NAME)
    # Kafka parses the value as key=value pairs; a quoted password may hold any character
    # but the quote itself.
    password = secret.get_secret_value()
    if '"' in password:
        raise StackError("the Kafka SASL password may not contain '\"'", service=NAME)
    return ("--add-scram", f'{SCRAM_MECHANISM}=[name={user},password="{password}"]')


def _admin(conn: ConnectionSettings) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    # Short, flat back-off: the default grows to 30 s, which would notice a broker that
    # has just come up only seconds later.
    return KafkaAdminClient(
        **conn.kafka_config(),
        request_timeout_ms=5000,
        bootstrap_timeout_ms=3000,
        reconnect_backoff_ms=50,
        reconnect_backoff_max_ms=200,
        client_id="histoprompt-stack",
    )


def probe(conn: ConnectionSettings) -> None:
    """Raise unless the broker accepts a connection and answers a metadata request."""
    host, _, port = conn.kafka_bootstrap.split(",")[0].rpartition(":")
    # A plain connect first: cheap, and it fails at once while nothing listens yet.
    with socket.create_connection((host, int(port)), timeout=1.0):
        pass
    admin = _admin(conn)
    try:
        admin.list_topics()
    finally:
        admin.close()


def create_topics(conn: ConnectionSettings, incoming_partitions: int) -> None:
    """Create the topics of docs/architecture.md (idempotent); incoming gets several partitions."""
    admin = _admin(conn)
    try:
        wanted = {
            topic: {
                "num_partitions": incoming_partitions if topic == TOPIC_INCOMING else 1,
                "replication_factor": 1,
            }
            for topic in ALL_TOPICS
        }
        response = admin.create_topics(wanted, timeout_ms=15000, raise_errors=False)
        for topic in response["topics"]:
            if topic["error_code"] not in (0, _TOPIC_ALREADY_EXISTS):
                raise StackError(
                    f"creating topic {topic['name']} failed: error {topic['error_code']} "
                    f"{topic.get('error_message')}",
                    service=NAME,
                )
        admin.wait_for_topics(list(wanted))
    finally:
        admin.close()
