"""ONNX export of a full-size tile encoder: export time, file size and parity, on this machine.

A benchmark, not a test. Builds the encoder with RANDOM weights (the export's cost depends on
the architecture, not on the values), exports it with `histoprompt.export.onnx_export`
(dynamo exporter, opset 18, dynamic batch, onnx.checker) and checks parity against torch at
batch 2. Writes the section "ONNX export (bench_onnx_export.py)" of BENCHMARKS.md.
Default: UNI's ViT-L/16 at full depth (24 blocks); `--depth N` exports N blocks instead (the
section says which ran). Run from the repository root:
`uv run --frozen python -m tests.perf.bench_onnx_export [--encoder uni] [--depth 24]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TITLE = "ONNX export (bench_onnx_export.py)"


def bench(name: str, depth: int | None, work: Path) -> dict[str, float | int | str | bool]:
    import numpy as np
    import timm  # noqa: F401 - imported before the clock starts
    import torch

    from histoprompt.core import names
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.onnx_export import check_parity, export_onnx

    start = time.perf_counter()
    enc = load_encoder(name, allow_random=True, depth=depth)
    build_s = time.perf_counter() - start
    blocks = len(enc.module.trunk.blocks)  # type: ignore[union-attr, arg-type]
    params = sum(p.numel() for p in enc.module.parameters())
    s = int(enc.spec.input_px)
    x = np.random.default_rng(0).standard_normal((2, 3, s, s)).astype(np.float32)
    path = work / f"{name}.onnx"
    start = time.perf_counter()
    export_onnx(
        enc.module,
        torch.from_numpy(x),
        path,
        input_name=names.TENSOR_PIXELS,
        output_names=[names.TENSOR_TILE_EMBEDDING],
        dynamic_axis="batch",
    )
    export_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in work.iterdir() if p.name.startswith(path.name))
    start = time.perf_counter()
    parity = check_parity(name, enc.module, path, [x, x[:1]], input_name=names.TENSOR_PIXELS)
    parity_s = time.perf_counter() - start
    return {
        "encoder": name,
        "blocks": blocks,
        "params": params,
        "input_px": s,
        "build_s": build_s,
        "export_s": export_s,
        "onnx_bytes": size,
        "external_data": any(p.suffix == ".data" for p in work.iterdir()),
        "parity_s": parity_s,
        "max_abs_err": parity.max_abs_err,
        "min_cosine": parity.min_cosine,
        "parity_passed": parity.passed,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def report_lines(r: dict[str, float | int | str | bool]) -> list[str]:
    return [
        f"`{r['encoder']}` tile encoder with RANDOM weights, {r['blocks']} blocks "
        f"({int(r['params']) / 1e6:.0f} M parameters), input {r['input_px']} px; dynamo "
        "exporter, opset 18, dynamic batch; the export time includes the exporter's first-call "
        "warm-up and onnx.checker, as a CLI export pays them. Parity: "
        "batch 2 and batch 1 through the same graph, ONNX Runtime CPU vs torch eager.",
        "Run: `uv run --frozen python -m tests.perf.bench_onnx_export` "
        "(`--depth N` for fewer blocks).",
        "",
        "| encoder | blocks | build (s) | export (s) | ONNX size | parity (s) | max abs err | "
        "min cosine | peak RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {r['encoder']} | {r['blocks']} | {float(r['build_s']):.1f} | "
        f"{float(r['export_s']):.1f} | {int(r['onnx_bytes']) / 2**20:.0f} MiB"
        f"{' (external data)' if r['external_data'] else ''} | {float(r['parity_s']):.1f} | "
        f"{float(r['max_abs_err']):.2e} | {float(r['min_cosine']):.6f} | "
        f"{float(r['peak_rss_gib']):.1f} GiB |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoder", default="uni")
    parser.add_argument("--depth", type=int, default=None, help="blocks (default: full)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    args = parser.parse_args()

    from tests.perf._report import write_section

    with tempfile.TemporaryDirectory(prefix="hp-bench-onnx-") as tmp:
        result = bench(args.encoder, args.depth, Path(tmp))
    print(json.dumps(result, indent=1), flush=True)
    write_section(TITLE, report_lines(result), path=args.out)


if __name__ == "__main__":
    main()
