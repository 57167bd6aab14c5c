"""Write the SYNTHETIC cohort as real files: one multi-level DICOM-WSI series per slide
(via histoprompt.export.synthetic_wsi), the expression parquet and cohort.json.

A slide's level 0 is its tiles laid out on a grid (with a background margin), at the tile
encoder's target MPP, so the ingest tiler finds exactly the tiles that were generated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.names import SERIES_MANIFEST
from histoprompt.export.cohort import (
    SyntheticCohort,
    SyntheticSlide,
    mosaic,
    write_cohort_metadata,
    write_expression,
)


@dataclass(frozen=True)
class CohortFiles:
    root: Path
    expression: Path
    metadata: Path
    slides: dict[str, list[Path]]  # slide_id -> instance files (+ manifest.json last)


def mosaic_tile_fn(image: NDArray[Any]) -> Callable[[int, int, int, int, int], NDArray[Any]]:
    """A synthetic_tiles TileFn over an in-memory level-0 image (levels = 2^k box downsamples)."""
    pyramid = [image]

    def level_image(level: int) -> NDArray[Any]:
        while len(pyramid) <= level:
            prev = pyramid[-1].astype(np.float32)
            h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
            half = prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
            pyramid.append(half.round().astype(np.uint8))
        return pyramid[level]

    def tile_fn(level: int, x: int, y: int, w: int, h: int) -> NDArray[Any]:
        img = level_image(level)
        out = np.full((h, w, 3), 245, dtype=np.uint8)
        part = img[y : y + h, x : x + w]
        out[: part.shape[0], : part.shape[1]] = part
        return out

    return tile_fn


def write_slide(slide: SyntheticSlide, out_dir: Path, mpp: float, levels: int = 2) -> list[Path]:
    """One DICOM-WSI series (JPEG baseline) plus its manifest.json, written last."""
    from histoprompt.export.synthetic_wsi import (
        DicomSeriesSpec,
        write_dicom_series,
        write_series_manifest,
    )

    image = mosaic(slide.tiles)
    spec = DicomSeriesSpec(
        width=image.shape[1],
        height=image.shape[0],
        levels=levels,
        tile=256,
        mpp=mpp,
        jpeg_quality=95,
    )
    paths = write_dicom_series(out_dir, spec, mosaic_tile_fn(image))
    manifest = out_dir / SERIES_MANIFEST
    manifest.write_bytes(write_series_manifest([(p.name, p.stat().st_size) for p in paths]))
    return [*paths, manifest]


def write_cohort_files(
    cohort: SyntheticCohort,
    out_dir: Path,
    *,
    mpp: float,
    slide_ids: Sequence[str] | None = None,
) -> CohortFiles:
    """Write slides (all, or `slide_ids`), expression.parquet and cohort.json (SYNTHETIC)."""
    wanted = set(slide_ids) if slide_ids is not None else None
    slides = {}
    for slide in cohort.slides:
        if wanted is None or slide.slide_id in wanted:
            slides[slide.slide_id] = write_slide(slide, out_dir / "slides" / slide.slide_id, mpp)
    return CohortFiles(
        root=out_dir,
        expression=write_expression(cohort, out_dir / "expression.parquet"),
        metadata=write_cohort_metadata(cohort, out_dir),
        slides=slides,
    )
