"""Tile grid at the encoder's target MPP: which level to read, where, and how to resize.

Coordinates in results are level-0 pixels. A slide smaller than one tile yields one tile,
padded with background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.slide import Level, PaintsRegions, Region, SlideReader
from histoprompt.wsi.stage_clock import CPU_STAGES
from histoprompt.wsi.tissue import area_fractions, tissue_mask


def pick_level(levels: Sequence[Level], target_mpp: float, tolerance: float = 0.1) -> int:
    """The coarsest level whose MPP is at most target*(1+tolerance): read there, downsample.

    A slide whose finest level is coarser than that has too little resolution for the encoder
    and fails with `resolution_too_low`: it is never upsampled.
    """
    finest = float(levels[0].mpp)
    if not finest > 0:
        raise SlideError("slide has no microns-per-pixel for its finest level", code="no_mpp")
    if finest > target_mpp * (1 + tolerance):
        raise SlideError(
            f"finest level is {finest:.3g} um/px, coarser than the encoder's "
            f"{target_mpp:.3g} um/px (tolerance {tolerance:.0%}); upsampling would invent "
            "detail: rescan at a higher magnification or loosen HISTOPROMPT_INGEST_MPP_TOLERANCE",
            code="resolution_too_low",
        )
    best = 0
    for i, lvl in enumerate(levels):
        if lvl.mpp <= target_mpp * (1 + tolerance) and lvl.mpp >= levels[best].mpp:
            best = i
    return best


def mask_level(levels: Sequence[Level]) -> int:
    """The coarsest level (smallest area): the tissue mask is computed there."""
    return min(range(len(levels)), key=lambda i: levels[i].width * levels[i].height)


def resize(tile: NDArray[Any], size: int) -> NDArray[Any]:
    """Square uint8 tile -> size x size: box filter for integer factors, else nearest."""
    n = tile.shape[0]
    if n == size:
        return tile
    if n > size and n % size == 0:
        f = n // size
        boxed: NDArray[Any] = tile.reshape(size, f, size, f, 3).mean(axis=(1, 3))
        return boxed.round().astype(np.uint8)
    idx = np.minimum((np.arange(size) * n / size).astype(np.int64), n - 1)
    picked: NDArray[Any] = tile[idx][:, idx]
    return picked


@dataclass(frozen=True)
class TilePlan:
    """The tiles of one slide: where to read them and their tissue fraction."""

    level: int
    read_px: int
    tile_px: int
    downsample: float
    xy0: NDArray[Any]
    tissue: NDArray[Any]

    @property
    def n_tiles(self) -> int:
        return int(self.xy0.shape[0])

    def regions(self, start: int, stop: int) -> list[Region]:
        """Regions to read (at `level`) for tiles [start, stop)."""
        return [
            Region(
                int(round(x / self.downsample)),
                int(round(y / self.downsample)),
                self.read_px,
                self.read_px,
            )
            for x, y in self.xy0[start:stop]
        ]


def box_mean_floor(band: NDArray[Any], f: int) -> NDArray[Any]:
    """uint8 [h, w, 3] (h, w multiples of f) -> the f x f box means, rounded down, as uint8.

    Integer sums instead of a reduction over two inner axes, which numpy runs element by
    element: first the f rows of each box (whole contiguous rows at a time), then the f
    pixels of each of those row sums, in uint16 while f*f*255 fits. Equal to the float32
    `mean(...).astype(uint8)` it replaced: sums below 2**24 are exact in float32, and a mean
    k - j/(f*f) is never rounded up to k at float32 precision below 256 unless f*f > 2**17.
    """
    if f == 1:
        return band
    if f * f > 1 << 16:  # not reached below 16M-px-wide mask levels; keep the exact formula
        mean = band.reshape(band.shape[0] // f, f, -1, f, 3).mean(axis=(1, 3), dtype=np.float32)
        exact: NDArray[Any] = mean.astype(np.uint8)
        return exact
    wide = np.uint16 if f * f * 255 <= np.iinfo(np.uint16).max else np.uint32
    rows: NDArray[Any] = band[::f].astype(wide)
    for dy in range(1, f):
        rows += band[dy::f]
    pixels = rows.reshape(rows.shape[0], -1, f, 3)
    acc: NDArray[Any] = pixels[:, :, 0].copy()
    for dx in range(1, f):
        acc += pixels[:, :, dx]
    acc //= f * f
    return acc.astype(np.uint8)


def _frame_rows(slide: SlideReader, level: int) -> int | None:
    """A tiled reader's frame height at `level` (DICOM), or None when it has none to say."""
    instance = getattr(slide, "instance", None)
    rows = getattr(instance(level), "rows", None) if instance is not None else None
    return int(rows) if isinstance(rows, int) and rows > 0 else None


def read_mask(
    slide: SlideReader, max_px: int, strip_px: int = 2_000_000
) -> tuple[NDArray[Any], float]:
    """Tissue mask (bool) of the coarsest level, box-downsampled to <= max_px; and its factor
    relative to level 0 (mask px -> level-0 px). Read in strips of about `strip_px` pixels,
    so peak memory does not grow with the slide.

    Strips follow the frame rows where the reader has them (DICOM), so each frame is fetched
    and decoded once, uncached; rows left over from a strip's f-row groups are carried into
    the next strip, which gives the same boxes as strips cut at multiples of f.
    """
    li = mask_level(slide.levels)
    lvl = slide.levels[li]
    f = max(1, math.ceil(max(lvl.width, lvl.height) / max_px))
    out_w, out_h = max(1, lvl.width // f), max(1, lvl.height // f)
    thumb = np.empty((out_h, out_w, 3), dtype=np.uint8)
    unit = _frame_rows(slide, li) or f
    rows_per = max(unit, (strip_px // max(out_w * f, 1)) // unit * unit)
    carry: NDArray[Any] | None = None
    done = 0
    for y in range(0, out_h * f, rows_per):
        h = min(rows_per, out_h * f - y)
        (band,) = slide.read_regions(li, [Region(0, y, out_w * f, h)], cache=False)
        band = band[:, : out_w * f]
        if carry is not None:
            band = np.concatenate([carry, band])
        whole = band.shape[0] // f * f
        small = box_mean_floor(band[:whole], f)
        thumb[done : done + small.shape[0]] = small
        done += small.shape[0]
        carry = band[whole:].copy() if whole < band.shape[0] else None
        del band, small
    level0 = slide.levels[0]
    scale = (lvl.mpp / level0.mpp) * f
    return tissue_mask(thumb), float(scale)


def plan_tiles(
    slide: SlideReader,
    spec: EncoderSpec,
    *,
    min_tissue: float,
    mask_max_px: int = 1024,
    mpp_tolerance: float = 0.1,
) -> TilePlan:
    """Grid at spec.target_mpp over level 0, keeping tiles with enough tissue."""
    with CPU_STAGES.stage("mask"):
        return _plan_tiles(slide, spec, min_tissue, mask_max_px, mpp_tolerance)


def _plan_tiles(
    slide: SlideReader, spec: EncoderSpec, min_tissue: float, mask_max_px: int, mpp_tolerance: float
) -> TilePlan:
    levels = slide.levels
    level0 = levels[0]
    li = pick_level(levels, float(spec.target_mpp), mpp_tolerance)
    lvl = levels[li]
    tile0 = spec.tile_px * float(spec.target_mpp) / float(level0.mpp)  # tile edge, level-0 px
    downsample = float(lvl.mpp) / float(level0.mpp)
    read_px = max(1, int(round(tile0 / downsample)))
    nx = max(1, int(level0.width // tile0))
    ny = max(1, int(level0.height // tile0))
    gx, gy = np.meshgrid(np.arange(nx), np.arange(ny))
    xy0 = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float64) * tile0
    mask, mscale = read_mask(slide, mask_max_px)
    boxes = np.stack(
        [
            xy0[:, 0] / mscale,
            xy0[:, 1] / mscale,
            np.minimum(xy0[:, 0] + tile0, level0.width) / mscale,
            np.minimum(xy0[:, 1] + tile0, level0.height) / mscale,
        ],
        axis=1,
    )
    lo = np.floor(boxes[:, :2])
    hi = np.maximum(np.ceil(boxes[:, 2:]), lo + 1)
    frac = area_fractions(mask, np.concatenate([lo, hi], axis=1).astype(np.int64))
    small = tile0 > level0.width or tile0 > level0.height
    keep = frac > 0 if small else frac >= min_tissue
    if not keep.any():
        raise SlideError(
            f"no tissue: no tile reaches the minimum tissue fraction {min_tissue}", code="no_tissue"
        )
    return TilePlan(
        level=li,
        read_px=read_px,
        tile_px=int(spec.tile_px),
        downsample=downsample,
        xy0=np.round(xy0[keep]).astype(np.int64),
        tissue=frac[keep].astype(np.float32),
    )


def read_tiles(
    slide: SlideReader,
    plan: TilePlan,
    start: int,
    stop: int,
    out: NDArray[Any] | None = None,
) -> NDArray[Any]:
    """uint8 [n, tile_px, tile_px, 3] for tiles [start, stop) of the plan, written into `out`
    when given (e.g. a shared-memory region Triton reads)."""
    stop = min(stop, plan.n_tiles)  # a last batch asked for in full has fewer tiles
    shape = (max(0, stop - start), plan.tile_px, plan.tile_px, 3)
    buf: NDArray[Any] = np.empty(shape, dtype=np.uint8) if out is None else out
    if plan.read_px == plan.tile_px and isinstance(slide, PaintsRegions):
        # No resize: the frames are pasted straight into the batch (no crop to copy).
        slide.read_regions_into(plan.level, plan.regions(start, stop), buf)
        return buf
    with CPU_STAGES.stage("tiles"):
        crops = slide.read_regions(plan.level, plan.regions(start, stop))
        for i, crop in enumerate(crops):
            buf[i] = resize(crop, plan.tile_px)
        return buf
