"""histoprompt.wsi.gpu_tiles gives the CPU path's tiles and pixels: with numpy here (exactly
the tiles of DicomInstance.read_regions + tiling.resize, the pixels of serving.preprocess),
with CuPy on a GPU (`gpu` tests, skipped without CuPy and a device)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series
from histoprompt.serving.preprocess import preprocess_tiles
from histoprompt.wsi.decoders import gpu_unavailable_reason, select_decoder
from histoprompt.wsi.dicom import DicomInstance, DicomSlide
from histoprompt.wsi.gpu_tiles import cut_tiles, device_tiles, normalise_nchw
from histoprompt.wsi.limits import ReadLimits
from histoprompt.wsi.ranged import LocalFileSource
from histoprompt.wsi.slide import Region
from histoprompt.wsi.tiling import resize

W, H = 700, 520  # not a multiple of the 128 px frames: edge frames are padded


@pytest.fixture(scope="module")
def inst(tmp_path_factory: pytest.TempPathFactory) -> DicomInstance:
    spec = DicomSeriesSpec(width=W, height=H, levels=1, tile=128)
    paths = write_dicom_series(tmp_path_factory.mktemp("gt"), spec)
    return DicomSlide([LocalFileSource(p) for p in paths], ReadLimits()).instance(0)


def _regions(read_px: int) -> list[Region]:
    # inside, across frame borders, and over the right and bottom edges of the image
    return [
        Region(0, 0, read_px, read_px),
        Region(100, 60, read_px, read_px),
        Region(W - read_px // 2, H - read_px // 3, read_px, read_px),
    ]


def _cpu_tiles(inst: DicomInstance, regions: list[Region], size: int) -> np.ndarray:
    return np.stack([resize(c, size) for c in inst.read_regions(regions)])


def _frames(inst: DicomInstance, regions: list[Region]) -> dict[int, Any]:
    return inst.load_frames(sorted({i for r in regions for i in inst.frames_for(r)}))


@pytest.mark.parametrize(("read_px", "size"), [(112, 112), (224, 112), (150, 112)])
def test_numpy_tiles_equal_the_cpu_path(inst: DicomInstance, read_px: int, size: int) -> None:
    regions = _regions(read_px)
    got = cut_tiles(np, inst, _frames(inst, regions), regions, size)
    assert got.dtype == np.uint8 and got.shape == (3, size, size, 3)
    assert np.array_equal(got, _cpu_tiles(inst, regions, size))


def test_device_tiles_with_numpy_and_the_cpu_backend_equal_the_cpu_path(
    inst: DicomInstance,
) -> None:
    regions = _regions(224)
    got = device_tiles(np, inst, select_decoder("cpu"), regions, 112)
    assert np.array_equal(got, _cpu_tiles(inst, regions, 112))


def test_normalised_pixels_equal_serving_preprocess(inst: DicomInstance) -> None:
    regions = _regions(112)
    tiles = cut_tiles(np, inst, _frames(inst, regions), regions, 112)
    spec = EncoderSpec(
        name="t",
        tile_px=112,
        input_px=112,
        target_mpp=0.5,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        embed_dim=8,
    )
    got = normalise_nchw(np, tiles, spec.mean, spec.std)
    expected = preprocess_tiles(tiles, spec)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


GPU_REASON = gpu_unavailable_reason()


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"GPU tiles: {GPU_REASON}")
def test_cupy_tiles_equal_numpy_tiles_from_the_same_frames(inst: DicomInstance) -> None:
    import cupy as cp

    regions = _regions(224)
    frames = _frames(inst, regions)
    on_gpu = cut_tiles(cp, inst, {i: cp.asarray(f) for i, f in frames.items()}, regions, 112)
    assert np.array_equal(cp.asnumpy(on_gpu), cut_tiles(np, inst, frames, regions, 112))
    pix = normalise_nchw(cp, on_gpu, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    ref = normalise_nchw(np, cp.asnumpy(on_gpu), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    np.testing.assert_allclose(cp.asnumpy(pix), ref, atol=1e-6, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(GPU_REASON is not None, reason=f"GPU tiles: {GPU_REASON}")
def test_gpu_decoded_tiles_match_the_cpu_path(inst: DicomInstance, tmp_path: Path) -> None:
    import cupy as cp

    regions = _regions(224)
    got = cp.asnumpy(device_tiles(cp, inst, select_decoder("gpu"), regions, 112))
    expected = _cpu_tiles(inst, regions, 112)
    # nvJPEG and libjpeg-turbo may round the IDCT and upsampling differently.
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 2.0
