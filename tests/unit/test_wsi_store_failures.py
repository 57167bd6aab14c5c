"""A store that fails mid-read (S3 down) is a TransientError out of every reader, never a
corrupt-slide SlideError: the slide is retried later, not failed for good. SYNTHETIC slides
from the project's generators."""

from __future__ import annotations

from pathlib import Path

import pytest

from histoprompt.core.errors import TransientError
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, TransferSyntax, write_dicom_series
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import BytesSource
from histoprompt.wsi.slide import Region
from histoprompt.wsi.sources import open_sources

W, H, TILE = 256, 192, 64
# Small blocks: the header is read in several GETs and the tiles are not in its blocks.
LIMITS = ReadLimits(tiff_backend="tiffslide", block_size=4096)


class FailingStore(BytesSource):
    """Serves the first `ok_gets` GETs, then fails as the S3 client does when the store is
    unreachable (ranged.S3Object maps urllib3 errors to TransientError `s3_error`)."""

    def __init__(self, data: bytes, ok_gets: int) -> None:
        super().__init__(data)
        self.ok_gets = ok_gets

    def read_range(self, offset: int, length: int) -> bytes:
        if self.gets >= self.ok_gets:
            raise TransientError("store unreachable", code="s3_error")
        return super().read_range(offset, length)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    spec = DicomSeriesSpec(
        width=W, height=H, levels=1, tile=TILE, syntax=TransferSyntax.jpeg_baseline
    )
    (dcm,) = write_dicom_series(tmp_path_factory.mktemp("dcm"), spec)
    tif = write_tiff(tmp_path_factory.mktemp("tif") / "s.tiff", W, H, levels=1, tile=TILE)
    return {"dicom": Path(dcm).read_bytes(), "tiff": tif.read_bytes()}


def _gets_to_open(data: bytes) -> int:
    store = BytesSource(data)
    open_sources([store], LIMITS).close()
    return store.gets


@pytest.mark.parametrize("kind", ["dicom", "tiff"])
def test_store_down_while_opening_is_transient(slides: dict[str, bytes], kind: str) -> None:
    needed = _gets_to_open(slides[kind])
    assert needed >= 2, "the header takes more than the sniffing GET"
    for ok in range(1, needed):
        with pytest.raises(TransientError) as caught:
            open_sources([FailingStore(slides[kind], ok)], LIMITS)
        assert not isinstance(caught.value, SlideError), (kind, ok)


@pytest.mark.parametrize("kind", ["dicom", "tiff"])
def test_store_down_while_reading_tiles_is_transient(slides: dict[str, bytes], kind: str) -> None:
    store = FailingStore(slides[kind], ok_gets=_gets_to_open(slides[kind]))
    opened = open_sources([store], LIMITS)
    try:
        with pytest.raises(TransientError) as caught:
            opened.reader.read_regions(0, [Region(0, 0, W, H)], cache=False)
        assert not isinstance(caught.value, SlideError), kind
    finally:
        opened.close()
