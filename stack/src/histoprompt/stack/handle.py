"""StackHandle: what a running stack offers its users (tests, the CLI, the demo)."""

from __future__ import annotations

from pathlib import Path

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack.state import StackState


class StackHandle:
    """A running local stack; build it with `up()` or `attach()`.

    `settings` points at the running services. Triton serves `model_repository` in
    explicit model-control mode: copy a model there, then `load_model(name)`.
    """

    def __init__(self, state: StackState) -> None:
        self._state = state
        # Validated from the stack's values only: the caller's environment must not leak in.
        self._settings = ConnectionSettings.model_validate(connection_fields(state.env))

    @property
    def state(self) -> StackState:
        return self._state

    @property
    def settings(self) -> ConnectionSettings:
        return self._settings

    @property
    def state_dir(self) -> Path:
        return self._state.state_dir

    @property
    def env_file(self) -> Path:
        return self._state.env_file

    @property
    def model_repository(self) -> Path:
        return self._state.model_repository

    @property
    def ingest_metrics_port(self) -> int:
        return self._state.ports.ingest_metrics

    @property
    def prometheus_url(self) -> str:
        return self._settings.prometheus_url

    @property
    def triton_grpc(self) -> str:
        return self._settings.triton_url

    @property
    def triton_http(self) -> str:
        return self._settings.triton_http_url

    @property
    def triton_metrics_url(self) -> str:
        return self._settings.triton_metrics_url

    @property
    def kafka_bootstrap(self) -> str:
        return self._settings.kafka_bootstrap

    @property
    def s3_endpoint(self) -> str:
        return self._settings.s3_endpoint

    @property
    def startup_seconds(self) -> dict[str, float]:
        return dict(self._state.startup_seconds)

    def log_path(self, service: str) -> Path:
        return self._state.processes[service].log_path

    def stop_service(self, name: str) -> bool:
        """Stop one service, keeping its ports and data; True if it had to be killed."""
        from histoprompt.stack.services import stop_service

        killed = stop_service(self.state_dir, name)
        self._refresh()
        return killed

    def start_service(self, name: str) -> float:
        """Start a stopped service again (Triton reloads its models); seconds to healthy."""
        from histoprompt.stack.services import start_service

        seconds = start_service(self.state_dir, name)
        self._refresh()
        return seconds

    def _refresh(self) -> None:
        from histoprompt.stack.state import read_state

        state = read_state(self.state_dir)
        if state is not None:
            self._state = state

    def down(self) -> None:
        """Stop every service of this stack."""
        from histoprompt.stack.launcher import down

        down(self._state.state_dir)

    def __repr__(self) -> str:
        services = list(self._state.processes)
        return f"StackHandle(state_dir={str(self.state_dir)!r}, services={services})"


def connection_fields(env: dict[str, str]) -> dict[str, str]:
    """`HISTOPROMPT_S3_ENDPOINT=...` -> `s3_endpoint=...` for ConnectionSettings fields."""
    prefix = "HISTOPROMPT_"
    names = set(ConnectionSettings.model_fields)
    out = {}
    for key, value in env.items():
        name = key.removeprefix(prefix).lower()
        if key.startswith(prefix) and name in names:
            out[name] = value
    return out
