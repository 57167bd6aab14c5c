"""The SYNTHETIC slide writers produce files that independent readers (pydicom, tiffslide) read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from histoprompt.core.schemas import SeriesManifest
from histoprompt.export.synthetic_tiff import write_tiff
from histoprompt.export.synthetic_tiles import SYNTHETIC, synthetic_tissue
from histoprompt.export.synthetic_wsi import (
    DicomSeriesSpec,
    TransferSyntax,
    write_dicom_series,
    write_series_manifest,
)

LOSSLESS = [TransferSyntax.explicit_le, TransferSyntax.jpeg2000, TransferSyntax.jpegls]


@pytest.mark.parametrize("syntax", LOSSLESS)
@pytest.mark.parametrize("sparse", [False, True])
def test_dicom_frames_decode_to_generator_pixels(
    tmp_path: Path, syntax: TransferSyntax, sparse: bool
) -> None:
    spec = DicomSeriesSpec(width=300, height=200, levels=2, tile=128, syntax=syntax, sparse=sparse)
    paths = write_dicom_series(tmp_path, spec)
    assert [p.name for p in paths] == ["instance-0000.dcm", "instance-0001.dcm"]
    ds = pydicom.dcmread(paths[0])
    assert ds.SeriesDescription == SYNTHETIC
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.77.1.6"
    assert ds.DimensionOrganizationType == ("TILED_SPARSE" if sparse else "TILED_FULL")
    assert (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) == (300, 200)
    frames = ds.pixel_array
    assert frames.shape == (6, 128, 128, 3)
    fn = synthetic_tissue(300, 200)
    # frame 0 of TILED_FULL is the top-left tile; for sparse, look its position up
    if sparse:
        pos = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSlideSequence[0]
        x = int(pos.ColumnPositionInTotalImagePixelMatrix) - 1
        y = int(pos.RowPositionInTotalImagePixelMatrix) - 1
    else:
        x = y = 0
    w, h = min(128, 300 - x), min(128, 200 - y)
    np.testing.assert_array_equal(frames[0][:h, :w], fn(0, x, y, w, h))
    level1 = pydicom.dcmread(paths[1])
    assert level1.TotalPixelMatrixColumns == 150
    spacing0 = float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0])
    spacing1 = float(
        level1.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[0]
    )
    assert spacing1 == pytest.approx(2 * spacing0)


def test_dicom_phi_and_label_are_written_when_asked(tmp_path: Path) -> None:
    spec = DicomSeriesSpec(
        width=256, height=256, levels=1, phi={"PatientName": "DOE^JANE"}, with_label=True
    )
    paths = write_dicom_series(tmp_path, spec)
    assert len(paths) == 2
    assert str(pydicom.dcmread(paths[0]).PatientName) == "DOE^JANE"
    assert list(pydicom.dcmread(paths[1]).ImageType)[2] == "LABEL"


def test_monochrome_jpeg_baseline(tmp_path: Path) -> None:
    spec = DicomSeriesSpec(width=200, height=200, levels=1, tile=128, monochrome=True)
    ds = pydicom.dcmread(write_dicom_series(tmp_path, spec)[0])
    assert ds.PhotometricInterpretation == "MONOCHROME2"
    assert ds.pixel_array.shape == (4, 128, 128)


def test_series_manifest_validates() -> None:
    raw = write_series_manifest([("a/instance-0000.dcm", 10), ("a/instance-0001.dcm", 5)])
    manifest = SeriesManifest.model_validate_json(raw)
    assert [i.size for i in manifest.instances] == [10, 5]


def test_tiff_is_an_svs_pyramid(tmp_path: Path) -> None:
    import tiffslide

    path = write_tiff(tmp_path / "s.svs", 1000, 600, levels=3, mpp=0.25)
    with tiffslide.TiffSlide(path) as slide:
        assert slide.level_dimensions == ((1000, 600), (500, 300), (250, 150))
        assert float(slide.properties["tiffslide.mpp-x"]) == pytest.approx(0.25)
        region = slide.read_region((0, 0), 0, (256, 256), as_array=True)
    ref = synthetic_tissue(1000, 600)(0, 0, 0, 256, 256)
    assert np.abs(region.astype(int) - ref).mean() < 3.0  # JPEG, lossy
