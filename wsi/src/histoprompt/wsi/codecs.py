"""Frame decoding with imagecodecs on CPU (JPEG, JPEG 2000, JPEG-LS, raw), and the
decoder-backend interface that histoprompt.wsi.decoders implements (the CPU default and
nvImageCodec on GPU nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from histoprompt.wsi.errors import SlideError, parse_guard

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")
JPEG2000 = (
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
)
JPEGLS = ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
NATIVE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
SUPPORTED = (JPEG_BASELINE, JPEG_EXTENDED, *JPEG_LOSSLESS, *JPEG2000, *JPEGLS, *NATIVE)
CODECS: dict[str, str] = {
    JPEG_BASELINE: "jpeg8_decode",
    JPEG_EXTENDED: "jpeg8_decode",
    **dict.fromkeys(JPEG_LOSSLESS, "ljpeg_decode"),
    **dict.fromkeys(JPEG2000, "jpeg2k_decode"),
    **dict.fromkeys(JPEGLS, "jpegls_decode"),
}
"""imagecodecs decoder of each compressed transfer syntax."""


def _to_rgb(array: NDArray[Any], rows: int, cols: int) -> NDArray[Any]:
    if array.dtype != np.uint8:
        raise SlideError(f"frame decodes to {array.dtype}, expected 8-bit", code="unsupported")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[:2] != (rows, cols) or array.shape[2] != 3:
        raise SlideError(
            f"frame decodes to {array.shape}, header says {rows}x{cols}", code="corrupt_frame"
        )
    return array


def decode_frame(
    data: bytes, syntax: str, rows: int, cols: int, samples: int, *, ycbcr_raw: bool = False
) -> NDArray[Any]:
    """One DICOM frame -> uint8 [rows, cols, 3] (monochrome replicated to three channels)."""
    import imagecodecs

    with parse_guard("frame does not decode", "corrupt_frame"):
        if syntax in NATIVE:
            need = rows * cols * samples
            if len(data) < need:
                raise SlideError("frame shorter than its header says", code="truncated")
            arr = np.frombuffer(data, dtype=np.uint8, count=need)
            arr = arr.reshape(rows, cols, samples) if samples > 1 else arr.reshape(rows, cols)
        elif syntax in CODECS:
            # Decoded into a frame of the header's size: the codecs check the stream's own
            # size against it before decoding, so a frame claiming 65535^2 px allocates
            # nothing (the decompression-bomb guard below ReadLimits.max_frame_pixels).
            out = np.empty((rows, cols, 3) if samples > 1 else (rows, cols), dtype=np.uint8)
            arr = getattr(imagecodecs, CODECS[syntax])(data, out=out)
        else:
            raise SlideError(f"transfer syntax {syntax} is not supported", code="unsupported")
    if ycbcr_raw and arr.ndim == 3:
        arr = ycbcr_to_rgb(arr)
    return _to_rgb(np.asarray(arr), rows, cols)


def ycbcr_to_rgb(arr: NDArray[Any]) -> NDArray[Any]:
    """Full-range YCbCr -> RGB (for uncompressed YBR_FULL frames)."""
    y, cb, cr = (arr[..., i].astype(np.float32) for i in range(3))
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    rgb: NDArray[Any] = np.clip(np.stack([r, g, b], -1) + 0.5, 0, 255).astype(np.uint8)
    return rgb


@dataclass(frozen=True)
class FrameFormat:
    """What every frame of one DICOM instance is: transfer syntax and geometry."""

    syntax: str
    rows: int
    cols: int
    samples: int
    ycbcr_raw: bool = False

    @classmethod
    def of(cls, syntax: str, rows: int, cols: int, samples: int, photometric: str) -> FrameFormat:
        # Uncompressed YBR_FULL frames hold raw YCbCr; the codecs convert the others.
        raw = syntax in NATIVE and photometric.startswith("YBR_FULL")
        return cls(syntax, rows, cols, samples, raw and photometric != "YBR_FULL_422")


class FrameDecoder(Protocol):
    """A decoder backend (histoprompt.wsi.decoders): frames of one format -> uint8
    [rows, cols, 3] each, in order. `supports` says which formats it takes; the others go
    to the CPU path."""

    @property
    def name(self) -> str: ...

    def supports(self, fmt: FrameFormat) -> bool: ...

    def decode(self, frames: Sequence[bytes], fmt: FrameFormat) -> list[NDArray[Any]]: ...


GpuJpegDecoder = FrameDecoder
"""The older name, still used in annotations."""
