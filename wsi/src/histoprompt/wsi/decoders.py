"""Frame decoder backends and their selection (HISTOPROMPT_INGEST_DECODER=cpu|gpu|auto).

cpu: imagecodecs (libjpeg-turbo, OpenJPEG, CharLS), every transfer syntax, always there.
gpu: nvImageCodec batch-decodes the 8-bit RGB JPEG frames of one request on the GPU (nvJPEG);
every other format still goes to the CPU path. It is the optional extra `histoprompt-wsi[gpu]`
(nvidia-nvimgcodec-cu12, cupy-cuda12x, cucim-cu12), imported only when asked for.
auto: gpu when the extra and a CUDA device are both there, else cpu, saying why in one log line.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from histoprompt.wsi.codecs import JPEG_BASELINE, FrameDecoder, FrameFormat, decode_frame
from histoprompt.wsi.errors import DecoderUnavailableError, SlideError

__all__ = [
    "GPU_EXTRA",
    "CpuFrameDecoder",
    "DecoderMode",
    "NvImageCodecDecoder",
    "backend_for",
    "cuda_device_count",
    "gpu_unavailable_reason",
    "select_decoder",
]

DecoderMode = Literal["auto", "cpu", "gpu"]
GPU_EXTRA = "histoprompt-wsi[gpu]"
_LOG = logging.getLogger("histoprompt.wsi")


class CpuFrameDecoder:
    """The default backend: one imagecodecs call per frame (codecs.decode_frame)."""

    name = "cpu"

    def supports(self, fmt: FrameFormat) -> bool:
        return True

    def decode(self, frames: Sequence[bytes], fmt: FrameFormat) -> list[NDArray[Any]]:
        return [
            decode_frame(f, fmt.syntax, fmt.rows, fmt.cols, fmt.samples, ycbcr_raw=fmt.ycbcr_raw)
            for f in frames
        ]


class NvImageCodecDecoder:
    """nvImageCodec on the GPU: one batched decode call per request of frames.

    `decode` hands back host arrays (the CPU tiling path); `decode_device` keeps them on the
    GPU as CuPy arrays for histoprompt.wsi.gpu_tiles.
    """

    name = "gpu"

    def __init__(self, device_id: int = 0) -> None:
        from nvidia import nvimgcodec  # the extra; select_decoder checked it imports

        self._nv: Any = nvimgcodec
        # GPU backends only: a decoder that quietly used its CPU plugin would report CPU
        # decode as GPU decode. Fancy upsampling on, as libjpeg-turbo (the CPU path) does.
        kinds = (nvimgcodec.BackendKind.GPU_ONLY, nvimgcodec.BackendKind.HYBRID_CPU_GPU)
        self._decoder = nvimgcodec.Decoder(
            device_id=device_id,
            backends=[nvimgcodec.Backend(k) for k in kinds],
            options=":fancy_upsampling=1",
        )

    def supports(self, fmt: FrameFormat) -> bool:
        return fmt.syntax == JPEG_BASELINE and fmt.samples == 3 and not fmt.ycbcr_raw

    def _images(self, frames: Sequence[bytes]) -> list[Any]:
        images = self._decoder.decode([bytes(f) for f in frames])
        if len(images) != len(frames) or any(img is None for img in images):
            raise SlideError("frame does not decode on the GPU", code="corrupt_frame")
        return list(images)

    def decode(self, frames: Sequence[bytes], fmt: FrameFormat) -> list[NDArray[Any]]:
        out = [np.asarray(img.cpu()) for img in self._images(frames)]
        _check_shapes(out, fmt)
        return out

    def decode_device(self, frames: Sequence[bytes], fmt: FrameFormat) -> list[Any]:
        """The same frames as CuPy uint8 [rows, cols, 3] arrays on the GPU (no host copy)."""
        import cupy as cp

        out = [cp.asarray(img) for img in self._images(frames)]
        _check_shapes(out, fmt)
        return out


def backend_for(decoder: FrameDecoder | None, fmt: FrameFormat) -> FrameDecoder:
    """`decoder` when it takes frames of `fmt`, else the CPU backend."""
    if decoder is not None and decoder.supports(fmt):
        return decoder
    return CpuFrameDecoder()


def _check_shapes(arrays: Sequence[Any], fmt: FrameFormat) -> None:
    for arr in arrays:
        if tuple(arr.shape) != (fmt.rows, fmt.cols, 3):
            raise SlideError("GPU-decoded frame has the wrong shape", code="corrupt_frame")


def cuda_device_count() -> int:
    """CUDA devices the driver sees (0 without a driver): libcuda directly, no extra needed."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def gpu_unavailable_reason() -> str | None:
    """Why the gpu backend cannot run here, or None when it can."""
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except ImportError:
        return f"nvImageCodec is not installed (pip install '{GPU_EXTRA}')"
    if cuda_device_count() == 0:
        return "no CUDA device is visible"
    return None


def select_decoder(
    mode: str,
    *,
    probe: Callable[[], str | None] = gpu_unavailable_reason,
    log: logging.Logger | None = None,
) -> FrameDecoder:
    """The backend for `mode`. gpu that cannot run is a DecoderUnavailableError naming the
    extra; auto falls back to cpu and logs why once."""
    if mode == "cpu":
        return CpuFrameDecoder()
    if mode not in ("gpu", "auto"):
        raise DecoderUnavailableError(f"decoder mode {mode!r} is not one of cpu, gpu, auto")
    reason = probe()
    if reason is None:
        try:
            return NvImageCodecDecoder()
        except RuntimeError as err:  # nvImageCodec's own failure to set up its GPU decoder
            reason = f"nvImageCodec could not create a GPU decoder ({err})"
    if mode == "gpu":
        raise DecoderUnavailableError(
            f"HISTOPROMPT_INGEST_DECODER=gpu, but {reason}; install '{GPU_EXTRA}' "
            "(or histoprompt-ingest[gpu]) on a GPU node, or set it to cpu or auto"
        )
    (log or _LOG).info("decoder auto: cpu, since %s", reason)
    return CpuFrameDecoder()
