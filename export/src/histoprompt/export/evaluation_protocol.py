"""The evaluation protocol: patient-level folds, alignment retrained inside every fold.

For each of `n_splits` folds of the training cohort (patients, never slides, are split):

* test   = the fold's patients: retrieval and every regression figure are computed on them;
* val    = a patient-level slice of the remaining patients: early stopping only;
* train  = the rest: alignment training, predictors, linear probe, CCA;
* reference_in    = train + val of the same cohort (the in-cohort Soft-kNN reference);
* reference_cross = every patient of the other cohorts (a reference built exclusively from
  other cohorts, as Winter et al. build theirs).

`check_fold` refuses a fold where any test patient reaches training, early stopping or a
reference, or where the retrieval set is not the test set; `run_folds` calls it on the ids
actually handed to each step (not on the plan), so a planted leak fails the run.
Soft-kNN runs at the served k and temperature (`SoftKnnConfig()`, what pathway_query uses).
Everything this module runs on in tests and benchmarks is SYNTHETIC.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from histoprompt.core.softknn import SoftKnnConfig
from histoprompt.export.alignment import AlignmentModel
from histoprompt.export.alignment_training import (
    PairedEmbeddings,
    TrainConfig,
    _intra_op_threads,
    split_by_patient,
    train_alignment,
)
from histoprompt.export.errors import ExportError

RETRIEVAL_KS = (1, 2, 5, 10)


class ProtocolLeakError(ExportError):
    """A test-fold patient reached training, early stopping or a reference."""


@dataclass(frozen=True)
class CohortEmbeddings:
    """Frozen-encoder outputs of one cohort: one bag per patient (its first slide)."""

    name: str
    patient_ids: list[str]
    bags: list[NDArray[Any]]  # float32 [N_i, D] tile embeddings
    rna: NDArray[Any]  # float32 [P, R] frozen RNA-encoder output
    targets: pd.DataFrame  # [P, K] Hallmark ssGSEA of the cohort's own expression
    expression: NDArray[Any]  # float32 [P, G] log1p(TPM)

    def rows(self, ids: Sequence[str]) -> NDArray[Any]:
        index = {p: i for i, p in enumerate(self.patient_ids)}
        return np.array([index[p] for p in ids], dtype=np.int64)

    def pooled(self) -> NDArray[Any]:
        """Mean tile embedding per patient (the frozen encoder's slide summary)."""
        return np.stack([b.mean(axis=0) for b in self.bags]).astype(np.float32)

    def paired(self, ids: Sequence[str]) -> PairedEmbeddings:
        r = self.rows(ids)
        return PairedEmbeddings(
            bags=[self.bags[i] for i in r],
            slide_patients=list(ids),
            patient_ids=list(ids),
            rna=self.rna[r],
        )


@dataclass
class FoldRecord:
    """The patient ids each step of one fold actually received."""

    fold: int
    test: set[str]
    train: set[str] = field(default_factory=set)
    val: set[str] = field(default_factory=set)
    reference_in: set[str] = field(default_factory=set)
    reference_cross: set[str] = field(default_factory=set)
    retrieval: set[str] = field(default_factory=set)
    predictor_train: set[str] = field(default_factory=set)


def check_fold(record: FoldRecord) -> None:
    """ProtocolLeakError unless the fold keeps its test patients out of everything fitted."""
    seen = {
        "alignment training": record.train,
        "early stopping": record.val,
        "in-cohort reference": record.reference_in,
        "cross-cohort reference": record.reference_cross,
        "predictor / probe training": record.predictor_train,
    }
    for step, ids in seen.items():
        leaked = record.test & ids
        if leaked:
            raise ProtocolLeakError(
                f"fold {record.fold}: {len(leaked)} test patient(s) reached {step}, "
                f"e.g. {sorted(leaked)[0]}"
            )
    if record.train & record.val:
        raise ProtocolLeakError(f"fold {record.fold}: early-stopping patients are also trained on")
    if record.retrieval != record.test:
        raise ProtocolLeakError(f"fold {record.fold}: the retrieval set is not the test fold")


def patient_folds(ids: Sequence[str], n_splits: int, seed: int) -> list[list[str]]:
    """`n_splits` disjoint patient folds covering every patient once (seeded shuffle)."""
    unique = sorted(set(ids))
    if len(unique) < 2 * n_splits:
        raise ExportError(f"{n_splits}-fold CV needs at least {2 * n_splits} patients")
    order = np.random.default_rng(seed).permutation(len(unique))
    return [sorted(unique[i] for i in order[f::n_splits]) for f in range(n_splits)]


@torch.no_grad()
def embed_aligned(
    model: AlignmentModel, cohort: CohortEmbeddings
) -> tuple[NDArray[Any], NDArray[Any]]:
    """Aligned (slide [P,E], rna [P,E]) of every patient of the cohort."""
    model.eval()
    with _intra_op_threads(1):  # tiny ops: threads only contend on shared CPUs
        slide = np.concatenate(
            [model.embed_slides(torch.from_numpy(b)[None], None)[0].numpy() for b in cohort.bags]
        )
        rna = model.embed_rna(torch.from_numpy(cohort.rna).float()).numpy()
    return slide, rna


def fit_fold_alignment(
    cohort: CohortEmbeddings, pool: Sequence[str], config: TrainConfig, record: FoldRecord
) -> AlignmentModel:
    """Train on `pool` (its own patient-level val split for early stopping); records both."""
    train, val = split_by_patient(list(pool), config.val_fraction, config.seed)
    record.train |= set(train)
    record.val |= set(val)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_alignment(
            cohort.paired(pool), config, Path(tmp), resume=False, progress=False
        )
    return result.model


def soft_knn(
    query: NDArray[Any],
    ref_emb: NDArray[Any],
    ref_scores: NDArray[Any],
    config: SoftKnnConfig | None = None,
) -> NDArray[Any]:
    """Soft-kNN predictions with the served settings (histoprompt.core.softknn.SoftKnn's rule)."""
    cfg = config or SoftKnnConfig()
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
    r = ref_emb / np.linalg.norm(ref_emb, axis=1, keepdims=True).clip(1e-12)
    sims = q @ r.T
    k = min(cfg.k, r.shape[0])
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(sims, idx, axis=1).astype(np.float64)
    w = np.exp((top - top.max(axis=1, keepdims=True)) / cfg.temperature)
    w /= w.sum(axis=1, keepdims=True)
    out: NDArray[Any] = np.einsum("tk,tkj->tj", w, ref_scores[idx])
    return out


def recall_curve(
    queries: NDArray[Any], gallery: NDArray[Any], ks: Sequence[int] = RETRIEVAL_KS
) -> dict[int, float]:
    from histoprompt.core.evaluation_metrics import recall_at_k

    return recall_at_k(queries, gallery, ks)


def fixed_projection(dim_in: int, dim_out: int, seed: int = 0) -> NDArray[Any]:
    """A fixed (never fitted) Gaussian projection, for cosine between unequal widths."""
    rng = np.random.default_rng(seed)
    out: NDArray[Any] = rng.normal(size=(dim_in, dim_out)) / np.sqrt(dim_out)
    return out


@dataclass(frozen=True)
class FoldOutput:
    retrieval: pd.DataFrame  # fold, method, direction, k, recall, chance
    predictions: dict[str, NDArray[Any]]  # method -> [n_test, K]
    test_rows: NDArray[Any]
    fewshot: pd.DataFrame


Step = Callable[[FoldRecord], None]


def run_fold(
    fold: int,
    main: CohortEmbeddings,
    others: Sequence[CohortEmbeddings],
    test_ids: Sequence[str],
    config: TrainConfig,
    *,
    tamper: Step | None = None,
) -> tuple[FoldOutput, FoldRecord]:
    """One fold: train inside it, check the ids each step received, evaluate on its test."""
    from histoprompt.export.evaluation_baselines import fold_baselines, fold_methods

    record = FoldRecord(fold=fold, test=set(test_ids))
    pool = [p for p in main.patient_ids if p not in record.test]
    if tamper is not None:  # tests plant leaks here
        tamper(record)
        pool = sorted(set(pool) | record.train)
    model = fit_fold_alignment(main, pool, config, record)
    record.reference_in |= set(pool)
    record.predictor_train |= set(pool)
    record.reference_cross |= {p for o in others for p in o.patient_ids}
    record.retrieval |= set(test_ids)
    check_fold(record)
    test_rows, pool_rows = main.rows(test_ids), main.rows(pool)
    retrieval, predictions, fewshot = fold_methods(model, main, others, pool_rows, test_rows)
    base_retrieval, base_predictions = fold_baselines(main, pool_rows, test_rows, config, record)
    check_fold(record)  # the ablation's own training and early stopping too
    retrieval = pd.concat([retrieval, base_retrieval], ignore_index=True)
    retrieval.insert(0, "fold", fold)
    fewshot.insert(0, "fold", fold)
    return FoldOutput(retrieval, {**predictions, **base_predictions}, test_rows, fewshot), record


@dataclass(frozen=True)
class ProtocolResult:
    retrieval: pd.DataFrame  # per fold, method, direction, k
    pathways: pd.DataFrame  # per fold, method, gene_set: r2 (test fold only)
    oof: dict[str, NDArray[Any]]  # method -> out-of-fold predictions [P, K]
    targets: pd.DataFrame
    fewshot: pd.DataFrame
    records: list[FoldRecord]


def run_folds(
    main: CohortEmbeddings,
    others: Sequence[CohortEmbeddings],
    config: TrainConfig,
    *,
    n_splits: int = 5,
    tamper: Step | None = None,
) -> ProtocolResult:
    """Every fold of the protocol; out-of-fold predictions are assembled from test folds only."""
    from histoprompt.core.evaluation_metrics import regression_metrics

    folds = patient_folds(main.patient_ids, n_splits, config.seed)
    retrieval, pathways, fewshot, records = [], [], [], []
    oof: dict[str, NDArray[Any]] = {}
    for f, test_ids in enumerate(folds):
        out, record = run_fold(f, main, others, test_ids, config, tamper=tamper)
        records.append(record)
        retrieval.append(out.retrieval)
        fewshot.append(out.fewshot)
        truth = main.targets.iloc[out.test_rows].reset_index(drop=True)
        for method, pred in out.predictions.items():
            oof.setdefault(method, np.full(main.targets.shape, np.nan))[out.test_rows] = pred
            table = regression_metrics(truth, pred)
            table.insert(0, "method", method)
            table.insert(0, "fold", f)
            pathways.append(table)
    return ProtocolResult(
        retrieval=pd.concat(retrieval, ignore_index=True),
        pathways=pd.concat(pathways, ignore_index=True),
        oof=oof,
        targets=main.targets,
        fewshot=pd.concat(fewshot, ignore_index=True),
        records=records,
    )
