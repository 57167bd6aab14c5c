"""Tiles cut and normalised where the frames were decoded: on the GPU, the frames of a batch
that NvImageCodecDecoder.decode_device left there are pasted into the tiles' regions,
resized and normalised with CuPy, and never cross to the host.

Every function takes the array module `xp` (cupy on a GPU node, numpy otherwise) and gives
the same result as the CPU path: DicomInstance.read_regions + tiling.resize for the uint8
tiles, serving.preprocess for the normalised fp32 NCHW pixels (tested with numpy on CPU,
with CuPy in the `gpu` tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from histoprompt.wsi.dicom import DicomInstance
from histoprompt.wsi.slide import Region

__all__ = ["cut_tiles", "device_tiles", "normalise_nchw", "resize_batch"]


def resize_batch(xp: Any, crops: Any, size: int) -> Any:
    """uint8 [n, s, s, 3] -> [n, size, size, 3]: box filter for integer factors, else nearest
    (tiling.resize's rule, batched)."""
    n = int(crops.shape[1])
    if n == size:
        return crops
    if n > size and n % size == 0:
        f = n // size
        boxed = crops.reshape(-1, size, f, size, f, 3).mean(axis=(2, 4))
        return boxed.round().astype(xp.uint8)
    idx = xp.asarray(np.minimum((np.arange(size) * n / size).astype(np.int64), n - 1))
    return crops[:, idx][:, :, idx]


def cut_tiles(
    xp: Any, inst: DicomInstance, frames: Mapping[int, Any], regions: Sequence[Region], size: int
) -> Any:
    """uint8 [n, size, size, 3] tiles of `regions` (equal squares, in inst's pixels) from
    decoded `frames` (index -> [rows, cols, 3] array of module xp)."""
    if not regions:
        return xp.empty((0, size, size, 3), dtype=xp.uint8)
    crops = xp.stack([inst.canvas(frames, reg, xp) for reg in regions])
    return resize_batch(xp, crops, size)


def normalise_nchw(xp: Any, tiles: Any, mean: Sequence[float], std: Sequence[float]) -> Any:
    """uint8 [n, h, w, 3] -> fp32 [n, 3, h, w]: (x / 255 - mean) / std per channel, folded
    into one multiply-add as serving.preprocess does. No resize: for an encoder whose
    input_px is the tile_px (serving.preprocess resizes bilinearly when they differ)."""
    scale = xp.asarray([1.0 / (255.0 * s) for s in std], dtype=xp.float32)
    bias = xp.asarray([-m / s for m, s in zip(mean, std, strict=True)], dtype=xp.float32)
    out = tiles.astype(xp.float32) * scale + bias
    return xp.ascontiguousarray(out.transpose(0, 3, 1, 2))


def device_tiles(
    xp: Any, inst: DicomInstance, decoder: Any, regions: Sequence[Region], size: int
) -> Any:
    """The tiles of `regions` where `decoder` leaves its frames: fetched by ranged reads,
    decoded in one batch (NvImageCodecDecoder.decode_device with xp=cupy; any backend's
    decode with xp=numpy) and cut there."""
    from histoprompt.wsi.ranged import read_ranges

    needed = sorted({i for r in regions for i in inst.frames_for(r)})
    table = inst.frame_ranges()
    ranges = [(int(table[i, 0]), int(table[i, 1])) for i in needed]
    # Same package: the instance's byte source and limits, as load_frames uses them.
    limits = inst._limits
    blobs = read_ranges(inst._src, ranges, limits.coalesce_gap, limits.max_range)
    decode = decoder.decode if xp is np else decoder.decode_device
    decoded = decode([blobs[r] for r in ranges], inst.frame_format)
    return cut_tiles(xp, inst, dict(zip(needed, decoded, strict=True)), regions, size)
