"""The served predictor: per-gene-set ridge and MLP heads on the aligned slide embedding.

Both kinds (histoprompt.core.predictors) are fitted on every target set; per set the kind
with the better out-of-fold R² (GroupKFold by patient) is kept, and both are refitted on
all slides. The kept heads are exported as one ONNX graph, SLIDE_EMBEDDING [B, E] ->
SCORES [B, K], parity-checked against ONNX Runtime, and described by `predictor.json`
(histoprompt.serving.predictor.PredictorManifest), which pathway_query reads to serve
method `predictor`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn

from histoprompt.core import names
from histoprompt.core.predictors import (
    PredictorConfig,
    TrainedPredictor,
    cross_validated_predictions,
)
from histoprompt.export.errors import ParityError, TrainingError
from histoprompt.export.onnx_export import ParityRecord, check_parity, export_onnx
from histoprompt.serving.predictor import (
    PREDICTOR_JSON,
    PREDICTOR_ONNX,
    PredictorHead,
    PredictorManifest,
)

MODEL_NAME = "predictor"
TARGETS = "raw Hallmark ssGSEA scores of the paired bulk RNA (histoprompt.core.ssgsea)"


def _dense(weights: Sequence[NDArray[Any]], biases: Sequence[NDArray[Any]]) -> nn.ModuleList:
    layers = nn.ModuleList()
    for w, b in zip(weights, biases, strict=True):
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.T, dtype=np.float32)))
            lin.bias.copy_(torch.from_numpy(np.asarray(b, dtype=np.float32)))
        layers.append(lin)
    return layers


class PredictorHeads(nn.Module):
    """Unit-normalise, run both kinds, keep per column the chosen one.

    Output is the standardised score z per set; the server maps it back with the per-set
    mean and scale of predictor.json in float64 (raw ssGSEA scores reach the thousands,
    where float32 alone is coarser than the parity tolerance).
    """

    def __init__(self, ridge: TrainedPredictor, mlp: TrainedPredictor, use_mlp: NDArray[Any]):
        super().__init__()
        if ridge.set_names != mlp.set_names:
            raise TrainingError("ridge and MLP heads must be fitted on the same sets")
        if not np.allclose(ridge.y_mean, mlp.y_mean) or not np.allclose(ridge.y_scale, mlp.y_scale):
            raise TrainingError("ridge and MLP heads must be fitted on the same targets")
        self.ridge = _dense(ridge.weights, ridge.biases)
        self.mlp = _dense(mlp.weights, mlp.biases)
        self.register_buffer("use_mlp", torch.from_numpy(np.asarray(use_mlp, dtype=bool)))
        self.y_mean = np.asarray(ridge.y_mean, dtype=np.float64)
        self.y_scale = np.asarray(ridge.y_scale, dtype=np.float64)

    @staticmethod
    def _run(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(layers):
            x = layer(x)
            if i < len(layers) - 1:
                x = torch.relu(x)
        return x

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x = emb / emb.norm(dim=1, keepdim=True)
        return torch.where(self.use_mlp, self._run(self.mlp, x), self._run(self.ridge, x))

    def scores(self, emb: NDArray[Any]) -> NDArray[Any]:
        """Scores on the targets' scale (what the server returns), float64."""
        with torch.no_grad():
            z = self(torch.from_numpy(np.asarray(emb, dtype=np.float32))).numpy()
        out: NDArray[Any] = z.astype(np.float64) * self.y_scale + self.y_mean
        return out


def r2_per_column(y: NDArray[Any], pred: NDArray[Any]) -> NDArray[Any]:
    """Coefficient of determination per column (0 where a column is constant)."""
    resid = ((y - pred) ** 2).sum(axis=0)
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    out: NDArray[Any] = np.where(total > 0, 1.0 - resid / np.maximum(total, 1e-30), 0.0)
    return out


@dataclass(frozen=True)
class FittedHeads:
    module: PredictorHeads
    manifest: PredictorManifest


def fit_heads(
    slide_embeddings: NDArray[Any],
    targets: pd.DataFrame,
    patients: Sequence[str],
    *,
    seed: int = 0,
    synthetic: bool = False,
    n_splits: int = 5,
) -> FittedHeads:
    """Cross-validate both kinds per set, keep the better, refit on every slide."""
    x = np.asarray(slide_embeddings, dtype=np.float32)
    if x.shape[0] != targets.shape[0] or x.shape[0] != len(patients):
        raise TrainingError("one target row and one patient id per slide embedding are needed")
    folds = min(n_splits, len(set(patients)))
    y = targets.to_numpy(np.float64)
    configs = {
        "ridge": PredictorConfig(kind="ridge", seed=seed),
        "mlp": PredictorConfig(kind="mlp", seed=seed),
    }
    r2 = {
        kind: r2_per_column(y, cross_validated_predictions(x, targets, patients, cfg, folds))
        for kind, cfg in configs.items()
    }
    use_mlp = r2["mlp"] > r2["ridge"]
    fitted = {kind: TrainedPredictor.fit(x, targets, cfg) for kind, cfg in configs.items()}
    heads = tuple(
        PredictorHead(
            gene_set=str(name),
            kind="mlp" if use_mlp[j] else "ridge",
            cv_r2=float(max(r2["mlp"][j], r2["ridge"][j])),
            cv_r2_ridge=float(r2["ridge"][j]),
            cv_r2_mlp=float(r2["mlp"][j]),
            mean=float(fitted["ridge"].y_mean[j]),
            scale=float(fitted["ridge"].y_scale[j]),
        )
        for j, name in enumerate(targets.columns)
    )
    manifest = PredictorManifest(
        input_dim=x.shape[1],
        heads=heads,
        n_slides=x.shape[0],
        n_patients=len(set(patients)),
        cv_folds=folds,
        targets=TARGETS,
        synthetic=synthetic,
    )
    module = PredictorHeads(fitted["ridge"], fitted["mlp"], use_mlp).eval()
    return FittedHeads(module, manifest)


def export_heads(heads: FittedHeads, folder: Path, seed: int = 0) -> ParityRecord:
    """predictor.onnx (dynamic batch, parity-checked) and predictor.json into `folder`."""
    dim = heads.manifest.input_dim
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((n, dim)).astype(np.float32) for n in (4, 1, 9)]
    path = folder / PREDICTOR_ONNX
    export_onnx(
        heads.module,
        torch.from_numpy(inputs[0]),
        path,
        input_name=names.TENSOR_SLIDE_EMBEDDING,
        output_names=[names.TENSOR_SCORES],
        dynamic_axis="batch",
    )
    record = check_parity(
        MODEL_NAME, heads.module, path, inputs, input_name=names.TENSOR_SLIDE_EMBEDDING
    )
    if not record.passed:
        raise ParityError(f"predictor ONNX parity failed: {record.model_dump()}")
    (folder / PREDICTOR_JSON).write_text(heads.manifest.model_dump_json(indent=1))
    return record


def summary(manifest: PredictorManifest) -> dict[str, Any]:
    """Evaluation figures of the heads for metrics.json and the model card."""
    r2 = np.array([h.cv_r2 for h in manifest.heads])
    return {
        "predictor_cv_r2_mean": round(float(r2.mean()), 4),
        "predictor_cv_r2_median": round(float(np.median(r2)), 4),
        "predictor_cv_r2_ridge_mean": round(
            float(np.mean([h.cv_r2_ridge for h in manifest.heads])), 4
        ),
        "predictor_cv_r2_mlp_mean": round(float(np.mean([h.cv_r2_mlp for h in manifest.heads])), 4),
        "predictor_sets": len(manifest.heads),
        "predictor_sets_mlp": sum(h.kind == "mlp" for h in manifest.heads),
        "predictor_cv_folds": manifest.cv_folds,
    }


def hallmark_targets(expression: pd.DataFrame, rows: Sequence[str]) -> pd.DataFrame:
    """Raw Hallmark ssGSEA scores of expression (samples x genes) for `rows`, in order."""
    from histoprompt.core.genesets import load_hallmark
    from histoprompt.core.ssgsea import ssgsea_frame

    hallmark = load_hallmark()
    scores = ssgsea_frame(expression, {n: hallmark[n].genes for n in hallmark}, min_size=5)
    return scores.loc[list(rows)].reset_index(drop=True)


def export_served_predictor(
    bundle_dir: Path,
    model: Any,
    data: Any,
    expression: pd.DataFrame,
    *,
    synthetic: bool = False,
    seed: int = 0,
) -> tuple[ParityRecord, dict[str, Any]] | None:
    """Fit and export the heads on the training slides' aligned embeddings.

    `model` is the trained AlignmentModel, `data` its PairedEmbeddings, `expression` the
    patients x genes log1p(TPM) frame (index: patient ids). None when no Hallmark set can
    be scored on these genes (e.g. an RNA contract in Ensembl ids), so nothing to learn.
    """
    from histoprompt.export.alignment import SlideEmbedExport

    slide_fn = SlideEmbedExport(model).eval()
    with torch.no_grad():
        emb = np.concatenate(
            [
                slide_fn(torch.from_numpy(np.asarray(b, dtype=np.float32)))[0].numpy()
                for b in data.bags
            ]
        )
    targets = hallmark_targets(expression, [str(p) for p in data.slide_patients])
    if targets.shape[1] == 0:
        return None
    patients = [str(p) for p in data.slide_patients]
    heads = fit_heads(emb, targets, patients, seed=seed, synthetic=synthetic)
    record = export_heads(heads, bundle_dir, seed=seed)
    return record, summary(heads.manifest)
