"""GPU JPEG decode (nvImageCodec) agrees with the CPU decoder; skipped without the GPU
extras or a CUDA device."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from histoprompt.export.synthetic_tiles import synthetic_tissue
from histoprompt.wsi.codecs import JPEG_BASELINE, decode_frame, gpu_decoder_or_none


def _cuda_device_present() -> bool:
    """True when the NVIDIA driver lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run(  # noqa: S603 - the driver's own tool, fixed arguments
            [smi, "-L"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def test_cpu_mode_never_touches_the_gpu() -> None:
    assert gpu_decoder_or_none("cpu") is None


@pytest.mark.gpu
def test_gpu_jpeg_decode_matches_cpu() -> None:
    pytest.importorskip("nvidia.nvimgcodec", reason="needs histoprompt-ingest[gpu]")
    if not _cuda_device_present():
        pytest.skip("no CUDA device (nvidia-smi lists no GPU)")
    # With the library and a device present, any failure here is a real bug: no except.
    decoder = gpu_decoder_or_none("gpu")
    assert decoder is not None
    import imagecodecs

    frame = synthetic_tissue(256, 256)(0, 0, 0, 256, 256)
    data = bytes(imagecodecs.jpeg8_encode(frame, level=90))
    cpu = decode_frame(data, JPEG_BASELINE, 256, 256, 3)
    (gpu,) = decoder.decode([data])
    assert gpu.shape == cpu.shape
    assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() < 2.0
