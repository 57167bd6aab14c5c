"""ONNX export: checker, dynamic axes, parity within 1e-4 / cosine 0.9999, parity JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from histoprompt.export.alignment import (
    AlignmentConfig,
    AlignmentModel,
    RnaEmbedExport,
    SlideEmbedExport,
)
from histoprompt.export.encoders import load_encoder
from histoprompt.export.errors import ParityError
from histoprompt.export.onnx_export import (
    ParityRecord,
    export_rna_embed,
    export_slide_embed,
    export_tile_encoder,
    write_parity,
)
from histoprompt.export.rna import fit_contract, small_rna_encoder


@pytest.fixture(scope="module")
def model() -> AlignmentModel:
    torch.manual_seed(0)
    cfg = AlignmentConfig(tile_dim=192, rna_dim=16, hidden=32, attn_dim=16, aligned_dim=8)
    return AlignmentModel(cfg).eval()


def test_tile_encoder_exports_with_dynamic_batch(tmp_path: Path) -> None:
    enc = load_encoder("tiny")
    record = export_tile_encoder(enc.module, 64, tmp_path / "t.onnx")
    assert record.passed and record.max_abs_err <= 1e-4 and record.min_cosine >= 0.9999
    proto = onnx.load(str(tmp_path / "t.onnx"))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "PIXELS"
    assert isinstance(sess.get_inputs()[0].shape[0], str)
    out = sess.run(None, {"PIXELS": np.zeros((33, 3, 64, 64), np.float32)})[0]
    assert out.shape == (33, 192)


def test_slide_embed_exports_with_variable_bag(tmp_path: Path, model: AlignmentModel) -> None:
    record = export_slide_embed(SlideEmbedExport(model).eval(), 192, tmp_path / "s.onnx")
    assert record.passed
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    emb, att = sess.run(None, {"TILE_EMBEDDING": np.ones((1234, 192), np.float32)})
    assert emb.shape == (1, 8) and att.shape == (1234,)
    assert att.sum() == pytest.approx(1.0, abs=1e-4)
    assert [o.name for o in sess.get_outputs()] == ["SLIDE_EMBEDDING", "ATTENTION"]


def test_rna_embed_exports(tmp_path: Path, model: AlignmentModel) -> None:
    genes = [f"G{i}" for i in range(50)]
    contract = fit_contract(genes, np.random.default_rng(0).uniform(0, 6, (5, 50)))
    module = RnaEmbedExport(small_rna_encoder(contract, embed_dim=16), model).eval()
    record = export_rna_embed(module, 50, tmp_path / "r.onnx")
    assert record.passed and record.model == "rna_embed"


def test_parity_json_records_every_model_and_fails_loudly(tmp_path: Path) -> None:
    good = ParityRecord(
        model="a", opset=18, input_shapes=[[1]], max_abs_err=1e-7, min_cosine=1.0, passed=True
    )
    bad = good.model_copy(update={"model": "b", "max_abs_err": 0.1, "passed": False})
    write_parity([good], tmp_path / "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text())["a"]["passed"] is True
    with pytest.raises(ParityError, match="'b'"):
        write_parity([good, bad], tmp_path / "bad.json")
    assert set(json.loads((tmp_path / "bad.json").read_text())) == {"a", "b"}
