"""The "GPU check" section of BENCHMARKS.md, from the JSON of a real GPU run of
`make gpu-check` (tests/perf/results/gpu_check.json). Without one, the section says that no
GPU run has been made; a dry (`--cpu`) run is never rendered as a GPU figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ._report import BENCHMARKS, replace_section
from .gpu_check import RESULT

TITLE = "GPU check (tests/perf/gpu_check.py)"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _vit_rows(m: dict[str, Any]) -> list[str]:
    frac = m.get("fraction_of_peak")
    return [
        f"| ViT tiles/s ({m['model']}, {m['dtype']}, compile: {m['compile_backend']}, "
        f"batch {m['batch']}) | {_fmt(m['tiles_per_s'])} |",
        f"| ViT GFLOPs per tile (counted by torch's FLOP counter) | {_fmt(m['gflops_per_tile'])} |",
        f"| ViT achieved TFLOP/s | {_fmt(m['achieved_tflops'])} |",
        f"| peak bf16 dense TFLOP/s (data-sheet table) | {_fmt(m['peak_bf16_dense_tflops'])} |",
        f"| fraction of peak | {_fmt(frac, 3) if frac is not None else m.get('peak_note')} |",
    ]


def _decode_rows(m: dict[str, Any]) -> list[str]:
    return [
        f"| JPEG frames/s ({m['backend']} decoder, {m['frame_px'][0]}x{m['frame_px'][1]}, "
        f"batch {m['batch']}) | {_fmt(m['frames_per_s'])} |",
        f"| decode CPU-ms per frame | {_fmt(m['cpu_ms_per_frame'], 3)} |",
    ]


def _ingest_rows(m: dict[str, Any]) -> list[str]:
    return [
        f"| ingest data path tiles/s ({m['backend']} decode, local SYNTHETIC "
        f"{m['slide_px']}^2 px slide, {m['passes']} passes, {m['tiles']} tiles) "
        f"| {_fmt(m['tiles_per_s'])} |",
        "| ingest data path CPU-ms per tile (process CPU time) "
        f"| {_fmt(m['cpu_ms_per_tile'], 3)} |",
    ]


def _device_rows(m: dict[str, Any]) -> list[str]:
    return [
        f"| tiles cut and normalised on the device, tiles/s ({m['backend']} decode, "
        f"{m['tiles']} tiles) | {_fmt(m['tiles_per_s'])} |",
        f"| the same, CPU-ms per tile | {_fmt(m['cpu_ms_per_tile'], 3)} |",
    ]


ROWS = {
    "vit": _vit_rows,
    "vit_eager": _vit_rows,
    "decode": _decode_rows,
    "ingest_path": _ingest_rows,
    "device_tiles": _device_rows,
}


def body(doc: dict[str, Any] | None) -> list[str]:
    if doc is None or doc.get("mode") != "gpu":
        return [
            "No GPU run has been made yet. `make gpu-check` on a GPU machine writes "
            f"`{RESULT.relative_to(RESULT.parents[3])}`; this section is rendered from it "
            "(`python -m tests.perf.gpu_check_render`, also run by `make bench`). See "
            "README, GPU check.",
        ]
    mach = doc["machine"]
    lines = [
        f"Machine: {mach.get('gpu')} (x{mach.get('gpu_count')}), {mach['cpu_count']} CPUs, "
        f"torch {mach.get('torch')}, CUDA {mach.get('cuda')}; run started {doc['started_utc']}, "
        f"{doc['seconds']:.0f} s in all. Data SYNTHETIC; the ViT has random weights "
        "(throughput does not depend on them).",
        "",
        "| measurement | value |",
        "| --- | --- |",
    ]
    notes = []
    for name, rows in ROWS.items():
        m = doc["measurements"][name]
        if m["status"] == "ok":
            lines += rows(m)
        else:
            notes.append(f"- {name}: {m['status']}: {m['reason']}")
    return lines + ([""] + notes if notes else [])


def render(result: Path = RESULT, path: Path = BENCHMARKS) -> None:
    doc = json.loads(result.read_text()) if result.is_file() else None
    section = f"## {TITLE}\n\n" + "\n".join(body(doc)) + "\n"
    document = path.read_text() if path.is_file() else "# Benchmarks\n"
    path.write_text(replace_section(document, section, TITLE))
    print(f"written: section {TITLE!r} of {path}", flush=True)


if __name__ == "__main__":
    render(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULT)
