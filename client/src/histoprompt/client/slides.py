"""What a submittable slide is, checked before a single byte is uploaded.

- a DICOM-WSI series: a folder whose `*.dcm` files are all VL Whole Slide Microscopy
  Image Storage instances of one series;
- a single DICOM-WSI instance (`.dcm` file);
- an SVS or TIFF file (TIFF or BigTIFF magic, and tifffile can read its first page).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from histoprompt.client.errors import NotASlideError

__all__ = ["WSI_SOP_CLASS", "SlideFiles", "inspect_slide"]

WSI_SOP_CLASS: Final = "1.2.840.10008.5.1.4.1.1.77.1.6"
"""VL Whole Slide Microscopy Image Storage."""

SlideKind = Literal["dicom-series", "dicom", "tiff"]


@dataclass(frozen=True)
class SlideFiles:
    """A validated slide: its kind and files (series instances sorted by name)."""

    path: Path
    kind: SlideKind
    files: tuple[Path, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)


def _format(path: Path) -> str:
    """'dicom' or 'tiff' by the same magic-byte sniffing ingest applies, or 'other'."""
    from histoprompt.wsi.errors import SlideError
    from histoprompt.wsi.ranged import LocalFileSource
    from histoprompt.wsi.sources import sniff

    try:
        return sniff(LocalFileSource(path))
    except SlideError:
        return "other"


def _check_wsi_instance(path: Path) -> str:
    """The instance's SeriesInstanceUID; NotASlideError unless it is a WSI instance."""
    if _format(path) != "dicom":
        raise NotASlideError(f"{path}: not a DICOM file (no DICM marker)")
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SeriesInstanceUID"]
        )
    except (InvalidDicomError, OSError, ValueError) as err:
        raise NotASlideError(f"{path}: unreadable DICOM ({err})") from err
    sop = str(ds.get("SOPClassUID", ""))
    if sop != WSI_SOP_CLASS:
        raise NotASlideError(
            f"{path}: DICOM SOP class {sop or 'missing'} is not VL Whole Slide Microscopy "
            f"({WSI_SOP_CLASS})"
        )
    return str(ds.get("SeriesInstanceUID", ""))


def _check_tiff(path: Path) -> None:
    if _format(path) != "tiff":
        raise NotASlideError(
            f"{path}: not a slide (expected a DICOM-WSI series folder, .dcm, .svs or .tiff)"
        )
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape = (int(page.imagelength), int(page.imagewidth))
    except Exception as err:  # tifffile raises many types for damaged files
        raise NotASlideError(f"{path}: unreadable TIFF ({type(err).__name__}: {err})") from err
    if min(shape) <= 0:
        raise NotASlideError(f"{path}: TIFF has an empty first page")


def inspect_slide(path: Path) -> SlideFiles:
    """Classify and validate `path`; NotASlideError says why it is not a slide."""
    if not path.exists():
        raise NotASlideError(f"{path}: no such file or folder")
    if path.is_dir():
        files = tuple(sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".dcm"))
        if not files:
            raise NotASlideError(f"{path}: folder has no .dcm instances (not a DICOM-WSI series)")
        series = {_check_wsi_instance(f) for f in files}
        if len(series) > 1:
            raise NotASlideError(f"{path}: instances belong to {len(series)} different series")
        return SlideFiles(path, "dicom-series", files)
    if path.stat().st_size == 0:
        raise NotASlideError(f"{path}: empty file")
    if _format(path) == "dicom":
        _check_wsi_instance(path)
        return SlideFiles(path, "dicom", (path,))
    _check_tiff(path)
    return SlideFiles(path, "tiff", (path,))
