"""Tissue mask, level choice, tile grid (including a slide smaller than one tile)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.units import Mpp, Pixels
from histoprompt.export.synthetic_tiles import blank_tiles, synthetic_tissue
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.slide import Level, Region, paste
from histoprompt.wsi.tiling import pick_level, plan_tiles, read_tiles, resize
from histoprompt.wsi.tissue import area_fractions, otsu_threshold, tissue_mask

SPEC = EncoderSpec(
    name="t",
    tile_px=Pixels(64),
    input_px=Pixels(64),
    target_mpp=Mpp(1.0),
    mean=(0.5, 0.5, 0.5),
    std=(0.2, 0.2, 0.2),
    embed_dim=8,
)


class ArraySlide:
    """A slide from a tile function with power-of-two levels (the unit-test side)."""

    format = "array"

    def __init__(self, width: int, height: int, levels: int, mpp: float, fn=None) -> None:
        self.fn = fn or synthetic_tissue(width, height)
        self.levels = [
            Level(max(1, width >> i), max(1, height >> i), Mpp(mpp * 2**i)) for i in range(levels)
        ]

    def read_regions(
        self, level: int, regions: Sequence[Region], cache: bool = True
    ) -> list[np.ndarray]:
        lv = self.levels[level]
        out = []
        for r in regions:
            canvas = np.full((r.h, r.w, 3), 255, dtype=np.uint8)
            w, h = min(r.w, lv.width - r.x), min(r.h, lv.height - r.y)
            if w > 0 and h > 0:
                paste(canvas, self.fn(level, r.x, r.y, w, h), 0, 0)
            out.append(canvas)
        return out

    def close(self) -> None:
        return None


def test_otsu_splits_two_populations() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.02, 5000), rng.normal(0.6, 0.05, 5000)])
    values = np.clip(values, 0, 1)
    thr = otsu_threshold(values)
    assert 0.12 < thr < 0.45
    assert int((values > thr).sum()) == 5000


def test_mask_finds_pink_not_white() -> None:
    img = np.full((100, 100, 3), 240, dtype=np.uint8)
    img[20:60, 30:80] = (200, 110, 170)
    mask = tissue_mask(img)
    assert mask[20:60, 30:80].all()
    assert mask.sum() == 40 * 50


def test_blank_slide_has_no_mask() -> None:
    rng = np.random.default_rng(1)
    img = np.clip(240 + rng.normal(0, 2, (64, 64, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(img).any()


def test_area_fractions() -> None:
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5, :] = True
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 5, 10, 10], [8, 8, 20, 20]])
    np.testing.assert_allclose(area_fractions(mask, boxes), [0.5, 1.0, 0.0, 0.0])


def test_pick_level_prefers_the_coarsest_not_coarser_than_target() -> None:
    levels = [Level(8, 8, Mpp(0.25)), Level(4, 4, Mpp(0.5)), Level(2, 2, Mpp(1.0))]
    assert pick_level(levels, 0.5) == 1
    assert pick_level(levels, 0.9) == 1
    assert pick_level(levels, 1.0) == 2
    assert pick_level(levels, 0.24) == 0  # within the 10 % tolerance of the finest


def test_a_slide_coarser_than_the_target_fails_and_is_never_upsampled() -> None:
    levels = [Level(8, 8, Mpp(1.0)), Level(4, 4, Mpp(2.0))]
    with pytest.raises(SlideError) as info:
        pick_level(levels, 0.5)
    assert info.value.code == "resolution_too_low"
    assert "1 um/px" in str(info.value) and "0.5 um/px" in str(info.value)
    assert pick_level(levels, 0.5, tolerance=1.0) == 0  # a looser tolerance accepts it
    with pytest.raises(SlideError) as unknown:
        pick_level([Level(8, 8, Mpp(0.0))], 0.5)
    assert unknown.value.code == "no_mpp"


def test_resize() -> None:
    tile = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    assert resize(tile, 2).shape == (2, 2, 3)
    assert resize(tile, 2)[0, 0, 0] == round(np.mean(tile[:2, :2, 0]))
    assert resize(tile, 3).shape == (3, 3, 3)
    assert resize(tile, 4) is tile


def test_plan_reads_the_level_matching_target_mpp() -> None:
    slide = ArraySlide(1024, 768, levels=3, mpp=0.5)
    plan = plan_tiles(slide, SPEC, min_tissue=0.25)
    assert plan.level == 1  # mpp 1.0
    assert plan.read_px == 64
    assert plan.downsample == 2.0
    assert 0 < plan.n_tiles <= (1024 // 128) * (768 // 128)
    assert (plan.tissue >= 0.25).all()
    assert (plan.xy0 % 128 == 0).all()
    tiles = read_tiles(slide, plan, 0, 3)
    assert tiles.shape == (3, 64, 64, 3)
    x, y = plan.xy0[0]
    ref = slide.fn(1, x // 2, y // 2, 64, 64)
    np.testing.assert_array_equal(tiles[0], ref)


def test_plan_resizes_when_only_a_finer_level_exists() -> None:
    slide = ArraySlide(512, 512, levels=1, mpp=0.5)
    plan = plan_tiles(slide, SPEC, min_tissue=0.1)
    assert plan.level == 0 and plan.read_px == 128
    assert read_tiles(slide, plan, 0, 2).shape == (2, 64, 64, 3)


def test_slide_smaller_than_a_tile_is_padded() -> None:
    slide = ArraySlide(
        40,
        30,
        levels=1,
        mpp=1.0,
        fn=lambda lv, x, y, w, h: np.full((h, w, 3), (200, 110, 170), dtype=np.uint8),
    )
    plan = plan_tiles(slide, SPEC, min_tissue=0.5)
    assert plan.n_tiles == 1
    (tile,) = read_tiles(slide, plan, 0, 1)
    assert tile.shape == (64, 64, 3)
    assert (tile[:30, :40] == (200, 110, 170)).all()
    assert (tile[30:, :] == 255).all() and (tile[:, 40:] == 255).all()


def test_no_tissue_raises() -> None:
    slide = ArraySlide(512, 512, levels=2, mpp=0.5, fn=blank_tiles)
    with pytest.raises(SlideError) as info:
        plan_tiles(slide, SPEC, min_tissue=0.25)
    assert info.value.code == "no_tissue"


def test_box_mean_floor_equals_the_float32_mean_it_replaced() -> None:
    from histoprompt.wsi.tiling import box_mean_floor

    rng = np.random.default_rng(3)
    for f in (1, 2, 3, 4, 5, 8, 16):
        band = rng.integers(0, 256, (f * 9, f * 13, 3), dtype=np.uint8)
        ref = band.reshape(9, f, 13, f, 3).mean(axis=(1, 3), dtype=np.float32).astype(np.uint8)
        got = box_mean_floor(band, f)
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, ref)
