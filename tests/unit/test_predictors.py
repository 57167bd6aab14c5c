"""Trained predictors (ridge, MLP) and prototype prompting on SYNTHETIC pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.synthetic_reference import synthetic_reference

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.genesets import load_hallmark, parse_gene_list
from histoprompt.core.predictors import (
    PredictorConfig,
    TrainedPredictor,
    cross_validated_predictions,
)
from histoprompt.core.prototype import PrototypeScorer
from histoprompt.core.reference import ReferenceDB
from histoprompt.core.reference_synthetic import linear_embed_fn, synthetic_reference_inputs


def _pairs(n: int = 240, e: int = 16, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    """SYNTHETIC: targets are smooth functions of the embedding plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, e)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.normal(size=(e, 3))
    y = x @ w * 100 + 5 * rng.normal(size=(n, 3))
    y[:, 2] = np.tanh(3 * x[:, 0]) * 50 + 2 * rng.normal(size=n)
    return x, pd.DataFrame(y, columns=["SET_A", "SET_B", "SET_C"])


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_cross_validated_predictions_explain_the_targets(kind: str) -> None:
    x, y = _pairs()
    groups = [f"SYN-P{i // 2}" for i in range(len(x))]  # two samples per patient
    cfg = PredictorConfig(kind=kind, ridge_alpha=0.01)  # type: ignore[arg-type]
    oof = cross_validated_predictions(x, y, groups, cfg)
    r2 = 1 - ((oof - y.to_numpy()) ** 2).sum(0) / ((y - y.mean()) ** 2).to_numpy().sum(0)
    assert (r2[:2] > 0.8).all()
    assert r2[2] > 0.5


def test_save_load_round_trip(tmp_path: Path) -> None:
    x, y = _pairs()
    for kind in ("ridge", "mlp"):
        model = TrainedPredictor.fit(x, y, PredictorConfig(kind=kind))  # type: ignore[arg-type]
        model.save(tmp_path / kind)
        back = TrainedPredictor.load(tmp_path / kind)
        np.testing.assert_allclose(back.predict_all(x[:7]), model.predict_all(x[:7]), rtol=1e-6)
        assert back.set_names == ("SET_A", "SET_B", "SET_C")


def test_ridge_matches_sklearn_prediction() -> None:
    from sklearn.linear_model import Ridge

    x, y = _pairs()
    model = TrainedPredictor.fit(x, y, PredictorConfig(kind="ridge", ridge_alpha=0.5))
    z = (y - y.mean()) / y.std(ddof=0)
    ref = Ridge(alpha=0.5).fit(x, z).predict(x) * y.std(ddof=0).to_numpy() + y.mean().to_numpy()
    np.testing.assert_allclose(model.predict_all(x), ref, rtol=1e-4, atol=1e-3)


def test_cv_needs_enough_patients() -> None:
    x, y = _pairs(20)
    with pytest.raises(InvalidInputError, match="5-fold CV needs 5 patients"):
        cross_validated_predictions(x, y, ["a", "b"] * 10, PredictorConfig())


def test_trained_predictor_refuses_unknown_sets() -> None:
    x, y = _pairs()
    y.columns = ["HALLMARK_HYPOXIA", "HALLMARK_APOPTOSIS", "HALLMARK_E2F_TARGETS"]
    model = TrainedPredictor.fit(x, y, PredictorConfig())
    inputs = synthetic_reference_inputs(20, n_genes=800, seed=0)
    from histoprompt.core.genesets import GeneIndex

    index = GeneIndex(list(inputs.expression.columns))
    known = index.resolve(load_hallmark()["HALLMARK_HYPOXIA"], min_found=1)
    new = index.resolve(parse_gene_list(",".join(inputs.expression.columns[:10])))
    assert model.supports(known) is None
    assert "soft-knn" in (model.supports(new) or "")
    np.testing.assert_allclose(model.predict(x[:3], [known])[:, 0], model.predict_all(x[:3])[:, 0])


@pytest.fixture(scope="module")
def ref() -> ReferenceDB:
    return synthetic_reference(300, n_genes=2000, seed=3, embed_dim=24, name="p", embed_seed=1)


def test_prototype_scores_are_calibrated_and_follow_the_set(ref: ReferenceDB) -> None:
    embed = linear_embed_fn(len(ref.genes), 24, seed=1)
    scorer = PrototypeScorer(ref, embed)
    resolved = ref.gene_index.resolve(load_hallmark()["HALLMARK_HYPOXIA"])
    z = scorer.predict(ref.embeddings, [resolved])[:, 0]
    # calibrated on the reference: the reference itself scores mean 0, sd 1
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3
    # with a linear encoder, samples whose set genes are high sit closer to the prototype
    rho = np.corrcoef(z, ref.hallmark_scores["HALLMARK_HYPOXIA"])[0, 1]
    assert rho > 0.3
    profile = scorer.profile(resolved)
    assert (profile[resolved.indices] > ref.gene_mean[resolved.indices]).all()
    others = np.setdiff1d(np.arange(len(ref.genes)), resolved.indices)
    np.testing.assert_allclose(profile[others], ref.gene_mean[others], rtol=1e-6)
