"""The data half of `make gpu-check`: JPEG frames/s of a decoder backend, and the ingest data
path in-process from local DICOM files (open, tissue mask, tile plan, frame reads, decode,
tile assembly: everything up to the uint8 batch handed to Triton) in tiles/s and CPU-ms per
tile. The slide is SYNTHETIC: `make gpu-kit` writes one next to the wheels, or it is written
here when the machine has imagecodecs and pydicom."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DataConfig:
    decoder: str  # cpu | gpu: histoprompt.wsi.decoders.select_decoder
    slide_px: int
    decode_batch: int
    decode_rounds: int
    tile_batch: int
    passes: int


def synthetic_slide(out_dir: Path, slide_px: int) -> list[Path]:
    """A SYNTHETIC JPEG DICOM-WSI series, 2 levels, 256 px frames (written once, reused)."""
    existing = sorted(out_dir.glob("instance-*.dcm"))
    if existing:
        return existing
    from histoprompt.export.synthetic_wsi import DicomSeriesSpec, write_dicom_series

    return write_dicom_series(out_dir, DicomSeriesSpec(width=slide_px, height=slide_px, levels=2))


def frame_bytes(files: Sequence[Path]) -> tuple[list[bytes], Any]:
    """The compressed frames of the slide's level 0, and their FrameFormat."""
    from histoprompt.wsi.dicom import DicomSlide
    from histoprompt.wsi.limits import ReadLimits
    from histoprompt.wsi.ranged import LocalFileSource

    slide = DicomSlide([LocalFileSource(p) for p in files], ReadLimits())
    inst = slide.instance(0)
    data = files[0].read_bytes()
    frames = [data[int(o) : int(o) + int(n)] for o, n in inst.frame_ranges()]
    return frames, inst.frame_format


def _device_sync(decoder_name: str) -> None:
    if decoder_name == "gpu":
        import cupy as cp

        cp.cuda.Device().synchronize()


def measure_decode(cfg: DataConfig, files: Sequence[Path]) -> dict[str, Any]:
    """Frames/s of one backend decoding batches of the slide's JPEG frames (on the GPU they
    stay there: decode_device, no copy back to the host)."""
    from histoprompt.wsi.decoders import select_decoder

    decoder = select_decoder(cfg.decoder)
    frames, fmt = frame_bytes(files)
    batches = [frames[i : i + cfg.decode_batch] for i in range(0, len(frames), cfg.decode_batch)]
    run = getattr(decoder, "decode_device", decoder.decode)
    run(batches[0], fmt)  # warm-up: codec handles, device buffers
    _device_sync(decoder.name)
    cpu0, t0 = time.process_time(), time.perf_counter()
    n = 0
    for _ in range(cfg.decode_rounds):
        for batch in batches:
            n += len(run(batch, fmt))
    _device_sync(decoder.name)
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "backend": decoder.name,
        "frame_px": [fmt.rows, fmt.cols],
        "frames": n,
        "batch": cfg.decode_batch,
        "mean_frame_bytes": sum(map(len, frames)) / len(frames),
        "seconds": seconds,
        "frames_per_s": n / seconds,
        "cpu_ms_per_frame": 1000.0 * cpu_s / n,
    }


def _encoder_spec() -> Any:
    from histoprompt.core.modelspec import EncoderSpec

    return EncoderSpec(
        name="gpu-check",
        tile_px=224,
        input_px=224,
        target_mpp=0.5,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        embed_dim=1024,
    )


def _one_pass(files: Sequence[Path], decoder: Any, tile_batch: int) -> tuple[int, int]:
    from histoprompt.wsi.limits import ReadLimits
    from histoprompt.wsi.sources import open_local
    from histoprompt.wsi.tiling import plan_tiles, read_tiles

    with open_local(list(files), ReadLimits(), decoder) as opened:
        plan = plan_tiles(opened.reader, _encoder_spec(), min_tissue=0.25)
        tiles = 0
        for start in range(0, plan.n_tiles, tile_batch):
            tiles += len(read_tiles(opened.reader, plan, start, start + tile_batch))
        return tiles, opened.bytes_read


def _array_module(decoder_name: str) -> Any:
    if decoder_name == "gpu":
        import cupy

        return cupy
    import numpy

    return numpy


def _one_device_pass(files: Sequence[Path], decoder: Any, tile_batch: int) -> tuple[int, int]:
    from histoprompt.wsi.gpu_tiles import device_tiles, normalise_nchw
    from histoprompt.wsi.limits import ReadLimits
    from histoprompt.wsi.sources import open_local
    from histoprompt.wsi.tiling import plan_tiles

    xp, spec = _array_module(decoder.name), _encoder_spec()
    with open_local(list(files), ReadLimits(), decoder) as opened:
        plan = plan_tiles(opened.reader, spec, min_tissue=0.25)
        inst = opened.reader.instance(plan.level)
        tiles = 0
        for start in range(0, plan.n_tiles, tile_batch):
            regions = plan.regions(start, start + tile_batch)
            batch = device_tiles(xp, inst, decoder, regions, plan.tile_px)
            tiles += len(normalise_nchw(xp, batch, spec.mean, spec.std))
        _device_sync(decoder.name)
        return tiles, opened.bytes_read


def measure_device_tiles(cfg: DataConfig, files: Sequence[Path]) -> dict[str, Any]:
    """The same path with the tiles cut and normalised where the frames were decoded (CuPy
    on the GPU; numpy in the dry mode): fp32 NCHW pixels ready for the encoder."""
    return _passes(cfg, files, _one_device_pass)


def measure_ingest_path(cfg: DataConfig, files: Sequence[Path]) -> dict[str, Any]:
    """Tiles/s and CPU-ms per tile (process CPU time, all threads) of the ingest data path
    over `passes` fresh openings of the slide (each with empty caches)."""
    return _passes(cfg, files, _one_pass)


def _passes(cfg: DataConfig, files: Sequence[Path], one_pass: Any) -> dict[str, Any]:
    from histoprompt.wsi.decoders import select_decoder

    decoder = select_decoder(cfg.decoder)
    one_pass(files, decoder, cfg.tile_batch)  # warm-up: imports, codec handles
    cpu0, t0 = time.process_time(), time.perf_counter()
    tiles = bytes_read = 0
    for _ in range(cfg.passes):
        n, b = one_pass(files, decoder, cfg.tile_batch)
        tiles, bytes_read = tiles + n, bytes_read + b
    seconds, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "backend": decoder.name,
        "slide_px": cfg.slide_px,
        "passes": cfg.passes,
        "tiles": tiles,
        "tile_batch": cfg.tile_batch,
        "bytes_read": bytes_read,
        "seconds": seconds,
        "tiles_per_s": tiles / seconds,
        "cpu_s": cpu_s,
        "cpu_ms_per_tile": 1000.0 * cpu_s / tiles,
    }
