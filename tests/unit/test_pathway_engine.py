"""PathwayEngine: mixed batches where one bad gene set fails alone (SYNTHETIC reference)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.synthetic_reference import synthetic_reference

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.pathway_engine import GeneSetQueryError, PathwayEngine, UnknownMethodError
from histoprompt.core.predictors import PredictorConfig, TrainedPredictor
from histoprompt.core.reference import ReferenceDB
from histoprompt.core.reference_store import save_reference
from histoprompt.core.reference_synthetic import linear_embed_fn


@pytest.fixture(scope="module")
def ref() -> ReferenceDB:
    return synthetic_reference(200, n_genes=2000, seed=4, embed_dim=16, name="eng")


@pytest.fixture(scope="module")
def engine(ref: ReferenceDB) -> PathwayEngine:
    trained = TrainedPredictor.fit(ref.embeddings, ref.hallmark_scores, PredictorConfig())
    return PathwayEngine.for_reference(
        ref, embed_fn=linear_embed_fn(len(ref.genes), 16), trained=[trained]
    )


def _json_set(ref: ReferenceDB, n: int = 12, name: str = "my_signature") -> str:
    return json.dumps({"name": name, "genes": [g.lower() for g in ref.genes[40 : 40 + n]]})


def test_methods(engine: PathwayEngine) -> None:
    assert engine.methods == ["prototype", "ridge", "soft_knn"]


def test_mixed_batch_fails_only_the_bad_sets(engine: PathwayEngine, ref: ReferenceDB) -> None:
    few = json.dumps({"name": "tiny", "genes": [*ref.genes[:3], "NOTAGENE1", "NOTAGENE2"]})
    queries = [
        "HALLMARK_HYPOXIA",
        _json_set(ref),
        "HALLMARK_NOT_A_SET",
        '{"name": "broken", "genes": [',
        few,
        "",
    ]
    res = engine.query(ref.embeddings[:4], queries)
    assert res.scores.shape == (4, 6) and res.scores.dtype == np.float32
    assert res.coverage.shape == (6,)
    assert np.isfinite(res.scores[:, :2]).all() and np.isnan(res.scores[:, 2:]).all()
    assert [e.index for e in res.errors] == [2, 3, 4, 5]
    codes = [e.code for e in res.errors]
    assert codes == ["unknown_gene_set", "malformed_gene_set", "low_coverage", "gene_set_size"]
    assert "HALLMARK_NOT_A_SET" in res.errors[0].message
    assert res.names[:2] == ["HALLMARK_HYPOXIA", "my_signature"]
    assert res.coverage[1] == 1.0 and res.coverage[4] == pytest.approx(3 / 5)
    assert res.method == "soft_knn" and not res.ok
    # the good columns equal a query without the bad sets
    alone = engine.query(ref.embeddings[:4], queries[:2])
    assert alone.ok
    np.testing.assert_array_equal(alone.scores, res.scores[:, :2])
    assert set(res.pathway_scores(0)) == {"HALLMARK_HYPOXIA", "my_signature"}
    assert res.pathway_scores(0)["my_signature"].coverage == 1.0


def test_validate_reports_what_query_would(engine: PathwayEngine, ref: ReferenceDB) -> None:
    queries = ["HALLMARK_HYPOXIA", "hypoxa", _json_set(ref)]
    failures = engine.validate(queries)
    assert [f.index for f in failures] == [1]
    assert "did you mean HALLMARK_HYPOXIA" in failures[0].message


def test_trained_method_refuses_new_sets_only(engine: PathwayEngine, ref: ReferenceDB) -> None:
    res = engine.query(ref.embeddings[:2], ["HALLMARK_HYPOXIA", _json_set(ref)], method="ridge")
    assert res.method == "ridge"
    assert np.isfinite(res.scores[:, 0]).all()
    assert [e.code for e in res.errors] == ["unsupported_gene_set"]


def test_prototype_method_scores_new_sets(engine: PathwayEngine, ref: ReferenceDB) -> None:
    res = engine.query(ref.embeddings[:5], [_json_set(ref), "HALLMARK_E2F_TARGETS"], "prototype")
    assert res.ok and res.method == "prototype" and np.isfinite(res.scores).all()


def test_soft_knn_scores_follow_reference_scores(engine: PathwayEngine, ref: ReferenceDB) -> None:
    res = engine.query(ref.embeddings, ["HALLMARK_HYPOXIA"])
    truth = ref.hallmark_scores["HALLMARK_HYPOXIA"].to_numpy()
    assert pd.Series(res.scores[:, 0]).corr(pd.Series(truth), method="spearman") > 0.5


def test_request_level_errors_raise(engine: PathwayEngine, ref: ReferenceDB) -> None:
    with pytest.raises(UnknownMethodError, match="soft_knn"):
        engine.query(ref.embeddings[:1], ["HALLMARK_HYPOXIA"], method="magic")
    with pytest.raises(InvalidInputError, match="width"):
        engine.query(np.ones((1, 5), np.float32), ["HALLMARK_HYPOXIA"])
    with pytest.raises(InvalidInputError, match="no gene sets"):
        engine.query(ref.embeddings[:1], [])


def test_strict_mode_fails_the_whole_call_and_lists_every_bad_set(
    engine: PathwayEngine, ref: ReferenceDB
) -> None:
    queries = ["HALLMARK_HYPOXIA", "HALLMARK_NOPE", '{"genes": 5}']
    with pytest.raises(GeneSetQueryError) as info:
        engine.query(ref.embeddings[:2], queries, strict=True)
    err = info.value
    assert isinstance(err, InvalidInputError) and err.code == "invalid_gene_set"
    assert [f.index for f in err.failures] == [1, 2]
    assert "gene set #1" in str(err) and "gene set #2" in str(err)
    good = engine.query(ref.embeddings[:2], queries[:1], strict=True)
    scores, coverage = good[0], good[1]
    assert scores.shape == (2, 1) and coverage.tolist() == [good.coverage[0]]


def test_load_from_a_local_reference(tmp_path: Path, ref: ReferenceDB) -> None:
    save_reference(ref, tmp_path)
    loaded = PathwayEngine.load(str(tmp_path / ref.name))
    assert loaded.strict and loaded.reference.version == ref.version
    with pytest.raises(GeneSetQueryError):
        loaded.query(ref.embeddings[:1], ["NOT_A_SET"])
