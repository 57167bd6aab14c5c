"""The demo bundle: learns on the SYNTHETIC cohort, exports with parity, caches by version."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from histoprompt.core import names
from histoprompt.core.modelspec import ModelCard
from histoprompt.export.bundle import build_demo_bundle, demo_card, demo_config
from histoprompt.export.errors import UnknownEncoderError
from histoprompt.export.model_repo import parse_config

pytestmark = pytest.mark.slow

FILLED_AT_EXPORT = {
    "rna_encoder",
    "rna_preprocessing",
    "weights",
    "training",
    "evaluation",
    "parity",
    "licences",
    "methods",
}


def test_demo_bundle_learns_exports_and_is_cached(tmp_path: Path) -> None:
    bundle = build_demo_bundle(tmp_path / "a", seed=0)
    val, base = bundle.metrics["val"], bundle.metrics["val_unaligned"]
    # held-out retrieval among 40 patients: well above chance (0.125) and the unaligned module
    assert val["recall@5"] >= val["chance@5"] + 0.3
    assert val["recall@5"] >= base["recall@5"] + 0.3
    assert bundle.metrics["synthetic"] is True
    served_fields = set(ModelCard.model_fields) - FILLED_AT_EXPORT
    assert bundle.card.model_dump(include=served_fields) == demo_card(demo_config(0)).model_dump(
        include=served_fields
    )
    assert {r["model"] for r in bundle.parity.values()} == {
        names.MODEL_TILE_ENCODER,
        names.MODEL_SLIDE_EMBED,
        names.MODEL_RNA_EMBED,
        names.MODEL_TILE_CONTEXT,  # derived from the alignment weights (export.tile_context)
        "predictor",
    }
    assert all(r["passed"] for r in bundle.parity.values())
    repo = bundle.model_repository
    models = (names.MODEL_TILE_ENCODER, names.MODEL_SLIDE_EMBED, names.MODEL_RNA_EMBED)
    for model in (*models, names.MODEL_TILE_CONTEXT):
        assert (repo / model / "1" / "model.onnx").is_file()
        parse_config((repo / model / "config.pbtxt").read_text())
    # the served predictor and the model card travel with pathway_query
    query_dir = repo / names.MODEL_PATHWAY_QUERY / "1"
    for name in ("predictor.onnx", "predictor.json", "model_card.json"):
        assert (query_dir / name).is_file(), name
    card = bundle.card
    assert card.methods == ("predictor", "prototype", "soft_knn")
    assert card.training is not None and card.training.synthetic
    assert card.training.n_train_patients + card.training.n_val_patients == card.training.n_patients
    assert {p.model for p in card.parity} == {r["model"] for r in bundle.parity.values()}
    assert all(w.sha256 for w in card.weights if not w.untrained)
    # SYNTHETIC cohort: the heads learn the Hallmark scores from the aligned slide embedding
    assert card.evaluation["predictor_cv_r2_mean"] > 0.0
    assert "SYNTHETIC" in (bundle.bundle_dir / "SYNTHETIC.txt").read_text()

    started = time.perf_counter()
    again = build_demo_bundle(tmp_path / "b", seed=0)
    assert time.perf_counter() - started < 10
    assert again.metrics["config_hash"] == bundle.metrics["config_hash"]


def test_unknown_demo_encoder_fails_before_any_work() -> None:
    with pytest.raises(UnknownEncoderError):
        demo_config(0, "resnet")
