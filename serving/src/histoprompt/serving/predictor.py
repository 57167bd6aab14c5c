"""Method `predictor` of pathway_query: the bundle's trained heads, run with ONNX Runtime.

The export side (histoprompt.export.predictor_export) trains a ridge and an MLP head per
Hallmark set on aligned slide embeddings, keeps per set the one with the better
cross-validated R², and exports them as one ONNX graph: SLIDE_EMBEDDING fp32 [B, E] ->
SCORES fp32 [B, K], standardised (unit-normalisation inside). `predictor.json` next to it
names the K sets in column order with each one's mean and scale (score = z * scale + mean).
A set the heads were not trained on is refused with a hint to use soft-knn; the engine
reports it as that set's one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from histoprompt.core import names
from histoprompt.core.genesets import ResolvedGeneSet
from histoprompt.core.predictors import unsupported_message
from histoprompt.serving.errors import ModelConfigError
from histoprompt.serving.onnx_runner import OnnxRunner

PREDICTOR_ONNX = "predictor.onnx"
PREDICTOR_JSON = "predictor.json"
METHOD: Final = "predictor"


class PredictorHead(BaseModel):
    """One gene set's head: which kind was kept and its cross-validated R²."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gene_set: str
    kind: Literal["ridge", "mlp"]
    cv_r2: float
    cv_r2_ridge: float
    cv_r2_mlp: float
    mean: float = Field(description="score = z * scale + mean (z: the ONNX output)")
    scale: float = Field(gt=0)


class PredictorManifest(BaseModel):
    """`predictor.json`: what `predictor.onnx` computes, column by column."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["predictor"] = "predictor"
    onnx_file: str = PREDICTOR_ONNX
    input_dim: int = Field(gt=0, description="E, the aligned slide embedding width")
    heads: tuple[PredictorHead, ...] = Field(min_length=1)
    n_slides: int = Field(ge=1, description="slides the heads were fitted on")
    n_patients: int = Field(ge=1)
    cv_folds: int = Field(ge=2, description="GroupKFold by patient")
    targets: str = Field(description="what the scores are, e.g. raw Hallmark ssGSEA")
    synthetic: bool = False

    @property
    def set_names(self) -> tuple[str, ...]:
        return tuple(h.gene_set for h in self.heads)


class OnnxPredictor:
    """A `histoprompt.core.pathway_engine.Predictor` backed by `predictor.onnx`."""

    method = METHOD

    def __init__(self, manifest: PredictorManifest, runner: OnnxRunner) -> None:
        self.manifest = manifest
        self.runner = runner
        self.columns = {name: i for i, name in enumerate(manifest.set_names)}
        self.mean = np.array([h.mean for h in manifest.heads], dtype=np.float64)
        self.scale = np.array([h.scale for h in manifest.heads], dtype=np.float64)

    @classmethod
    def load(cls, folder: Path, intra_op_threads: int = 1) -> OnnxPredictor:
        try:
            manifest = PredictorManifest.model_validate_json((folder / PREDICTOR_JSON).read_text())
        except (OSError, ValidationError) as err:
            raise ModelConfigError(f"{folder / PREDICTOR_JSON} is not a predictor: {err}") from err
        onnx_path = folder / manifest.onnx_file
        if not onnx_path.is_file():
            raise ModelConfigError(f"{onnx_path} is missing (named by {PREDICTOR_JSON})")
        return cls(manifest, OnnxRunner(onnx_path, intra_op_threads=intra_op_threads))

    def supports(self, resolved: ResolvedGeneSet) -> str | None:
        if resolved.name in self.columns:
            return None
        return unsupported_message(METHOD, len(self.columns), resolved.name)

    def predict(
        self, slide_embeddings: NDArray[Any], gene_sets: Sequence[ResolvedGeneSet]
    ) -> NDArray[Any]:
        x = np.ascontiguousarray(slide_embeddings, dtype=np.float32)
        cols = [self.columns[g.name] for g in gene_sets]
        z = self.runner.run(x)[names.TENSOR_SCORES][:, cols].astype(np.float64)
        out: NDArray[Any] = (z * self.scale[cols] + self.mean[cols]).astype(np.float32)
        return out


def load_predictors(folder: Path) -> list[OnnxPredictor]:
    """The served predictor when the artifact folder has one, else none."""
    if not (folder / PREDICTOR_JSON).is_file():
        return []
    return [OnnxPredictor.load(folder)]
