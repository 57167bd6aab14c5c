"""Prometheus (Debian package) scraping Triton's metrics and the ingest service's /metrics."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.supervisor import ProcessSpec, service_dirs, service_log

NAME = "prometheus"
JOB_TRITON = "triton"
JOB_INGEST = "histoprompt-ingest"


def rule_files(rules_dir: Path) -> list[Path]:
    """Prometheus rule files (`*.yml` with top-level `groups`) in `rules_dir`, if any.

    Other YAML (for example a Kubernetes PrometheusRule) is skipped, not fatal.
    """
    if not rules_dir.is_dir():
        return []
    found = []
    for path in sorted([*rules_dir.glob("*.yml"), *rules_dir.glob("*.yaml")]):
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("groups"), list):
            found.append(path.resolve())
    return found


def config(ports: StackPorts, scrape_interval: str, rules: list[Path]) -> dict[str, Any]:
    """The generated prometheus.yml as a dict."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "rule_files": [str(p) for p in rules],
        "scrape_configs": [
            {
                "job_name": JOB_TRITON,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{ports.triton_metrics}"]}],
            },
            {
                "job_name": JOB_INGEST,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{ports.ingest_metrics}"]}],
            },
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{ports.prometheus}"]}],
            },
        ],
    }


def check_installed(settings: StackSettings) -> str:
    """The Prometheus executable, or a StackError saying how to install it."""
    binary = shutil.which(settings.stack_prometheus)
    if binary is None:
        raise StackError(
            f"{settings.stack_prometheus} is not on PATH; install it with: "
            "make install-prometheus (apt-get install -y prometheus)",
            service=NAME,
        )
    return binary


def prepare(settings: StackSettings, state_dir: Path, ports: StackPorts) -> ProcessSpec:
    """Write prometheus.yml and return how to start Prometheus on a loopback port."""
    binary = check_installed(settings)
    home, data = service_dirs(state_dir, NAME)
    cfg = home / "prometheus.yml"
    rules = rule_files(settings.project_path(settings.stack_prometheus_rules_dir))
    cfg.write_text(yaml.safe_dump(config(ports, settings.stack_scrape_interval, rules)))
    argv = [
        binary,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{ports.prometheus}",
        "--web.enable-lifecycle",
        "--log.level=info",
    ]
    return ProcessSpec(
        name=NAME,
        argv=argv,
        log_path=service_log(state_dir, NAME),
        cwd=home,
        stop_timeout=10.0,
    )


def probe(conn: ConnectionSettings) -> None:
    """Raise unless Prometheus answers /-/ready with 200."""
    response = httpx.get(f"{conn.prometheus_url}/-/ready", timeout=2.0)
    response.raise_for_status()
