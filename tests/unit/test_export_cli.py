"""Every documented `histoprompt-export` example, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from histoprompt.core import names
from histoprompt.export.cli import app
from histoprompt.export.model_repo import parse_config

runner = CliRunner()


def test_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("model-repo", "demo-bundle", "export-encoder", "encoders", "tensorrt"):
        assert command in result.output


def test_model_repo_example_writes_parseable_configs(tmp_path: Path) -> None:
    for flavor in ("cpu", "gpu"):
        out = tmp_path / flavor
        result = runner.invoke(app, ["model-repo", "--flavor", flavor, "--out", str(out)])
        assert result.exit_code == 0, result.output
        configs = sorted(out.glob("*/config.pbtxt"))
        assert len(configs) == len(names.ALL_MODELS)
        for path in configs:
            parse_config(path.read_text())


def test_encoders_example_lists_untrained_seeded_encoders() -> None:
    result = runner.invoke(app, ["encoders"])
    assert result.exit_code == 0
    assert "uni" in result.output and "UNTRAINED" in result.output


def test_export_encoder_example_writes_onnx_and_parity(tmp_path: Path) -> None:
    out = tmp_path / "tiny.onnx"
    result = runner.invoke(app, ["export-encoder", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    parity = json.loads(out.with_suffix(".parity.json").read_text())
    assert parity["tile_encoder"]["passed"] is True


def test_export_encoder_rejects_a_hub_name(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "export-encoder",
            "uni",
            "--out",
            str(tmp_path / "u.onnx"),
            "--weights",
            "hf-hub:MahmoodLab/UNI",
        ],
    )
    assert result.exit_code == 2
    assert "huggingface-cli download" in result.output  # one line on stderr, no traceback


def test_export_encoder_generic_timm_form_and_a_wrong_file(tmp_path: Path) -> None:
    """`--arch timm:<model> --arch-kwargs JSON --weights FILE`; RANDOM weights in timm's
    layout. A file of another architecture fails with one line naming what it looks like."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=1)
    save_file(net.state_dict(), str(tmp_path / "model.safetensors"))
    args = ["export-encoder", "--arch", "timm:vit_tiny_patch16_224", "--weights"]
    kwargs = ["--arch-kwargs", '{"num_classes": 0, "depth": 1}']
    out = tmp_path / "vit.onnx"
    result = runner.invoke(
        app, [*args, str(tmp_path / "model.safetensors"), *kwargs, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.with_suffix(".parity.json").read_text())["tile_encoder"]["passed"]
    result = runner.invoke(
        app,
        [
            "export-encoder",
            "uni",
            "--weights",
            str(tmp_path / "model.safetensors"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 2
    assert "does not match the published layout of uni" in result.output


def test_train_example_on_cached_embeddings(tmp_path: Path) -> None:
    import numpy as np
    from helpers.cohort_files import write_cohort_files

    from histoprompt.export.cohort import CohortConfig, make_cohort
    from histoprompt.export.embedding import embed_tiles
    from histoprompt.export.encoders import load_encoder

    cohort = make_cohort(CohortConfig(n_patients=16, min_tiles=4, max_tiles=6, seed=2))
    enc = load_encoder("tiny")
    inputs = write_cohort_files(
        cohort,
        tmp_path,
        lambda slide: embed_tiles(enc, slide.tiles).astype(np.float16),
        ["SYN-GONE,SYN-99999"],  # listed, no embeddings: skipped
    )
    result = runner.invoke(
        app,
        [
            "train",
            *inputs,
            "--out",
            str(tmp_path / "bundle"),
            "--epochs",
            "3",
            "--synthetic",
            "--rna-encoder",
            "tiny",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "bundle" / "metrics.json").read_text())
    assert metrics["slides_used"] == 16 and metrics["slides_skipped"] == 1
    assert metrics["rna_encoder_untrained"] is True and metrics["synthetic"] is True
    parity = json.loads((tmp_path / "bundle" / "parity.json").read_text())
    assert all(r["passed"] for r in parity.values())
    repo = tmp_path / "repo"
    served = runner.invoke(
        app, ["model-repo", "--artifacts", str(tmp_path / "bundle"), "--out", str(repo)]
    )
    assert served.exit_code == 0, served.output
    assert (repo / "slide_embed" / "1" / "model.onnx").is_file()
    assert metrics["model_version"] in (repo / "tile_preprocess" / "config.pbtxt").read_text()


def test_tensorrt_example_without_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    import importlib.util

    import pytest

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here; the gpu test covers the build")
    (tmp_path / "t.onnx").write_bytes(b"")
    result = runner.invoke(
        app,
        [
            "tensorrt",
            str(tmp_path / "t.onnx"),
            "--plan",
            str(tmp_path / "model.plan"),
            "--input-px",
            "64",
        ],
    )
    assert result.exit_code != 0
    assert "histoprompt-export[gpu]" in str(result.exception)
