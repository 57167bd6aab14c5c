"""Start, health-wait and stop service processes; each gets a log file and its own session.

A process is recorded with its pid and its kernel start time, so another process (for
example `stack down` from a new shell) can stop it later without ever signalling a
recycled pid. Each service runs in its own session (process group): stopping signals the
whole group, which also takes child processes such as Triton's python-backend stubs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from histoprompt.stack.errors import StackError

LOG_TAIL_LINES = 40
_PR_SET_PDEATHSIG = 1


class StartAborted(StackError):
    """A wait was called off because another service of the stack failed first."""


class ProcessRecord(BaseModel):
    """A started service process, as stored in the stack's state file."""

    model_config = ConfigDict(frozen=True)

    name: str
    pid: int
    start_ticks: int
    log_path: Path
    argv: list[str]
    stop_timeout: float


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one service process."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    stop_timeout: float = 10.0


def service_log(state_dir: Path, name: str) -> Path:
    """Where service `name` writes its output: what `prepare` names in its ProcessSpec and
    what `up` clears before a fresh start."""
    return state_dir / "logs" / f"{name}.log"


def service_dirs(state_dir: Path, name: str) -> tuple[Path, Path]:
    """(home, data) of service `name`: <state>/<name> (what `up` removes before a fresh
    start) and its data folder, created."""
    home = state_dir / name
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    return home, data


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' when it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _start_ticks(pid: int) -> int | None:
    """Kernel start time of `pid` in clock ticks, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _reap(pid: int) -> None:
    """Collect the exit status when `pid` is our own child, so it leaves no zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_running(record: ProcessRecord) -> bool:
    """True while the recorded process (same pid and start time) is alive and not a zombie."""
    _reap(record.pid)
    if _start_ticks(record.pid) != record.start_ticks:
        return False
    return _state(record.pid) not in (None, "Z", "X")


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel SIGKILLs it when its parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def launch(spec: ProcessSpec, *, die_with_parent: bool = False) -> ProcessRecord:
    """Start `spec` in a new session with stdout and stderr appended to its log file."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **spec.env}
    with spec.log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv is built by this package, no shell
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
            )
        except OSError as err:
            raise StackError(
                f"cannot execute {spec.argv[0]}: {err}", service=spec.name, log_path=spec.log_path
            ) from err
    ticks = _start_ticks(proc.pid)
    return ProcessRecord(
        name=spec.name,
        pid=proc.pid,
        start_ticks=ticks if ticks is not None else -1,
        log_path=spec.log_path,
        argv=list(spec.argv),
        stop_timeout=spec.stop_timeout,
    )


def failure(record: ProcessRecord, reason: str) -> StackError:
    """A StackError for `record` with its log tail."""
    return StackError(
        reason, service=record.name, log_path=record.log_path, log_tail=log_tail(record.log_path)
    )


def wait_until_healthy(
    records: Mapping[str, ProcessRecord],
    probes: Mapping[str, Callable[[], None]],
    timeout: float,
    *,
    interval: float = 0.25,
    started: Mapping[str, float] | None = None,
    abort: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Poll every probe until all pass; return each service's seconds from start to healthy.

    A probe raises when its service is not ready yet. A process that exits, or a service
    still not ready after `timeout` seconds, raises one StackError with its log tail.
    `abort` returning True stops the wait early with a StackError (another service failed).
    """
    t0 = time.monotonic()
    starts = dict(started or {})
    pending = dict(probes)
    ready: dict[str, float] = {}
    last_error: dict[str, str] = {}
    while pending:
        for name in list(pending):
            record = records[name]
            try:
                pending[name]()
            except Exception as err:  # noqa: BLE001 - a probe failure means "not yet"
                last_error[name] = f"{type(err).__name__}: {err}"
                if not is_running(record):
                    raise failure(
                        record, f"process {record.pid} exited before it became healthy"
                    ) from err
            else:
                ready[name] = time.monotonic() - starts.get(name, t0)
                del pending[name]
        if not pending:
            break
        if abort is not None and abort():
            raise StartAborted("start-up aborted", service=next(iter(pending)))
        if time.monotonic() - t0 > timeout:
            name = next(iter(pending))
            raise failure(
                records[name],
                f"not healthy after {timeout:.0f} s (last check: {last_error.get(name, '-')})",
            )
        time.sleep(interval)
    return ready


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_gone(record: ProcessRecord, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_running(record) and not group_pids(record.pid):
            return True
        time.sleep(0.1)
    return not is_running(record) and not group_pids(record.pid)


def stop(record: ProcessRecord, timeout: float | None = None) -> bool:
    """SIGTERM the service's process group, SIGKILL it after `timeout` s; True if it was killed.

    Does nothing when the recorded process is gone or its pid now belongs to another process.
    """
    wait = record.stop_timeout if timeout is None else timeout
    if not is_running(record):
        # The leader may be gone while children of its group live on (e.g. a backend stub).
        if _start_ticks(record.pid) is None and group_pids(record.pid):
            _signal_group(record.pid, signal.SIGKILL)
            _wait_gone(record, 5.0)
        return False
    _signal_group(record.pid, signal.SIGTERM)
    if _wait_gone(record, wait):
        return False
    _signal_group(record.pid, signal.SIGKILL)
    if not _wait_gone(record, 10.0):
        raise failure(record, f"process group {record.pid} survived SIGKILL")
    return True


def stop_all(records: Sequence[ProcessRecord]) -> list[str]:
    """Stop several services at once (SIGTERM all, then SIGKILL each late one).

    Returns the names that had to be SIGKILLed. Stopping in parallel keeps `down` as
    short as the slowest service instead of the sum of all.
    """
    live = [r for r in records if is_running(r)]
    for record in live:
        _signal_group(record.pid, signal.SIGTERM)
    killed: list[str] = []
    t0 = time.monotonic()
    for record in live:
        remaining = max(0.0, record.stop_timeout - (time.monotonic() - t0))
        if _wait_gone(record, remaining):
            continue
        _signal_group(record.pid, signal.SIGKILL)
        killed.append(record.name)
    for record in records:
        # Sweep leftovers, e.g. a child that outlived its leader, then wait for all.
        if _start_ticks(record.pid) is None and group_pids(record.pid):
            _signal_group(record.pid, signal.SIGKILL)
        if not _wait_gone(record, 10.0):
            raise failure(record, f"process group {record.pid} survived SIGKILL")
    return killed
