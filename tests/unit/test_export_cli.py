"""Every documented `histoprompt-export` example, through Typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

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
        assert len(configs) == 7
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
    assert result.exit_code != 0
    assert "huggingface-cli download" in str(result.exception)
