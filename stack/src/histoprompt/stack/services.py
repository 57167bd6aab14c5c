"""Stop and start one service of a running stack, keeping its ports and its data.

For fault tests and operators: a stopped Kafka broker or S3 server comes back on the same
loopback ports with the same data directory (topics, committed offsets, objects), so the
clients configured from stack.env reconnect without a change. Triton runs in explicit
model-control mode and starts with nothing loaded: the models loaded when it was stopped
are loaded again once it is healthy.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from histoprompt.stack import seaweed
from histoprompt.stack.errors import StackError
from histoprompt.stack.handle import StackHandle, connection_fields
from histoprompt.stack.ports import wait_released
from histoprompt.stack.ports_layout import StackPorts
from histoprompt.stack.settings import StackSettings
from histoprompt.stack.state import StackState, read_state, write_state
from histoprompt.stack.supervisor import failure, is_running, launch, stop, wait_until_healthy

PORT_RELEASE_TIMEOUT_S = 15.0
MODEL_LOAD_TIMEOUT_S = 120.0

# The ports each service listens on (its own: a restart must find them free again).
SERVICE_PORTS: dict[str, tuple[str, ...]] = {
    "kafka": ("kafka", "kafka_controller"),
    "minio": ("s3", "s3_console"),
    "seaweed": (
        "s3",
        "s3_grpc",
        "weed_master",
        "weed_master_grpc",
        "weed_volume",
        "weed_volume_grpc",
        "weed_filer",
        "weed_filer_grpc",
    ),
    "triton": ("triton_http", "triton_grpc", "triton_metrics"),
    "prometheus": ("prometheus",),
}


def _running_state(state_dir: Path) -> StackState:
    state = read_state(state_dir.resolve())
    if state is None or not state.ready:
        raise StackError(f"no running stack in {state_dir.resolve()}; start one with `stack up`")
    return state


def _service_ports(name: str, ports: StackPorts) -> set[int]:
    values = ports.model_dump()
    return {values[field] for field in SERVICE_PORTS[name]}


def _known(state: StackState, name: str) -> None:
    if name not in state.processes:
        raise StackError(
            f"no service {name!r} in this stack (it runs: {', '.join(state.processes)})"
        )


def stop_service(state_dir: Path, name: str) -> bool:
    """Stop one service (SIGTERM, SIGKILL after its timeout); True if it had to be killed.

    Its data directory stays. Stopping a stopped service does nothing.
    """
    state = _running_state(state_dir)
    _known(state, name)
    record = state.processes[name]
    if name == "triton" and is_running(record):
        state = state.model_copy(update={"triton_models": _loaded_models(state)})
        write_state(state)
    killed = stop(record)
    still = wait_released(_service_ports(name, state.ports), PORT_RELEASE_TIMEOUT_S)
    if still:
        raise failure(record, f"ports {sorted(still)} still listening after the stop")
    if name == "seaweed":
        seaweed.remove_grpc_sockets(state.ports)
    return killed


def start_service(state_dir: Path, name: str, *, die_with_parent: bool | None = None) -> float:
    """Start one stopped service on its old ports and data; seconds until healthy.

    Starting a service that runs does nothing (returns 0.0). `die_with_parent`: None keeps
    the stack's setting; a command-line caller passes False (it exits right after).
    """
    from histoprompt.stack.launcher import PROBES, _finish, _prepare

    state = _running_state(state_dir)
    _known(state, name)
    if is_running(state.processes[name]):
        return 0.0
    settings = launch_settings(state)
    t0 = time.monotonic()
    spec = _prepare(
        name,  # type: ignore[arg-type]
        settings,
        state.state_dir,
        state.ports,
        state.model_repository,
        state.env,
    )
    dies = settings.stack_die_with_parent if die_with_parent is None else die_with_parent
    record = launch(spec, die_with_parent=dies)
    state = state.model_copy(update={"processes": {**state.processes, name: record}})
    write_state(state)
    conn = StackHandle(state).settings
    probe = PROBES[name]  # type: ignore[index]
    wait_until_healthy(
        {name: record},
        {name: lambda: probe(conn)},
        settings.stack_start_timeout,
        started={name: t0},
    )
    # Idempotent: buckets and topics that survived are left as they are.
    _finish(name, conn, settings, record)  # type: ignore[arg-type]
    if name == "triton":
        _load_models(state, state.triton_models)
    return time.monotonic() - t0


def launch_settings(state: StackState) -> StackSettings:
    """The StackSettings the stack was started with."""
    # Connection values (S3 keys, a TLS mode's SASL user) as stack.env holds them.
    return StackSettings(**{**connection_fields(state.env), **state.launch})


def _loaded_models(state: StackState) -> list[str]:
    """Triton's READY models, from its repository index (explicit model control)."""
    url = f"http://{state.env['HISTOPROMPT_TRITON_HTTP_URL']}/v2/repository/index"
    try:
        response = httpx.post(url, json={"ready": True}, timeout=10.0)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise StackError(f"cannot list Triton's loaded models: {err}", service="triton") from err
    return sorted({m["name"] for m in response.json() if m.get("state") == "READY"})


def _load_models(state: StackState, models: list[str]) -> None:
    base = f"http://{state.env['HISTOPROMPT_TRITON_HTTP_URL']}/v2/repository/models"
    for model in models:
        try:
            response = httpx.post(f"{base}/{model}/load", timeout=MODEL_LOAD_TIMEOUT_S)
            response.raise_for_status()
        except httpx.HTTPError as err:
            raise StackError(f"reloading model {model} failed: {err}", service="triton") from err
