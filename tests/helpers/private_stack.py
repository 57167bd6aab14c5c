"""Local stacks that tests start for themselves, and the settings they start with.

Every launch setting is pinned, so HISTOPROMPT_STACK_* / INGEST_METRICS_PORT from a sourced
stack.env of a developer's own stack cannot leak into a test's stack.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from histoprompt.stack import StackError, StackHandle, StackSettings, down, seaweed, up
from histoprompt.stack.ports import listening_ports
from histoprompt.stack.settings import S3ServerName, ServiceEntry
from histoprompt.stack.supervisor import group_pids, is_running

REPO_ROOT = Path(__file__).resolve().parents[2]


def pinned_stack_settings(
    state_dir: Path,
    services: Sequence[ServiceEntry],
    s3_server: S3ServerName,
    **extra: Any,
) -> StackSettings:
    """A stack under `state_dir` that kills its services when pytest dies (no orphans);
    `extra`: further StackSettings fields (TLS mode, its secrets)."""
    return StackSettings(
        stack_state_dir=state_dir,
        stack_env_file=state_dir / "stack.env",
        stack_model_repository=state_dir / "model_repository",
        stack_services=tuple(services),
        stack_s3_server=s3_server,
        ingest_metrics_port=None,
        stack_kafka_libs=REPO_ROOT / ".cache" / "kafka" / "libs",
        stack_prometheus_rules_dir=REPO_ROOT / "deploy" / "prometheus" / "rules",
        stack_die_with_parent=True,
        **extra,
    )


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def checked_stack(
    settings: StackSettings, what: str, *, optional: bool = False
) -> Iterator[StackHandle]:
    """The started stack; stopped on exit, then asserted gone: no process, no listening port
    and no SeaweedFS socket in /tmp left.

    A start failure fails the test with the service's error and log tail. `optional`: with
    HISTOPROMPT_STACK_OPTIONAL=1 outside CI it skips instead (a laptop without Java).
    """
    try:
        handle = up(settings)
    except StackError as err:
        if optional and _truthy("HISTOPROMPT_STACK_OPTIONAL") and not _truthy("CI"):
            pytest.skip(f"local stack unavailable (HISTOPROMPT_STACK_OPTIONAL=1): {err}")
        pytest.fail(f"the {what} did not start:\n{err}", pytrace=False)
    records = list(handle.state.processes.values())
    ports = set(handle.state.ports.model_dump().values()) - {handle.ingest_metrics_port}
    ran_seaweed = "seaweed" in handle.state.processes
    try:
        yield handle
    finally:
        down(settings.stack_state_dir)
    leftovers = [r.name for r in records if is_running(r) or group_pids(r.pid)]
    assert not leftovers, f"{what} processes survived down(): {leftovers}"
    assert not ports & listening_ports(), f"{what} ports still listening after down()"
    if ran_seaweed:
        sockets = [p for p in seaweed.grpc_socket_paths(handle.state.ports) if p.exists()]
        assert not sockets, f"SeaweedFS sockets left in /tmp after down(): {sockets}"
