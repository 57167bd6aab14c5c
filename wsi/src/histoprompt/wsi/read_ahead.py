"""Read ahead: fetch the compressed frames of several batches of tiles in one coalesced read.

Reading one batch's frames at a time splits each frame row between GETs (a batch covers
part of a tile row, which spans two frame rows). Each GET costs the S3 server far more
than its bytes do, so before a batch the frames of the next `window` tiles are fetched
together and staged, still compressed, on the DICOM instance (`DicomInstance.stage`); each
batch then decodes its own frames from there. Results are unchanged: the same frames,
decoded once.

Memory: what is read ahead is held compressed, at most `ReadLimits.read_ahead_bytes` (a
fixed budget, whatever the slide's size or width), decoding stays batch by batch, and
`read_async` reads every batch of a slide on one thread of its own. Issue 15: the peak RSS
of the ingest process grew with the slide's size although the frames held did not (a
quarter of the frame cache decoded per burst, on any slide). The batches ran on the event
loop's default executor, which adds threads over a long slide (1 thread on a 10k^2 px
SYNTHETIC slide, 4 on a 50k^2 px one), and each thread's malloc arena kept its own freed
frames; bigger decode bursts made each arena's share bigger.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from numpy.typing import NDArray

from histoprompt.wsi.dicom import DicomInstance, DicomSlide
from histoprompt.wsi.ranged import read_ranges
from histoprompt.wsi.slide import Region, SlideReader
from histoprompt.wsi.stage_clock import CPU_STAGES
from histoprompt.wsi.tiling import TilePlan, read_tiles

__all__ = ["ReadAhead", "prefetch"]


def prefetch(inst: DicomInstance, regions: Sequence[Region]) -> tuple[int, int]:
    """Stage on `inst` the compressed frames of the leading `regions` (those not decoded
    already), as many as `read_ahead_bytes` holds, fetched in one coalesced read; returns
    how many regions that covers and the bytes staged."""
    budget = inst._limits.read_ahead_bytes
    table = inst.frame_ranges()
    with inst._frames_lock:
        cached = set(inst._frames)
    frames: set[int] = set()
    held = covered = 0
    for region in regions:
        more = {i for i in inst.frames_for(region) if i not in cached} - frames
        size = sum(int(table[i, 1]) for i in more)
        if held + size > budget and covered:
            break
        frames |= more
        held, covered = held + size, covered + 1
    ranges = {i: (int(table[i, 0]), int(table[i, 1])) for i in frames}
    limits = inst._limits
    with CPU_STAGES.stage("read"):
        blobs = read_ranges(inst._src, list(ranges.values()), limits.coalesce_gap, limits.max_range)
    inst.stage({i: blobs[r] for i, r in ranges.items()})
    return covered, held


@dataclass
class ReadAhead:
    """Reads batches of tiles, fetching `window` tiles' frames ahead from a DicomSlide (other
    readers are read batch by batch). `peak_bytes`: the most it has held staged at once.
    One per slide."""

    window: int
    until: int = 0
    peak_bytes: int = 0
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    async def read_async(
        self,
        slide: SlideReader,
        plan: TilePlan,
        start: int,
        stop: int,
        out: NDArray[Any] | None = None,
    ) -> NDArray[Any]:
        """`read` on this reader's own thread (`close` ends it): one thread, so one malloc
        arena, holds the slide's decoded frames however long the slide."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="slide-read")
        call = functools.partial(
            contextvars.copy_context().run, self.read, slide, plan, start, stop, out
        )
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def close(self) -> None:
        if self._pool is not None:
            # A read still running (a cancelled slide) finishes on its own; none waits.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def read(
        self,
        slide: SlideReader,
        plan: TilePlan,
        start: int,
        stop: int,
        out: NDArray[Any] | None = None,
    ) -> NDArray[Any]:
        if isinstance(slide, DicomSlide) and stop > self.until:
            end = min(plan.n_tiles, start + max(self.window, stop - start))
            inst = slide.instance(plan.level)
            covered, held = prefetch(inst, plan.regions(start, end))
            self.until = start + covered
            self.peak_bytes = max(self.peak_bytes, held)
        return read_tiles(slide, plan, start, stop, out)
