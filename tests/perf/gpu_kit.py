"""What `make gpu-check` needs on a GPU machine that has no network: `make gpu-kit` (here,
with the registry) puts it in .gpu-kit/ (gitignored, about 55 MB), which the device tool
carries with the working tree (`carry: [".gpu-kit"]`); deploy/gpu_check.sh there installs
from it only what that machine's Python lacks.

  wheels/       nvImageCodec + nvJPEG (+ the CUDA 12 runtime they load), pydicom, pydantic
                (pydantic-core for CPython 3.11 and 3.12), at the versions uv.lock pins
  slide-8192/   a SYNTHETIC 8192^2 px JPEG DICOM-WSI series (so no JPEG encoder is needed there)

cuCIM is left out (17 MB plus scikit-image): the check does not read SVS with it.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / ".gpu-kit"
# distribution -> the module it provides (checked on the GPU machine before installing)
WHEELS: dict[str, str] = {
    "nvidia-nvimgcodec-cu12": "nvidia.nvimgcodec",
    "nvidia-nvjpeg-cu12": "nvidia.nvjpeg",
    "nvidia-cuda-runtime-cu12": "nvidia.cuda_runtime",
    "pydicom": "pydicom",
    "pydantic": "pydantic",
    "pydantic-core": "pydantic_core",
    "annotated-types": "annotated_types",
    "typing-inspection": "typing_inspection",
    "typing-extensions": "typing_extensions",
}
PY_VERSIONS = ("3.11", "3.12")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
SLIDE_PX = 8192


def locked_versions(lock: Path = ROOT / "uv.lock") -> dict[str, str]:
    """The versions uv.lock pins, for the kit's distributions that it has."""
    packages = tomllib.loads(lock.read_text()).get("package", [])
    return {p["name"]: p["version"] for p in packages if p["name"] in WHEELS}


def download(dest: Path) -> None:
    pins = locked_versions()
    reqs = [f"{name}=={pins[name]}" if name in pins else name for name in WHEELS]
    plat = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for version in PY_VERSIONS:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", version, *plat, "-d", str(dest), *reqs]
        subprocess.run(cmd, check=True)  # noqa: S603 - pip, fixed arguments


def write_slide(dest: Path) -> None:
    from tests.perf.gpu_check_data import synthetic_slide

    files = synthetic_slide(dest, SLIDE_PX)
    print(f"[gpu-kit] slide: {len(files)} instances, {sum(f.stat().st_size for f in files)} B")


def missing_modules() -> list[str]:
    """The kit's distributions whose module this interpreter cannot import."""
    return [dist for dist, module in WHEELS.items() if not _importable(module)]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def install(site: Path) -> None:
    """pip install, from the kit's wheels only, what this interpreter lacks, into `site`."""
    missing = missing_modules()
    print(f"[gpu-kit] missing here: {', '.join(missing) or 'nothing'}", flush=True)
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--quiet"]
    cmd += ["--find-links", str(KIT / "wheels"), "--target", str(site), *missing]
    subprocess.run(cmd, check=True)  # noqa: S603 - pip, fixed arguments


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the GPU check's kit (.gpu-kit/)")
    p.add_argument("--install", type=Path, metavar="SITE", help="on the GPU machine")
    args = p.parse_args(argv)
    if args.install:
        install(args.install)
        return 0
    download(KIT / "wheels")
    write_slide(KIT / f"slide-{SLIDE_PX}")
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    print(f"[gpu-kit] {KIT}: {size / 2**20:.1f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
