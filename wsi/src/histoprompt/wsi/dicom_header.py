"""The DICOM-WSI header: parsed with pydicom up to the pixel data, checked, and read for what
the frame index needs (pixel spacing, frame positions, offset tables).

pydicom converts elements lazily, so every read of a value runs under `header_values`: a
corrupt header fails as one SlideError, never as whatever pydicom raised. Patient attributes
are never read here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.units import Mpp
from histoprompt.wsi.errors import SlideError, parse_guard
from histoprompt.wsi.ranged import RangedFile

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

__all__ = [
    "WSI_SOP_CLASS",
    "frame_positions",
    "header_values",
    "offset_table",
    "pixel_spacing",
    "read_header",
]

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def offset_table(raw: object, dtype: str) -> NDArray[Any]:
    """An offset table's values; its byte length must be a whole number of entries."""
    if not isinstance(raw, bytes | bytearray) or len(raw) % np.dtype(dtype).itemsize:
        raise SlideError("offset table has a bad length", code="corrupt_header")
    return np.frombuffer(bytes(raw), dtype=dtype)


def header_values() -> AbstractContextManager[None]:
    """pydicom converts elements when they are first read: a corrupt value raises any type
    there (ValueError, BytesLengthException, NotImplementedError for an unknown VR...)."""
    return parse_guard("DICOM-WSI header has a bad value", "corrupt_header")


def read_header(fileobj: RangedFile) -> Any:
    """The data set up to the pixel data; leaves `fileobj` at the pixel data element."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    fileobj.seek(0)
    with parse_guard("DICOM header does not parse", "corrupt_header"):
        try:
            ds = dcmread(fileobj, stop_before_pixels=True)
        except InvalidDicomError as err:
            raise SlideError("object is not DICOM (no DICM preamble)", code="not_dicom") from err
    with header_values():
        sop = str(ds.get("SOPClassUID", ""))
        if sop != WSI_SOP_CLASS:
            raise SlideError(
                "DICOM object is not VL Whole Slide Microscopy Image Storage", code="not_wsi"
            )
        if "Rows" not in ds or "Columns" not in ds:
            raise SlideError("DICOM-WSI header lacks Rows/Columns", code="corrupt_header")
    return ds


def pixel_spacing(ds: Any, width: int) -> Mpp:
    try:
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        return Mpp(float(spacing[1]) * 1000.0)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        pass
    vol = ds.get("ImagedVolumeWidth")
    if vol and width:
        return Mpp(float(vol) * 1000.0 / width)
    raise SlideError("DICOM-WSI header has no pixel spacing", code="corrupt_header")


def frame_positions(ds: Any, inst: Any) -> NDArray[Any]:
    """int64 [n_frames, 2]: (column, row) of each frame in the tile grid."""
    cols_n, rows_n = inst.grid
    if str(ds.get("DimensionOrganizationType", "TILED_FULL")) != "TILED_SPARSE":
        # TILED_FULL: row-major, first focal plane and optical path first.
        i = np.arange(inst.n_frames, dtype=np.int64)
        return np.stack([i % cols_n, (i // cols_n) % rows_n], axis=1)
    seq = ds.get("PerFrameFunctionalGroupsSequence")
    if seq is None or len(seq) != inst.n_frames:
        raise SlideError("TILED_SPARSE without per-frame positions", code="corrupt_header")
    out = []
    for item in seq:
        try:
            pos = item.PlanePositionSlideSequence[0]
            col = (int(pos.ColumnPositionInTotalImagePixelMatrix) - 1) // inst.cols
            row = (int(pos.RowPositionInTotalImagePixelMatrix) - 1) // inst.rows
        except (AttributeError, IndexError, TypeError, ValueError) as err:
            raise SlideError("bad per-frame plane position", code="corrupt_header") from err
        out.append((col, row))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)
