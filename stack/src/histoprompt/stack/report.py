"""Rich tables of a stack's services, for the CLI and the demo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from histoprompt.stack.handle import StackHandle
    from histoprompt.stack.launcher import StackStatus


def endpoint(service: str, handle: StackHandle) -> str:
    """Where a service answers, as a user would type it."""
    return {
        "kafka": handle.kafka_bootstrap,
        "seaweed": f"s3 http://{handle.s3_endpoint}",
        "minio": f"s3 http://{handle.s3_endpoint} (notifications to Kafka)",
        "triton": f"grpc {handle.triton_grpc}, http {handle.triton_http}",
        "prometheus": handle.prometheus_url,
    }.get(service, "")


def status_table(status: StackStatus, handle: StackHandle | None = None) -> Table:
    """One row per service: health, pid, start-up seconds, endpoint and log file."""
    table = Table(title=f"histoprompt local stack ({status.state_dir})")
    for column in ("service", "state", "pid", "start s", "endpoint", "log"):
        table.add_column(column)
    for svc in status.services:
        state = "[green]healthy[/]" if svc.healthy else f"[red]{svc.detail}[/]"
        seconds = f"{svc.startup_seconds:.1f}" if svc.startup_seconds is not None else "-"
        where = endpoint(svc.name, handle) if handle is not None else ""
        table.add_row(svc.name, state, str(svc.pid), seconds, where, str(svc.log_path))
    return table
