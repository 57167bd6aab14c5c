"""Trained predictors: aligned slide embedding -> Hallmark ssGSEA scores (ridge or small MLP).

Fitted with scikit-learn, then kept as plain arrays (no pickle): ridge is one affine map,
the MLP a few dense layers with ReLU, evaluated in numpy. Targets are standardised per set
so that one regularisation strength suits every set. These know only the sets they were
trained on; a new gene set needs Soft-kNN or prototype prompting.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.genesets import ResolvedGeneSet
from histoprompt.core.softknn import unit_rows

__all__ = [
    "PredictorConfig",
    "TrainedPredictor",
    "cross_validated_predictions",
    "unsupported_message",
]


class PredictorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["ridge", "mlp"] = "ridge"
    ridge_alpha: float = Field(default=1.0, gt=0)
    hidden: tuple[int, ...] = (64,)
    mlp_alpha: float = Field(default=1e-3, ge=0, description="L2 penalty of the MLP")
    max_iter: int = Field(default=800, ge=10)
    seed: int = 0


@dataclass(frozen=True)
class TrainedPredictor:
    """Dense layers W_i, b_i (ReLU between them) on unit-normalised embeddings."""

    kind: Literal["ridge", "mlp"]
    set_names: tuple[str, ...]
    weights: tuple[NDArray[Any], ...]
    biases: tuple[NDArray[Any], ...]
    y_mean: NDArray[Any]  # [K]
    y_scale: NDArray[Any]  # [K]

    @property
    def method(self) -> str:
        return self.kind

    @property
    def input_dim(self) -> int:
        return int(self.weights[0].shape[0])

    @classmethod
    def fit(
        cls, embeddings: NDArray[Any], targets: pd.DataFrame, config: PredictorConfig
    ) -> TrainedPredictor:
        x = unit_rows(embeddings)
        y = targets.to_numpy(np.float64)
        if x.shape[0] != y.shape[0]:
            raise InvalidInputError(
                f"{x.shape[0]} embeddings but {y.shape[0]} target rows; pair them by sample"
            )
        if not np.isfinite(y).all():
            raise InvalidInputError("predictor targets contain NaN/inf")
        mean = y.mean(axis=0)
        scale = y.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)
        z = (y - mean) / scale
        weights: list[NDArray[Any]]
        biases: list[NDArray[Any]]
        if config.kind == "ridge":
            from sklearn.linear_model import Ridge

            ridge = Ridge(alpha=config.ridge_alpha).fit(x, z)
            weights = [np.asarray(ridge.coef_, dtype=np.float64).T.reshape(x.shape[1], -1)]
            biases = [np.asarray(ridge.intercept_, dtype=np.float64).reshape(-1)]
        else:
            from sklearn.neural_network import MLPRegressor

            mlp = MLPRegressor(
                hidden_layer_sizes=config.hidden,
                alpha=config.mlp_alpha,
                max_iter=config.max_iter,
                early_stopping=x.shape[0] >= 50,
                random_state=config.seed,
            )
            import warnings

            from sklearn.exceptions import ConvergenceWarning

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                mlp.fit(x, z if z.shape[1] > 1 else z.ravel())
            weights = [np.asarray(w, dtype=np.float64) for w in mlp.coefs_]
            biases = [np.asarray(b, dtype=np.float64) for b in mlp.intercepts_]
        return cls(
            config.kind,
            tuple(str(c) for c in targets.columns),
            tuple(weights),
            tuple(biases),
            mean,
            scale,
        )

    def predict_all(self, embeddings: NDArray[Any]) -> NDArray[Any]:
        """float32 [B, K_trained] scores on the training targets' scale."""
        h = unit_rows(embeddings, self.input_dim).astype(np.float64)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < last:
                h = np.maximum(h, 0.0)
        out: NDArray[Any] = (h * self.y_scale + self.y_mean).astype(np.float32)
        return out

    def supports(self, resolved: ResolvedGeneSet) -> str | None:
        if resolved.name in self.set_names:
            return None
        return unsupported_message(self.kind, len(self.set_names), resolved.name)

    def predict(
        self, slide_embeddings: NDArray[Any], gene_sets: Sequence[ResolvedGeneSet]
    ) -> NDArray[Any]:
        allp = self.predict_all(slide_embeddings)
        cols = [self.set_names.index(g.name) for g in gene_sets]
        out: NDArray[Any] = allp[:, cols]
        return out

    # -- storage (npz + json, no pickle) -------------------------------------------------

    def save(self, path: Path) -> Path:
        arrays = {f"w{i}": w for i, w in enumerate(self.weights)}
        arrays |= {f"b{i}": b for i, b in enumerate(self.biases)}
        arrays |= {"y_mean": self.y_mean, "y_scale": self.y_scale}
        np.savez(path.with_suffix(".npz"), **arrays)
        meta = {"kind": self.kind, "set_names": list(self.set_names), "layers": len(self.weights)}
        path.with_suffix(".json").write_text(json.dumps(meta))
        return path.with_suffix(".npz")

    @classmethod
    def load(cls, path: Path) -> TrainedPredictor:
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
            n = int(meta["layers"])
            return cls(
                meta["kind"],
                tuple(meta["set_names"]),
                tuple(z[f"w{i}"] for i in range(n)),
                tuple(z[f"b{i}"] for i in range(n)),
                z["y_mean"],
                z["y_scale"],
            )


def unsupported_message(kind: str, n_sets: int, name: str) -> str:
    """One line for a gene set a trained predictor cannot score, with the way out."""
    return (
        f"method {kind!r} knows only the {n_sets} gene sets it was trained on, not {name!r}; "
        "score new gene sets with soft-knn (histoprompt query -m soft-knn) or prototype"
    )


def cross_validated_predictions(
    embeddings: NDArray[Any],
    targets: pd.DataFrame,
    groups: Sequence[str],
    config: PredictorConfig,
    n_splits: int = 5,
) -> NDArray[Any]:
    """Out-of-fold predictions float32 [N, K]; folds split by group (patient), never within."""
    from sklearn.model_selection import GroupKFold

    groups_arr = np.asarray([str(g) for g in groups])
    n_groups = np.unique(groups_arr).size
    if n_groups < n_splits:
        raise InvalidInputError(f"{n_splits}-fold CV needs {n_splits} patients, got {n_groups}")
    x = np.asarray(embeddings, dtype=np.float32)
    out = np.empty(targets.shape, dtype=np.float32)
    for train, test in GroupKFold(n_splits=n_splits).split(x, groups=groups_arr):
        model = TrainedPredictor.fit(x[train], targets.iloc[train], config)
        out[test] = model.predict_all(x[test])
    return out
