"""Read ahead: fetch the frames of several batches of tiles in one coalesced read.

Reading one batch's frames at a time splits each frame row between GETs (a batch covers
part of a tile row, which spans two frame rows). Each GET costs the S3 server far more
than its bytes do, so before a batch the frames of the next `window` tiles are fetched and
decoded together into the DICOM frame cache, as many as a quarter of the cache holds; the batches
then find them there. Results are unchanged: the same frames, decoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from histoprompt.wsi.dicom import DicomSlide
from histoprompt.wsi.slide import Region, SlideReader
from histoprompt.wsi.tiling import TilePlan, read_tiles

__all__ = ["ReadAhead", "prefetch"]


def prefetch(slide: DicomSlide, level: int, regions: Sequence[Region]) -> int:
    """Load into the frame cache the frames of the leading `regions`, up to a quarter of it,
    in one coalesced read; returns how many regions that covers."""
    inst = slide.instance(level)
    # A quarter of the instance's cache bound: decoded in one burst before the cache evicts,
    # they add to its peak memory.
    budget = max(1, inst._limits.frame_cache // 4)
    frames: set[int] = set()
    covered = 0
    for region in regions:
        more = frames.union(inst.frames_for(region))
        if len(more) > budget and covered:
            break
        frames, covered = more, covered + 1
    inst.load_frames(sorted(frames))
    return covered


@dataclass
class ReadAhead:
    """Reads batches of tiles, prefetching `window` tiles' frames from a DicomSlide (other
    readers are read batch by batch)."""

    window: int
    until: int = 0

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
            self.until = start + prefetch(slide, plan.level, plan.regions(start, end))
        return read_tiles(slide, plan, start, stop, out)
