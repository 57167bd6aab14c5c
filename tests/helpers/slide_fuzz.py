"""Run mutated slide bytes through the readers in watched worker processes.

Each case opens the bytes as histoprompt.wsi does (`open_sources`: sniff, then the DICOM or
TIFF reader), reads the series-assembly header of a DICOM object, and reads regions of the
finest and the coarsest level, so frame location and decoding run too, not only the header.

The readers may raise only the project's errors (HistopromptError). Anything else is a
finding, and so are:
- a hang: a case past `case_timeout` (an interval timer in the worker) or, when C code
  holds the worker, past `watchdog` (the parent kills and restarts the worker);
- memory: each worker runs under RLIMIT_AS of its start-up size plus `mem_cap_mb`, and a
  MemoryError, raw or wrapped in a project error, is a finding (a size check must come
  before the allocation);
- a dead worker (a segfault in a codec).
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing as mp
import os
import resource
import signal
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from helpers.slide_mutations import Seed, mutate_case


class CaseTimeout(BaseException):
    """Raised by the interval timer; a BaseException so no reader's `except Exception`
    turns a hang into an ordinary error."""


@dataclass
class FuzzReport:
    """Outcome counts (`ok`, `error:<code>`, `finding`) and each finding's description."""

    cases: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    def add(self, index: int, seed: str, outcome: str) -> None:
        self.cases += 1
        if outcome.startswith("finding"):
            self.outcomes["finding"] += 1
            self.findings.append(f"case {index} ({seed}): {outcome}")
        else:
            self.outcomes[outcome] += 1


def exercise(data: bytes) -> None:
    """Open `data` as a slide and read from it, as ingest and the CLI do."""
    from histoprompt.wsi.instance_header import read_instance_header
    from histoprompt.wsi.limits import ReadLimits
    from histoprompt.wsi.ranged import BytesSource
    from histoprompt.wsi.slide import Region
    from histoprompt.wsi.sources import open_sources, sniff

    limits = ReadLimits(tiff_backend="tiffslide")
    if sniff(BytesSource(data)) == "dicom":
        read_instance_header(BytesSource(data))
    with open_sources([BytesSource(data)], limits) as opened:
        reader = opened.reader
        for level in sorted({0, len(reader.levels) - 1}):
            lv = reader.levels[level]
            regions = [Region(0, 0, 64, 64), Region(lv.width // 2, lv.height // 2, 48, 48)]
            reader.read_regions(level, regions)


def classify(err: BaseException) -> str:
    """'error:<code>' for a project error; 'finding: ...' for anything else."""
    from histoprompt.core.errors import HistopromptError

    chain: list[BaseException] = []
    cur: BaseException | None = err
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(isinstance(e, MemoryError) for e in chain):
        return f"finding: memory ({type(err).__name__}: {err})"
    if isinstance(err, HistopromptError):
        return f"error:{err.code}"
    frame = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
    where = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return f"finding: {type(err).__name__}: {str(err)[:200]}{where}"


def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


def _worker(
    conn: Connection,
    seeds: list[Seed],
    run_seed: int,
    timeout: float,
    cap: int,
    target: Callable[[bytes], None],
) -> None:
    faulthandler.disable()  # a crashing case is reported by the parent, not dumped here
    vm = _vm_size()
    resource.setrlimit(resource.RLIMIT_AS, (vm + cap, vm + cap))
    signal.signal(signal.SIGALRM, _on_alarm)
    # pydicom and tifffile warn and log about every corrupt file; numpy's RuntimeWarnings
    # (a division by zero on a header value) stay errors: they are findings.
    warnings.simplefilter("ignore")
    warnings.simplefilter("error", RuntimeWarning)
    logging.disable(logging.CRITICAL)
    while True:
        index = conn.recv()
        if index is None:
            return
        _seed, data = mutate_case(seeds, run_seed, index)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            target(data)
            outcome = "ok"
        except CaseTimeout:
            outcome = f"finding: hang (over {timeout:g} s)"
        except Exception as err:
            outcome = classify(err)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send((index, outcome))


def _vm_size() -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@dataclass
class _Slot:
    proc: Any
    conn: Connection
    index: int | None = None
    deadline: float = 0.0


def run_cases(
    seeds: list[Seed],
    run_seed: int,
    indices: range,
    *,
    workers: int = 2,
    case_timeout: float = 5.0,
    watchdog: float = 20.0,
    mem_cap_mb: int = 1024,
    target: Callable[[bytes], None] = exercise,
) -> FuzzReport:
    """Every case of `indices`, spread over `workers` forked processes; `target` is what a
    case runs (the readers; the harness's own tests pass a hang or a crash)."""
    ctx = mp.get_context("fork")
    report = FuzzReport()
    todo = list(indices)[::-1]
    t0 = time.monotonic()

    def start() -> _Slot:
        parent, child = ctx.Pipe()
        args = (child, seeds, run_seed, case_timeout, mem_cap_mb << 20, target)
        proc = ctx.Process(target=_worker, args=args, daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent)

    def feed(slot: _Slot) -> None:
        if todo:
            slot.index = todo.pop()
            slot.deadline = time.monotonic() + watchdog
            slot.conn.send(slot.index)
        else:
            slot.index = None

    slots = [start() for _ in range(workers)]
    for slot in slots:
        feed(slot)
    try:
        while any(s.index is not None for s in slots):
            busy = [s for s in slots if s.index is not None]
            wait_s = max(0.0, min(s.deadline for s in busy) - time.monotonic())
            ready = wait([s.conn for s in busy], timeout=wait_s)
            for i, slot in enumerate(slots):
                if slot.index is None:
                    continue
                if slot.conn in ready:
                    try:
                        index, outcome = slot.conn.recv()
                    except EOFError:
                        slot.proc.join(1)
                        outcome = f"finding: worker died (exit {slot.proc.exitcode})"
                        index = slot.index
                        slots[i] = slot = _replace(slot, start)
                    report.add(index, _seed_name(seeds, index), outcome)
                    feed(slot)
                elif time.monotonic() >= slot.deadline:
                    report.add(
                        slot.index, _seed_name(seeds, slot.index), "finding: hang (watchdog)"
                    )
                    slots[i] = slot = _replace(slot, start)
                    feed(slot)
    finally:
        for slot in slots:
            _stop(slot)
    report.seconds = time.monotonic() - t0
    return report


def _seed_name(seeds: list[Seed], index: int) -> str:
    return seeds[index % len(seeds)].name


def _replace(slot: _Slot, start: Any) -> _Slot:
    slot.proc.kill()
    slot.proc.join(5)
    slot.conn.close()
    new: _Slot = start()
    return new


def _stop(slot: _Slot) -> None:
    with contextlib.suppress(OSError):
        slot.conn.send(None)
    slot.proc.join(5)
    if slot.proc.is_alive():
        slot.proc.kill()
        slot.proc.join(5)
    slot.conn.close()


def worker_count() -> int:
    """Two workers (the CI budget is set on two cores), fewer on a one-core machine."""
    return max(1, min(2, os.cpu_count() or 1))
