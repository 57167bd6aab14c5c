"""The faster data path gives the reference path's results (issue 15): same tile plan, same
tile pixels, same encoder input, embeddings equal within 1e-6, on a small SYNTHETIC slide.

The reference is the data path as it was before the CPU work, written out here: the mask
box-downsampled by a float32 mean, every frame range merged within the gap (no waste bound),
the mask level read uncached, each batch's frames read alone, whole-batch normalisation, the
tissue mask from per-pixel float saturation, area fractions from the whole integral image,
and each tile assembled on a canvas of its own and copied into the batch. The null encoder
(mean of the normalised pixels projected by a fixed matrix) stands in for the network, in
numpy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pytest
from helpers.data_path_reference import NULL_SPEC, reference_fractions, reference_mask

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.serving.preprocess import _scale_bias, preprocess_tiles
from histoprompt.wsi import ranged, tiling
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.read_ahead import ReadAhead
from histoprompt.wsi.slide import Region
from histoprompt.wsi.sources import open_local

SPEC = NULL_SPEC


def _reference_read_mask(slide: Any, max_px: int, strip_px: int = 2_000_000) -> Any:
    li = tiling.mask_level(slide.levels)
    lvl = slide.levels[li]
    f = max(1, math.ceil(max(lvl.width, lvl.height) / max_px))
    out_w, out_h = max(1, lvl.width // f), max(1, lvl.height // f)
    thumb = np.empty((out_h, out_w, 3), dtype=np.uint8)
    rows_per = max(f, (strip_px // max(out_w * f, 1)) // f * f)
    for y in range(0, out_h * f, rows_per):
        h = min(rows_per, out_h * f - y)
        (band,) = slide.read_regions(li, [Region(0, y, out_w * f, h)], cache=False)
        band = band[: (h // f) * f, : out_w * f]
        small = band.reshape(h // f, f, out_w, f, 3).mean(axis=(1, 3), dtype=np.float32)
        thumb[y // f : y // f + small.shape[0]] = small.astype(np.uint8)
    scale = (lvl.mpp / slide.levels[0].mpp) * f
    return reference_mask(thumb), float(scale)


@runtime_checkable
class _CanvasOnly(Protocol):
    """What no reader is: read_tiles falls back to a canvas per tile, copied into the batch."""

    def _no_reader_has_this(self) -> None: ...


def _reference_pixels(tiles: Any, spec: EncoderSpec) -> Any:
    scale, bias = _scale_bias(spec)
    out = np.empty((tiles.shape[0], 3, *tiles.shape[1:3]), dtype=np.float32)
    out[...] = np.moveaxis(tiles, 3, 1)
    out *= scale[None, :, None, None]
    out += bias[None, :, None, None]
    return out


def _null_encoder(pixels: Any, projection: Any) -> Any:
    return pixels.mean(axis=(2, 3), dtype=np.float64).astype(np.float32) @ projection


def _embed(files: list[Path], batch: int, projection: Any, fast: bool) -> tuple[Any, Any, Any]:
    opened = open_local(files, ReadLimits())
    # The fast path reads ahead (frames of 4 batches per coalesced read); the reference
    # reads each batch's frames alone.
    read = ReadAhead(4 * batch).read if fast else tiling.read_tiles
    try:
        plan = tiling.plan_tiles(opened.reader, SPEC, min_tissue=0.25, mask_max_px=256)
        tiles = np.concatenate(
            [
                read(opened.reader, plan, s, min(s + batch, plan.n_tiles))
                for s in range(0, plan.n_tiles, batch)
            ]
        )
        return plan, tiles, _null_encoder(preprocess_tiles(tiles, SPEC), projection)
    finally:
        opened.close()


@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    out = tmp_path_factory.mktemp("equality")
    return write_dicom_series(out, DicomSeriesSpec(width=1280, height=1024, levels=3, tile=256))


def test_fast_path_equals_the_reference_path(
    slide: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    projection = np.random.default_rng(0).standard_normal((3, SPEC.embed_dim)).astype(np.float32)
    plan, tiles, emb = _embed(slide, 8, projection, fast=True)

    # The reference: the same reader code with the old mask, old coalescing, old normalise,
    # the old area fractions, and tiles assembled on a canvas each and copied into the batch.
    monkeypatch.setattr(tiling, "read_mask", _reference_read_mask)
    monkeypatch.setattr(tiling, "area_fractions", reference_fractions)
    monkeypatch.setattr(tiling, "PaintsRegions", _CanvasOnly)
    monkeypatch.setattr(ranged, "MAX_WASTE", None)
    monkeypatch.setattr(
        "histoprompt.wsi.dicom.read_ranges",
        lambda src, wanted, gap, max_len, max_waste=None: ranged.read_ranges(
            src, wanted, gap, max_len, None
        ),
    )
    ref_plan, ref_tiles, _ = _embed(slide, 8, projection, fast=False)
    ref_emb = _null_encoder(_reference_pixels(ref_tiles, SPEC), projection)

    assert plan.n_tiles > 10
    np.testing.assert_array_equal(plan.xy0, ref_plan.xy0)
    np.testing.assert_array_equal(plan.tissue, ref_plan.tissue)
    np.testing.assert_array_equal(tiles, ref_tiles)
    np.testing.assert_array_equal(preprocess_tiles(tiles, SPEC), _reference_pixels(tiles, SPEC))
    np.testing.assert_allclose(emb, ref_emb, rtol=0, atol=1e-6)


def test_mask_strips_on_frame_rows_give_the_reference_mask(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Strips cut on frame rows (256) with a box factor of 3 carry rows between strips;
    the mask equals the reference's, whose strips are multiples of 3."""
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    out = tmp_path_factory.mktemp("mask")
    files = write_dicom_series(out, DicomSeriesSpec(width=1280, height=1024, levels=1, tile=256))
    for strip_px in (1, 300_000, 2_000_000):
        opened = open_local(files, ReadLimits())
        try:
            got, scale = tiling.read_mask(opened.reader, 450, strip_px)
            ref, ref_scale = _reference_read_mask(opened.reader, 450, strip_px)
        finally:
            opened.close()
        assert scale == ref_scale == 3.0
        np.testing.assert_array_equal(got, ref)
        assert got.any() and not got.all()
