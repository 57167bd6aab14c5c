"""StackSettings: where the local stack keeps its state and which binaries it runs.

Connection fields come from ConnectionSettings (S3 keys and bucket names are used as
given; hosts and ports are replaced by the free loopback ports the stack picks).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from histoprompt.core.settings import ConnectionSettings

ServiceName = Literal["seaweed", "triton", "prometheus", "kafka"]
ALL_SERVICES: tuple[ServiceName, ...] = ("seaweed", "triton", "prometheus", "kafka")


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
    stack_services: tuple[ServiceName, ...] = Field(
        default=ALL_SERVICES, description="what to start"
    )
    stack_kafka_libs: Path = Field(default=Path(".cache/kafka/libs"), description="Kafka jars")
    stack_java: str = Field(default="java", description="Java 17+ executable")
    stack_kafka_heap: str = Field(default="512m", description="Kafka JVM -Xmx")
    stack_kafka_incoming_partitions: int = Field(default=4, ge=1, le=64)
    stack_weed: Path | None = Field(
        default=None, description="weed binary (default: next to python)"
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
    ingest_metrics_port: int | None = Field(
        default=None,
        description="port Prometheus scrapes as job histoprompt-ingest (default: free)",
    )

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
