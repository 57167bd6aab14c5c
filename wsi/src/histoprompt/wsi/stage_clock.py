"""CPU seconds per data-path stage (read, decode, mask, tiles), process-wide.

Wall time per stage hides where the CPU goes: reads wait on S3, decode competes with the
event loop for the cores. Each stage is timed with `time.thread_time()` (the calling thread's
CPU time), so stages running in several worker threads add up correctly. Stages nest: an
inner stage pauses the outer one, so each CPU second is charged to exactly one stage.
ingest exports the totals as a counter (histoprompt_ingest_stage_cpu_seconds_total).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CPU_STAGES", "STAGES", "StageClock"]

STAGES = ("read", "decode", "mask", "tiles")
"""read: S3 GETs and copies of the bytes; decode: frame decode; mask: the tissue mask and
the tile grid (less its own reads and decodes); tiles: tile assembly (paste, crop, resize)."""


class StageClock:
    """Thread-safe CPU-second totals per stage name."""

    def __init__(self) -> None:
        self._totals: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()
        self._local = threading.local()

    def _charge(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._totals[stage] = self._totals.get(stage, 0.0) + seconds

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Charge this thread's CPU time inside the block to `name` (nested stages excluded)."""
        stack: list[str] = self._local.__dict__.setdefault("stack", [])
        now = time.thread_time()
        if stack:
            self._charge(stack[-1], now - self._local.since)
        stack.append(name)
        self._local.since = now
        try:
            yield
        finally:
            now = time.thread_time()
            self._charge(stack.pop(), now - self._local.since)
            self._local.since = now

    def totals(self) -> dict[str, float]:
        """CPU seconds per stage since the process started."""
        with self._lock:
            return dict(self._totals)


CPU_STAGES = StageClock()
"""The process's clock: the wsi readers charge it; ingest exports it."""
