"""The stack's state file (`<state dir>/state.json`): what runs where, for down() and status()."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from histoprompt.stack.errors import StackError
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.supervisor import ProcessRecord

STATE_FILE = "state.json"
STATE_SCHEMA = 1


class StackState(BaseModel):
    """One running stack. `env` holds the HISTOPROMPT_* values also written to stack.env."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = STATE_SCHEMA
    state_dir: Path
    env_file: Path
    model_repository: Path
    ports: StackPorts
    processes: dict[str, ProcessRecord] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    startup_seconds: dict[str, float] = Field(default_factory=dict)
    started_at: datetime
    ready: bool = False
    # Where down() keeps the Kafka class archive the broker dumps at exit (None: keep none).
    kafka_class_archive: Path | None = None
    # The StackSettings `stack_*` values up() ran with: start_service() prepares a service
    # the same way (the S3 keys are in `env`).
    launch: dict[str, Any] = Field(default_factory=dict)
    # Triton models that were loaded when stop_service("triton") ran: loaded again at start.
    triton_models: list[str] = Field(default_factory=list)


def state_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE


def write_state(state: StackState) -> None:
    """Write atomically (rename), readable by the owner only: it holds the S3 secret."""
    path = state_path(state.state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def read_state(state_dir: Path) -> StackState | None:
    """The recorded stack in `state_dir`, or None when there is none."""
    path = state_path(state_dir)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return StackState.model_validate(json.loads(raw))
    except ValueError as err:
        raise StackError(f"unreadable stack state file {path}: {err}") from err


def remove_state(state_dir: Path) -> None:
    state_path(state_dir).unlink(missing_ok=True)


def write_env_file(path: Path, env: dict[str, str]) -> None:
    """stack.env: KEY=value lines, owner-readable only (it holds the S3 secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# written by histoprompt.stack up; removed by down",
        *(f"{k}={v}" for k, v in env.items()),
    ]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
