"""DICOM-WSI and TIFF readers over in-memory byte sources: pixels, frames fetched, errors."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_tiles import synthetic_tissue
from histoprompt.export.synthetic_wsi import (
    DicomSeriesSpec,
    TransferSyntax,
    write_dicom_series,
    write_non_wsi_dicom,
)
from histoprompt.wsi.dicom import DicomSlide, ReadLimits
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.ranged import BytesSource, RangedFile
from histoprompt.wsi.slide import Region
from histoprompt.wsi.tiff import TiffSlideReader

W, H = 600, 500


class CountingSource(BytesSource):
    """Records every range read, to prove which bytes a reader touched."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read_range(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return super().read_range(offset, length)


def _series(tmp: Path, **kw: object) -> list[CountingSource]:
    spec = DicomSeriesSpec(width=W, height=H, levels=2, tile=128, **kw)  # type: ignore[arg-type]
    return [CountingSource(p.read_bytes()) for p in write_dicom_series(tmp, spec)]


CASES = [
    pytest.param({"syntax": TransferSyntax.explicit_le}, 0, id="raw"),
    pytest.param({"syntax": TransferSyntax.jpeg2000}, 0, id="j2k-bot"),
    pytest.param({"syntax": TransferSyntax.jpegls, "extended_offset_table": True}, 0, id="jls-eot"),
    pytest.param({"syntax": TransferSyntax.jpegls, "basic_offset_table": False}, 0, id="jls-none"),
    pytest.param({"syntax": TransferSyntax.jpeg2000, "sparse": True}, 0, id="j2k-sparse"),
    pytest.param({"syntax": TransferSyntax.jpeg_baseline}, 3.0, id="jpeg"),
    pytest.param({"syntax": TransferSyntax.jpeg_baseline, "sparse": True}, 3.0, id="jpeg-sparse"),
]


@pytest.mark.parametrize(("kw", "tol"), CASES)
def test_dicom_regions_match_the_generator(tmp_path: Path, kw: dict, tol: float) -> None:
    sources = _series(tmp_path, **kw)
    slide = DicomSlide(sources, ReadLimits())
    assert [(lv.width, lv.height) for lv in slide.levels] == [(W, H), (W // 2, H // 2)]
    assert slide.levels[0].mpp == pytest.approx(0.5)
    assert slide.levels[1].mpp == pytest.approx(1.0)
    fn = synthetic_tissue(W, H)
    for level, reg in [
        (0, Region(100, 50, 200, 150)),
        (0, Region(500, 400, 200, 200)),
        (1, Region(10, 20, 64, 64)),
    ]:
        (got,) = slide.read_regions(level, [reg])
        vis_w, vis_h = min(reg.w, (W >> level) - reg.x), min(reg.h, (H >> level) - reg.y)
        ref = fn(level, reg.x, reg.y, vis_w, vis_h)
        assert np.abs(got[:vis_h, :vis_w].astype(int) - ref).mean() <= tol
        assert (got[vis_h:, :] == 255).all() and (got[:, vis_w:] == 255).all()


def test_only_needed_frames_are_fetched_and_coalesced(tmp_path: Path) -> None:
    sources = _series(tmp_path, syntax=TransferSyntax.jpeg2000)
    slide = DicomSlide(sources, ReadLimits(coalesce_gap=64))
    inst = slide.instance(0)
    ranges = inst.frame_ranges()
    header_reads = len(sources[0].reads)
    slide.read_regions(0, [Region(0, 0, 256, 128)])  # frames 0, 1: 8 bytes apart -> one GET
    new = sources[0].reads[header_reads:]
    assert new == [(int(ranges[0][0]), int(ranges[1][0] + ranges[1][1] - ranges[0][0]))]
    # cached: reading the same frames again fetches nothing
    slide.read_regions(0, [Region(10, 10, 100, 100)])
    assert len(sources[0].reads) == header_reads + 1
    # a frame far away is its own GET, and nothing else of the file is touched
    slide.read_regions(0, [Region(512, 384, 10, 10)])
    last = sources[0].reads[-1]
    assert last == tuple(int(v) for v in ranges[-1])


def test_monochrome_is_replicated_to_rgb(tmp_path: Path) -> None:
    sources = _series(tmp_path, syntax=TransferSyntax.jpegls, monochrome=True)
    (got,) = DicomSlide(sources, ReadLimits()).read_regions(0, [Region(0, 0, 64, 64)])
    assert got.shape == (64, 64, 3)
    np.testing.assert_array_equal(got[..., 0], got[..., 2])


def test_label_instance_pixels_are_never_read(tmp_path: Path) -> None:
    spec = DicomSeriesSpec(width=W, height=H, levels=1, tile=128, with_label=True)
    paths = write_dicom_series(tmp_path, spec)
    sources = [CountingSource(p.read_bytes()) for p in paths]
    slide = DicomSlide(sources, ReadLimits(block_size=4096))
    assert len(slide.levels) == 1
    slide.read_regions(0, [Region(0, 0, W, H)])
    label = sources[1]
    label_pixels = label.size - 128 * 128 * 3
    assert all(off + n <= label_pixels + 4096 for off, n in label.reads)
    assert sum(n for _, n in label.reads) < label.size


def test_not_dicom(tmp_path: Path) -> None:
    with pytest.raises(SlideError) as info:
        DicomSlide([BytesSource(b"\0" * 200 + b"not a dicom file" * 10)], ReadLimits())
    assert info.value.code == "not_dicom"


def test_dicom_that_is_not_slide_microscopy(tmp_path: Path) -> None:
    path = write_non_wsi_dicom(tmp_path / "ct.dcm")
    with pytest.raises(SlideError) as info:
        DicomSlide([BytesSource(path.read_bytes())], ReadLimits())
    assert info.value.code == "not_wsi"


@pytest.mark.parametrize("syntax", [TransferSyntax.explicit_le, TransferSyntax.jpeg_baseline])
def test_truncated_frames(tmp_path: Path, syntax: TransferSyntax) -> None:
    path = write_dicom_series(
        tmp_path, DicomSeriesSpec(width=W, height=H, levels=1, tile=128, syntax=syntax)
    )[0]
    data = path.read_bytes()
    slide = DicomSlide([BytesSource(data[: len(data) - 3000])], ReadLimits())
    with pytest.raises(SlideError) as info:
        slide.read_regions(0, [Region(0, 0, W, H)])
    assert info.value.code == "truncated"


def test_dimensions_over_the_limit(tmp_path: Path) -> None:
    path = write_dicom_series(tmp_path, DicomSeriesSpec(width=W, height=H, levels=1, tile=128))[0]
    with pytest.raises(SlideError) as info:
        DicomSlide([BytesSource(path.read_bytes())], ReadLimits(max_pixels=W * H - 1))
    assert info.value.code == "too_large"


def test_corrupt_offset_table_is_caught(tmp_path: Path) -> None:
    path = write_dicom_series(
        tmp_path,
        DicomSeriesSpec(width=W, height=H, levels=1, tile=128, syntax=TransferSyntax.jpegls),
    )[0]
    data = bytearray(path.read_bytes())
    # point the last BOT entry into the middle of a frame
    marker = struct.pack("<HHI", 0xFFFE, 0xE000, 4 * 20)
    bot = data.find(marker) + len(marker)
    data[bot + 4 * 19 : bot + 4 * 20] = struct.pack("<I", 12)
    slide = DicomSlide([BytesSource(bytes(data))], ReadLimits())
    with pytest.raises(SlideError) as info:
        slide.read_regions(0, [Region(0, 0, W, H)])
    assert info.value.code in {"corrupt_header", "corrupt_frame", "truncated"}


def test_tiff_reader_over_ranged_file(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "s.svs", W, H, levels=2, tile=128, compression="zlib")
    src = CountingSource(path.read_bytes())
    reader = TiffSlideReader(
        RangedFile(src, block_size=8192, blocks=4), ReadLimits(max_pixels=10**9)
    )
    assert [(lv.width, lv.height) for lv in reader.levels] == [(W, H), (W // 2, H // 2)]
    (got,) = reader.read_regions(0, [Region(130, 140, 100, 90)])
    np.testing.assert_array_equal(got, synthetic_tissue(W, H)(0, 130, 140, 100, 90))
    assert sum(n for _, n in src.reads) < src.size  # ranged, not the whole file
