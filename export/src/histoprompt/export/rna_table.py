"""Precomputed RNA embeddings: for teams that run their RNA foundation model elsewhere.

A table (parquet, CSV or TSV) with one row per sample: a `sample_id` column (or
`patient_id`, or else the first column) and one numeric column per embedding dimension.
It stands in for the RNA encoder wherever RNA embeddings are needed:

* alignment training: `histoprompt-export train --rna-embeddings TABLE` (rows keyed by
  patient id); the bundle then carries `rna_head.onnx` (RNA_FEATURES [B, R] ->
  RNA_EMBEDDING [B, E], the trained projection head) instead of `rna_embed.onnx`;
* reference building: `histoprompt-export reference build --rna-embeddings TABLE
  --rna-head bundle/rna_head.onnx` (rows keyed by the expression's sample ids).

Without an RNA encoder in the served bundle, pathway_query offers soft_knn and predictor
but not prototype (a gene-set prototype needs the RNA encoder itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn

from histoprompt.core import names
from histoprompt.export.errors import TrainingError

ID_COLUMNS = ("sample_id", "patient_id")


def read_rna_embeddings(path: Path) -> pd.DataFrame:
    """Sample id (str index) -> float32 vector columns; refuses duplicates, NaN, text."""
    if not path.is_file():
        raise TrainingError(f"RNA embeddings table {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        frame = pd.read_csv(path, sep="," if suffix == ".csv" else "\t")
    else:
        raise TrainingError(f"{path}: RNA embeddings must be parquet, csv or tsv")
    key = next((c for c in ID_COLUMNS if c in frame.columns), frame.columns[0])
    frame = frame.set_index(key)
    frame.index = frame.index.astype(str)
    if frame.index.has_duplicates:
        dup = frame.index[frame.index.duplicated()][0]
        raise TrainingError(f"{path}: sample id {dup!r} appears more than once")
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad or frame.shape[1] == 0:
        raise TrainingError(
            f"{path}: every column but {key!r} must be a numeric embedding dimension "
            f"(non-numeric: {bad[:3]})"
        )
    values = frame.to_numpy(np.float32)
    if not np.isfinite(values).all():
        rows = frame.index[~np.isfinite(values).all(axis=1)]
        raise TrainingError(f"{path}: NaN/inf in {rows.size} rows (e.g. {rows[0]!r})")
    return pd.DataFrame(values, index=frame.index, columns=[str(c) for c in frame.columns])


def rows_for(table: pd.DataFrame, ids: Sequence[str], source: str) -> NDArray[Any]:
    """float32 [len(ids), R] in the order of `ids`; every id must be in the table."""
    missing = [i for i in ids if i not in table.index]
    if missing:
        raise TrainingError(
            f"{len(missing)} of {len(ids)} samples have no row in {source} (e.g. {missing[:3]})"
        )
    out: NDArray[Any] = table.loc[list(ids)].to_numpy(np.float32)
    return out


class RnaHeadExport(nn.Module):
    """Serving form of the RNA branch without its encoder: RNA_FEATURES [B,R] -> [B,E]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.rna_head = model.rna_head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.rna_head(features)
        return out


def export_rna_head(module: nn.Module, rna_dim: int, path: Path, seed: int = 0) -> Any:
    """rna_head.onnx with dynamic batch, parity-checked like the other networks."""
    from histoprompt.export.onnx_export import export_and_check

    return export_and_check(
        "rna_head",
        module,
        path,
        input_name=names.TENSOR_RNA_FEATURES,
        output_names=[names.TENSOR_RNA_EMBEDDING],
        dynamic_axis="batch",
        shapes=[(3, rna_dim), (1, rna_dim), (8, rna_dim)],
        seed=seed,
    )


def onnx_head_fn(path: Path) -> Any:
    """ONNX Runtime on rna_head.onnx: raw RNA embeddings -> aligned RNA embeddings."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def embed(x: NDArray[Any]) -> NDArray[Any]:
        feed = {names.TENSOR_RNA_FEATURES: np.ascontiguousarray(x, dtype=np.float32)}
        out: NDArray[Any] = session.run([names.TENSOR_RNA_EMBEDDING], feed)[0]
        return out

    return embed
