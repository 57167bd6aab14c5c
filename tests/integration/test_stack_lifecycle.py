"""The stack's life cycle from separate processes (the CLI), with its own small stack:
up, status, a refused second up, down; afterwards no process and no port is left.
Also: a service that cannot start gives one clear error with its log's tail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tritonclient.http as httpclient

from histoprompt.core.settings import ConnectionSettings
from histoprompt.stack import StackError, StackHandle, StackSettings, up
from histoprompt.stack.ports import listening_addresses, listening_ports
from histoprompt.stack.supervisor import group_pids

pytestmark = pytest.mark.integration

ASSETS = Path(__file__).parent / "assets" / "stack_models"


def test_every_service_listens_on_loopback_only(stack: StackHandle) -> None:
    pids = [p for rec in stack.state.processes.values() for p in group_pids(rec.pid)]
    sockets = listening_addresses(pids)
    ports = {port for _, port in sockets}
    state_ports = stack.state.ports
    expected = {
        state_ports.kafka,
        state_ports.kafka_controller,
        state_ports.s3,
        state_ports.triton_grpc,
        state_ports.triton_http,
        state_ports.triton_metrics,
        state_ports.prometheus,
    }
    assert expected <= ports
    assert {host for host, _ in sockets} == {"127.0.0.1"}


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "histoprompt.stack", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_cli_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env_file = tmp_path / "stack.env"
    env = {
        **os.environ,
        "HISTOPROMPT_STACK_SERVICES": '["seaweed", "triton"]',
        "COLUMNS": "200",
    }
    args = ("--state-dir", str(state))
    started = _cli("up", *args, "--env-file", str(env_file), env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        recorded = json.loads((state / "state.json").read_text())
        conn = ConnectionSettings.load(env_file)
        # A python-backend model makes Triton spawn a stub process in its group.
        shutil.copytree(ASSETS / "stack_add_one", state / "model_repository" / "stack_add_one")
        client = httpclient.InferenceServerClient(conn.triton_http_url)
        client.load_model("stack_add_one")
        assert client.is_model_ready("stack_add_one")
        triton_pid = recorded["processes"]["triton"]["pid"]
        assert len(group_pids(triton_pid)) >= 2, "expected tritonserver and a backend stub"
        pids = [p for rec in recorded["processes"].values() for p in group_pids(rec["pid"])]
        ports = [v for k, v in recorded["ports"].items() if k != "ingest_metrics"]
        listening = [p for p in ports if p in listening_ports()]
        assert listening, "no service port is in use while the stack runs"

        shown = _cli("status", *args, "--json", env=env)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        services = {s["name"]: s for s in json.loads(shown.stdout)["services"]}
        assert set(services) == {"seaweed", "triton"}
        assert all(s["healthy"] for s in services.values())

        again = _cli("up", *args, env=env)
        assert again.returncode == 1
        assert "already running" in again.stdout
    finally:
        stopped = _cli("down", *args, env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "killed: seaweed" in stopped.stdout  # weed ignores SIGTERM
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    alive = [p for p in pids if Path(f"/proc/{p}").exists()]
    assert not alive, f"processes left after down: {alive}"
    assert set(listening) & listening_ports() == set()
    assert not env_file.exists()
    assert not (state / "state.json").exists()
    assert _cli("status", *args, env=env).returncode == 1


def test_failing_service_reports_its_log_tail(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yml").write_text(
        "groups:\n- name: broken\n  rules:\n  - record: histoprompt:broken\n    expr: sum(\n"
    )
    settings = StackSettings(
        stack_state_dir=tmp_path / "state",
        stack_env_file=tmp_path / "stack.env",
        # SeaweedFS starts fine; its start-up is called off and it is stopped again.
        stack_services=("seaweed", "prometheus"),
        stack_prometheus_rules_dir=rules,
        stack_start_timeout=60,
    )
    with pytest.raises(StackError) as info:
        up(settings)
    err = info.value
    assert type(err) is StackError  # the cause, not the sibling's "aborted"
    assert err.service == "prometheus"
    assert err.log_path == (tmp_path / "state" / "logs" / "prometheus.log").resolve()
    text = str(err)
    assert text.startswith("prometheus: process")
    assert "bad.yml" in text  # Prometheus' own complaint, from the log tail
    assert not (tmp_path / "stack.env").exists()
    assert not (tmp_path / "state" / "state.json").exists()
    assert (tmp_path / "state" / "logs" / "seaweed.log").exists()  # it was started
    weed = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(tmp_path) in _cmdline(p)]
    assert weed == [], "seaweed still runs after the failed start"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
