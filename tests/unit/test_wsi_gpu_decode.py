"""Decoder backends (histoprompt.wsi.decoders): selection by HISTOPROMPT_INGEST_DECODER, the
error and fallback branches, the CPU path's output, and (marked `gpu`, skipped without the
extra or a CUDA device) GPU decode against CPU decode."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from histoprompt.export.synthetic_tiles import synthetic_tissue
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, TransferSyntax, write_dicom_series
from histoprompt.wsi.codecs import JPEG_BASELINE, FrameFormat, decode_frame
from histoprompt.wsi.decoders import (
    GPU_EXTRA,
    CpuFrameDecoder,
    gpu_unavailable_reason,
    select_decoder,
)
from histoprompt.wsi.dicom import DicomSlide
from histoprompt.wsi.errors import DecoderUnavailableError
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import LocalFileSource
from histoprompt.wsi.slide import Region

GPU_HERE = gpu_unavailable_reason() is None


def test_cpu_mode_is_the_imagecodecs_backend() -> None:
    assert isinstance(select_decoder("cpu"), CpuFrameDecoder)


@pytest.mark.skipif(GPU_HERE, reason="the gpu extra and a GPU are here: nothing is missing")
def test_gpu_mode_without_the_extra_or_a_device_names_what_to_install() -> None:
    with pytest.raises(DecoderUnavailableError) as info:
        select_decoder("gpu")
    assert GPU_EXTRA in str(info.value)
    assert "HISTOPROMPT_INGEST_DECODER" in str(info.value)
    assert info.value.code == "decoder_unavailable"


@pytest.mark.skipif(GPU_HERE, reason="the gpu extra and a GPU are here: auto picks the GPU")
def test_auto_falls_back_to_cpu_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("histoprompt.test.decoders")
    with caplog.at_level(logging.INFO, logger=log.name):
        decoder = select_decoder("auto", log=log)
    assert isinstance(decoder, CpuFrameDecoder)
    lines = [r.getMessage() for r in caplog.records if r.name == log.name]
    assert len(lines) == 1 and lines[0].startswith("decoder auto: cpu, since ")
    assert gpu_unavailable_reason() in lines[0]  # type: ignore[operator]


def test_a_device_missing_is_named_for_gpu_and_falls_back_for_auto(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def no_device() -> str:
        return "no CUDA device is visible"

    with pytest.raises(DecoderUnavailableError, match="no CUDA device is visible"):
        select_decoder("gpu", probe=no_device)
    with caplog.at_level(logging.INFO, logger="histoprompt.wsi"):
        assert isinstance(select_decoder("auto", probe=no_device), CpuFrameDecoder)
    assert "no CUDA device is visible" in caplog.text


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(DecoderUnavailableError, match="not one of cpu, gpu, auto"):
        select_decoder("fast")


class BatchRecorder:
    """A backend that decodes on the CPU and records each batch it was handed."""

    name = "recorder"

    def __init__(self, syntax: str) -> None:
        self.syntax = syntax
        self.batches: list[int] = []

    def supports(self, fmt: FrameFormat) -> bool:
        return fmt.syntax == self.syntax

    def decode(self, frames: Sequence[bytes], fmt: FrameFormat) -> list[NDArray[Any]]:
        self.batches.append(len(frames))
        return CpuFrameDecoder().decode(frames, fmt)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    spec = DicomSeriesSpec(width=640, height=512, levels=1, tile=128)
    return write_dicom_series(tmp_path_factory.mktemp("dec"), spec)


def _raw_frames(slide: DicomSlide, indices: Sequence[int]) -> list[bytes]:
    inst = slide.instance(0)
    table = inst.frame_ranges()
    src = LocalFileSource(inst._src.path)  # type: ignore[attr-defined]
    return [src.read_range(int(table[i, 0]), int(table[i, 1])) for i in indices]


def test_cpu_backend_output_is_the_codec_output(series: list[Path]) -> None:
    slide = DicomSlide([LocalFileSource(p) for p in series], ReadLimits())
    inst = slide.instance(0)
    frames = inst.load_frames(range(inst.n_frames))
    raws = _raw_frames(slide, range(inst.n_frames))
    for i, raw in enumerate(raws):
        expected = decode_frame(raw, JPEG_BASELINE, inst.rows, inst.cols, 3)
        assert np.array_equal(frames[i], expected)


def test_a_backend_gets_each_request_as_one_batch(series: list[Path]) -> None:
    rec = BatchRecorder(JPEG_BASELINE)
    slide = DicomSlide([LocalFileSource(p) for p in series], ReadLimits(), rec)
    plain = DicomSlide([LocalFileSource(p) for p in series], ReadLimits())
    regions = [Region(0, 0, 256, 256), Region(200, 100, 300, 300)]
    got = slide.read_regions(0, regions)
    assert rec.batches == [len({i for r in regions for i in slide.instance(0).frames_for(r)})]
    for a, b in zip(got, plain.read_regions(0, regions), strict=True):
        assert np.array_equal(a, b)


def test_a_backend_never_sees_a_format_it_does_not_support(tmp_path: Path) -> None:
    spec = DicomSeriesSpec(
        width=256, height=256, levels=1, tile=128, syntax=TransferSyntax.jpeg2000
    )
    paths = write_dicom_series(tmp_path, spec)
    rec = BatchRecorder(JPEG_BASELINE)
    slide = DicomSlide([LocalFileSource(p) for p in paths], ReadLimits(), rec)
    (tile,) = slide.read_regions(0, [Region(0, 0, 256, 256)])
    assert rec.batches == []
    assert tile.shape == (256, 256, 3)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_HERE, reason=f"needs {GPU_EXTRA} and a CUDA device")
def test_gpu_jpeg_decode_matches_cpu(series: list[Path]) -> None:
    import imagecodecs

    decoder = select_decoder("gpu")
    frame = synthetic_tissue(256, 256)(0, 0, 0, 256, 256)
    data = bytes(imagecodecs.jpeg8_encode(frame, level=90))
    fmt = FrameFormat(JPEG_BASELINE, 256, 256, 3)
    cpu = decode_frame(data, JPEG_BASELINE, 256, 256, 3)
    (gpu,) = decoder.decode([data], fmt)
    assert gpu.shape == cpu.shape
    # nvJPEG and libjpeg-turbo may round the IDCT and upsampling differently.
    assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() < 2.0
    gpu_slide = DicomSlide([LocalFileSource(p) for p in series], ReadLimits(), decoder)
    cpu_slide = DicomSlide([LocalFileSource(p) for p in series], ReadLimits())
    reg = [Region(64, 64, 384, 384)]
    (a,), (b,) = gpu_slide.read_regions(0, reg), cpu_slide.read_regions(0, reg)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
