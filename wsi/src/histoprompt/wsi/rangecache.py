"""A local sparse file filled on demand from a ranged ByteSource: how cuCIM, which opens
paths only, reads an SVS/TIFF in S3 without downloading the whole object.

The file is created at the object's full size as a hole (ftruncate: no disk blocks). Bytes
are fetched only when asked for: first the TIFF structure (every IFD and tag value, which is
what a TIFF parser such as cuCIM's reads on open), then, before each region read, the tiles
that region covers. Offsets in the file are the object's offsets, so the reader sees a
normal TIFF wherever it looks at fetched bytes; bytes never fetched are zeros and are never
looked at, because nothing reads a tile before `ensure_regions` fetched it.
"""

from __future__ import annotations

import bisect
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, cast

from histoprompt.wsi.errors import parse_guard
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import ByteSource, RangedFile, coalesce
from histoprompt.wsi.slide import Region

__all__ = ["SparseRangeFile", "TiffRangeCache", "tile_ranges"]


class SparseRangeFile:
    """A sparse local copy of `source`: `ensure` fetches missing byte ranges into it (aligned
    to `align`, nearby ones merged into one GET); it is itself a ByteSource over the copy."""

    def __init__(
        self,
        source: ByteSource,
        limits: ReadLimits,
        directory: Path | None = None,
        align: int = 64 * 1024,
    ) -> None:
        self._src = source
        self._limits = limits
        self._align = align
        self.size = source.size
        self.gets = 0
        self.bytes_fetched = 0
        self._have: list[tuple[int, int]] = []  # sorted, disjoint [start, end)
        self._lock = threading.Lock()
        self._tmp = tempfile.NamedTemporaryFile(dir=directory, suffix=".tiff")  # noqa: SIM115
        os.ftruncate(self._tmp.fileno(), self.size)

    @property
    def path(self) -> str:
        return self._tmp.name

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of [start, end) not fetched yet, as [start, end) pairs."""
        out: list[tuple[int, int]] = []
        i = bisect.bisect_right(self._have, (start, self.size + 1)) - 1
        pos = start
        for lo, hi in self._have[max(i, 0) :]:
            if lo >= end:
                break
            if hi <= pos:
                continue
            if lo > pos:
                out.append((pos, lo))
            pos = max(pos, hi)
        if pos < end:
            out.append((pos, end))
        return out

    def _mark(self, start: int, end: int) -> None:
        spans = [*self._have, (start, end)]
        spans.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self._have = merged

    def ensure(self, ranges: Sequence[tuple[int, int]]) -> int:
        """Fetch whatever of these (offset, length) ranges is not in the file yet; returns the
        bytes fetched."""
        a = self._align
        with self._lock:
            want: list[tuple[int, int]] = []
            for off, length in ranges:
                if length <= 0:
                    continue
                lo, hi = off // a * a, min(-(-(off + length) // a) * a, self.size)
                want += [(s, e - s) for s, e in self.missing(lo, hi)]
            fetched = 0
            # One GET per merged span: a fetched gap between two wanted ranges is rewritten
            # with the same bytes, cheaper than a second request.
            for span in coalesce(want, self._limits.coalesce_gap, self._limits.max_range):
                data = self._src.read_range(span.start, span.end - span.start)
                os.pwrite(self._tmp.fileno(), data, span.start)
                self._mark(span.start, span.end)
                self.gets += 1
                fetched += len(data)
            self.bytes_fetched += fetched
            return fetched

    def read_range(self, offset: int, length: int) -> bytes:
        self.ensure([(offset, length)])
        return os.pread(self._tmp.fileno(), length, offset)

    def close(self) -> None:
        self._tmp.close()


def tile_ranges(page: Any, region: Region) -> list[tuple[int, int]]:
    """(offset, length) of the tiles (or strips) of a tifffile page that `region` (in the
    page's pixels) covers."""
    w, h = int(page.imagewidth), int(page.imagelength)
    x0, y0 = max(region.x, 0), max(region.y, 0)
    x1, y1 = min(region.x + region.w, w), min(region.y + region.h, h)
    if x0 >= x1 or y0 >= y1:
        return []
    offsets, counts = page.dataoffsets, page.databytecounts
    if page.is_tiled:
        tw, th = int(page.tilewidth), int(page.tilelength)
        across = -(-w // tw)
        idx = [
            r * across + c
            for r in range(y0 // th, (y1 - 1) // th + 1)
            for c in range(x0 // tw, (x1 - 1) // tw + 1)
        ]
    else:
        rps = int(page.rowsperstrip) or h
        idx = list(range(y0 // rps, (y1 - 1) // rps + 1))
    return [(int(offsets[i]), int(counts[i])) for i in idx if i < len(offsets) and counts[i]]


def _structure_ranges(tif: Any) -> list[tuple[int, int]]:
    """Every IFD and every tag value outside it, of every top-level page (pyramid, label,
    macro). SubIFDs are not walked here; whatever of them tifffile parsed is in the file
    already, since it parses through the cache."""
    entry, head = (20, 8) if tif.is_bigtiff else (12, 2)
    out: list[tuple[int, int]] = []
    for page in tif.pages:
        n = len(page.tags)
        out.append((int(page.offset), head + n * entry + (8 if tif.is_bigtiff else 4)))
        for tag in page.tags.values():
            if tag.valuebytecount > (8 if tif.is_bigtiff else 4):
                out.append((int(tag.valueoffset), int(tag.valuebytecount)))
    return out


class TiffRangeCache:
    """The TIFF structure of `source` in a sparse local file, and the tiles of each region
    fetched before it is read (`ensure_regions`, the hook CucimReader calls)."""

    def __init__(
        self,
        source: ByteSource,
        limits: ReadLimits,
        directory: Path | None = None,
        align: int = 64 * 1024,
    ) -> None:
        import tifffile

        self.file = SparseRangeFile(source, limits, directory, align)
        # tifffile parses the structure through the cache itself, so what it reads lands in
        # the sparse file; then every IFD and tag value is fetched for the next parser.
        # Blocks of `align`, not limits.block_size: each IFD costs one small block, not 256 KiB.
        self._raw = RangedFile(self.file, align, limits.tiff_block_cache_blocks)
        try:
            with parse_guard("TIFF does not open", "corrupt_tiff"):
                # A RawIOBase is what tifffile reads from; its stubs name only IO[bytes].
                self._tif: Any = tifffile.TiffFile(cast(IO[bytes], self._raw))
                self.file.ensure(_structure_ranges(self._tif))
                self._levels = list(self._tif.series[0].levels)
        except Exception:
            self.close()
            raise

    @property
    def path(self) -> str:
        return self.file.path

    def ensure_regions(self, level: int, regions: Sequence[Region]) -> int:
        """Fetch the tiles `regions` (in `level`'s pixels) cover; returns bytes fetched."""
        page = self._levels[level].keyframe
        wanted = [r for reg in regions for r in tile_ranges(page, reg)]
        # pwrite goes through the page cache, which a reader of the path on this host sees.
        return self.file.ensure(wanted)

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
        self.file.close()
