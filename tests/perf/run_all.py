"""`make bench`: run every benchmark module that exists, one after the other.

Each writes its own section of BENCHMARKS.md. A failing module is reported and the others
still run; the exit status is non-zero if any failed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Each module with the arguments that make it write its BENCHMARKS.md section.
MODULES: dict[str, tuple[str, ...]] = {
    "bench_ingest": (),
    "bench_models": (),
    "bench_ssgsea": ("--full", "--write"),
    "bench_pathway_query": ("--write",),
    "bench_evaluate": (),
    "bench_spatial": (),  # tile-level maps vs planted truth: about 1 min on 2 cores
    "bench_onnx_export": (),  # full-depth ViT-L: about 1.5 min and 8 GiB on 2 cores
    "gpu_check_render": (),  # renders a GPU machine's make gpu-check JSON; none: says so
}
HERE = Path(__file__).resolve().parent


def main() -> int:
    failed = []
    for name, args in MODULES.items():
        if not (HERE / f"{name}.py").is_file():
            print(f"[run_all] {name}: not present, skipped", flush=True)
            continue
        print(f"[run_all] {name} ...", flush=True)
        rc = subprocess.call(  # noqa: S603 - our interpreter, our modules
            [sys.executable, "-m", f"tests.perf.{name}", *args], cwd=HERE.parents[1]
        )
        if rc != 0:
            failed.append(name)
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
