"""`make gpu-check`'s dry mode (--cpu) runs every measurement's code on CPU and writes JSON
whose figures are computed and consistent; the FLOP count agrees with the ViT's closed form;
the BENCHMARKS renderer shows a GPU run only, and says when there is none. About 15 s on a
quiet 2-core machine (torch and timm imports, one eager torch.compile, a 1024^2 px slide)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from perf import gpu_check, gpu_check_render
from perf.gpu_check_vit import flops_per_tile, peak_tflops

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def dry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-check") / "dry.json"
    t0 = time.perf_counter()
    assert gpu_check.main(["--cpu", "--out", str(out)]) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    doc["_test_wall_s"] = time.perf_counter() - t0
    return doc


def test_dry_run_writes_every_measurement(dry: dict[str, Any]) -> None:
    assert dry["schema"] == gpu_check.SCHEMA and dry["mode"] == "cpu-dry"
    assert set(dry["measurements"]) == set(gpu_check.MEASUREMENTS)
    for name, m in dry["measurements"].items():
        assert m["status"] == "ok", (name, m.get("reason"), m.get("trace"))
        assert m["wall_s"] > 0
    assert dry["machine"]["gpu"] is None and dry["machine"]["cpu_count"] >= 1


@pytest.mark.parametrize("name", ["vit", "vit_eager"])
def test_vit_figures_are_computed_and_consistent(dry: dict[str, Any], name: str) -> None:
    vit = dry["measurements"][name]
    assert vit["tiles_per_s"] > 0 and vit["gflops_per_tile"] > 0 and vit["seconds"] > 0
    assert vit["tiles_per_s"] == pytest.approx(vit["batch"] * vit["iters"] / vit["seconds"])
    # TFLOP/s = tiles/s x GFLOPs/tile / 1000: one unit chain, checked end to end.
    expected = vit["tiles_per_s"] * vit["gflops_per_tile"] / 1000
    assert vit["achieved_tflops"] == pytest.approx(expected)
    assert vit["fraction_of_peak"] is None and "cpu" in vit["peak_note"]


def test_data_figures_are_computed_and_consistent(dry: dict[str, Any]) -> None:
    dec = dry["measurements"]["decode"]
    assert dec["backend"] == "cpu" and dec["frames"] > 0
    assert dec["frames_per_s"] == pytest.approx(dec["frames"] / dec["seconds"])
    assert dec["cpu_ms_per_frame"] > 0
    for name in ("ingest_path", "device_tiles"):
        ing = dry["measurements"][name]
        assert ing["tiles"] > 0 and ing["bytes_read"] > 0
        assert ing["tiles_per_s"] == pytest.approx(ing["tiles"] / ing["seconds"])
        assert ing["cpu_ms_per_tile"] == pytest.approx(1000 * ing["cpu_s"] / ing["tiles"])
    # Both paths tile the same slide with the same plan.
    assert (
        dry["measurements"]["device_tiles"]["tiles"] == dry["measurements"]["ingest_path"]["tiles"]
    )


def test_vit_flops_match_the_closed_form() -> None:
    import timm

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    d, depth, n = model.embed_dim, len(model.blocks), (64 // 16) ** 2 + 1
    per_block = 24 * n * d * d + 4 * n * n * d  # qkv, proj, 4x MLP; QK^T and AV
    patch = 2 * (n - 1) * (3 * 16 * 16) * d
    head = 2 * d * model.num_classes
    assert flops_per_tile(model, 64, "cpu", None) == depth * per_block + patch + head


def test_peak_table_takes_the_most_specific_name() -> None:
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert peak_tflops("NVIDIA L40S") == 362.05
    assert peak_tflops("cpu") is None


def test_render_says_no_gpu_run_without_one(tmp_path: Path, dry: dict[str, Any]) -> None:
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    dry_json = tmp_path / "dry.json"
    dry_json.write_text(json.dumps(dry))
    for result in (tmp_path / "absent.json", dry_json):
        gpu_check_render.render(result, bench)
        text = bench.read_text()
        assert "No GPU run has been made yet" in text and "kept" in text
        assert "tiles/s" not in text


def test_render_names_the_machine_of_a_gpu_run(tmp_path: Path, dry: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(dry))
    doc["mode"] = "gpu"
    doc["machine"].update(gpu="NVIDIA TEST-GPU", gpu_count=1, cuda="12.x")
    doc["measurements"]["decode"] = {"status": "skipped", "reason": "ImportError: no nvimgcodec"}
    result, bench = tmp_path / "gpu.json", tmp_path / "BENCHMARKS.md"
    result.write_text(json.dumps(doc))
    gpu_check_render.render(result, bench)
    text = bench.read_text()
    assert "Machine: NVIDIA TEST-GPU (x1)" in text
    vit = doc["measurements"]["vit"]
    assert f"| {vit['tiles_per_s']:,.1f} |" in text
    assert "- decode: skipped: ImportError: no nvimgcodec" in text
