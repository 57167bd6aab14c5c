"""SYNTHETIC slides whose programs vary in space, with the per-tile truth written beside them.

Everything here is SYNTHETIC. A slide is a grid of `tile_px` tiles (level 0, origin 0,0, the
grid the ingest tiler cuts at the encoder's MPP); tissue is a union of elliptical islands on
a white background. Each program of `histoprompt.export.cohort.PROGRAMS` gets a planted
field over the slide (standardised activity, the cohort's units):

* proliferation: a *region* (tumour nests, discs) high inside, low outside;
* immune: a linear *gradient* across the slide (random direction);
* stroma: a *region* (a band) complementary to the nests;
* hypoxia: a radial *gradient* peaking at the centre of the first nest;
* eosin: a linear *gradient* (another random direction).

Tiles are rendered by `cohort.render_tiles` from the field at the tile centre plus per-tile
noise, so morphology follows the field. The truth table (`<slide>.truth.parquet`) holds, per
tissue tile, level-0 `x`, `y`, the noise-free field `truth_<program>` and the region
membership `region_<program>` (field > 0, i.e. above the slide-wide baseline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.export.cohort import PROGRAMS, SYNTHETIC_NOTE, render_tiles

__all__ = [
    "SpatialSlide",
    "SpatialSlideConfig",
    "fields_at",
    "make_spatial_slide",
    "read_truth",
    "slide_canvas",
    "write_spatial_slide",
]

BACKGROUND: Final = 245
PROGRAM_NAMES: Final = tuple(p.name for p in PROGRAMS)
FIELD_KINDS: Final = {
    "proliferation": "region",
    "immune": "gradient",
    "stroma": "region",
    "hypoxia": "gradient",
    "eosin": "gradient",
}


class SpatialSlideConfig(BaseModel):
    """Grid size, tile size, noise; the seed makes the slide reproducible (SYNTHETIC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cols: int = Field(default=20, ge=4)
    rows: int = Field(default=16, ge=4)
    tile_px: int = Field(default=64, ge=16)
    mpp: float = Field(default=1.0, gt=0, description="µm/px of level 0")
    tile_noise: float = Field(default=0.35, ge=0.0, description="per-tile spread around the field")
    amplitude: float = Field(default=1.6, gt=0, description="field range is about ±amplitude")
    seed: int = 0


@dataclass(frozen=True)
class SpatialSlide:
    """SYNTHETIC. Tissue tiles, their level-0 coordinates, planted fields and regions."""

    slide_id: str
    config: SpatialSlideConfig
    tiles: NDArray[Any]  # uint8 [N, T, T, 3]
    xy: NDArray[Any]  # int64 [N, 2], level-0 px, top-left
    truth: NDArray[Any]  # float32 [N, K], noise-free field at the tile centre
    activity: NDArray[Any]  # float32 [N, K], what was rendered (truth + noise)

    @property
    def regions(self) -> NDArray[Any]:
        """bool [N, K]: the tile lies in the program's high region (field > 0)."""
        out: NDArray[Any] = self.truth > 0.0
        return out

    @property
    def size(self) -> tuple[int, int]:
        """Level-0 (width, height) in px."""
        return self.config.cols * self.config.tile_px, self.config.rows * self.config.tile_px


def _ramp(a: float, b: float, u: NDArray[Any], v: NDArray[Any]) -> NDArray[Any]:
    """a*u + b*v rescaled to [-1, 1] over the unit square (independent of the points)."""
    lo, hi = min(0.0, a) + min(0.0, b), max(0.0, a) + max(0.0, b)
    out: NDArray[Any] = 2 * (a * u + b * v - lo) / (hi - lo) - 1
    return out


def _fields(u: NDArray[Any], v: NDArray[Any], rng: np.random.Generator, amp: float) -> NDArray[Any]:
    """Planted fields [.., K] at normalised positions u (x) and v (y) in [0, 1]."""
    aspect = 1.0
    nests = [(rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7), rng.uniform(0.14, 0.22))]
    nests.append((rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.14)))
    inside = np.full(u.shape, -np.inf)
    for cx, cy, r in nests:
        inside = np.maximum(inside, (r - np.hypot((u - cx) * aspect, v - cy)) / 0.03)
    prolif = np.tanh(inside)  # ~+1 inside the nests, ~-1 outside, smooth edge
    theta = rng.uniform(0, 2 * np.pi)
    immune = _ramp(np.cos(theta), np.sin(theta), u, v)
    phi = rng.uniform(0, np.pi)
    offset = rng.uniform(0.35, 0.65)
    band = np.abs(np.cos(phi) * (u - offset) + np.sin(phi) * (v - offset))
    stroma = np.tanh((0.16 - band) / 0.03) * (prolif < 0.5) - 1.0 * (prolif >= 0.5)
    cx, cy, _ = nests[0]
    far = max(np.hypot(px - cx, py - cy) for px in (0, 1) for py in (0, 1))
    hypoxia = 1 - 2 * np.hypot(u - cx, v - cy) / far
    psi = theta + rng.uniform(np.pi / 3, 2 * np.pi / 3)
    eosin = _ramp(np.cos(psi), np.sin(psi), u, v)
    stacked: NDArray[Any] = amp * np.stack([prolif, immune, stroma, hypoxia, eosin], axis=-1)
    return stacked


def _tissue(u: NDArray[Any], v: NDArray[Any], rng: np.random.Generator) -> NDArray[Any]:
    """bool mask: a large central island plus two smaller ones (three tissue islands)."""
    mask = ((u - 0.5) / 0.33) ** 2 + ((v - 0.5) / 0.42) ** 2 < 1.0
    for cx in (0.08, 0.92):
        cy = rng.uniform(0.2, 0.8)
        mask |= ((u - cx) / 0.075) ** 2 + ((v - cy) / 0.16) ** 2 < 1.0
    out: NDArray[Any] = mask
    return out


def fields_at(
    config: SpatialSlideConfig, x: NDArray[Any], y: NDArray[Any]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """(fields [..., K], tissue bool [...]) at level-0 positions x, y (px) of the slide."""
    rng = np.random.default_rng(config.seed)
    u = np.asarray(x, dtype=np.float64) / (config.cols * config.tile_px)
    v = np.asarray(y, dtype=np.float64) / (config.rows * config.tile_px)
    fields = _fields(u, v, rng, config.amplitude)
    return fields, _tissue(u, v, rng)


def make_spatial_slide(config: SpatialSlideConfig, slide_id: str | None = None) -> SpatialSlide:
    """Plant fields over a tile grid and render the tissue tiles (deterministic per config)."""
    rows, cols, t = config.rows, config.cols, config.tile_px
    r, c = np.mgrid[0:rows, 0:cols]
    fields, tissue = fields_at(config, (c + 0.5) * t, (r + 0.5) * t)
    rng = np.random.default_rng([config.seed, 1])
    truth = fields[tissue].astype(np.float32)
    activity = truth + rng.normal(0, config.tile_noise, size=truth.shape).astype(np.float32)
    xy = np.stack([c[tissue] * t, r[tissue] * t], axis=1).astype(np.int64)
    return SpatialSlide(
        slide_id=slide_id or f"SYN-SPATIAL-{config.seed:04d}",
        config=config,
        tiles=render_tiles(activity, t, rng),
        xy=xy,
        truth=truth,
        activity=activity.astype(np.float32),
    )


def slide_canvas(slide: SpatialSlide) -> NDArray[Any]:
    """uint8 [H, W, 3] level-0 picture: tiles in place on a white background."""
    width, height = slide.size
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    t = slide.config.tile_px
    for (x, y), tile in zip(slide.xy, slide.tiles, strict=True):
        canvas[y : y + t, x : x + t] = tile
    return canvas


def truth_frame(slide: SpatialSlide) -> Any:
    """pandas DataFrame of the per-tile truth (one row per tissue tile)."""
    import pandas as pd

    cols: dict[str, Any] = {
        "x": slide.xy[:, 0],
        "y": slide.xy[:, 1],
        "tile_px": np.full(len(slide.xy), slide.config.tile_px, dtype=np.int64),
    }
    for j, name in enumerate(PROGRAM_NAMES):
        cols[f"truth_{name}"] = slide.truth[:, j]
    for j, name in enumerate(PROGRAM_NAMES):
        cols[f"region_{name}"] = slide.regions[:, j]
    return pd.DataFrame(cols)


def _metadata(slide: SpatialSlide) -> dict[str, Any]:
    return {
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "slide_id": slide.slide_id,
        "config": slide.config.model_dump(),
        "programs": [
            {"name": p.name, "kind": FIELD_KINDS[p.name], "hallmarks": list(p.hallmarks)}
            for p in PROGRAMS
        ],
        "coordinates": "level-0 px, top-left of each tile",
        "region": "field > 0 (above the slide-wide baseline)",
    }


def write_spatial_slide(
    slide: SpatialSlide, out_dir: Path, *, tiff: bool = True
) -> dict[str, Path]:
    """`<id>.tiff` (pyramidal, SYNTHETIC), `<id>.truth.parquet` and `<id>.truth.json`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    table = pa.Table.from_pandas(truth_frame(slide), preserve_index=False)
    meta = {b"histoprompt": json.dumps(_metadata(slide)).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    paths["truth"] = out_dir / f"{slide.slide_id}.truth.parquet"
    pq.write_table(table, paths["truth"])
    paths["meta"] = out_dir / f"{slide.slide_id}.truth.json"
    paths["meta"].write_text(json.dumps(_metadata(slide), indent=1))
    if tiff:
        from histoprompt.export.synthetic_tiff import write_tiff

        canvas = slide_canvas(slide)
        levels = [canvas[:: 2**lv, :: 2**lv] for lv in range(3)]

        def tile_fn(level: int, x: int, y: int, w: int, h: int) -> NDArray[Any]:
            out = np.full((h, w, 3), BACKGROUND, dtype=np.uint8)
            part = levels[level][y : y + h, x : x + w]
            out[: part.shape[0], : part.shape[1]] = part
            return out

        width, height = slide.size
        paths["slide"] = write_tiff(
            out_dir / f"{slide.slide_id}.tiff",
            width,
            height,
            levels=3,
            tile=256,
            mpp=slide.config.mpp,
            tile_fn=tile_fn,
        )
    return paths


def read_truth(path: Path) -> tuple[Any, dict[str, Any]]:
    """(truth DataFrame, metadata) from a `<id>.truth.parquet`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"histoprompt", b"{}"))
    return table.to_pandas(), meta
