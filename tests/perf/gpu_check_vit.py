"""The encoder half of `make gpu-check`: ViT tiles/s in bf16 under torch.compile, the model's
FLOPs per tile counted by torch's FLOP counter on one forward, and the fraction of the GPU's
peak bf16 dense throughput (a table of vendor figures keyed by device name)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's data sheets; the first key that
# the device name contains wins, so the more specific names come first.
PEAK_BF16_DENSE_TFLOPS: tuple[tuple[str, float], ...] = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),
    ("H800", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.05),
    ("L40", 181.05),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("RTX 6000 Ada", 364.2),
)


@dataclass(frozen=True)
class VitConfig:
    model: str
    batch: int
    iters: int
    warmup: int
    compile_backend: str | None
    """torch.compile's backend; None: the model as it is (eager), for comparison."""
    device: str
    img_px: int | None = None
    """Input edge; None: the model's own (224 for the ViTs here)."""


def peak_tflops(device_name: str) -> float | None:
    """The table's peak for this device, None when it is not in the table."""
    for key, peak in PEAK_BF16_DENSE_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def flops_per_tile(model: Any, img_px: int, device: str, dtype: Any) -> float:
    """FLOPs of one forward of one tile, counted op by op (matmuls, convolutions, attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, img_px, img_px, device=device, dtype=dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def _timed_forward(fn: Any, x: Any, iters: int, sync: Any) -> float:
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn(x)
    sync()
    return time.perf_counter() - t0


def measure_vit(cfg: VitConfig, device_name: str) -> dict[str, Any]:
    """Tiles/s of cfg.model at cfg.batch in bf16 (under torch.compile unless its backend is
    None), and its share of peak."""
    import timm
    import torch

    dtype = torch.bfloat16
    size = {"img_size": cfg.img_px} if cfg.img_px else {}
    model = timm.create_model(cfg.model, pretrained=False, **size)
    model = model.eval().to(cfg.device, dtype=dtype)
    img_px = int(cfg.img_px or model.default_cfg["input_size"][-1])
    flops = flops_per_tile(model, img_px, cfg.device, dtype)
    compiled = torch.compile(model, backend=cfg.compile_backend) if cfg.compile_backend else model
    x = torch.randn(cfg.batch, 3, img_px, img_px, device=cfg.device, dtype=dtype)

    def sync() -> None:
        if cfg.device.startswith("cuda"):
            torch.cuda.synchronize()

    t_compile = time.perf_counter()
    with torch.inference_mode():
        _timed_forward(compiled, x, cfg.warmup, sync)
        t_compile = time.perf_counter() - t_compile
        seconds = _timed_forward(compiled, x, cfg.iters, sync)
    tiles_per_s = cfg.batch * cfg.iters / seconds
    achieved = tiles_per_s * flops / 1e12
    peak = peak_tflops(device_name)
    return {
        "model": cfg.model,
        "img_px": img_px,
        "params": int(sum(p.numel() for p in model.parameters())),
        "dtype": "bfloat16",
        "batch": cfg.batch,
        "iters": cfg.iters,
        "compile_backend": cfg.compile_backend or "none (eager)",
        "warmup_s": t_compile,
        "seconds": seconds,
        "tiles_per_s": tiles_per_s,
        "gflops_per_tile": flops / 1e9,
        "achieved_tflops": achieved,
        "peak_bf16_dense_tflops": peak,
        "fraction_of_peak": achieved / peak if peak else None,
        "peak_note": None if peak else f"no bf16 peak known for {device_name!r}",
    }
