"""Read ahead: fetch the compressed frames of several batches of tiles in one coalesced read.

Reading one batch's frames at a time splits each frame row between GETs (a batch covers
part of a tile row, which spans two frame rows). Each GET costs the S3 server far more
than its bytes do, so before a batch the frames of the next `window` tiles are fetched
together and staged, still compressed, on the DICOM instance (`DicomInstance.stage`); each
batch then decodes its own frames from there. Results are unchanged: the same frames,
decoded once.

Memory: what is read ahead is held compressed, at most `ReadLimits.read_ahead_bytes` (a
fixed budget, whatever the slide's size or width), and decoding stays batch by batch.
Decoding the whole window in one burst, as this module first did, put up to a quarter of
the frame cache of decoded frames into one allocation burst in whichever worker thread
read it, and the ingest process's peak RSS grew with the slide's size (issue 15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    readers are read batch by batch). `peak_bytes`: the most it has held staged at once."""

    window: int
    until: int = 0
    peak_bytes: int = 0

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
