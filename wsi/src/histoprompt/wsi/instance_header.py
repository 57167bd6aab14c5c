"""What series assembly needs from one DICOM-WSI instance, read from its header alone.

The header is read by ranged GETs up to the pixel data (pydicom, `stop_before_pixels`), so a
LABEL or OVERVIEW instance joins its series without a byte of its pixels being fetched. The
study and series UIDs leave this module only as a hash (`series_key`): nothing that could
identify a patient or a study is returned, stored or logged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from histoprompt.wsi.dicom_header import header_values, read_header
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.ranged import ByteSource, RangedFile

__all__ = ["InstanceHeader", "read_instance_header", "series_key_for"]

# Headers are small next to the frames: a few 64 KiB GETs read even a TILED_SPARSE one.
HEADER_BLOCK = 64 * 1024
HEADER_BLOCKS = 64


def series_key_for(study_uid: str, series_uid: str) -> str:
    """First 32 hex characters of sha256 over the study and series UIDs."""
    return hashlib.sha256(f"{study_uid}\n{series_uid}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class InstanceHeader:
    """One instance as series assembly sees it. `flavor` is ImageType's third value
    (VOLUME, LABEL, OVERVIEW, THUMBNAIL); width and height are the total pixel matrix."""

    series_key: str
    flavor: str
    width: int
    height: int
    n_frames: int


def read_instance_header(source: ByteSource) -> InstanceHeader:
    """The header of a VL Whole Slide Microscopy instance.

    Raises SlideError: `not_dicom`, `not_wsi` (another SOP class) or `corrupt_header`."""

    ds = read_header(RangedFile(source, HEADER_BLOCK, HEADER_BLOCKS))
    with header_values():
        study = str(ds.get("StudyInstanceUID", ""))
        series = str(ds.get("SeriesInstanceUID", ""))
        if not study or not series:
            raise SlideError(
                "DICOM-WSI header lacks its study or series UID", code="corrupt_header"
            )
        image_type = tuple(str(v).upper() for v in (ds.get("ImageType") or ()))
        rows, cols = int(ds.Rows), int(ds.Columns)
        return InstanceHeader(
            series_key=series_key_for(study, series),
            flavor=image_type[2] if len(image_type) > 2 else "VOLUME",
            width=int(ds.get("TotalPixelMatrixColumns", cols)),
            height=int(ds.get("TotalPixelMatrixRows", rows)),
            n_frames=int(ds.get("NumberOfFrames", 1)),
        )
