"""What one protocol fold computes: the aligned model's figures and the papers' baselines.

Aligned model (alignment trained inside the fold):
  retrieval (slide <-> RNA, Recall@k), Soft-kNN with an in-cohort and a cross-cohort
  reference at the served k / temperature, trained ridge and MLP predictors, and THREADS-style
  few-shot prototype classification (k = 1, 2, 4, 8 labelled patients per class).
Baselines (fitted on the fold's training patients only, never on its test patients):
  * zero_shot: the frozen encoders, no alignment; the tile and RNA widths differ, so both go
    through one fixed (never fitted) Gaussian projection before cosine similarity;
  * cca: canonical correlation analysis between mean-pooled tile and RNA embeddings (each
    reduced to its top 16 principal components first), a linear alignment;
  * linear_probe: ridge from the mean-pooled tile embeddings to the ssGSEA scores (image
    encoder only); for retrieval its predicted pathway profile is matched to the RNA's;
  * no_rna_encoder: single-encoder ablation, the same alignment trained with the expression's
    PCA (fitted on the training patients) in place of the frozen RNA encoder;
  * ridge_unwhitened_tiles: ablation of the input whitening, the alignment trained on the raw
    tile embeddings (`whiten_tiles=False`), then the same ridge predictor.
Chance is reported separately (k / n).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histoprompt.export.alignment import AlignmentModel
from histoprompt.export.alignment_training import TrainConfig
from histoprompt.export.evaluation_protocol import (
    RETRIEVAL_KS,
    CohortEmbeddings,
    FoldRecord,
    embed_aligned,
    fit_fold_alignment,
    fixed_projection,
    recall_curve,
    soft_knn,
)

FEW_SHOT_KS = (1, 2, 4, 8)
CCA_PCS = 16  # principal components per side before CCA
CCA_COMPONENTS = 8
FEW_SHOT_DRAWS = 20


def retrieval_rows(method: str, slide: NDArray[Any], rna: NDArray[Any]) -> list[dict[str, Any]]:
    n = slide.shape[0]
    rows = []
    for direction, (a, b) in (("slide->rna", (slide, rna)), ("rna->slide", (rna, slide))):
        for k, value in recall_curve(a, b, RETRIEVAL_KS).items():
            rows.append(
                {
                    "method": method,
                    "direction": direction,
                    "k": k,
                    "n": n,
                    "recall": value,
                    "chance": min(1.0, k / n),
                }
            )
    return rows


def _standardise(x: NDArray[Any], fit_rows: NDArray[Any]) -> NDArray[Any]:
    mu, sd = x[fit_rows].mean(axis=0), x[fit_rows].std(axis=0)
    out: NDArray[Any] = (x - mu) / np.where(sd > 0, sd, 1.0)
    return out


def fewshot_table(
    embeddings: dict[str, NDArray[Any]],
    targets: pd.DataFrame,
    pool: NDArray[Any],
    test: NDArray[Any],
    seed: int,
) -> pd.DataFrame:
    """Balanced accuracy of prototype classification (THREADS' molecular prompting with
    prototypes): per planted program, class = its first linked Hallmark above the training
    patients' median; prototypes = mean embedding of k labelled training patients per class;
    a test patient takes the class of the most cosine-similar prototype."""
    from histoprompt.export.cohort import PROGRAMS

    rng = np.random.default_rng(seed)
    rows = []
    for prog in PROGRAMS:
        y = targets[prog.hallmarks[0]].to_numpy()
        label = (y > np.median(y[pool])).astype(int)
        classes = [pool[label[pool] == c] for c in (0, 1)]
        for k in FEW_SHOT_KS:
            if min(len(c) for c in classes) < k:
                continue
            draws = [
                [rng.choice(c, size=k, replace=False) for c in classes]
                for _ in range(FEW_SHOT_DRAWS)
            ]
            for method, emb in embeddings.items():
                unit = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
                accs = []
                for support in draws:
                    protos = np.stack([unit[s].mean(axis=0) for s in support])
                    pred = np.argmax(unit[test] @ protos.T, axis=1)
                    truth = label[test]
                    present = [c for c in (0, 1) if (truth == c).any()]
                    accs.append(np.mean([(pred[truth == c] == c).mean() for c in present]))
                rows.append(
                    {
                        "method": method,
                        "program": prog.name,
                        "k": k,
                        "bal_acc": float(np.mean(accs)),
                    }
                )
    return pd.DataFrame(rows)


def fold_methods(
    model: AlignmentModel,
    main: CohortEmbeddings,
    others: Sequence[CohortEmbeddings],
    pool: NDArray[Any],
    test: NDArray[Any],
) -> tuple[pd.DataFrame, dict[str, NDArray[Any]], pd.DataFrame]:
    """The aligned model's retrieval, pathway predictions and few-shot table on `test`."""
    from histoprompt.core.predictors import PredictorConfig, TrainedPredictor

    slide, rna = embed_aligned(model, main)
    y = main.targets.to_numpy(np.float64)
    retrieval = pd.DataFrame(retrieval_rows("aligned", slide[test], rna[test]))
    preds: dict[str, NDArray[Any]] = {
        "soft_knn_in_cohort": soft_knn(slide[test], rna[pool], y[pool]),
    }
    if others:
        cross_emb = np.concatenate([embed_aligned(model, o)[1] for o in others])
        cross_y = np.concatenate([o.targets[main.targets.columns].to_numpy() for o in others])
        preds["soft_knn_cross_cohort"] = soft_knn(slide[test], cross_emb, cross_y)
    train_targets = main.targets.iloc[pool].reset_index(drop=True)
    for kind in ("ridge", "mlp"):
        cfg = PredictorConfig(kind="ridge" if kind == "ridge" else "mlp")
        preds[kind] = TrainedPredictor.fit(slide[pool], train_targets, cfg).predict_all(slide[test])
    fewshot = fewshot_table(
        {"aligned": slide, "frozen_mean_pool": _standardise(main.pooled(), pool)},
        main.targets,
        pool,
        test,
        seed=int(test[0]),
    )
    return retrieval, preds, fewshot


def _ridge(x: NDArray[Any], y: NDArray[Any], fit: NDArray[Any], out: NDArray[Any]) -> NDArray[Any]:
    from sklearn.linear_model import RidgeCV

    xs = _standardise(x, fit)
    probe = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(xs[fit], y[fit])
    pred: NDArray[Any] = probe.predict(xs[out])
    return pred


def unwhitened_ridge(
    main: CohortEmbeddings,
    pool: NDArray[Any],
    test: NDArray[Any],
    config: TrainConfig,
    record: FoldRecord,
) -> NDArray[Any]:
    """Ridge on the slide embeddings of an alignment trained without input whitening."""
    from histoprompt.core.predictors import PredictorConfig, TrainedPredictor

    raw = config.model_copy(update={"whiten_tiles": False})
    model = fit_fold_alignment(main, [main.patient_ids[i] for i in pool], raw, record)
    slide, _ = embed_aligned(model, main)
    targets = main.targets.iloc[pool].reset_index(drop=True)
    fitted = TrainedPredictor.fit(slide[pool], targets, PredictorConfig(kind="ridge"))
    pred: NDArray[Any] = fitted.predict_all(slide[test])
    return pred


def fold_baselines(
    main: CohortEmbeddings,
    pool: NDArray[Any],
    test: NDArray[Any],
    config: TrainConfig,
    record: FoldRecord,
) -> tuple[pd.DataFrame, dict[str, NDArray[Any]]]:
    """zero_shot, cca, linear_probe and no_rna_encoder on the fold's test patients."""
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA

    pooled, rna = main.pooled(), main.rna
    y = main.targets.to_numpy(np.float64)
    rows: list[dict[str, Any]] = []
    width = min(pooled.shape[1], rna.shape[1])
    zs_img = _standardise(pooled, pool) @ fixed_projection(pooled.shape[1], width, seed=1)
    zs_rna = _standardise(rna, pool) @ fixed_projection(rna.shape[1], width, seed=2)
    rows += retrieval_rows("zero_shot", zs_img[test], zs_rna[test])
    # CCA on each side's top principal components (fitted on the training patients): CCA on
    # the raw widths (192 and 128 against ~190 patients) fits noise and retrieves at chance.
    n_pc = min(CCA_PCS, len(pool) - 1, width)
    img_pc = PCA(n_components=n_pc, random_state=0).fit(_standardise(pooled, pool)[pool])
    rna_pc = PCA(n_components=n_pc, random_state=0).fit(_standardise(rna, pool)[pool])
    a = img_pc.transform(_standardise(pooled, pool))
    b = rna_pc.transform(_standardise(rna, pool))
    cca = CCA(n_components=min(CCA_COMPONENTS, n_pc), max_iter=1000).fit(a[pool], b[pool])
    c_img, c_rna = cca.transform(a[test], b[test])
    rows += retrieval_rows("cca", c_img, c_rna)
    probe = _ridge(pooled, y, pool, test)
    y_std = _standardise(y, pool)
    probe_std = (probe - y[pool].mean(axis=0)) / np.where(
        y[pool].std(axis=0) > 0, y[pool].std(0), 1
    )
    rows += retrieval_rows("linear_probe", probe_std, y_std[test])
    pca = PCA(n_components=min(64, len(pool) - 1, main.expression.shape[1]), random_state=0).fit(
        main.expression[pool]
    )
    ablated = replace(main, rna=pca.transform(main.expression).astype(np.float32))
    pool_ids = [main.patient_ids[i] for i in pool]
    model = fit_fold_alignment(ablated, pool_ids, config, record)
    a_slide, a_rna = embed_aligned(model, ablated)
    rows += retrieval_rows("no_rna_encoder", a_slide[test], a_rna[test])
    preds = {
        "linear_probe": probe,
        "no_rna_encoder_soft_knn": soft_knn(a_slide[test], a_rna[pool], y[pool]),
        "ridge_unwhitened_tiles": unwhitened_ridge(main, pool, test, config, record),
    }
    return pd.DataFrame(rows), preds
