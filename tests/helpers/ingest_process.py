"""An ingest worker as its own process (`python -m histoprompt.ingest run`) on a stack's
settings, and its JSON log lines read as they come."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path


def spawn_worker(env_file: Path, group: str, **settings: str) -> subprocess.Popen[str]:
    """A worker in consumer group `group`; `settings`: more HISTOPROMPT_* values."""
    # Inherited HISTOPROMPT_* (e.g. a sourced developer stack.env) would override stack.env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOPROMPT_")}
    env.update(
        HISTOPROMPT_ENV_FILE=str(env_file),
        HISTOPROMPT_INGEST_GROUP_ID=group,
        HISTOPROMPT_INGEST_METRICS_PORT="0",
        **settings,
    )
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "histoprompt.ingest", "run"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """The worker's stderr lines, collected on (in the returned list) by a reader thread;
    returns once a line holds `needle` or after `timeout` s."""
    lines: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if needle in line:
                found.set()

    threading.Thread(target=reader, daemon=True).start()
    found.wait(timeout)
    return lines
