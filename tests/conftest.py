"""Shared fixtures. `stack`: the real local stack (Kafka, SeaweedFS S3, Triton, Prometheus),
started once per test session on free loopback ports in a temporary state dir.

If the stack cannot start, every test that uses it fails with the service's error and log
tail (never a silent skip). Set HISTOPROMPT_STACK_OPTIONAL=1 outside CI to skip instead,
e.g. on a laptop without Java.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from histoprompt.stack import StackHandle

REPO_ROOT = Path(__file__).resolve().parents[1]


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root directory."""
    return REPO_ROOT


@pytest.fixture
def clean_histoprompt_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HISTOPROMPT_* from the developer's shell, and a fresh cwd (so no ./stack.env or
    config there) for the test."""
    for key in list(os.environ):
        if key.startswith("HISTOPROMPT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackHandle]:
    """A running local stack; stopped at the end of the session, also after failures."""
    from histoprompt.stack import StackError, StackSettings, down, seaweed, up
    from histoprompt.stack.ports import listening_ports
    from histoprompt.stack.settings import ALL_SERVICES
    from histoprompt.stack.supervisor import group_pids, is_running

    state_dir = tmp_path_factory.mktemp("stack")
    # Everything pinned here, so HISTOPROMPT_STACK_* / INGEST_METRICS_PORT from a sourced
    # stack.env of a developer's own stack cannot leak into the test stack.
    settings = StackSettings(
        stack_state_dir=state_dir,
        stack_env_file=state_dir / "stack.env",
        stack_model_repository=state_dir / "model_repository",
        stack_services=ALL_SERVICES,
        # SeaweedFS: these tests publish the S3 events themselves (test_minio_notifications
        # runs its own MinIO-backed stack for the real bucket notifications).
        stack_s3_server="seaweed",
        ingest_metrics_port=None,
        stack_kafka_libs=REPO_ROOT / ".cache" / "kafka" / "libs",
        stack_prometheus_rules_dir=REPO_ROOT / "deploy" / "prometheus" / "rules",
        # If pytest itself is killed, the kernel kills the services too: no orphans.
        stack_die_with_parent=True,
    )
    try:
        handle = up(settings)
    except StackError as err:
        if _truthy("HISTOPROMPT_STACK_OPTIONAL") and not _truthy("CI"):
            pytest.skip(f"local stack unavailable (HISTOPROMPT_STACK_OPTIONAL=1): {err}")
        pytest.fail(f"the local stack did not start:\n{err}", pytrace=False)
    records = list(handle.state.processes.values())
    ports = set(handle.state.ports.model_dump().values()) - {handle.ingest_metrics_port}
    try:
        yield handle
    finally:
        down(state_dir)
    leftovers = [r.name for r in records if is_running(r) or group_pids(r.pid)]
    assert not leftovers, f"stack processes survived down(): {leftovers}"
    assert not ports & listening_ports(), "stack ports still listening after down()"
    sockets = [p for p in seaweed.grpc_socket_paths(handle.state.ports) if p.exists()]
    assert not sockets, f"SeaweedFS sockets left in /tmp after down(): {sockets}"


STACK_TEST_MODELS = ("stack_add_one", "stack_add_two", "stack_import_probe")


@pytest.fixture(scope="session")
def stack_test_models(stack: StackHandle) -> tuple[str, ...]:
    """The stack's own test models (tests/integration/assets/stack_models), loaded in Triton.

    stack_add_one (OUTPUT = INPUT + 1), the ensemble stack_add_two (+2) and
    stack_import_probe (reports where histoprompt.core and onnxruntime are imported from).
    """
    import shutil

    import tritonclient.grpc as grpcclient

    assets = REPO_ROOT / "tests" / "integration" / "assets" / "stack_models"
    for name in STACK_TEST_MODELS:
        target = stack.model_repository / name
        shutil.copytree(assets / name, target, ignore=shutil.ignore_patterns("__pycache__"))
        (target / "1").mkdir(exist_ok=True)  # an ensemble needs an (empty) version dir
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        for name in STACK_TEST_MODELS:
            client.load_model(name)
    finally:
        client.close()
    return STACK_TEST_MODELS
