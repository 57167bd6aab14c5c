"""Readable scores: percentile and z of a raw ssGSEA score against the reference (SYNTHETIC)."""

from __future__ import annotations

import numpy as np
import pytest

from histoprompt.core.readable_scores import percentile_and_z


def test_percentile_and_z_against_the_reference() -> None:
    ref = [np.arange(1.0, 101.0), np.full(10, 3.0)]
    scores = np.array([[50.5, 3.0], [0.0, 5.0], [1000.0, np.nan]])
    pct, z = percentile_and_z(scores, ref)
    assert pct[0, 0] == pytest.approx(50.0) and pct[1, 0] == 0.0 and pct[2, 0] == 100.0
    assert z[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert z[2, 0] == pytest.approx((1000 - 50.5) / np.arange(1.0, 101.0).std())
    assert pct[0, 1] == 50.0 and pct[1, 1] == 100.0 and z[1, 1] == 0.0  # constant reference
    assert np.isnan(pct[2, 1]) and np.isnan(z[2, 1])


def test_the_engine_returns_readable_scores_with_soft_knn() -> None:
    from helpers.synthetic_reference import synthetic_reference

    from histoprompt.core.pathway_engine import PathwayEngine

    ref = synthetic_reference(60, n_genes=1500, seed=2, embed_dim=8, name="r")
    engine = PathwayEngine.for_reference(ref)
    res = engine.query(ref.embeddings[:5], ["HALLMARK_HYPOXIA", "HALLMARK_NOT_A_SET"])
    assert res.percentiles is not None and res.zscores is not None
    col = ref.hallmark_scores["HALLMARK_HYPOXIA"].to_numpy(np.float32)
    pct, z = percentile_and_z(res.scores[:, :1], [col])
    np.testing.assert_allclose(res.percentiles[:, 0], pct[:, 0])
    np.testing.assert_allclose(res.zscores[:, 0], z[:, 0], rtol=1e-4, atol=1e-5)
    assert np.isnan(res.percentiles[:, 1]).all()
    entry = res.pathway_scores(0)["HALLMARK_HYPOXIA"]
    assert 0.0 <= (entry.percentile or -1.0) <= 100.0 and entry.z is not None
