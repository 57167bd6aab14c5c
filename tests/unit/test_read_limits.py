"""ReadLimits at their boundaries: exactly at a limit reads, one over fails with SlideError
`too_large` (or `corrupt_frame` for a frame larger than its header says), on SYNTHETIC
DICOM-WSI and TIFF slides from the project's generators."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import imagecodecs
import numpy as np
import pytest

from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, TransferSyntax, write_dicom_series
from histoprompt.ingest.settings import IngestSettings
from histoprompt.wsi.codecs import JPEG_BASELINE, decode_frame
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import BytesSource, RangedFile
from histoprompt.wsi.slide import Region
from histoprompt.wsi.sources import open_local, open_sources

W, H, TILE = 200, 120, 64
BASE = ReadLimits(tiff_backend="tiffslide")


@pytest.fixture(scope="module")
def dicom(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    spec = DicomSeriesSpec(width=W, height=H, levels=1, tile=TILE, syntax=TransferSyntax.jpeg2000)
    (path,) = write_dicom_series(tmp_path_factory.mktemp("dcm"), spec)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiff(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_tiff(tmp_path_factory.mktemp("tif") / "s.tiff", W, H, levels=2, tile=TILE)
    return path.read_bytes()


def _read(data: bytes, limits: ReadLimits) -> None:
    with open_sources([BytesSource(data)], limits) as opened:
        (tile,) = opened.reader.read_regions(0, [Region(0, 0, TILE, TILE)])
        assert tile.shape == (TILE, TILE, 3)


def _too_large(data: bytes, limits: ReadLimits) -> str:
    with pytest.raises(SlideError) as info:
        _read(data, limits)
    assert info.value.code == "too_large", info.value
    return str(info.value)


@pytest.mark.parametrize("kind", ["dicom", "tiff"])
def test_object_size_limit(kind: str, dicom: bytes, tiff: bytes) -> None:
    data = dicom if kind == "dicom" else tiff
    _read(data, replace(BASE, max_object_bytes=len(data)))
    assert "MAX_OBJECT_BYTES" in _too_large(data, replace(BASE, max_object_bytes=len(data) - 1))


def test_object_size_limit_of_a_local_file(tmp_path: Path, tiff: bytes) -> None:
    path = tmp_path / "s.tiff"
    path.write_bytes(tiff)
    open_local([path], replace(BASE, max_object_bytes=len(tiff))).close()
    with pytest.raises(SlideError) as info:
        open_local([path], replace(BASE, max_object_bytes=len(tiff) - 1))
    assert info.value.code == "too_large"


@pytest.mark.parametrize("kind", ["dicom", "tiff"])
def test_pixel_count_limit(kind: str, dicom: bytes, tiff: bytes) -> None:
    data = dicom if kind == "dicom" else tiff
    _read(data, replace(BASE, max_pixels=W * H))
    _too_large(data, replace(BASE, max_pixels=W * H - 1))


@pytest.mark.parametrize("kind", ["dicom", "tiff"])
def test_frame_or_tile_pixel_limit(kind: str, dicom: bytes, tiff: bytes) -> None:
    data = dicom if kind == "dicom" else tiff
    _read(data, replace(BASE, max_frame_pixels=TILE * TILE))
    _too_large(data, replace(BASE, max_frame_pixels=TILE * TILE - 1))


def test_frame_count_limit(dicom: bytes) -> None:
    cells = -(-W // TILE) * -(-H // TILE)  # 4 x 2 tiles: the grid and the frame count
    _read(dicom, replace(BASE, max_frames=cells))
    _too_large(dicom, replace(BASE, max_frames=cells - 1))


def test_parser_read_limit() -> None:
    f = RangedFile(BytesSource(bytes(100)), block_size=16, blocks=2, max_read=40)
    assert len(f.read(40)) == 40
    f.seek(0)
    with pytest.raises(SlideError) as info:
        f.read(41)
    assert info.value.code == "too_large"
    f.seek(90)
    assert len(f.read(1 << 40)) == 10  # a huge length past the end reads only what is there


def test_a_frame_larger_than_its_header_is_refused_before_decoding() -> None:
    """The decompression-bomb guard below max_frame_pixels: a JPEG claiming more pixels than
    the header's Rows x Columns is never decoded into a buffer of its own size."""
    frame = imagecodecs.jpeg8_encode(np.zeros((64, 64, 3), dtype=np.uint8))
    assert decode_frame(frame, JPEG_BASELINE, 64, 64, 3).shape == (64, 64, 3)
    with pytest.raises(SlideError) as info:
        decode_frame(frame, JPEG_BASELINE, 32, 32, 3)
    assert info.value.code == "corrupt_frame"


def test_ingest_settings_set_the_limits() -> None:
    s = IngestSettings(  # type: ignore[call-arg]
        _env_file=None,
        ingest_max_object_bytes=12345,
        ingest_max_pixels=678,
        ingest_max_frame_pixels=90,
    )
    limits = s.read_limits()
    assert (limits.max_object_bytes, limits.max_pixels, limits.max_frame_pixels) == (12345, 678, 90)
