"""`make bench-models`: tiles/s of the tile encoders, torch eager vs ONNX Runtime in-process
vs Triton over gRPC (patch_embed ensemble: preprocessing + encoder), batch 64.

A benchmark, not a test. Starts a Triton-only local stack in a temp dir and stops it again.
Writes the numbers, ratios and whether the target (Triton >= 0.9 x ONNX Runtime at batch 64)
is met to BENCHMARKS.md (section "Models") and prints them. Run from the repository root:
`uv run --frozen python -m tests.perf.bench_models`.
Encoders: `tiny` (UNTRAINED, 64 px) and ViT-B/16 (random init, 224 px: speed only).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
BATCH = 64
TITLE = "Models (bench_models.py)"
TARGET_TRITON_VS_ORT = 0.9


def _rate(fn: Callable[[], object], seconds: float, min_iters: int = 3) -> float:
    fn()  # warm-up
    n, start = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - start < seconds:
        fn()
        n += 1
    return BATCH * n / (time.perf_counter() - start)


def bench_encoder(
    name: str, work: Path, triton_url: str, repo: Path, seconds: float
) -> dict[str, float]:
    import onnxruntime as ort
    import torch
    import tritonclient.grpc as grpcclient

    from histoprompt.core import names
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.model_repo import ENCODER_MODELS, write_encoder_repository
    from histoprompt.export.onnx_export import export_tile_encoder
    from histoprompt.serving.preprocess import preprocess_tiles

    enc = load_encoder(name, allow_random=True)
    spec = enc.spec
    onnx_path = work / f"{name}.onnx"
    parity = export_tile_encoder(enc.module, spec.input_px, onnx_path)
    tiles = np.random.default_rng(0).integers(
        0, 256, (BATCH, spec.tile_px, spec.tile_px, 3), dtype=np.uint8
    )

    def torch_eager() -> object:
        with torch.no_grad():
            return enc.module(torch.from_numpy(preprocess_tiles(tiles, spec)))

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(
        str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
    )

    def ort_inproc() -> object:
        return sess.run(None, {names.TENSOR_PIXELS: preprocess_tiles(tiles, spec)})

    write_encoder_repository(spec, onnx_path, repo)
    client = grpcclient.InferenceServerClient(triton_url)
    for model in ENCODER_MODELS:
        client.load_model(model)
    inp = grpcclient.InferInput(names.TENSOR_TILES, list(tiles.shape), "UINT8")
    inp.set_data_from_numpy(tiles)
    out = [grpcclient.InferRequestedOutput(names.TENSOR_TILE_EMBEDDING)]

    def triton() -> object:
        return client.infer(names.MODEL_PATCH_EMBED, [inp], outputs=out).as_numpy(
            names.TENSOR_TILE_EMBEDDING
        )

    got = triton()
    ref = ort_inproc()[0]
    rates = {
        "torch_eager": _rate(torch_eager, seconds),
        "onnxruntime": _rate(ort_inproc, seconds),
        "triton_grpc": _rate(triton, seconds),
    }
    for model in (names.MODEL_PATCH_EMBED, names.MODEL_TILE_ENCODER, names.MODEL_TILE_PREPROCESS):
        client.unload_model(model)
    client.close()
    return {
        **rates,
        "triton_vs_ort": rates["triton_grpc"] / rates["onnxruntime"],
        "ort_vs_torch": rates["onnxruntime"] / rates["torch_eager"],
        "max_abs_err_triton_vs_ort": float(np.abs(got - ref).max()),
        "onnx_parity_max_abs_err": parity.max_abs_err,
    }


def target_verdict(result: dict[str, float]) -> str:
    """ "met" if Triton serves at least TARGET_TRITON_VS_ORT x ONNX Runtime's tiles/s."""
    return "met" if result["triton_vs_ort"] >= TARGET_TRITON_VS_ORT else "missed"


def report_lines(results: dict[str, dict[str, float]]) -> list[str]:
    lines = [
        f"Tile encoders, batch {BATCH}, tiles/s on this machine (CPU). Triton = `patch_embed` "
        "ensemble over gRPC (python-backend preprocessing + ONNX Runtime encoder, cpu "
        "flavour); ONNX Runtime and torch include the same numpy preprocessing. `tiny` is "
        f"UNTRAINED; ViT-B has random weights (speed only). Target: Triton >= "
        f"{TARGET_TRITON_VS_ORT} x ONNX Runtime at batch {BATCH}.",
        "Run: `make bench-models`.",
        "",
        "| encoder | torch eager | ONNX Runtime | Triton gRPC | Triton/ORT | ORT/torch | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['torch_eager']:.1f} | {r['onnxruntime']:.1f} | "
            f"{r['triton_grpc']:.1f} | {r['triton_vs_ort']:.2f} | {r['ort_vs_torch']:.2f} | "
            f"{target_verdict(r)} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoders", default="tiny,vit_base")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args()

    from histoprompt.stack import StackSettings, down, up
    from tests.perf._report import write_section

    with tempfile.TemporaryDirectory(prefix="hp-bench-") as tmp:
        state = Path(tmp) / "stack"
        handle = up(
            StackSettings(
                stack_services=("triton",),
                stack_state_dir=state,
                stack_env_file=state / "stack.env",
                stack_die_with_parent=True,
            )
        )
        try:
            results = {
                name: bench_encoder(
                    name, Path(tmp), handle.triton_grpc, handle.model_repository, args.seconds
                )
                for name in args.encoders.split(",")
            }
        finally:
            down(state)
    print(json.dumps(results, indent=1))
    for name, r in results.items():
        print(
            f"{name}: Triton/ORT {r['triton_vs_ort']:.2f} at batch {BATCH}, target >= "
            f"{TARGET_TRITON_VS_ORT}: {target_verdict(r)}",
            flush=True,
        )
    write_section(TITLE, report_lines(results), path=args.out)


if __name__ == "__main__":
    main()
