"""SYNTHETIC pyramidal TIFF/SVS files (Aperio-style descriptions say SYNTHETIC)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histoprompt.export.synthetic_tiles import SYNTHETIC, TileFn, synthetic_tissue

__all__ = ["write_tiff"]


def write_tiff(
    path: Path,
    width: int,
    height: int,
    *,
    levels: int = 3,
    tile: int = 256,
    mpp: float = 0.5,
    compression: str = "jpeg",
    tile_fn: TileFn | None = None,
    seed: int = 0,
) -> Path:
    """An SVS-like pyramidal tiled TIFF (Aperio-style description, MPP), frames streamed."""
    import tifffile

    fn = tile_fn or synthetic_tissue(width, height, seed)
    with tifffile.TiffWriter(path, bigtiff=width * height > 2**31) as tif:
        for level in range(levels):
            w, h = max(1, width >> level), max(1, height >> level)

            def tiles(level: int = level, w: int = w, h: int = h):  # noqa: ANN202
                for y in range(0, h, tile):
                    for x in range(0, w, tile):
                        out = np.full((tile, tile, 3), 255, dtype=np.uint8)
                        cw, ch = min(tile, w - x), min(tile, h - y)
                        out[:ch, :cw] = fn(level, x, y, cw, ch)
                        yield out

            desc = (
                f"Aperio Image Library {SYNTHETIC}\r\n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) "
                f"JPEG/RGB Q=85|AppMag = {10.0 / mpp:g}|MPP = {mpp * 2**level:.6f}"
                f"|Comment = {SYNTHETIC}"
            )
            tif.write(
                tiles(),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                description=desc,
                metadata=None,
            )
            if level == 0:
                # SVS layout: page 1 is a small stripped thumbnail, levels follow (tifffile
                # and tiffslide read them as one pyramid this way).
                tw, th = max(1, w // 32), max(1, h // 32)
                thumb = fn(0, 0, 0, w, h) if w * h <= 4096 * 4096 else None
                thumb_img = (
                    thumb[::32, ::32][:th, :tw]
                    if thumb is not None
                    else np.full((th, tw, 3), 255, dtype=np.uint8)
                )
                tif.write(
                    np.ascontiguousarray(thumb_img),
                    photometric="rgb",
                    description=f"Aperio Image Library {SYNTHETIC}\r\n{tw}x{th} -> thumbnail",
                    metadata=None,
                )
    return path
