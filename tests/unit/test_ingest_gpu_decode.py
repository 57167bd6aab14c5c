"""GPU JPEG decode (nvImageCodec) agrees with the CPU decoder; skipped without GPU extras."""

from __future__ import annotations

import numpy as np
import pytest

from histoprompt.export.synthetic_wsi import synthetic_tissue
from histoprompt.ingest.codecs import JPEG_BASELINE, decode_frame, gpu_decoder_or_none


def test_cpu_mode_never_touches_the_gpu() -> None:
    assert gpu_decoder_or_none("cpu") is None


@pytest.mark.gpu
def test_gpu_jpeg_decode_matches_cpu() -> None:
    pytest.importorskip("nvidia.nvimgcodec", reason="needs histoprompt-ingest[gpu]")
    try:
        decoder = gpu_decoder_or_none("gpu")
    except Exception as err:  # no CUDA device: skip cleanly
        pytest.skip(f"no usable GPU: {type(err).__name__}")
    assert decoder is not None
    import imagecodecs

    frame = synthetic_tissue(256, 256)(0, 0, 0, 256, 256)
    data = bytes(imagecodecs.jpeg8_encode(frame, level=90))
    cpu = decode_frame(data, JPEG_BASELINE, 256, 256, 3)
    (gpu,) = decoder.decode([data])
    assert gpu.shape == cpu.shape
    assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() < 2.0
