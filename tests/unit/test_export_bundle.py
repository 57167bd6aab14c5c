"""The demo bundle: learns on the SYNTHETIC cohort, exports with parity, caches by version."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from histoprompt.core import names
from histoprompt.export.bundle import build_demo_bundle, demo_card, demo_config
from histoprompt.export.errors import UnknownEncoderError
from histoprompt.export.model_repo import parse_config

pytestmark = pytest.mark.slow


def test_demo_bundle_learns_exports_and_is_cached(tmp_path: Path) -> None:
    bundle = build_demo_bundle(tmp_path / "a", seed=0)
    val, base = bundle.metrics["val"], bundle.metrics["val_unaligned"]
    # held-out retrieval among 40 patients: well above chance (0.125) and the unaligned module
    assert val["recall@5"] >= val["chance@5"] + 0.3
    assert val["recall@5"] >= base["recall@5"] + 0.3
    assert bundle.metrics["synthetic"] is True
    assert bundle.card == demo_card(demo_config(0))
    assert {r["model"] for r in bundle.parity.values()} == {
        names.MODEL_TILE_ENCODER,
        names.MODEL_SLIDE_EMBED,
        names.MODEL_RNA_EMBED,
    }
    assert all(r["passed"] for r in bundle.parity.values())
    repo = bundle.model_repository
    for model in (names.MODEL_TILE_ENCODER, names.MODEL_SLIDE_EMBED, names.MODEL_RNA_EMBED):
        assert (repo / model / "1" / "model.onnx").is_file()
        parse_config((repo / model / "config.pbtxt").read_text())
    assert "SYNTHETIC" in (bundle.bundle_dir / "SYNTHETIC.txt").read_text()

    started = time.perf_counter()
    again = build_demo_bundle(tmp_path / "b", seed=0)
    assert time.perf_counter() - started < 10
    assert again.metrics["config_hash"] == bundle.metrics["config_hash"]


def test_unknown_demo_encoder_fails_before_any_work() -> None:
    with pytest.raises(UnknownEncoderError):
        demo_config(0, "resnet")
