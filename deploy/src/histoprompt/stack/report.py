"""Rich tables of a stack's services, for the CLI and the demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from histoprompt.stack.handle import StackHandle
    from histoprompt.stack.launcher import StackStatus

_ENDPOINTS = {
    "kafka": lambda h: h.kafka_bootstrap,
    "seaweed": lambda h: f"s3 http://{h.s3_endpoint}",
    "triton": lambda h: f"grpc {h.triton_grpc}, http {h.triton_http}",
    "prometheus": lambda h: h.prometheus_url,
}


def status_table(status: StackStatus, handle: StackHandle | None = None) -> Table:
    """One row per service: health, pid, start-up seconds, endpoint and log file."""
    table = Table(title=f"histoprompt local stack ({status.state_dir})")
    for column in ("service", "state", "pid", "start s", "endpoint", "log"):
        table.add_column(column)
    for svc in status.services:
        state = "[green]healthy[/]" if svc.healthy else f"[red]{svc.detail}[/]"
        seconds = f"{svc.startup_seconds:.1f}" if svc.startup_seconds is not None else "-"
        endpoint = _ENDPOINTS[svc.name](handle) if handle and svc.name in _ENDPOINTS else ""
        table.add_row(svc.name, state, str(svc.pid), seconds, endpoint, str(svc.log_path))
    return table
