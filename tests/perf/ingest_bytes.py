"""Bytes read on a sparse slide (bench_ingest): what ingest fetched against what it needed.

A needle biopsy leaves most of a slide blank; ranged reads should then fetch little more
than the frames under the kept tiles. "Needed" is: every frame of the read level that a kept
tile touches, plus every frame of the mask level (the tissue mask reads that level whole).
Headers and offset tables are counted apart: they are read by opening the slide and locating
its frames, before any pixel is fetched.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

NEEDLE_SLIDE = "16384^2 px, 3-level JPEG DICOM-WSI series, SYNTHETIC needle biopsy (2 cores)"


def needed_frames(reader: Any, plan: Any) -> dict[int, set[int]]:
    """Frame indices per level that the plan's tiles and the tissue mask need."""
    from histoprompt.wsi.slide import Region
    from histoprompt.wsi.tiling import mask_level

    need: dict[int, set[int]] = {}
    inst = reader.instance(plan.level)
    tiles = need.setdefault(plan.level, set())
    for start in range(0, plan.n_tiles, 256):
        for region in plan.regions(start, min(start + 256, plan.n_tiles)):
            tiles.update(inst.frames_for(region))
    li = mask_level(reader.levels)
    lvl = reader.levels[li]
    need.setdefault(li, set()).update(
        reader.instance(li).frames_for(Region(0, 0, lvl.width, lvl.height))
    )
    return need


async def _embed(settings: Any, job: Any, served: Any) -> dict[str, Any]:
    from histoprompt.core.s3 import make_minio
    from histoprompt.wsi.scoring import embed_tiles
    from histoprompt.wsi.sources import open_slide
    from histoprompt.wsi.tiling import plan_tiles
    from histoprompt.wsi.triton import TritonClient

    triton = TritonClient(settings.triton_url, 600, 3, 0.5)
    opened = await asyncio.to_thread(open_slide, make_minio(settings), job, settings.read_limits())
    try:
        for level in range(len(opened.reader.levels)):
            opened.reader.instance(level).frame_ranges()  # offset tables: header bytes
        head_bytes, head_gets = opened.bytes_read, opened.gets
        plan = await asyncio.to_thread(
            plan_tiles, opened.reader, served.spec, min_tissue=settings.ingest_min_tissue_fraction
        )
        await embed_tiles(
            opened.reader, plan, triton, served.spec.embed_dim, settings.scoring_options()
        )
        need = needed_frames(opened.reader, plan)
        needed = 0
        for level, frames in need.items():
            table = opened.reader.instance(level).frame_ranges()
            needed += int(table[np.fromiter(frames, dtype=np.int64), 1].sum())
        tissue_area = float(plan.n_tiles) / max(1.0, _grid_tiles(opened.reader, served.spec))
        return {
            "n_tiles": plan.n_tiles,
            "tile_area_fraction": tissue_area,
            "object_bytes": sum(o.size for o in opened.objects),
            "header_bytes": head_bytes,
            "header_gets": head_gets,
            "frame_bytes_read": opened.bytes_read - head_bytes,
            "frame_gets": opened.gets - head_gets,
            "needed_frame_bytes": needed,
            "needed_frames": sum(len(f) for f in need.values()),
        }
    finally:
        opened.close()
        await triton.close()


def _grid_tiles(reader: Any, spec: Any) -> float:
    level0 = reader.levels[0]
    tile0 = spec.tile_px * float(spec.target_mpp) / float(level0.mpp)
    return float(max(1, int(level0.width // tile0)) * max(1, int(level0.height // tile0)))


def sparse_bytes(settings: Any, job: Any, served: Any) -> dict[str, Any]:
    """The ingest data path on a sparse slide, with its bytes and GETs against the needed."""
    out = asyncio.run(_embed(settings, job, served))
    out["slide"] = NEEDLE_SLIDE
    out["ratio_to_needed"] = out["frame_bytes_read"] / max(1, out["needed_frame_bytes"])
    out["ratio_to_object"] = (out["frame_bytes_read"] + out["header_bytes"]) / out["object_bytes"]
    return out


def sparse_lines(s: dict[str, Any]) -> list[str]:
    """Markdown for the sparse-slide figures."""
    return [
        f"**Bytes read on a sparse slide** ({s['slide']}; kept tiles cover "
        f"{100 * s['tile_area_fraction']:.1f} % of the tile grid, {s['n_tiles']} tiles): frames "
        f"read **{s['ratio_to_needed']:.2f}x** the bytes of the frames the tiles and the mask "
        "need (target <= 1.2x, headers apart).",
        "",
        "| what | bytes | GETs |",
        "|---|---:|---:|",
        f"| whole objects (a full download) | {s['object_bytes']:,} | - |",
        f"| needed frames ({s['needed_frames']} frames) | {s['needed_frame_bytes']:,} | - |",
        f"| read: frames | {s['frame_bytes_read']:,} | {s['frame_gets']} |",
        f"| read: headers and offset tables | {s['header_bytes']:,} | {s['header_gets']} |",
        "",
        f"All reads together are {100 * s['ratio_to_object']:.1f} % of the whole objects.",
        "",
    ]
