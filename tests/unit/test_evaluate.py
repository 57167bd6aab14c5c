"""Evaluation numbers (core.evaluation) and the `histoprompt-export evaluate` CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import r2_score
from typer.testing import CliRunner

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.evaluation_metrics import (
    recall_at_k,
    regression_metrics,
    retrieval_table,
    softknn_cv_predictions,
    synthetic_pairs,
)


def test_recall_at_k_on_constructed_cases() -> None:
    eye = np.eye(6, dtype=np.float32)
    assert recall_at_k(eye, eye, (1, 5)) == {1: 1.0, 5: 1.0}
    shifted = np.roll(eye, 1, axis=0)  # every query's best match is the wrong item
    assert recall_at_k(eye, shifted, (1,))[1] == 0.0
    # the true match ranks second for every query: recall@1 0, recall@2 1
    g = np.array([[1, 0.2], [0.2, 1]], np.float32)
    q = np.array([[0.3, 1], [1, 0.3]], np.float32)
    assert recall_at_k(q, g, (1, 2)) == {1: 0.0, 2: 1.0}


def test_retrieval_table_gains() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 8)).astype(np.float32)
    table = retrieval_table(z, z, baseline_slide=z, baseline_rna=rng.normal(size=(50, 8)))
    row = table[(table.direction == "slide->rna") & (table.k == 5)].iloc[0]
    assert row.recall == 1.0 and row.random == pytest.approx(0.1)
    assert row.gain_vs_random == pytest.approx(10.0)
    assert row.gain_vs_baseline == pytest.approx(1.0 / row.baseline)
    assert set(table.direction) == {"slide->rna", "rna->slide"} and len(table) == 6


def test_regression_metrics_match_sklearn_and_scipy() -> None:
    rng = np.random.default_rng(1)
    y = pd.DataFrame(rng.normal(size=(40, 2)), columns=["A", "B"])
    pred = y.to_numpy() + 0.3 * rng.normal(size=(40, 2))
    table = regression_metrics(y, pred)
    assert table.r2.tolist() == pytest.approx(
        [r2_score(y["A"], pred[:, 0]), r2_score(y["B"], pred[:, 1])]
    )
    assert table.pearson[0] == pytest.approx(np.corrcoef(y["A"], pred[:, 0])[0, 1])
    with pytest.raises(InvalidInputError):
        regression_metrics(y, pred[:, :1])


def test_softknn_cv_never_uses_the_test_patient() -> None:
    """A patient's own RNA is the perfect neighbour; CV must not see it."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(30, 4)).astype(np.float32)
    targets = pd.DataFrame({"S": rng.normal(size=30)})
    groups = [f"SYN-P{i}" for i in range(30)]
    pred = softknn_cv_predictions(z, z, targets, groups, k=1, temperature=1e-3)
    assert not np.allclose(pred[:, 0], targets["S"].to_numpy())


def test_synthetic_pairs_show_a_retrieval_gain() -> None:
    p = synthetic_pairs(160, seed=1)
    table = retrieval_table(
        p.slide, p.rna, baseline_slide=p.baseline_slide, baseline_rna=p.baseline_rna
    )
    assert table.recall.mean() > 3 * table.baseline.mean()
    assert p.targets.shape[0] == p.slide.shape[0] == len(p.patient_ids)


def _app():  # type: ignore[no-untyped-def]
    from histoprompt.export.evaluation_report import app

    return app


def test_cli_synthetic_writes_csv_markdown_png(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        _app(),
        [
            "--synthetic",
            "--n-patients",
            "120",
            "--methods",
            "soft_knn,ridge",
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "SYNTHETIC retrieval gain" in res.output
    pathways = pd.read_csv(tmp_path / "pathways.csv")
    assert set(pathways.method) == {"soft_knn", "ridge"}
    assert {"r2", "pearson", "spearman"} <= set(pathways.columns)
    assert pathways.gene_set.nunique() == 50
    assert (tmp_path / "r2_per_hallmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "report.md").read_text().startswith("# SYNTHETIC evaluation")
    retrieval = pd.read_csv(tmp_path / "retrieval.csv")
    assert sorted(retrieval.k.unique()) == [1, 5, 10]


def test_cli_pairs_with_expression(tmp_path: Path) -> None:
    from histoprompt.core.reference_synthetic import synthetic_reference_inputs

    inputs = synthetic_reference_inputs(60, n_genes=1500, seed=3)
    inputs.expression.reset_index().to_parquet(tmp_path / "expr.parquet")
    rng = np.random.default_rng(0)
    rna = rng.normal(size=(60, 8)).astype(np.float32)
    slide = rna + 0.1 * rng.normal(size=(60, 8)).astype(np.float32)
    np.savez(
        tmp_path / "pairs.npz",
        slide=slide,
        rna=rna,
        patient_ids=np.array(inputs.expression.index, dtype=str),
    )
    res = CliRunner().invoke(
        _app(),
        [
            "--pairs",
            str(tmp_path / "pairs.npz"),
            "--expression",
            str(tmp_path / "expr.parquet"),
            "--methods",
            "ridge",
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    retrieval = pd.read_csv(tmp_path / "out" / "retrieval.csv")
    assert retrieval.recall.min() > 0.5  # slide = rna + small noise
    assert retrieval.baseline.isna().all()  # no baseline arrays given


def test_cli_errors(tmp_path: Path) -> None:
    res = CliRunner().invoke(_app(), ["--out", str(tmp_path)])
    assert res.exit_code == 2 and "--pairs" in res.output
    np.savez(tmp_path / "bad.npz", slide=np.zeros((3, 2)))
    res = CliRunner().invoke(_app(), ["--pairs", str(tmp_path / "bad.npz"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "lacks the array 'rna'" in res.output
    np.savez(
        tmp_path / "obj.npz",
        slide=np.zeros((3, 2)),
        rna=np.zeros((3, 2)),
        patient_ids=np.array(["a", None, "c"], dtype=object),
    )
    res = CliRunner().invoke(_app(), ["--pairs", str(tmp_path / "obj.npz"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "object arrays" in res.output
