"""StackSettings: where the local stack keeps its state and which binaries it runs.

Connection fields come from ConnectionSettings (S3 keys and bucket names are used as
given; hosts and ports are replaced by the free loopback ports the stack picks).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from histoprompt.core.settings import ConnectionSettings

ServiceName = Literal["seaweed", "minio", "triton", "prometheus", "kafka"]
S3ServerName = Literal["seaweed", "minio"]
# An entry of HISTOPROMPT_STACK_SERVICES: a service, or `s3` for the chosen S3 server.
ServiceEntry = Literal["s3", "seaweed", "minio", "triton", "prometheus", "kafka"]
# Start order (Kafka last: formatting its storage blocks); `s3` is the chosen S3 server.
ALL_SERVICES: tuple[ServiceEntry, ...] = ("s3", "triton", "prometheus", "kafka")
S3_SERVERS: tuple[S3ServerName, ...] = ("seaweed", "minio")
# The TLS mode's Kafka SASL mechanism (the broker's only enabled one).
SCRAM_MECHANISM = "SCRAM-SHA-512"
# Where deploy/install/minio.sh puts the pinned MinIO server: outside any clone, so a
# fresh clone finds it built (the Makefile passes the same directory).
DEFAULT_MINIO = Path.home() / ".cache" / "histoprompt" / "minio" / "bin" / "minio"


def checkout_root() -> Path | None:
    """The repository root when this package runs from a checkout (editable install)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "deploy" / "kafka" / "pom.xml").is_file():
            return parent
    return None


class StackSettings(ConnectionSettings):
    """Settings of the local stack launcher (env `HISTOPROMPT_STACK_*`)."""

    env_namespaces: ClassVar[tuple[str, ...]] = ("STACK_",)

    stack_state_dir: Path = Field(default=Path(".stack"), description="logs, data, state.json")
    stack_env_file: Path = Field(
        default=Path("stack.env"), description="where up() writes settings"
    )
    stack_model_repository: Path | None = Field(
        default=None, description="Triton model repository (default <state dir>/model_repository)"
    )
    stack_services: tuple[ServiceEntry, ...] = Field(
        default=ALL_SERVICES, description="what to start (`s3`: the stack_s3_server)"
    )
    stack_s3_server: S3ServerName = Field(
        default="minio",
        description="the S3 server: minio (sends bucket notifications), or seaweed",
    )
    stack_kafka_libs: Path = Field(default=Path(".cache/kafka/libs"), description="Kafka jars")
    stack_java: str = Field(default="java", description="Java 17+ executable")
    stack_kafka_heap: str = Field(default="512m", description="Kafka JVM -Xmx")
    stack_kafka_incoming_partitions: int = Field(default=4, ge=1, le=64)
    stack_weed: Path | None = Field(
        default=None, description="weed binary (default: next to python)"
    )
    stack_minio: Path | None = Field(
        default=None, description="minio server binary (default: where minio.sh installs it)"
    )
    stack_tritonserver: Path | None = Field(
        default=None,
        description="tritonserver binary (default: the one in the nvidia-pytriton wheel)",
    )
    stack_prometheus: str = Field(default="prometheus", description="Prometheus executable")
    stack_prometheus_rules_dir: Path = Field(
        default=Path("deploy/prometheus/rules"), description="*.yml rule files loaded when present"
    )
    stack_scrape_interval: str = Field(default="2s", description="Prometheus scrape interval")
    stack_start_timeout: float = Field(
        default=180.0, gt=0, description="seconds until all are healthy"
    )
    stack_die_with_parent: bool = Field(
        default=False,
        description="kill the services when the starting process dies (test fixtures)",
    )
    stack_tls: bool = Field(
        default=False,
        description=(
            "TLS mode: a fresh test CA; S3 over https, Kafka over SASL_SSL (SCRAM-SHA-512) and "
            "SSL, Triton gRPC over TLS"
        ),
    )
    stack_keytool: str = Field(default="keytool", description="makes Kafka's TLS keystore")
    ingest_metrics_port: int | None = Field(
        default=None,
        description="port Prometheus scrapes as job histoprompt-ingest (default: free)",
    )

    @model_validator(mode="after")
    def _one_s3_server(self) -> StackSettings:
        """A server named in stack_services wins over the default; a clash is an error."""
        named = {s for s in self.stack_services if s in S3_SERVERS}
        if len(named) > 1:
            raise ValueError("HISTOPROMPT_STACK_SERVICES names both seaweed and minio")
        if named and "stack_s3_server" not in self.model_fields_set:
            object.__setattr__(self, "stack_s3_server", next(iter(named)))
        elif named - {self.stack_s3_server}:
            raise ValueError(
                f"HISTOPROMPT_STACK_SERVICES names {sorted(named)[0]} but "
                f"HISTOPROMPT_STACK_S3_SERVER is {self.stack_s3_server}; name the S3 "
                "service `s3`, or set the server"
            )
        return self

    def with_tls_credentials(self) -> StackSettings:
        """In TLS mode, the SCRAM user the broker is formatted with: the configured Kafka
        SASL user and password, else `histoprompt` and a fresh random password."""
        if not self.stack_tls:
            return self
        password = self.kafka_sasl_password or SecretStr(secrets.token_urlsafe(18))
        return self.model_copy(
            update={
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": SCRAM_MECHANISM,
                "kafka_sasl_username": self.kafka_sasl_username or "histoprompt",
                "kafka_sasl_password": password,
                "s3_secure": True,
                "triton_ssl": True,
            }
        )

    def services(self) -> tuple[ServiceName, ...]:
        """What to start, in start order, with `s3` resolved to the chosen server."""
        wanted = {self.stack_s3_server if s == "s3" else s for s in self.stack_services}
        order: tuple[ServiceName, ...] = (self.stack_s3_server, "triton", "prometheus", "kafka")
        return tuple(s for s in order if s in wanted)

    @property
    def s3_publishes_events(self) -> bool:
        """True when the S3 server sends the bucket notifications to Kafka itself."""
        services = self.services()
        return self.stack_s3_server == "minio" and "minio" in services and "kafka" in services

    def launch_fields(self) -> set[str]:
        """The fields that say how services start (no connection secrets among them)."""
        return {n for n in type(self).model_fields if n.startswith("stack_")} | {
            "ingest_metrics_port"
        }

    def project_path(self, path: Path) -> Path:
        """`path` as given when absolute or present under the cwd, else under the checkout.

        The defaults are relative to the repository root; this lets `stack up` work from
        any directory of an editable install.
        """
        if path.is_absolute() or path.exists():
            return path.resolve()
        root = checkout_root()
        return (root / path).resolve() if root is not None else path.resolve()

    def weed_binary(self) -> Path:
        """The SeaweedFS binary: the setting, else `weed` next to this interpreter."""
        return self.stack_weed or Path(sys.executable).parent / "weed"

    def minio_binary(self) -> Path:
        """The MinIO server: the setting, else where deploy/install/minio.sh installs it."""
        return self.stack_minio or DEFAULT_MINIO
