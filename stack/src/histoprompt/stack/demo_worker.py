"""The demo's ingest worker: `python -m histoprompt.ingest run --env-file stack.env` as a
supervised process of the stack, so `histoprompt submit slide.svs --wait` gets its result
while `make demo` runs.

It consumes in the default group (`HISTOPROMPT_INGEST_GROUP_ID`, as the CLI reads it), serves
/metrics on the stack's `HISTOPROMPT_INGEST_METRICS_PORT` (scraped by Prometheus as job
`histoprompt-ingest`), logs to `<state dir>/logs/ingest.log`, dies with the demo even when the
demo is killed outright, and is stopped with SIGTERM (its graceful shutdown: in-flight slides
finish or are released uncommitted), then SIGKILL after the shutdown deadline.

The stack package does not import histoprompt.ingest: the worker is a separate process of the
dev workspace, where histoprompt-ingest is installed.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

from histoprompt.stack.supervisor import (
    ProcessRecord,
    ProcessSpec,
    failure,
    is_running,
    launch,
    service_log,
    stop,
)

if TYPE_CHECKING:
    from pathlib import Path

NAME = "ingest"
READY_TIMEOUT_S = 120.0
# The service's default HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S (25 s), plus leaving the group.
STOP_TIMEOUT_S = 35.0


def worker_spec(env_file: Path, state_dir: Path) -> ProcessSpec:
    """The worker's command line, environment and log file."""
    return ProcessSpec(
        name=NAME,
        argv=[sys.executable, "-m", "histoprompt.ingest", "run", "--env-file", str(env_file)],
        log_path=service_log(state_dir, NAME),
        env={"HISTOPROMPT_ENV_FILE": str(env_file)},
        stop_timeout=STOP_TIMEOUT_S,
    )


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2.0) as resp:  # noqa: S310 - loopback
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_worker(
    env_file: Path, state_dir: Path, metrics_port: int, timeout_s: float = READY_TIMEOUT_S
) -> ProcessRecord:
    """Start the worker and wait for its /readyz (served model known, consumer built).

    Raises StackError with the worker's log tail when it exits or is not ready in time; the
    worker is stopped first."""
    record = launch(worker_spec(env_file, state_dir), die_with_parent=True)
    deadline = time.monotonic() + timeout_s
    while not _ready(metrics_port):
        if not is_running(record):
            raise failure(record, "the ingest worker exited before it was ready")
        if time.monotonic() > deadline:
            stop(record)
            raise failure(record, f"the ingest worker was not ready within {timeout_s:.0f} s")
        time.sleep(0.5)
    return record


def stop_worker(record: ProcessRecord) -> bool:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; True when it had to be killed."""
    return stop(record)
