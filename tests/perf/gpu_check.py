"""`make gpu-check`: the one prepared check for a GPU machine (under 8 minutes on one GPU).

Writes JSON with three measurements, each run on its own: a missing piece (no CUDA, no
nvImageCodec, no timm) is recorded as skipped with the reason, an error as failed with its
type and message; nothing is filled in for them.
  vit          ViT-L/16 tiles/s, bf16, torch.compile, batch 256; fraction of peak bf16
  vit_eager    the same without torch.compile (what compiling gives; a figure if it fails)
  decode       nvImageCodec JPEG frames/s (batched, frames left on the GPU)
  ingest_path  the ingest data path from local files with GPU decode: tiles/s, CPU-ms/tile
  device_tiles the same, tiles cut and normalised on the GPU (wsi.gpu_tiles), fp32 NCHW
`--cpu` is the dry mode: the same code on CPU with tiny sizes (a tiny ViT, compiled with the
eager backend, a small slide, CPU decode), under a minute; tests/unit/test_gpu_check.py
runs it. `python -m tests.perf.gpu_check_render` puts a GPU run's JSON into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .gpu_check_data import (
    DataConfig,
    measure_decode,
    measure_device_tiles,
    measure_ingest_path,
)
from .gpu_check_data import synthetic_slide as write_slide
from .gpu_check_vit import VitConfig, measure_vit

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / ".gpu-kit"
RESULT = ROOT / "tests" / "perf" / "results" / "gpu_check.json"
SCHEMA = 1
MEASUREMENTS = ("vit", "vit_eager", "decode", "ingest_path", "device_tiles")


def configs(cpu: bool) -> tuple[VitConfig, DataConfig]:
    if cpu:
        vit = VitConfig("vit_tiny_patch16_224", 4, 2, 1, "eager", "cpu", img_px=64)
        return vit, DataConfig("cpu", 1024, 16, 1, 32, 1)
    vit = VitConfig("vit_large_patch16_224", 256, 20, 3, "inductor", "cuda")
    return vit, DataConfig("gpu", 8192, 64, 5, 64, 3)


def machine(cpu: bool) -> dict[str, Any]:
    """What ran it: GPU name and count (torch's view), CPUs, Python, library versions."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available() and not cpu:
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
            info["cuda"] = torch.version.cuda
    except ImportError:
        info["torch"] = None
    info.update(_versions(("timm", "timm"), ("cupy", "cupy"), ("nvimgcodec", "nvidia.nvimgcodec")))
    return info


def _versions(*modules: tuple[str, str]) -> dict[str, str | None]:
    """`__version__` of each (label, module) that imports here, None for the others."""
    import importlib

    out: dict[str, str | None] = {}
    for label, module in modules:
        try:
            out[label] = str(getattr(importlib.import_module(module), "__version__", "?"))
        except ImportError:
            out[label] = None
    return out


class Skipped(Exception):
    """A piece the measurement needs is not on this machine."""


def guarded(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one measurement: ok with its figures, skipped with the reason, or failed."""
    t0 = time.perf_counter()
    try:
        result = {"status": "ok", **fn()}
    except (ImportError, Skipped) as err:
        result = {"status": "skipped", "reason": f"{type(err).__name__}: {err}"}
    except Exception as err:
        tail = traceback.format_exc(limit=-3)
        result = {"status": "failed", "reason": f"{type(err).__name__}: {err}", "trace": tail}
    result["wall_s"] = time.perf_counter() - t0
    return result


def _need_cuda(cpu: bool) -> None:
    if cpu:
        return
    import torch

    if not torch.cuda.is_available():
        raise Skipped("torch sees no CUDA device")


def _need_gpu_decoder(data: DataConfig) -> None:
    if data.decoder != "gpu":
        return
    from histoprompt.wsi.decoders import gpu_unavailable_reason

    reason = gpu_unavailable_reason()
    if reason is not None:
        raise Skipped(reason)


def slide_files(data: DataConfig, workdir: Path) -> list[Path]:
    """The kit's slide when `make gpu-kit` shipped one of the right size, else a new one."""
    kit = KIT / f"slide-{data.slide_px}"
    if sorted(kit.glob("instance-*.dcm")):
        return sorted(kit.glob("instance-*.dcm"))
    return write_slide(workdir / f"slide-{data.slide_px}", data.slide_px)


def run(cpu: bool, workdir: Path) -> dict[str, Any]:
    vit_cfg, data = configs(cpu)
    info = machine(cpu)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t0 = time.perf_counter()
    files: list[Path] = []

    def with_slide(measure: Callable[[DataConfig, list[Path]], dict[str, Any]]) -> Any:
        def go() -> dict[str, Any]:
            _need_gpu_decoder(data)
            if not files:
                files.extend(slide_files(data, workdir))
            return measure(data, files)

        return go

    def vit(cfg: VitConfig) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            _need_cuda(cpu)
            return measure_vit(cfg, info["gpu"] or "cpu")

        return go

    results = {
        "vit": guarded(vit(vit_cfg)),
        "vit_eager": guarded(vit(replace(vit_cfg, compile_backend=None))),
        "decode": guarded(with_slide(measure_decode)),
        "ingest_path": guarded(with_slide(measure_ingest_path)),
        "device_tiles": guarded(with_slide(measure_device_tiles)),
    }
    return {
        "schema": SCHEMA,
        "mode": "cpu-dry" if cpu else "gpu",
        "started_utc": started,
        "seconds": time.perf_counter() - t0,
        "machine": info,
        "synthetic_data": True,
        "measurements": results,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="dry mode: tiny sizes on CPU")
    p.add_argument("--out", type=Path, help=f"JSON path (default {RESULT}; dry: a temp file)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        doc = run(args.cpu, Path(tmp))
    out = args.out or (Path(tempfile.gettempdir()) / "gpu_check_dry.json" if args.cpu else RESULT)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    for name in MEASUREMENTS:
        m = doc["measurements"][name]
        print(f"[gpu-check] {name}: {m['status']} {m.get('reason', '')}", flush=True)
    print(f"[gpu-check] written: {out} ({doc['seconds']:.1f} s)", flush=True)
    failed = [n for n in MEASUREMENTS if doc["measurements"][n]["status"] == "failed"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
