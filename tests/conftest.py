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
    from helpers.private_stack import checked_stack, pinned_stack_settings

    from histoprompt.stack.settings import ALL_SERVICES

    # SeaweedFS: these tests publish the S3 events themselves (test_minio_notifications
    # runs its own MinIO-backed stack for the real bucket notifications).
    settings = pinned_stack_settings(tmp_path_factory.mktemp("stack"), ALL_SERVICES, "seaweed")
    with checked_stack(settings, "local stack", optional=True) as handle:
        yield handle


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
