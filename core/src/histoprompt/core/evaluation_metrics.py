"""Evaluation on paired slide / RNA embeddings: retrieval and pathway regression (numbers only).

* Retrieval: Recall@k of slide -> RNA and RNA -> slide (item i's match is item i), against
  chance (k / N) and against an unaligned baseline; the aligned / baseline ratio is the
  seed paper's "retrieval gain".
* Pathways: per-set R^2, Pearson and Spearman of out-of-fold predictions, 5-fold CV split
  by patient, for Soft-kNN (reference = the training folds' RNA embeddings and scores, at the
  served k and temperature, `SoftKnnConfig()`) and the trained predictors.

Plotting and file formats live in `histoprompt.export.evaluation_report`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy.stats import pearsonr, spearmanr

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.predictors import PredictorConfig, cross_validated_predictions
from histoprompt.core.softknn import SoftKnnConfig, unit_rows

__all__ = [
    "DEFAULT_KS",
    "SyntheticPairs",
    "pathway_cv_table",
    "recall_at_k",
    "regression_metrics",
    "retrieval_table",
    "softknn_cv_predictions",
    "synthetic_pairs",
]

DEFAULT_KS = (1, 5, 10)
# Soft-kNN is evaluated at the settings pathway_query serves (one config for both).
SERVED = SoftKnnConfig()


def _pair_check(a: NDArray[Any], b: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    if a.shape[0] != b.shape[0]:
        raise InvalidInputError(f"{a.shape[0]} slide embeddings but {b.shape[0]} RNA embeddings")
    return unit_rows(a), unit_rows(b)


def recall_at_k(
    queries: NDArray[Any], gallery: NDArray[Any], ks: Sequence[int] = DEFAULT_KS
) -> dict[int, float]:
    """Fraction of queries whose own pair (same row) is among the k most cosine-similar."""
    q, g = _pair_check(queries, gallery)
    sims = q @ g.T
    own = np.diag(sims)
    # rank of the true match: how many gallery items beat it (ties count against us)
    rank = (sims > own[:, None]).sum(axis=1) + ((sims == own[:, None]).sum(axis=1) - 1)
    return {int(k): float((rank < k).mean()) for k in ks}


def retrieval_table(
    slide: NDArray[Any],
    rna: NDArray[Any],
    *,
    baseline_slide: NDArray[Any] | None = None,
    baseline_rna: NDArray[Any] | None = None,
    ks: Sequence[int] = DEFAULT_KS,
) -> pd.DataFrame:
    """One row per direction and k: recall, chance, baseline recall and both gains."""
    n = slide.shape[0]
    rows = []
    for direction, (a, b), base in (
        ("slide->rna", (slide, rna), (baseline_slide, baseline_rna)),
        ("rna->slide", (rna, slide), (baseline_rna, baseline_slide)),
    ):
        aligned = recall_at_k(a, b, ks)
        baseline = (
            recall_at_k(base[0], base[1], ks)
            if base[0] is not None and base[1] is not None
            else None
        )
        for k in ks:
            chance = min(1.0, k / n)
            b_rec = baseline[k] if baseline is not None else float("nan")
            rows.append(
                {
                    "direction": direction,
                    "k": k,
                    "n": n,
                    "recall": aligned[k],
                    "random": chance,
                    "baseline": b_rec,
                    "gain_vs_random": aligned[k] / chance,
                    "gain_vs_baseline": aligned[k] / b_rec if b_rec > 0 else float("nan"),
                }
            )
    return pd.DataFrame(rows)


def regression_metrics(y_true: pd.DataFrame, y_pred: NDArray[Any]) -> pd.DataFrame:
    """Per column of `y_true`: R^2 (1 - SSE/SST), Pearson r and Spearman rho."""
    pred = np.asarray(y_pred, dtype=np.float64)
    if pred.shape != y_true.shape:
        raise InvalidInputError(f"predictions {pred.shape} vs targets {y_true.shape}")
    rows = []
    for j, name in enumerate(y_true.columns):
        t = y_true.iloc[:, j].to_numpy(np.float64)
        p = pred[:, j]
        sst = float(((t - t.mean()) ** 2).sum())
        r2 = 1.0 - float(((t - p) ** 2).sum()) / sst if sst > 0 else float("nan")
        flat = np.ptp(p) == 0 or np.ptp(t) == 0
        rows.append(
            {
                "gene_set": str(name),
                "r2": r2,
                "pearson": float("nan") if flat else float(pearsonr(t, p)[0]),
                "spearman": float("nan") if flat else float(spearmanr(t, p)[0]),
            }
        )
    return pd.DataFrame(rows)


def softknn_cv_predictions(
    slide: NDArray[Any],
    rna: NDArray[Any],
    targets: pd.DataFrame,
    groups: Sequence[str],
    *,
    k: int = SERVED.k,
    temperature: float = SERVED.temperature,
    n_splits: int = 5,
) -> NDArray[Any]:
    """Out-of-fold Soft-kNN: test slides query the training folds' RNA embeddings/scores."""
    from sklearn.model_selection import GroupKFold

    s, r = _pair_check(slide, rna)
    y = targets.to_numpy(np.float64)
    g = np.asarray([str(x) for x in groups])
    if np.unique(g).size < n_splits:
        raise InvalidInputError(f"{n_splits}-fold CV needs {n_splits} patients")
    out = np.empty(y.shape, dtype=np.float64)
    for train, test in GroupKFold(n_splits=n_splits).split(s, groups=g):
        sims = s[test] @ r[train].T
        kk = min(k, train.size)
        idx = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        top = np.take_along_axis(sims, idx, axis=1)
        w = np.exp((top - top.max(axis=1, keepdims=True)) / temperature)
        w /= w.sum(axis=1, keepdims=True)
        out[test] = np.einsum("tk,tkj->tj", w, y[train][idx])
    return out


def pathway_cv_table(
    slide: NDArray[Any],
    rna: NDArray[Any],
    targets: pd.DataFrame,
    groups: Sequence[str],
    *,
    methods: Sequence[str] = ("soft_knn", "ridge", "mlp"),
    n_splits: int = 5,
    k: int = SERVED.k,
    temperature: float = SERVED.temperature,
) -> pd.DataFrame:
    """Long table: gene_set, method, r2, pearson, spearman (5-fold CV by patient)."""
    frames = []
    for method in methods:
        if method == "soft_knn":
            pred = softknn_cv_predictions(
                slide, rna, targets, groups, k=k, temperature=temperature, n_splits=n_splits
            )
        elif method in ("ridge", "mlp"):
            kind: Literal["ridge", "mlp"] = "ridge" if method == "ridge" else "mlp"
            pred = cross_validated_predictions(
                slide, targets, groups, PredictorConfig(kind=kind), n_splits=n_splits
            )
        else:
            raise InvalidInputError(f"unknown method {method!r}: soft_knn, ridge or mlp")
        table = regression_metrics(targets, pred)
        table.insert(1, "method", method)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


# -- SYNTHETIC pairs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SyntheticPairs:
    """SYNTHETIC paired embeddings (held-out patients) plus their Hallmark ssGSEA targets."""

    slide: NDArray[Any]  # aligned [N, E]
    rna: NDArray[Any]  # aligned [N, E]
    baseline_slide: NDArray[Any]  # unaligned (random projections) [N, E]
    baseline_rna: NDArray[Any]
    patient_ids: tuple[str, ...]
    targets: pd.DataFrame  # [N, K] raw ssGSEA of the RNA side
    visible_programs: tuple[str, ...]  # Hallmark sets whose latent shows in "morphology"


def synthetic_pairs(
    n_patients: int = 400,
    *,
    embed_dim: int = 32,
    n_programs: int = 6,
    n_visible: int = 4,
    seed: int = 0,
) -> SyntheticPairs:
    """SYNTHETIC slide/RNA pairs with a linear alignment (CCA) fitted on half the patients.

    Latent programs drive Hallmark genes in the expression; "slide features" see only the
    first `n_visible` programs (the rest have no morphological footprint, as in the paper).
    The aligned embeddings come from CCA fitted on the first half of the patients and are
    returned for the second half; the unaligned baseline projects each modality with its
    own random matrix (what an untrained head does).
    """
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    from histoprompt.core.genesets import load_hallmark
    from histoprompt.core.reference_synthetic import synthetic_reference_inputs
    from histoprompt.core.ssgsea import ssgsea_frame

    rng = np.random.default_rng(seed)
    inputs = synthetic_reference_inputs(n_patients, n_genes=3000, n_programs=n_programs, seed=seed)
    latents = inputs.latents
    visible = latents[:, :n_visible]
    mix = rng.normal(size=(n_visible, 128))
    slide_raw = visible @ mix + 0.5 * rng.normal(size=(n_patients, 128))
    rna_raw = PCA(n_components=64, random_state=seed).fit_transform(inputs.expression.to_numpy())
    half = n_patients // 2
    cca = CCA(n_components=min(embed_dim, n_visible + 2), max_iter=1000)
    cca.fit(slide_raw[:half], rna_raw[:half])
    s_al, r_al = cca.transform(slide_raw[half:], rna_raw[half:])
    base_s = slide_raw[half:] @ rng.normal(size=(128, embed_dim))
    base_r = rna_raw[half:] @ rng.normal(size=(64, embed_dim))
    hallmark = load_hallmark()
    targets = ssgsea_frame(
        inputs.expression.iloc[half:], {n: hallmark[n].genes for n in hallmark}, min_size=5
    )
    return SyntheticPairs(
        slide=np.asarray(s_al, dtype=np.float32),
        rna=np.asarray(r_al, dtype=np.float32),
        baseline_slide=base_s.astype(np.float32),
        baseline_rna=base_r.astype(np.float32),
        patient_ids=tuple(inputs.metadata["patient_id"].iloc[half:]),
        targets=targets.reset_index(drop=True),
        visible_programs=inputs.program_sets[:n_visible],
    )
