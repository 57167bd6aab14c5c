"""The stack CLI and the demo's step loader, without starting services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from histoprompt.stack.cli import app
from histoprompt.stack.demo import DEMO_STEPS, load_step
from histoprompt.stack.errors import StackError
from histoprompt.stack.ports import free_port

runner = CliRunner()


@pytest.mark.parametrize("command", ["up", "down", "status", "stop-service", "start-service"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    assert f"Example: histoprompt stack {command}" in result.output


def test_status_without_a_stack_exits_1(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no stack recorded" in result.output
    as_json = runner.invoke(app, ["status", "--state-dir", str(tmp_path), "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.output)["services"] == []


@pytest.mark.parametrize("command", ["stop-service", "start-service"])
def test_one_service_without_a_stack_exits_1(command: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [command, "kafka", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "error: no running stack in" in result.output


def test_down_without_a_stack_is_a_no_op(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "stack stopped" in result.output


def test_up_with_a_missing_install_exits_1_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HISTOPROMPT_STACK_KAFKA_LIBS", str(tmp_path / "none"))
    monkeypatch.setenv("HISTOPROMPT_STACK_SERVICES", '["kafka"]')
    result = runner.invoke(app, ["up", "--state-dir", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "stack up failed" in result.output
    assert "make install-kafka" in result.output


def test_demo_steps_are_import_paths() -> None:
    assert load_step("histoprompt.stack.ports:free_port") is free_port
    for path in DEMO_STEPS:
        assert callable(load_step(path))
    with pytest.raises(StackError, match="cannot be imported"):
        load_step("histoprompt.stack.nowhere:run")
    with pytest.raises(StackError, match="not callable"):
        load_step("histoprompt.stack.demo:DEMO_STEPS")
