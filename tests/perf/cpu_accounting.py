"""CPU time (user + system) of groups of processes, read with psutil before and after a run.

A group is a root process and all its descendants (Triton and its python-backend stubs,
say). Wall-clock rates are noisy on a shared machine; CPU seconds spent by the processes
that do the work are not, and divided by tiles they give the CPU cost per tile.

Descendants that start during the run count in full; descendants that exit during it count
up to the last sample that saw them, plus what the root collected when it reaped them
(psutil's children_user / children_system).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

# (pid, create_time): a pid alone may be reused by another process during a long run.
ProcKey = tuple[int, float]


def _busy(times: psutil._common.pcputimes) -> float:  # type: ignore[name-defined]
    return float(times.user + times.system)


def _reaped(times: psutil._common.pcputimes) -> float:  # type: ignore[name-defined]
    return float(getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0))


@dataclass(frozen=True)
class Group:
    """A root process; `tree`: with its descendants (off for a process whose children are
    other groups, e.g. a benchmark driver that started the stack)."""

    pid: int
    tree: bool = True


def tree_cpu(group: Group) -> tuple[dict[ProcKey, float], float]:
    """Busy seconds of the root and each live descendant, and the root's reaped-children
    seconds (0 without `tree`)."""
    root = psutil.Process(group.pid)
    per: dict[ProcKey, float] = {}
    with root.oneshot():
        times = root.cpu_times()
        per[(root.pid, root.create_time())] = _busy(times)
        reaped = _reaped(times)
    if not group.tree:
        return per, 0.0
    for child in root.children(recursive=True):
        try:
            per[(child.pid, child.create_time())] = _busy(child.cpu_times())
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # exited between listing and reading: its time shows up as reaped
    return per, reaped


@dataclass
class CpuSample:
    """One reading of every group: busy seconds per process, reaped seconds per group."""

    per_process: dict[str, dict[ProcKey, float]] = field(default_factory=dict)
    reaped: dict[str, float] = field(default_factory=dict)
    names: dict[ProcKey, str] = field(default_factory=dict)


def label(proc: psutil.Process) -> str:
    """The process name; a Triton python-backend stub also names its model (the model.py path
    on its command line is .../<model>/<version>/model.py)."""
    name = proc.name()
    if "stub" in name:
        for arg in proc.cmdline():
            parts = arg.split("/")
            if arg.endswith("model.py") and len(parts) >= 3:
                return f"stub:{parts[-3]}"
    return name


def sample(groups: Mapping[str, Group]) -> CpuSample:
    """Read every group now."""
    out = CpuSample()
    for name, group in groups.items():
        per, reaped = tree_cpu(group)
        out.per_process[name] = per
        out.reaped[name] = reaped
        for key in per:
            try:
                out.names[key] = label(psutil.Process(key[0]))
            except psutil.Error:
                out.names[key] = "?"
    return out


def delta(before: CpuSample, after: CpuSample) -> dict[str, float]:
    """CPU seconds each group spent between two samples (never negative)."""
    spent: dict[str, float] = {}
    for name, now in after.per_process.items():
        then = before.per_process.get(name, {})
        live = sum(max(0.0, secs - then.get(key, 0.0)) for key, secs in now.items())
        # Exited children: what they had at `before` is inside the reaped growth already.
        gone = sum(secs for key, secs in then.items() if key not in now)
        reaped = after.reaped.get(name, 0.0) - before.reaped.get(name, 0.0)
        spent[name] = live + max(0.0, reaped - gone)
    return spent


def delta_by_process(before: CpuSample, after: CpuSample, group: str) -> dict[str, float]:
    """Within one group: CPU seconds per process name (stubs of one model summed by name)."""
    then = before.per_process.get(group, {})
    out: dict[str, float] = {}
    for key, secs in after.per_process.get(group, {}).items():
        label = after.names.get(key, "?")
        out[label] = out.get(label, 0.0) + max(0.0, secs - then.get(key, 0.0))
    return out


@dataclass
class CpuMeasurement:
    """What `measure` yields: filled in when the block exits."""

    groups: dict[str, float] = field(default_factory=dict)
    before: CpuSample | None = None
    after: CpuSample | None = None

    @property
    def total(self) -> float:
        return sum(self.groups.values())


@contextmanager
def measure(groups: Mapping[str, Group]) -> Iterator[CpuMeasurement]:
    """CPU seconds per group spent while the block runs."""
    result = CpuMeasurement()
    result.before = sample(groups)
    yield result
    result.after = sample(groups)
    result.groups = delta(result.before, result.after)
