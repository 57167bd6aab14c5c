"""The data path's faster parts give the results of the code they replaced (issue 15): the
tissue mask by pair codes, area fractions from the integral image at the box edges only,
tiles painted straight into the batch; and the allocator tuning takes effect."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers.data_path_reference import NULL_SPEC, reference_fractions, reference_mask

from histoprompt.wsi import tissue
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.slide import Region
from histoprompt.wsi.sources import open_local


def _images(rng: np.random.Generator) -> list[np.ndarray]:
    noise = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)
    grey = (228 + rng.integers(0, 4, (64, 80, 3))).astype(np.uint8)  # background noise only
    half = grey.copy()
    half[:32] = (200, 110, 170)
    black = np.zeros((5, 7, 3), dtype=np.uint8)
    return [noise, grey, half, black, noise[:1, :1]]


def test_tissue_mask_equals_the_float_formula() -> None:
    rng = np.random.default_rng(11)
    for image in _images(rng):
        got = tissue.tissue_mask(image)
        assert got.dtype == bool and got.shape == image.shape[:2]
        np.testing.assert_array_equal(got, reference_mask(image))
    half = _images(rng)[2]
    assert tissue.tissue_mask(half)[:32].all() and not tissue.tissue_mask(half)[32:].any()


def test_area_fractions_equal_the_whole_integral_image() -> None:
    rng = np.random.default_rng(12)
    for image in _images(rng):
        mask = reference_mask(image)
        h, w = mask.shape
        boxes = rng.integers(-9, max(h, w) + 9, (300, 4))  # inverted, empty, out of range
        grid = np.arange(0, w, 7)
        tiles = np.stack([grid, grid * 0, grid + 7, grid * 0 + h], axis=1)
        for b in (boxes, tiles):
            np.testing.assert_array_equal(
                tissue.area_fractions(mask, b), reference_fractions(mask, b)
            )


@pytest.fixture(scope="module")
def ragged_series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Level 0 is 700 x 530 px in 256 px frames: the last frame column and row are cut."""
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    out = tmp_path_factory.mktemp("ragged")
    return write_dicom_series(out, DicomSeriesSpec(width=700, height=530, levels=1, tile=256))


def test_tiles_painted_into_the_batch_equal_the_canvas_path(ragged_series: list[Path]) -> None:
    opened = open_local(ragged_series, ReadLimits())
    try:
        slide = opened.reader
        inst = slide.instance(0)
        inst._index[1, 0] = -1  # a TILED_SPARSE gap: no frame at column 0, row 1
        regions = [
            Region(10, 20, 224, 224),  # inside, four frames
            Region(600, 400, 224, 224),  # past the right and bottom edges
            Region(-50, -30, 224, 224),  # before the left and top edges
            Region(100, 200, 224, 224),  # over the missing frame
            Region(800, 0, 224, 224),  # wholly outside the image
        ]
        want = slide.read_regions(0, regions)
        out = np.zeros((len(regions), 224, 224, 3), dtype=np.uint8)
        slide.read_regions_into(0, regions, out)
        for k, ref in enumerate(want):
            np.testing.assert_array_equal(out[k], ref)
        assert (out[4] == 255).all() and not (out[0] == 255).all()
        assert (out[3][56:, :156] == 255).all()  # the missing frame's part is background
    finally:
        opened.close()


def test_a_batch_asked_for_past_the_last_tile_has_only_the_tiles_left(
    ragged_series: list[Path],
) -> None:
    from histoprompt.wsi.tiling import plan_tiles, read_tiles

    opened = open_local(ragged_series, ReadLimits())
    try:
        plan = plan_tiles(opened.reader, NULL_SPEC, min_tissue=0.0)
        whole = read_tiles(opened.reader, plan, 0, plan.n_tiles)
        tail = read_tiles(opened.reader, plan, plan.n_tiles - 1, plan.n_tiles + 31)
        assert tail.shape[0] == 1 and plan.n_tiles > 1
        np.testing.assert_array_equal(tail[0], whole[-1])
        assert read_tiles(opened.reader, plan, plan.n_tiles, plan.n_tiles + 8).shape[0] == 0
    finally:
        opened.close()


def test_locating_frames_reads_the_last_item_header_alone(ragged_series: list[Path]) -> None:
    """The basic offset table gives every frame's length but the last's: its 8-byte item
    header is read by a GET of its own, not through the 256 KiB header block cache."""
    from histoprompt.wsi.dicom import DicomSlide
    from histoprompt.wsi.ranged import LocalFileSource

    source = LocalFileSource(ragged_series[0])
    slide = DicomSlide([source], ReadLimits())
    before = source.bytes_read, source.gets
    table = slide.instance(0).frame_ranges()
    assert (source.bytes_read - before[0], source.gets - before[1]) == (8, 1)
    assert table[-1, 0] + table[-1, 1] <= source.size and (table[:, 1] > 0).all()


_READ_TWICE = """
import resource, sys
from pathlib import Path
import numpy as np
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.read_ahead import ReadAhead
from histoprompt.wsi.sources import open_local
from histoprompt.wsi.tiling import plan_tiles
if sys.argv[1] == "tuned":
    from histoprompt.core.allocator import tune_malloc
    assert tune_malloc()
spec = EncoderSpec(name="null", tile_px=224, input_px=224, target_mpp=0.5, embed_dim=4,
                   mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
def read_slide():
    opened = open_local(sorted(Path(sys.argv[2]).glob("*.dcm")), ReadLimits())
    plan = plan_tiles(opened.reader, spec, min_tissue=0.25)
    ahead, out = ReadAhead(128), np.empty((16, 224, 224, 3), np.uint8)
    for s in range(0, plan.n_tiles, 16):
        n = min(16, plan.n_tiles - s)
        ahead.read(opened.reader, plan, s, s + n, out[:n])
    opened.close()
read_slide()  # warm: imports, first allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
read_slide()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_allocator_tuning_keeps_frame_pages(tmp_path: Path) -> None:
    """Reading a slide a second time: with glibc's defaults the freed frames were trimmed off
    the heap and fault their pages in again; tuned, the process reuses them."""
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    write_dicom_series(tmp_path, DicomSeriesSpec(width=4096, height=4096, levels=3, tile=256))

    def faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_READ_TWICE), mode, str(tmp_path)],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return int(run.stdout.strip())

    default, tuned = faults("default"), faults("tuned")
    assert default > 500, default  # the premise: the defaults do fault frames in again
    assert tuned < default / 4, (tuned, default)
