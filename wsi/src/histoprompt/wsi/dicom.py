"""DICOM-WSI (VL Whole Slide Microscopy Image Storage) over ranged reads.

Per instance: the header (and the Extended or Basic Offset Table) is read through a small
block cache; frames are fetched only when a region needs them, with adjacent frames merged
into one GET. TILED_FULL and TILED_SPARSE; JPEG, JPEG 2000, JPEG-LS, uncompressed; RGB and
monochrome. LABEL and OVERVIEW instances are recognised from the header and never read.
Patient attributes in the header are never copied out of this module.
"""

from __future__ import annotations

import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.wsi.codecs import SUPPORTED, FrameDecoder, FrameFormat
from histoprompt.wsi.decoders import backend_for
from histoprompt.wsi.dicom_header import (
    frame_positions,
    header_values,
    offset_table,
    pixel_spacing,
    read_header,
)
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import ByteSource, RangedFile, read_ranges
from histoprompt.wsi.slide import BACKGROUND, Level, Region, paste
from histoprompt.wsi.stage_clock import CPU_STAGES

_ITEM = 0xE000FFFE  # (FFFE,E000) read as one little-endian uint32
_SEQ_END = 0xE0DDFFFE


def _item(buf: bytes, at: int = 0) -> tuple[int, int]:
    if len(buf) < at + 8:
        raise SlideError("pixel data ends inside an item header", code="truncated")
    tag, length = struct.unpack_from("<II", buf, at)
    return tag, length


class DicomInstance:
    """One VOLUME instance: geometry, frame index and frame byte ranges (no PHI kept)."""

    def __init__(
        self, source: ByteSource, limits: ReadLimits, decoder: FrameDecoder | None = None
    ) -> None:
        self._src = source
        self._limits = limits
        self._file = RangedFile(
            source, limits.block_size, limits.block_cache_blocks, max_read=limits.max_range
        )
        ds = read_header(self._file)
        self._pixel_pos = self._file.tell()
        with header_values():
            self.image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()))
            self.flavor = self.image_type[2] if len(self.image_type) > 2 else "VOLUME"
            self.syntax = str(ds.file_meta.TransferSyntaxUID)
            self.rows = int(ds.Rows)
            self.cols = int(ds.Columns)
            self.samples = int(ds.get("SamplesPerPixel", 1))
            self.photometric = str(ds.get("PhotometricInterpretation", "RGB"))
            self.width = int(ds.get("TotalPixelMatrixColumns", self.cols))
            self.height = int(ds.get("TotalPixelMatrixRows", self.rows))
            self.n_frames = int(ds.get("NumberOfFrames", 1))
            self._ds_eot = ds.get("ExtendedOffsetTable")
            self._ds_eotl = ds.get("ExtendedOffsetTableLengths")
            self._check(ds)
            self.mpp = pixel_spacing(ds, self.width)
            # numpy, not dicts of tuples: a 50k^2 px level has ~40k frames
            self.positions = frame_positions(ds, self)
        self.frame_format = FrameFormat.of(
            self.syntax, self.rows, self.cols, self.samples, self.photometric
        )
        self._decoder = backend_for(decoder, self.frame_format)
        cols_n, rows_n = self.grid
        self._index = np.full((rows_n, cols_n), -1, dtype=np.int32)
        pos = self.positions
        ok = (pos[:, 0] >= 0) & (pos[:, 1] >= 0) & (pos[:, 0] < cols_n) & (pos[:, 1] < rows_n)
        valid = np.nonzero(ok)[0]
        self._index[self.positions[valid, 1], self.positions[valid, 0]] = valid
        self._ranges: NDArray[Any] | None = None
        self._ranges_lock = threading.Lock()
        self._frames: OrderedDict[int, NDArray[Any]] = OrderedDict()
        self._frames_lock = threading.Lock()
        # Compressed bytes of frames fetched ahead (histoprompt.wsi.read_ahead).
        self._staged: dict[int, bytes] = {}

    # -- header checks ---------------------------------------------------------------------

    def _check(self, ds: Any) -> None:
        if self.syntax not in SUPPORTED:
            raise SlideError(f"transfer syntax {self.syntax} is not supported", code="unsupported")
        if int(ds.get("BitsAllocated", 8)) != 8:
            raise SlideError("only 8-bit slides are supported", code="unsupported")
        if self.samples not in (1, 3):
            raise SlideError(f"{self.samples} samples per pixel", code="unsupported")
        if self.width * self.height > self._limits.max_pixels:
            raise SlideError(
                f"slide is {self.width}x{self.height} px, over the limit of "
                f"{self._limits.max_pixels} px (HISTOPROMPT_INGEST_MAX_PIXELS)",
                code="too_large",
            )
        if self.width <= 0 or self.height <= 0:
            raise SlideError("DICOM-WSI header has an empty pixel matrix", code="corrupt_header")
        if self.rows * self.cols > self._limits.max_frame_pixels or self.rows * self.cols == 0:
            raise SlideError(
                f"frame size {self.rows}x{self.cols} is out of range", code="too_large"
            )
        if self.n_frames <= 0:
            raise SlideError("instance has no frames", code="corrupt_header")
        cols_n, rows_n = self.grid
        if max(self.n_frames, cols_n * rows_n) > self._limits.max_frames:
            raise SlideError(
                f"{self.n_frames} frames in a {cols_n}x{rows_n} grid, over the limit of "
                f"{self._limits.max_frames} frames",
                code="too_large",
            )

    # -- frame locations -------------------------------------------------------------------

    def frame_ranges(self) -> NDArray[Any]:
        """int64 [n_frames, 2]: (offset, length) of each frame's bytes (computed once)."""
        with self._ranges_lock:
            if self._ranges is None:
                self._ranges = np.asarray(self._locate_frames(), dtype=np.int64).reshape(-1, 2)
            return self._ranges

    def _locate_frames(self) -> list[tuple[int, int]]:
        pos = self._pixel_pos
        head = self._file.pread(pos, 12)
        if len(head) < 12:
            raise SlideError("pixel data is missing", code="truncated")
        group, elem = struct.unpack_from("<HH", head)
        if (group, elem) != (0x7FE0, 0x0010):
            raise SlideError("pixel data element not found", code="corrupt_header")
        vr = head[4:6]
        if vr in (b"OB", b"OW"):
            length = struct.unpack_from("<I", head, 8)[0]
            start = pos + 12
        else:  # implicit VR: 4-byte length right after the tag
            length = struct.unpack_from("<I", head, 4)[0]
            start = pos + 8
        if length != 0xFFFFFFFF:
            frame_bytes = self.rows * self.cols * self.samples
            if start + frame_bytes * self.n_frames > self._src.size:
                raise SlideError("pixel data is shorter than its frames", code="truncated")
            return [(start + i * frame_bytes, frame_bytes) for i in range(self.n_frames)]
        tag, bot_len = _item(self._file.pread(start, 8))
        if tag != _ITEM:
            raise SlideError(
                "encapsulated pixel data has no offset table item", code="corrupt_header"
            )
        first = start + 8 + bot_len
        if self._ds_eot is not None and self._ds_eotl is not None:
            offs = offset_table(self._ds_eot, "<u8")
            lens = offset_table(self._ds_eotl, "<u8")
            if len(offs) != self.n_frames or len(lens) != self.n_frames:
                raise SlideError("extended offset table length mismatch", code="corrupt_header")
            ranges = [(first + int(o) + 8, int(n)) for o, n in zip(offs, lens, strict=True)]
        elif bot_len:
            offs = offset_table(self._file.pread(start + 8, bot_len), "<u4")
            if len(offs) != self.n_frames:
                raise SlideError("basic offset table length mismatch", code="corrupt_header")
            ranges = [
                (first + int(offs[i]) + 8, int(offs[i + 1]) - int(offs[i]) - 8)
                for i in range(self.n_frames - 1)
            ]
            last = first + int(offs[-1])
            if last + 8 > self._src.size:
                raise SlideError("pixel data ends before its last frame", code="truncated")
            # Its own 8-byte GET: through the block cache it fetched a whole block near the
            # object's end (256 KiB of frame bytes read for one item header).
            head = self._src.read_range(last, 8)
            tag, n = _item(head)
            if tag != _ITEM:
                raise SlideError("offset table points at no frame", code="corrupt_header")
            ranges.append((last + 8, n))
        else:
            ranges = self._scan_items(first)
        end = self._src.size
        for off, n in ranges:
            if n < 0 or off + n > end:
                raise SlideError("a frame runs past the end of the object", code="truncated")
        return ranges

    def _scan_items(self, first: int) -> list[tuple[int, int]]:
        """No offset table: walk the item headers (reads the pixel data once, in blocks)."""
        ranges: list[tuple[int, int]] = []
        pos = first
        while len(ranges) < self.n_frames:
            head = self._file.pread(pos, 8)
            if len(head) < 8:
                raise SlideError("pixel data ends before its last frame", code="truncated")
            tag, n = _item(head)
            if tag == _SEQ_END:
                break
            if tag != _ITEM:
                raise SlideError("corrupt fragment item in pixel data", code="corrupt_frame")
            ranges.append((pos + 8, n))
            pos += 8 + n
        if len(ranges) != self.n_frames:
            raise SlideError(
                f"{len(ranges)} fragments for {self.n_frames} frames", code="unsupported"
            )
        return ranges

    # -- frames ----------------------------------------------------------------------------

    @property
    def grid(self) -> tuple[int, int]:
        return -(-self.width // self.cols), -(-self.height // self.rows)

    def _frame_block(self, region: Region) -> NDArray[Any]:
        """The frame-index cells (-1: no frame) under the part of `region` inside the image."""
        c0, r0 = max(region.x, 0) // self.cols, max(region.y, 0) // self.rows
        c1 = min(region.x + region.w, self.width) - 1
        r1 = min(region.y + region.h, self.height) - 1
        if c1 < 0 or r1 < 0:
            return self._index[:0, :0]
        return self._index[r0 : r1 // self.rows + 1, c0 : c1 // self.cols + 1]

    def frames_for(self, region: Region) -> list[int]:
        block = self._frame_block(region)
        out: list[int] = block[block >= 0].tolist()
        return out

    def load_frames(self, indices: Sequence[int], cache: bool = True) -> dict[int, NDArray[Any]]:
        """Decoded frames for `indices`: cached ones, then staged ones (`stage`), then the
        rest in coalesced GETs."""
        out: dict[int, NDArray[Any]] = {}
        missing = []
        with self._frames_lock:
            for i in indices:
                frame = self._frames.get(i)
                if frame is None:
                    missing.append(i)
                else:
                    self._frames.move_to_end(i)
                    out[i] = frame
            staged = {i: self._staged.pop(i) for i in missing if i in self._staged}
        if missing:
            table = self.frame_ranges()
            ranges = {i: (int(table[i, 0]), int(table[i, 1])) for i in missing if i not in staged}
            with CPU_STAGES.stage("read"):
                blobs = read_ranges(
                    self._src,
                    list(ranges.values()),
                    self._limits.coalesce_gap,
                    self._limits.max_range,
                )
            data = [staged[i] if i in staged else blobs[ranges[i]] for i in missing]
            with CPU_STAGES.stage("decode"):
                self._decode_into(out, missing, data)
            if not cache:
                return out
            with self._frames_lock:
                for i in missing:
                    self._frames[i] = out[i]
                while len(self._frames) > self._limits.frame_cache:
                    self._frames.popitem(last=False)
        return out

    def stage(self, data: dict[int, bytes]) -> None:
        """Hold these frames' compressed bytes until load_frames decodes them (each once),
        in place of what was staged before."""
        with self._frames_lock:
            self._staged = data

    def _decode_into(
        self, out: dict[int, NDArray[Any]], indices: Sequence[int], data: Sequence[bytes]
    ) -> None:
        decoded = self._decoder.decode(data, self.frame_format)
        out.update(zip(indices, decoded, strict=True))

    def read_regions(self, regions: Sequence[Region], cache: bool = True) -> list[NDArray[Any]]:
        with CPU_STAGES.stage("tiles"):
            return self._read_regions(regions, cache)

    def _read_regions(self, regions: Sequence[Region], cache: bool) -> list[NDArray[Any]]:
        needed = sorted({i for r in regions for i in self.frames_for(r)})
        frames = self.load_frames(needed, cache)
        return [self.canvas(frames, reg) for reg in regions]

    def read_regions_into(self, regions: Sequence[Region], out: NDArray[Any]) -> None:
        """Regions of equal size painted straight into `out` [len(regions), h, w, 3] (e.g. a
        shared-memory batch): no canvas per region and no copy of it."""
        with CPU_STAGES.stage("tiles"):
            needed = sorted({i for r in regions for i in self.frames_for(r)})
            frames = self.load_frames(needed, True)
            for k, reg in enumerate(regions):
                self.paint(frames, reg, out[k])

    def canvas(self, frames: Mapping[int, Any], reg: Region, xp: Any = np) -> Any:
        """`reg` assembled from its decoded `frames` (arrays of module xp: numpy, or CuPy for
        histoprompt.wsi.gpu_tiles); background outside the image."""
        canvas = xp.empty((reg.h, reg.w, 3), dtype=xp.uint8)
        self.paint(frames, reg, canvas)
        return canvas

    def paint(self, frames: Mapping[int, Any], reg: Region, dst: Any) -> None:
        """`reg` from its decoded `frames` into `dst` [reg.h, reg.w, 3]: every pixel written,
        background where no frame is or beyond the image. A region the frames cover (nearly
        all of them) is written once, with no background fill first."""
        block = self._frame_block(reg)
        present = block >= 0
        inside = reg.x >= 0 and reg.y >= 0
        inside = inside and reg.x + reg.w <= self.width and reg.y + reg.h <= self.height
        covered = inside and bool(present.all())
        if not covered:
            dst[...] = BACKGROUND
        for i in block[present].tolist():
            c, r = self.positions[i].tolist()
            paste(dst, frames[i], c * self.cols - reg.x, r * self.rows - reg.y)
        if covered:
            return
        # Frames are padded to full tiles; blank what lies beyond the image.
        vis_w, vis_h = self.width - reg.x, self.height - reg.y
        if vis_w < reg.w:
            dst[:, max(vis_w, 0) :] = BACKGROUND
        if vis_h < reg.h:
            dst[max(vis_h, 0) :, :] = BACKGROUND


class DicomSlide:
    """A series (or one instance) as a pyramid of VOLUME levels, finest first."""

    format = "dicom"

    def __init__(
        self,
        sources: Sequence[ByteSource],
        limits: ReadLimits,
        decoder: FrameDecoder | None = None,
    ) -> None:
        volumes: list[DicomInstance] = []
        for src in sources:
            inst = DicomInstance(src, limits, decoder)
            if inst.flavor == "VOLUME" or (inst.flavor == "THUMBNAIL" and not volumes):
                volumes.append(inst)
            # LABEL / OVERVIEW: header seen, pixels never fetched.
        volumes = [v for v in volumes if v.flavor == "VOLUME"] or volumes
        if not volumes:
            raise SlideError("series has no VOLUME instance", code="not_wsi")
        volumes.sort(key=lambda v: v.width * v.height, reverse=True)
        self._instances = volumes
        self.levels = [Level(v.width, v.height, v.mpp) for v in volumes]

    def instance(self, level: int) -> DicomInstance:
        return self._instances[level]

    def read_regions(
        self, level: int, regions: Sequence[Region], cache: bool = True
    ) -> list[NDArray[Any]]:
        return self._instances[level].read_regions(regions, cache)

    def read_regions_into(self, level: int, regions: Sequence[Region], out: NDArray[Any]) -> None:
        self._instances[level].read_regions_into(regions, out)

    def close(self) -> None:
        self._instances = []
