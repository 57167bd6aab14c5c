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
        _card_lists(bundle_dir, path)
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
    _record_in_card(bundle_dir, record, path)
    return path


def _card_lists(bundle_dir: Path, path: Path) -> None:
    """A bundle whose file predates the card entry: record it from parity.json."""
    from histoprompt.core.modelspec import ModelCard
    from histoprompt.export.model_card import MODEL_CARD_FILE

    card_path, parity_file = bundle_dir / MODEL_CARD_FILE, bundle_dir / "parity.json"
    if not (card_path.is_file() and parity_file.is_file()):
        return
    card = ModelCard.model_validate_json(card_path.read_text())
    if any(p.model == names.MODEL_TILE_CONTEXT for p in card.parity):
        return
    doc = json.loads(parity_file.read_text()).get(names.MODEL_TILE_CONTEXT)
    if doc is not None:
        _record_in_card(bundle_dir, ParityRecord.model_validate(doc), path)


def _record_in_card(bundle_dir: Path, record: ParityRecord, path: Path) -> None:
    """The bundle's model card lists the file (sha256) and its parity like every network."""
    from histoprompt.core.modelspec import ModelCard, ParityResult, WeightFile
    from histoprompt.export.model_card import MODEL_CARD_FILE, sha256_file

    card_path = bundle_dir / MODEL_CARD_FILE
    if not card_path.is_file():
        return
    card = ModelCard.model_validate_json(card_path.read_text())
    parity = ParityResult(
        model=record.model,
        max_abs_err=record.max_abs_err,
        min_cosine=record.min_cosine,
        passed=record.passed,
    )
    weight = WeightFile(
        role=f"onnx:{names.MODEL_TILE_CONTEXT}", name=path.stem, file=FILE, sha256=sha256_file(path)
    )
    update = {
        "parity": (*(p for p in card.parity if p.model != record.model), parity),
        "weights": (*(w for w in card.weights if w.file != FILE), weight),
    }
    full = ModelCard.model_validate(card.model_copy(update=update).model_dump())
    card_path.write_text(full.model_dump_json(indent=1))
