"""The sparse range cache behind cuCIM on S3 (histoprompt.wsi.rangecache), all on CPU: only
missing bytes are fetched, holes stay holes, and a TIFF reader opening the sparse file by
path reads a region exactly as from the whole file once `ensure_regions` fetched its tiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.rangecache import SparseRangeFile, TiffRangeCache, tile_ranges
from histoprompt.wsi.ranged import BytesSource, LocalFileSource
from histoprompt.wsi.slide import Region

LIMITS = ReadLimits(coalesce_gap=0)


def _payload(n: int) -> bytes:
    return np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_sparse_file_fetches_only_missing_aligned_blocks(tmp_path: Path) -> None:
    data = _payload(1 << 20)
    src = BytesSource(data)
    cache = SparseRangeFile(src, LIMITS, tmp_path, align=4096)
    try:
        assert os.path.getsize(cache.path) == len(data)
        assert cache.ensure([(5000, 10)]) == 4096  # block [4096, 8192)
        assert cache.ensure([(4100, 100)]) == 0  # already there: no GET
        assert src.gets == 1
        assert cache.missing(0, 16384) == [(0, 4096), (8192, 16384)]
        assert cache.ensure([(8000, 300)]) == 4096  # only the block not yet fetched
        assert cache.missing(4096, 12288) == []
        assert cache.read_range(4096, 8192) == data[4096:12288]
        with open(cache.path, "rb") as fh:
            whole = fh.read()
        assert whole[:4096] == bytes(4096)  # never fetched: a hole, read as zeros
        assert whole[4096:12288] == data[4096:12288]
    finally:
        cache.close()


def test_sparse_file_merges_near_ranges_into_one_get(tmp_path: Path) -> None:
    data = _payload(1 << 18)
    src = BytesSource(data)
    cache = SparseRangeFile(src, ReadLimits(coalesce_gap=64 * 1024), tmp_path, align=4096)
    try:
        cache.ensure([(0, 100), (20000, 100), (200000, 100)])
        assert src.gets == 2  # the first two are within the gap, the third is not
        assert cache.missing(0, 20480) == []  # the gap between them came too
        assert cache.read_range(200000, 100) == data[200000:200100]
    finally:
        cache.close()


def test_sparse_file_leaves_holes_on_disk(tmp_path: Path) -> None:
    size = 64 << 20
    cache = SparseRangeFile(BytesSource(bytes(size)), LIMITS, tmp_path)
    try:
        cache.ensure([(size // 2, 10)])
        allocated = os.stat(cache.path).st_blocks * 512
        if allocated >= size:
            pytest.skip("this filesystem does not keep sparse files")
        assert allocated < size // 8
    finally:
        cache.close()


@pytest.fixture(scope="module")
def tiff_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiff(tmp_path_factory.mktemp("rc") / "slide.svs", 2048, 1536, levels=3)


def _read_region(path: str | Path, level: int, reg: Region) -> np.ndarray:
    import tiffslide

    with tiffslide.TiffSlide(path) as slide:
        ds = slide.level_downsamples[level]
        loc = (int(reg.x * ds), int(reg.y * ds))
        return np.asarray(slide.read_region(loc, level, (reg.w, reg.h), as_array=True))


@pytest.mark.parametrize(
    ("level", "reg"), [(0, Region(800, 600, 600, 400)), (1, Region(400, 300, 256, 256))]
)
def test_sparse_tiff_reads_a_region_like_the_whole_file(
    tiff_path: Path, tmp_path: Path, level: int, reg: Region
) -> None:
    src = LocalFileSource(tiff_path)
    cache = TiffRangeCache(src, ReadLimits(coalesce_gap=0), tmp_path, align=4096)
    try:
        header_bytes = cache.file.bytes_fetched
        fetched = cache.ensure_regions(level, [reg])
        expected = _read_region(tiff_path, level, reg)
        got = _read_region(cache.path, level, reg)  # opened by path, as cuCIM does
        assert np.array_equal(got, expected)
        assert expected.std() > 0  # a region with content, not blank background
        import tifffile

        with tifffile.TiffFile(tiff_path) as tif:
            ranges = tile_ranges(tif.series[0].levels[level].keyframe, reg)
        assert all(cache.file.missing(o, o + n) == [] for o, n in ranges)
        # Fetched: the tiles (less any already in the structure's blocks), each rounded up
        # to the 4 KiB blocks it sits in; the structure and these tiles are a fraction of
        # the file.
        tiles = sum(n for _, n in ranges)
        assert 0 < fetched <= tiles + 2 * 4096 * len(ranges)
        assert header_bytes + fetched < src.size / 4
    finally:
        cache.close()


def test_tile_ranges_of_a_region_outside_the_level_is_empty(tiff_path: Path) -> None:
    import tifffile

    with tifffile.TiffFile(tiff_path) as tif:
        page = tif.series[0].levels[0].keyframe
        assert tile_ranges(page, Region(5000, 5000, 10, 10)) == []
        assert len(tile_ranges(page, Region(0, 0, 512, 256))) == 2


@pytest.mark.gpu
def test_cucim_through_the_range_cache_reads_what_tiffslide_reads(
    tiff_path: Path, tmp_path: Path
) -> None:
    pytest.importorskip("cucim", reason="needs histoprompt-wsi[gpu] (cuCIM)")
    from histoprompt.wsi.tiff import CucimReader

    src = LocalFileSource(tiff_path)
    cache = TiffRangeCache(src, ReadLimits(), tmp_path)
    try:
        reader = CucimReader(cache.path, prepare=cache.ensure_regions)
        regions = [Region(800, 600, 600, 400), Region(1200, 900, 512, 512)]
        for reg, got in zip(regions, reader.read_regions(0, regions), strict=True):
            expected = _read_region(tiff_path, 0, reg)[..., :3]
            # A tile missing from the sparse file would read as zeros: far off, not rounding.
            diff = np.abs(got.astype(int) - expected.astype(int))
            assert got.shape == expected.shape and diff.mean() < 1.0
        assert cache.file.bytes_fetched < src.size
    finally:
        cache.close()
