"""Method `predictor`: per-set ridge/MLP heads exported to ONNX, served through PathwayEngine,
and the model card that records them (SYNTHETIC reference and embeddings)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.synthetic_reference import synthetic_reference
from typer.testing import CliRunner

from histoprompt.core.modelspec import ModelCard, WeightFile
from histoprompt.core.pathway_engine import GeneSetQueryError, PathwayEngine
from histoprompt.core.predictors import PredictorConfig, TrainedPredictor
from histoprompt.core.reference import ReferenceDB
from histoprompt.export.encoder_specs import encoder_spec
from histoprompt.export.errors import ExportError
from histoprompt.export.model_card import find_card, finish_card, parse_licences, render_card
from histoprompt.export.predictor_export import FittedHeads, export_heads, fit_heads
from histoprompt.serving.predictor import OnnxPredictor, load_predictors

DIM = 16


@pytest.fixture(scope="module")
def ref() -> ReferenceDB:
    return synthetic_reference(160, n_genes=1500, seed=5, embed_dim=DIM, name="pred")


@pytest.fixture(scope="module")
def heads(ref: ReferenceDB) -> FittedHeads:
    targets = ref.hallmark_scores.iloc[:, :6]
    patients = [f"p{i // 2}" for i in range(ref.embeddings.shape[0])]
    return fit_heads(ref.embeddings, targets, patients, synthetic=True)


@pytest.fixture(scope="module")
def exported(heads: FittedHeads, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("predictor")
    record = export_heads(heads, folder)
    assert record.passed and record.max_abs_err <= 1e-4
    return folder


def test_heads_keep_per_set_the_better_cross_validated_kind(heads: FittedHeads) -> None:
    m = heads.manifest
    assert len(m.heads) == 6 and m.cv_folds == 5 and m.synthetic
    for h in m.heads:
        assert h.kind in ("ridge", "mlp")
        assert h.cv_r2 == max(h.cv_r2_ridge, h.cv_r2_mlp)
    # SYNTHETIC reference: embeddings are a linear map of the expression, so ssGSEA is learnable
    assert np.mean([h.cv_r2 for h in m.heads]) > 0.3


def test_onnx_module_equals_the_numpy_predictors(ref: ReferenceDB, heads: FittedHeads) -> None:
    targets = ref.hallmark_scores.iloc[:, :6]
    ridge = TrainedPredictor.fit(ref.embeddings, targets, PredictorConfig(kind="ridge"))
    mlp = TrainedPredictor.fit(ref.embeddings, targets, PredictorConfig(kind="mlp"))
    x = ref.embeddings[:7] * 3.0  # any scale: the graph unit-normalises
    got = heads.module.scores(x)
    for j, h in enumerate(heads.manifest.heads):
        want = (mlp if h.kind == "mlp" else ridge).predict_all(x)[:, j]
        np.testing.assert_allclose(got[:, j], want, rtol=1e-5, atol=1e-3)


def test_served_predictor_scores_known_sets_and_refuses_new_ones(
    ref: ReferenceDB, heads: FittedHeads, exported: Path
) -> None:
    served = load_predictors(exported)
    assert [p.method for p in served] == ["predictor"]
    engine = PathwayEngine.for_reference(ref, trained=served, strict=True)
    assert "predictor" in engine.methods
    names = list(heads.manifest.set_names)
    res = engine.query(ref.embeddings[:3], names[:2], "predictor")
    assert res.method == "predictor" and np.isfinite(res.scores).all()
    want = heads.module.scores(ref.embeddings[:3])[:, :2]
    np.testing.assert_allclose(res.scores, want, rtol=1e-5)
    new = json.dumps({"name": "my_signature", "genes": list(ref.genes[40:52])})
    with pytest.raises(GeneSetQueryError) as err:
        engine.query(ref.embeddings[:1], [names[0], new], "predictor")
    message = str(err.value)
    assert "\n" not in message and "my_signature" in message and "soft-knn" in message


def test_load_predictors_without_artifacts_is_empty(tmp_path: Path) -> None:
    assert load_predictors(tmp_path) == []
    (tmp_path / "predictor.json").write_text("{}")
    with pytest.raises(Exception, match="not a predictor"):
        OnnxPredictor.load(tmp_path)


def test_model_card_records_weights_parity_licences_and_is_shown(
    exported: Path, tmp_path: Path
) -> None:
    from histoprompt.export.cli import app
    from histoprompt.export.onnx_export import ParityRecord

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "predictor.onnx").write_bytes((exported / "predictor.onnx").read_bytes())
    card = ModelCard(
        name="t", version="tiny-1", encoder=encoder_spec("tiny"), aligned_dim=DIM, rna_genes=5
    )
    record = ParityRecord(
        model="predictor",
        opset=18,
        input_shapes=[[1, DIM]],
        max_abs_err=1e-7,
        min_cosine=1.0,
        passed=True,
    )
    src = WeightFile(role="tile_encoder", name="tiny", file="-", untrained=True)
    full = finish_card(
        card,
        bundle,
        sources=[src],
        records=[record],
        metrics={"val": {"recall@5": 0.5}, "predictor_cv_r2_mean": 0.4},
        licences=parse_licences(["uni=CC-BY-NC-ND-4.0"]),
        methods=["predictor", "soft_knn"],
    )
    onnx = next(w for w in full.weights if w.role == "onnx:predictor")
    assert onnx.sha256 is not None and len(onnx.sha256) == 64
    assert full.evaluation == {"val.recall@5": 0.5, "predictor_cv_r2_mean": 0.4}
    assert find_card(bundle) == bundle / "model_card.json"
    text = render_card(full)
    assert onnx.sha256 in text and "CC-BY-NC-ND-4.0" in text and "tensorrt: not built" in text
    res = CliRunner().invoke(app, ["model-card", str(bundle), "--json"])
    assert res.exit_code == 0, res.output
    assert ModelCard.model_validate_json(res.stdout) == full
    res = CliRunner().invoke(app, ["model-card", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no model_card.json" in res.output
    with pytest.raises(ExportError, match="COMPONENT=LICENCE"):
        parse_licences(["uni"])


def test_model_card_is_read_from_a_repository_in_s3() -> None:
    from minio.error import S3Error

    from histoprompt.export.model_card import read_card

    card = ModelCard(
        name="t", version="tiny-2", encoder=encoder_spec("tiny"), aligned_dim=DIM, rna_genes=5
    )

    class Body:
        def read(self) -> bytes:
            return card.model_dump_json().encode()

        def close(self) -> None: ...

        def release_conn(self) -> None: ...

    class FakeMinio:
        asked: list[str] = []

        def get_object(self, bucket: str, key: str) -> Body:
            self.asked.append(f"{bucket}/{key}")
            if key != "model_repository/tile_preprocess/1/model_card.json":
                raise S3Error(None, "NoSuchKey", "missing", key, "", "")  # type: ignore[arg-type]
            return Body()

    fake = FakeMinio()
    assert read_card("s3://models/model_repository", fake) == card
    assert fake.asked[0] == "models/model_repository/model_card.json"
    with pytest.raises(ExportError, match="no model_card.json under s3://models/nothing"):
        read_card("s3://models/nothing", fake)


def test_tensorrt_parity_is_measured_and_recorded_in_the_card(tmp_path: Path) -> None:
    """The GPU step's bookkeeping, with a stand-in for the engine (no GPU here)."""
    import onnx
    from onnx import TensorProto, helper

    from histoprompt.export.model_card import add_parity, tensorrt_parity

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["PIXELS"], ["TILE_EMBEDDING"], axes=[2, 3], keepdims=0)],
        "pool",
        [helper.make_tensor_value_info("PIXELS", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("TILE_EMBEDDING", TensorProto.FLOAT, ["n", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "tile_encoder.onnx")

    def fp16_engine(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=(2, 3)).astype(np.float16).astype(np.float32)

    result = tensorrt_parity(tmp_path / "tile_encoder.onnx", fp16_engine, input_px=8)
    assert result.runtime == "tensorrt" and result.passed and 0 < result.max_abs_err < 1e-3
    card = ModelCard(
        name="t", version="tiny-3", encoder=encoder_spec("tiny"), aligned_dim=DIM, rna_genes=5
    )
    (tmp_path / "model_card.json").write_text(card.model_dump_json())
    (tmp_path / "model.plan").write_bytes(b"plan")
    updated = add_parity(tmp_path / "model_card.json", result, tmp_path / "model.plan")
    assert updated.parity == (result,)
    assert [w.role for w in updated.weights] == ["tensorrt:tile_encoder"]
    assert "tensorrt: not built" not in render_card(updated)
