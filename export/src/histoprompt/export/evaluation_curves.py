"""SYNTHETIC site cohorts for the protocol, and the domain-adaptation curve.

Domain adaptation (Winter et al., Fig. 4): the alignment trained on the training cohort is
warm-started on a fraction F of a new cohort's adaptation half (`finetune_alignment`, fixed
epochs, no early stopping so no patient is used for model selection) and evaluated on the
new cohort's other half: Recall@k, and per-Hallmark R2 of Soft-kNN (served k) whose reference
is the other cohorts plus the F used for fine-tuning. Fraction 0 is the model as trained.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from histoprompt.export.alignment import AlignmentModel
from histoprompt.export.alignment_training import (
    PairedEmbeddings,
    TrainConfig,
    _intra_op_threads,
    _Split,
    _train_epoch,
)
from histoprompt.export.cohort import CohortConfig
from histoprompt.export.evaluation_protocol import CohortEmbeddings, embed_aligned, soft_knn

FRACTIONS = (0.0, 0.05, 0.10, 0.25, 0.50, 1.0)


def site_embeddings(
    config: CohortConfig,
    n_sites: int,
    cache_dir: Path,
    *,
    encoder_name: str = "tiny",
    seed: int = 0,
    strength: float = 1.0,
    sizes: tuple[int, ...] | None = None,
) -> list[CohortEmbeddings]:
    """SYNTHETIC site cohorts through the frozen (UNTRAINED demo) tile and RNA encoders."""
    from histoprompt.export.cohort_sites import make_site_cohorts
    from histoprompt.export.embedding import cached_slide_embeddings, embed_expression
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.evaluation_report import _cohort_hallmark_targets
    from histoprompt.export.rna import fit_contract, small_rna_encoder

    cohorts = make_site_cohorts(config, n_sites, strength, sizes)
    encoder = load_encoder(encoder_name, seed=seed)
    # Imputation means only (no gene is missing in the SYNTHETIC cohorts): no fitted statistic.
    contract = fit_contract(cohorts[0].genes, cohorts[0].expression)
    rna_encoder = small_rna_encoder(contract, seed=seed, embed_dim=128)
    out = []
    for name, cohort in zip("ABCDEF", cohorts, strict=False):
        first: dict[str, Any] = {}
        for s in cohort.slides:
            first.setdefault(s.patient_id, s)
        bags = cached_slide_embeddings(
            encoder, [(s.slide_id, s.tiles) for s in first.values()], cache_dir
        )
        aligned = contract.align(cohort.expression, cohort.genes).values
        ids = list(cohort.patient_ids)
        out.append(
            CohortEmbeddings(
                name=name,
                patient_ids=ids,
                bags=bags,
                rna=embed_expression(rna_encoder, aligned),
                targets=_cohort_hallmark_targets(cohort, ids),
                expression=cohort.expression,
            )
        )
    return out


def finetune_alignment(
    model: AlignmentModel,
    data: PairedEmbeddings,
    config: TrainConfig,
    *,
    epochs: int = 20,
    lr: float = 5e-4,
) -> AlignmentModel:
    """A copy of `model` trained `epochs` more on every patient of `data` (warm start)."""
    tuned = copy.deepcopy(model)
    if len(data.patient_ids) < 2:
        return tuned.eval()
    split = _Split(data, list(data.patient_ids))
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    with _intra_op_threads(config.threads):
        for _ in range(epochs):
            _train_epoch(tuned, opt, split, config, gen)
    return tuned.eval()


def adaptation_curve(
    model: AlignmentModel,
    sources: Sequence[CohortEmbeddings],
    new: CohortEmbeddings,
    config: TrainConfig,
    *,
    fractions: Sequence[float] = FRACTIONS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(retrieval rows per fraction, per-Hallmark R2 rows per fraction) on the new cohort's
    held-out half; the adaptation half is drawn in one seeded order, so F grows by adding."""
    from histoprompt.core.evaluation_metrics import recall_at_k, regression_metrics

    order = np.random.default_rng(config.seed + 1).permutation(len(new.patient_ids))
    half = len(order) // 2
    adapt, test = order[:half], np.sort(order[half:])
    truth = new.targets.iloc[test].reset_index(drop=True)
    y_new = new.targets.to_numpy(np.float64)
    retrieval, pathways = [], []
    for f in fractions:
        used = np.sort(adapt[: int(round(f * half))])
        ids = [new.patient_ids[i] for i in used]
        tuned = finetune_alignment(model, new.paired(ids), config) if len(ids) >= 2 else model
        slide, rna = embed_aligned(tuned, new)
        src = [embed_aligned(tuned, s)[1] for s in sources]
        ref_emb = np.concatenate([*src, rna[used]])
        ref_y = np.concatenate(
            [*(s.targets[new.targets.columns].to_numpy() for s in sources), y_new[used]]
        )
        for k, v in recall_at_k(slide[test], rna[test], (1, 5, 10)).items():
            retrieval.append({"fraction": f, "n_finetune": len(ids), "k": k, "recall": v})
        table = regression_metrics(truth, soft_knn(slide[test], ref_emb, ref_y))
        table.insert(0, "fraction", f)
        pathways.append(table)
    return pd.DataFrame(retrieval), pd.concat(pathways, ignore_index=True)


def overall_model(
    main: CohortEmbeddings, config: TrainConfig
) -> tuple[AlignmentModel, NDArray[Any]]:
    """The training cohort's alignment (all its patients, own val split for early stopping)."""
    from histoprompt.export.evaluation_protocol import FoldRecord, fit_fold_alignment

    record = FoldRecord(fold=-1, test=set())
    model = fit_fold_alignment(main, main.patient_ids, config, record)
    return model, np.array(sorted(record.val))
