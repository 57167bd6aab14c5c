"""The evaluation protocol on small SYNTHETIC data: folds by patient, alignment retrained per
fold, no test patient reaches training, early stopping or a reference; a planted leak fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoprompt.export.alignment_training import TrainConfig
from histoprompt.export.cohort import PROGRAMS, CohortConfig
from histoprompt.export.evaluation_protocol import (
    CohortEmbeddings,
    FoldRecord,
    ProtocolLeakError,
    check_fold,
    patient_folds,
    run_folds,
)

TRAIN = TrainConfig(epochs=2, hidden=16, attn_dim=8, aligned_dim=8, batch_size=8, seed=0)
SETS = [h for p in PROGRAMS for h in p.hallmarks] + ["HALLMARK_APOPTOSIS"]


def _cohort(name: str, n: int, seed: int) -> CohortEmbeddings:
    """SYNTHETIC random embeddings with a shared latent, so every step has signal to fit."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    bags = [
        (z[i] @ rng.normal(size=(3, 12)) + rng.normal(size=(5, 12))).astype(np.float32)
        for i in range(n)
    ]
    rna = (z @ rng.normal(size=(3, 10)) + 0.3 * rng.normal(size=(n, 10))).astype(np.float32)
    targets = pd.DataFrame(z @ rng.normal(size=(3, len(SETS))), columns=SETS)
    expression = (z @ rng.normal(size=(3, 20)) + rng.normal(size=(n, 20))).astype(np.float32)
    ids = [f"SYN-{name}-{i:05d}" for i in range(n)]
    return CohortEmbeddings(name, ids, bags, rna, targets, expression)


def test_folds_cover_every_patient_once() -> None:
    ids = [f"SYN-{i}" for i in range(23)]
    folds = patient_folds(ids, 5, seed=0)
    flat = [p for f in folds for p in f]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))


def test_no_test_patient_reaches_training_early_stopping_or_reference() -> None:
    main, other = _cohort("A", 18, 0), _cohort("B", 8, 1)
    res = run_folds(main, [other], TRAIN, n_splits=3)
    assert len(res.records) == 3
    assert set().union(*(r.test for r in res.records)) == set(main.patient_ids)
    for r in res.records:
        fitted = r.train | r.val | r.reference_in | r.reference_cross | r.predictor_train
        assert not r.test & fitted
        assert r.retrieval == r.test and r.val and r.train and not r.train & r.val
        assert r.reference_cross == set(other.patient_ids)
    # every method predicted every patient exactly once, from the fold it was tested in
    assert all(not np.isnan(pred).any() for pred in res.oof.values())
    assert {"aligned", "zero_shot", "cca", "linear_probe", "no_rna_encoder"} <= set(
        res.retrieval["method"]
    )
    assert {"soft_knn_in_cohort", "soft_knn_cross_cohort", "mlp", "linear_probe"} <= set(
        res.pathways["method"]
    )
    assert set(res.fewshot["k"]) <= {1, 2, 4, 8}


def test_a_planted_leak_fails_the_run() -> None:
    main = _cohort("A", 24, 2)

    def leak(record: FoldRecord) -> None:  # one test patient slips into the training pool
        record.train.add(sorted(record.test)[0])

    with pytest.raises(ProtocolLeakError, match="test patient"):
        run_folds(main, [], TRAIN, n_splits=3, tamper=leak)


@pytest.mark.parametrize(
    "field", ["train", "val", "reference_in", "reference_cross", "predictor_train"]
)
def test_check_fold_names_every_leak(field: str) -> None:
    record = FoldRecord(fold=0, test={"SYN-1", "SYN-2"}, train={"SYN-3"}, val={"SYN-4"})
    record.retrieval = set(record.test)
    check_fold(record)
    getattr(record, field).add("SYN-2")
    with pytest.raises(ProtocolLeakError):
        check_fold(record)


def test_retrieval_set_must_be_the_test_fold() -> None:
    record = FoldRecord(fold=0, test={"SYN-1", "SYN-2"}, train={"SYN-3"}, val={"SYN-4"})
    record.retrieval = {"SYN-4"}  # the early-stopping set used as "held out"
    with pytest.raises(ProtocolLeakError, match="retrieval"):
        check_fold(record)


def test_site_cohorts_share_biology_but_not_batch() -> None:
    from histoprompt.export.cohort_sites import make_site_cohorts

    cfg = CohortConfig(n_patients=12, min_tiles=2, max_tiles=3, seed=5)
    a, b = make_site_cohorts(cfg, 2, sizes=(6, 6))
    assert a.patient_ids[0] == "SYN-A-00000" and b.patient_ids[0] == "SYN-B-00000"
    assert not set(a.patient_ids) & set(b.patient_ids)
    assert a.genes == b.genes and a.expression.shape == b.expression.shape == (6, len(a.genes))
    # site A is the reference frame (no effect); site B's stain differs from its renderer's
    raw = [s.tiles for s in make_site_cohorts(cfg, 1, sizes=(12,))[0].slides]
    assert np.array_equal(a.slides[0].tiles, raw[0])
    assert not np.array_equal(b.slides[0].tiles, raw[len(a.slides)])


def test_report_writes_markdown_and_plots_from_held_out_figures(tmp_path: Path) -> None:
    from histoprompt.export.evaluation_curves import adaptation_curve, overall_model
    from histoprompt.export.protocol_report import (
        ProtocolReport,
        ProtocolSettings,
        bootstrap_median_r2,
        planted_table,
        retrieval_summary,
        wilcoxon_tests,
        write_protocol_report,
    )

    sites = [_cohort("A", 40, 3), _cohort("B", 12, 4), _cohort("C", 12, 5)]
    res = run_folds(sites[0], sites[1:], TRAIN, n_splits=2)
    model, _ = overall_model(sites[0], TRAIN)
    adapt_ret, adapt_r2 = adaptation_curve(model, sites[:2], sites[2], TRAIN, fractions=(0, 1))
    r2 = res.pathways.groupby(["gene_set", "method"])["r2"].mean().unstack()
    sd = res.pathways.groupby(["gene_set", "method"])["r2"].std().unstack()
    settings = ProtocolSettings(sizes=(40, 12, 12), n_splits=2, n_boot=20)
    rep = ProtocolReport(
        result=res,
        retrieval=retrieval_summary(res.retrieval),
        r2=r2,
        r2_sd=sd,
        planted=planted_table(r2, sd),
        tests=wilcoxon_tests(res),
        boot=bootstrap_median_r2(res, settings.n_boot, 0),
        adapt_retrieval=adapt_ret,
        adapt_r2=adapt_r2,
        sites=sites,
        seconds={"folds": 0.0},
        train=TRAIN,
    )
    files = write_protocol_report(rep, settings, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert text.startswith("# SYNTHETIC") and "No-leak check passed on 2 folds" in text
    assert all(f.is_file() and f.stat().st_size > 0 for f in files)
    assert {f.name for f in files} >= {"retrieval_vs_k.png", "embeddings_umap.png"}
    assert set(adapt_ret["fraction"]) == {0, 1}
    # the planted table reads the aligned methods only, never the baselines
    assert set(rep.planted["best_method"]) <= {
        "soft_knn_in_cohort", "soft_knn_cross_cohort", "ridge", "mlp"
    }  # fmt: skip
