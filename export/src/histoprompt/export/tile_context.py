"""`tile_context.onnx`: the slide model's ABMIL + image head over 3 x 3 tile neighbourhoods.

Served as the batched Triton model `tile_context` (`TILE_NEIGHBOURHOOD` FP32 [B, 9, D] ->
`TILE_ALIGNED` FP32 [B, E]); the neighbourhood rows are built by
`histoprompt.core.tile_context`. The weights are the slide model's (`alignment/` of the
bundle), so a bundle without the file gets it derived at repository time, parity-checked.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from histoprompt.core import names
from histoprompt.core.tile_context import CONTEXT_ROWS
from histoprompt.export.alignment import AlignmentModel
from histoprompt.export.onnx_export import ParityRecord, export_and_check

__all__ = ["FILE", "TileContextExport", "ensure_tile_context", "export_tile_context"]

FILE = "tile_context.onnx"


class TileContextExport(nn.Module):
    """[B, 9, D] neighbourhood bags -> [B, E] unit-norm aligned embeddings."""

    def __init__(self, model: AlignmentModel) -> None:
        super().__init__()
        self.abmil = model.abmil
        self.image_head = model.image_head

    def forward(self, bags: torch.Tensor) -> torch.Tensor:
        pooled, _ = self.abmil(bags)
        out: torch.Tensor = self.image_head(pooled)
        return out


def export_tile_context(model: AlignmentModel, path: Path, seed: int = 0) -> ParityRecord:
    d = model.config.tile_dim
    return export_and_check(
        names.MODEL_TILE_CONTEXT,
        TileContextExport(model).eval(),
        path,
        input_name=names.TENSOR_TILE_NEIGHBOURHOOD,
        output_names=[names.TENSOR_TILE_ALIGNED],
        dynamic_axis="batch",
        shapes=[(5, CONTEXT_ROWS, d), (1, CONTEXT_ROWS, d), (64, CONTEXT_ROWS, d)],
        seed=seed,
    )


def ensure_tile_context(bundle_dir: Path) -> Path | None:
    """`bundle_dir/tile_context.onnx`, exported from `alignment/` when missing (None when the
    bundle has no alignment run); its parity record goes into parity.json."""
    from histoprompt.export.alignment_training import load_alignment
    from histoprompt.export.errors import ParityError

    path = bundle_dir / FILE
    if path.is_file():
        return path
    if not (bundle_dir / "alignment").is_dir():
        return None
    record = export_tile_context(load_alignment(bundle_dir / "alignment"), path)
    parity_file = bundle_dir / "parity.json"
    doc = json.loads(parity_file.read_text()) if parity_file.is_file() else {}
    doc[record.model] = record.model_dump()
    parity_file.write_text(json.dumps(doc, indent=1, sort_keys=True))
    if not record.passed:
        path.unlink(missing_ok=True)
        raise ParityError(f"ONNX parity failed for {record.model}; see {parity_file}")
    return path
