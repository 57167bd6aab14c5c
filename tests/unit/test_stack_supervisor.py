"""The stack's process supervisor with small real processes (python -c ...)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from histoprompt.stack.errors import StackError
from histoprompt.stack.supervisor import (
    ProcessRecord,
    ProcessSpec,
    group_pids,
    is_running,
    launch,
    log_tail,
    stop,
    stop_all,
    wait_until_healthy,
)


def _python(code: str, log: Path, name: str = "svc", stop_timeout: float = 5.0) -> ProcessSpec:
    return ProcessSpec(
        name=name, argv=[sys.executable, "-c", code], log_path=log, stop_timeout=stop_timeout
    )


def _never_ready() -> None:
    raise ConnectionRefusedError("nothing listens")


def _wait_for_line(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_service_that_exits_gives_one_error_with_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "broken.log"
    code = "import sys; print('line one'); print('FATAL: port 1234 already in use'); sys.exit(3)"
    record = launch(_python(code, log, name="broken"))
    with pytest.raises(StackError) as info:
        wait_until_healthy({"broken": record}, {"broken": _never_ready}, timeout=30)
    err = info.value
    assert err.service == "broken"
    assert err.log_path == log
    text = str(err)
    assert text.startswith("broken: process")
    assert "exited before it became healthy" in text
    assert f"log file: {log}" in text
    assert "FATAL: port 1234 already in use" in text
    assert not is_running(record)


def test_service_that_never_gets_healthy_times_out(tmp_path: Path) -> None:
    log = tmp_path / "slow.log"
    record = launch(_python("import time; print('starting', flush=True); time.sleep(60)", log))
    try:
        t0 = time.monotonic()
        with pytest.raises(StackError, match=r"svc: not healthy after 1 s") as info:
            wait_until_healthy({"svc": record}, {"svc": _never_ready}, timeout=1.0)
        assert time.monotonic() - t0 < 10
        assert "ConnectionRefusedError: nothing listens" in str(info.value)
    finally:
        stop(record, timeout=5)
    assert not is_running(record)


def test_healthy_service_reports_its_time(tmp_path: Path) -> None:
    log = tmp_path / "ok.log"
    record = launch(_python("import time; time.sleep(60)", log))
    calls = {"n": 0}

    def ready_on_third_call() -> None:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionRefusedError

    try:
        seconds = wait_until_healthy(
            {"svc": record}, {"svc": ready_on_third_call}, timeout=30, interval=0.05
        )
    finally:
        assert stop(record) is False  # it honours SIGTERM
    assert calls["n"] == 3
    assert 0.1 <= seconds["svc"] < 10


def test_sigterm_ignoring_process_is_killed(tmp_path: Path) -> None:
    log = tmp_path / "stubborn.log"
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ignoring SIGTERM', flush=True); time.sleep(120)"
    )
    record = launch(_python(code, log, stop_timeout=0.5))
    _wait_for_line(log, "ignoring SIGTERM")
    t0 = time.monotonic()
    assert stop(record) is True
    assert time.monotonic() - t0 < 10
    assert not is_running(record)
    assert group_pids(record.pid) == []


def test_stop_takes_the_whole_process_group(tmp_path: Path) -> None:
    log = tmp_path / "parent.log"
    code = (
        "import subprocess, sys, time; "
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print('child', c.pid, flush=True); time.sleep(120)"
    )
    record = launch(_python(code, log))
    _wait_for_line(log, "child ")
    child = int(log.read_text().split("child ")[1].split()[0])
    assert set(group_pids(record.pid)) >= {record.pid, child}
    stop_all([record])
    assert group_pids(record.pid) == []
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


def test_recycled_pid_is_never_signalled(tmp_path: Path) -> None:
    # Our own pid with a wrong start time: as if the service died and the pid was reused.
    record = ProcessRecord(
        name="gone",
        pid=os.getpid(),
        start_ticks=1,
        log_path=tmp_path / "gone.log",
        argv=["x"],
        stop_timeout=1.0,
    )
    assert not is_running(record)
    assert stop(record) is False
    assert stop_all([record]) == []


def test_missing_executable_is_a_stack_error(tmp_path: Path) -> None:
    spec = ProcessSpec(
        name="ghost", argv=[str(tmp_path / "no-such-binary")], log_path=tmp_path / "g.log"
    )
    with pytest.raises(StackError, match="ghost: cannot execute"):
        launch(spec)


def test_log_tail_keeps_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "long.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    tail = log_tail(log, lines=3)
    assert tail.splitlines() == ["line 97", "line 98", "line 99"]
    assert log_tail(tmp_path / "missing.log") == ""
