"""Errors of the local stack: one StackError per failed service, carrying its log tail."""

from __future__ import annotations

from pathlib import Path

from histoprompt.core.errors import HistopromptError


class StackError(HistopromptError):
    """A local-stack service could not be started, checked or stopped.

    The message names the service and its log file and ends with the log's tail, so one
    error is enough to see why (e.g. a port clash or a missing jar).
    """

    code = "stack"

    def __init__(
        self,
        message: str,
        *,
        service: str | None = None,
        log_path: Path | None = None,
        log_tail: str | None = None,
    ) -> None:
        self.service = service
        self.log_path = log_path
        self.log_tail = log_tail
        parts = [f"{service}: {message}" if service else message]
        if log_path is not None:
            parts.append(f"log file: {log_path}")
        if log_tail:
            parts.append(f"--- last lines of {log_path.name if log_path else 'the log'} ---")
            parts.append(log_tail.rstrip())
        super().__init__("\n".join(parts))
