"""An ingest worker as a real process: `python -m histoprompt.ingest run` on a stack's
settings, and its JSON log lines read as they come."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


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


class Worker:
    """`python -m histoprompt.ingest run` with the stack's env; stderr lines collected."""

    def __init__(self, stack: Any, group: str, **env: str) -> None:
        self.env = env
        self.lines: list[str] = []
        self._times: list[float] = []
        self.started_at = time.monotonic()
        self._cond = threading.Condition()
        self.proc = spawn_worker(stack.env_file, group, **env)
        self.on_line: list[Any] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line)
                self._times.append(time.monotonic())
                self._cond.notify_all()
            for hook in list(self.on_line):
                hook(self, line)

    def wait_for(self, *needles: str, timeout: float) -> bool:
        """True when a line holding every needle was logged within `timeout`."""
        with self._cond:
            return self._cond.wait_for(
                lambda: any(all(n in ln for n in needles) for ln in self.lines), timeout=timeout
            )

    def timed_lines(self) -> list[tuple[float, str]]:
        """(monotonic time read, line) of every line so far."""
        with self._cond:
            return list(zip(self._times, self.lines, strict=True))

    def records(self) -> list[dict[str, Any]]:
        """The JSON log records logged so far."""
        with self._cond:
            lines = list(self.lines)
        out = []
        for ln in lines:
            if ln.startswith("{"):
                try:
                    out.append(json.loads(ln))
                except ValueError:
                    continue
        return out

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode
