"""ReadLimits: the bounds every slide reader works within (memory, GET sizes, bomb guards).

Ingest builds them from its settings (`IngestSettings.read_limits()`); the CLI uses the
defaults. The defaults are the ingest service's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ReadLimits", "TiffBackend"]

TiffBackend = Literal["auto", "tiffslide", "cucim"]


@dataclass(frozen=True)
class ReadLimits:
    """Bounds of one opened slide. Memory per slide is about frame_cache decoded frames plus
    read_ahead_bytes of compressed frames and block_size * (block_cache_blocks +
    tiff_block_cache_blocks) bytes of headers."""

    max_pixels: int = 100_000 * 100_000
    """Decompression-bomb guard on level-0 pixels."""
    max_object_bytes: int = 1 << 36
    """Largest slide object (64 GiB): a larger one fails `too_large` before its bytes are read."""
    max_frame_pixels: int = 4096 * 4096
    """Largest DICOM frame or TIFF tile; checked before a frame is decoded."""
    max_frames: int = 1 << 21
    """Frames (and tile-grid cells) of one DICOM instance: the frame index is allocated
    from the header's counts, so they are bounded before it is."""
    coalesce_gap: int = 64 * 1024
    """Byte ranges closer than this are fetched in one GET."""
    max_range: int = 16 * 1024 * 1024
    """Largest single GET."""
    frame_cache: int = 256
    """Decoded DICOM frames kept per slide."""
    read_ahead_bytes: int = 4 * 1024 * 1024
    """Compressed DICOM frame bytes fetched ahead of the tiles being read and held until
    decoded (histoprompt.wsi.read_ahead), at least one tile's frames. A fixed budget: the
    window of tiles it covers shrinks on slides with larger frames, never the other way."""
    block_size: int = 256 * 1024
    """Block of the ranged-read cache over headers and offset tables."""
    block_cache_blocks: int = 16
    """Blocks cached per DICOM instance."""
    tiff_block_cache_blocks: int = 64
    """Blocks cached per TIFF/SVS file (tile offsets and tiles share it)."""
    require_mpp: bool = True
    """Refuse a TIFF without resolution metadata (tiling needs it; a thumbnail does not)."""
    tiff_backend: TiffBackend = "auto"
    """cuCIM on GPU nodes when installed ('auto'), else tiffslide."""
