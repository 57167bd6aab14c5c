"""STAMP-style tile-level head: spot pathway scores -> tiles -> a head on frozen embeddings.

`histoprompt-export spatial-train --st FILE.h5ad --slide SLIDE --bundle DIR --out DIR`:

1. the `.h5ad`'s spot counts are aggregated into pathway scores (mean z, `spatial_st`) for
   the Hallmark sets the demo programs drive (or every Hallmark set with `all_sets`);
2. the slide is cut into `tile_px` tiles at level 0 (its level-0 MPP must be the encoder's
   target MPP), background tiles dropped (mean RGB > 225), and each tile takes its spot
   (`spatial_st.map_spots_to_tiles`);
3. tiles are embedded by the bundle's frozen `tile_encoder.onnx` (the served preprocessing);
4. the head, standardisation + ridge (closed form, `ridge` on standardised inputs), is fitted
   on all (tile, spot scores) pairs of every given sample and exported as
   `tile_head.onnx` (`TILE_EMBEDDING` FP32 [B, D] -> `SCORES` FP32 [B, K]), parity-checked,
   with `tile_head.json` naming the K sets in column order.

The parameter-efficient adapter of STAMP (LoRA on the encoder's last blocks) is not done
here: the encoder stays frozen and only the head is trained.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from histoprompt.core import names
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.export.errors import ExportError
from histoprompt.export.onnx_export import ParityRecord, export_and_check
from histoprompt.export.spatial_st import (
    map_spots_to_tiles,
    pathway_scores,
    program_sets,
    read_st,
)

__all__ = ["TileHead", "embed_tiles_onnx", "slide_tiles", "spatial_train", "fit_head"]

BACKGROUND_MEAN = 225.0
MPP_TOLERANCE = 0.1


class TileHead(nn.Module):
    """(x - mean) / std @ W + b: tile embeddings [B, D] -> pathway scores [B, K]."""

    def __init__(
        self, mean: NDArray[Any], std: NDArray[Any], weight: NDArray[Any], bias: NDArray[Any]
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))
        self.linear = nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight.T.astype(np.float32)))
            self.linear.bias.copy_(torch.from_numpy(bias.astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.linear((x - self.mean) / self.std)
        return out


def fit_head(emb: NDArray[Any], targets: NDArray[Any], ridge: float = 50.0) -> TileHead:
    """Closed-form ridge on standardised embeddings (intercept unpenalised)."""
    x = np.asarray(emb, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    xs = (x - mean) / std
    y = np.asarray(targets, dtype=np.float64)
    y_mean = y.mean(axis=0)
    gram = xs.T @ xs + ridge * np.eye(xs.shape[1])
    weight = np.linalg.solve(gram, xs.T @ (y - y_mean))
    return TileHead(mean, std, weight, y_mean).eval()


def _slide_mpp(path: Path) -> float | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        match = re.search(r"MPP\s*=\s*([0-9.]+)", tif.pages[0].description or "")
    return float(match.group(1)) if match else None


def slide_tiles(path: Path, spec: EncoderSpec) -> tuple[NDArray[Any], NDArray[Any]]:
    """(uint8 [N, T, T, 3] tissue tiles, int64 [N, 2] level-0 top-left) of a TIFF/SVS."""
    import tifffile

    mpp = _slide_mpp(path)
    target = float(spec.target_mpp)
    if mpp is not None and abs(mpp - target) > MPP_TOLERANCE * target:
        raise ExportError(f"{path}: level-0 MPP {mpp} is not the encoder's {target}")
    try:
        image = tifffile.imread(path, level=0)
    except (OSError, ValueError, IndexError) as err:
        raise ExportError(f"cannot read {path} as a TIFF slide: {err}") from err
    t = int(spec.tile_px)
    tiles, xy = [], []
    for y in range(0, image.shape[0] - t + 1, t):
        for x in range(0, image.shape[1] - t + 1, t):
            tile = image[y : y + t, x : x + t, :3]
            if float(tile.mean()) <= BACKGROUND_MEAN:
                tiles.append(tile)
                xy.append((x, y))
    if not tiles:
        raise ExportError(f"{path}: no tissue tiles")
    return np.stack(tiles).astype(np.uint8), np.asarray(xy, dtype=np.int64)


def embed_tiles_onnx(bundle: Path, tiles: NDArray[Any], batch: int = 128) -> NDArray[Any]:
    """Frozen embeddings [N, D] from the bundle's tile_encoder.onnx and its preprocessing."""
    import onnxruntime as ort

    from histoprompt.serving.preprocess import preprocess_tiles

    spec = bundle_spec(bundle)
    sess = ort.InferenceSession(
        str(bundle / "tile_encoder.onnx"), providers=["CPUExecutionProvider"]
    )
    name = sess.get_inputs()[0].name
    parts = [
        sess.run(None, {name: preprocess_tiles(tiles[i : i + batch], spec).astype(np.float32)})[0]
        for i in range(0, len(tiles), batch)
    ]
    return np.concatenate(parts).astype(np.float32)


def bundle_spec(bundle: Path) -> EncoderSpec:
    try:
        return EncoderSpec.model_validate_json((bundle / "encoder.json").read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"{bundle} has no valid encoder.json: {err}") from err


def training_pairs(
    st_path: Path, slide_path: Path, bundle: Path, gene_sets: dict[str, tuple[str, ...]]
) -> tuple[NDArray[Any], NDArray[Any], list[str], dict[str, Any]]:
    """(embeddings [M, D], targets [M, K], set names, counts) of one (ST, slide) sample."""
    spec = bundle_spec(bundle)
    sample = read_st(st_path)
    set_names, spot_scores = pathway_scores(sample, gene_sets)
    tiles, xy = slide_tiles(slide_path, spec)
    spot = map_spots_to_tiles(sample, xy, int(spec.tile_px))
    keep = spot >= 0
    if keep.sum() < 10:
        raise ExportError(
            f"{slide_path}: only {int(keep.sum())} tiles lie under spots of {st_path}"
        )
    emb = embed_tiles_onnx(bundle, tiles[keep])
    info = {
        "st": str(st_path),
        "slide": str(slide_path),
        "spots": len(sample.xy),
        "tiles": len(tiles),
        "tiles_with_spot": int(keep.sum()),
        "synthetic": sample.synthetic,
    }
    return emb, spot_scores[spot[keep]], set_names, info


def export_tile_head(head: TileHead, path: Path) -> ParityRecord:
    d = int(head.mean.shape[0])
    return export_and_check(
        "tile_head",
        head,
        path,
        input_name=names.TENSOR_TILE_EMBEDDING,
        output_names=[names.TENSOR_SCORES],
        dynamic_axis="batch",
        shapes=[(7, d), (1, d), (64, d)],
    )


def spatial_train(
    st_paths: Sequence[Path],
    slide_paths: Sequence[Path],
    bundle: Path,
    out: Path,
    *,
    ridge: float = 50.0,
    all_sets: bool = False,
) -> dict[str, Any]:
    """Fit and export the tile head; returns the written `tile_head.json` document."""
    from histoprompt.export.cohort import hallmark_gmt_path, read_gmt

    if len(st_paths) != len(slide_paths) or not st_paths:
        raise ExportError("give one --slide per --st, in the same order")
    sets = dict(read_gmt(hallmark_gmt_path())) if all_sets else program_sets()
    xs, ys, samples, set_names = [], [], [], None
    for st_path, slide_path in zip(st_paths, slide_paths, strict=True):
        emb, target, got, info = training_pairs(st_path, slide_path, bundle, sets)
        if set_names is not None and got != set_names:
            raise ExportError(f"{st_path}: scores other sets than the first sample")
        set_names = got
        xs.append(emb)
        ys.append(target)
        samples.append(info)
    assert set_names is not None
    x, y = np.concatenate(xs), np.concatenate(ys)
    head = fit_head(x, y, ridge)
    out.mkdir(parents=True, exist_ok=True)
    record = export_tile_head(head, out / "tile_head.onnx")
    if not record.passed:
        raise ExportError(f"tile_head.onnx fails the parity check: {record.model_dump()}")
    with torch.no_grad():
        pred = head(torch.from_numpy(x)).numpy()
    r2 = 1 - ((pred - y) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    doc = {
        "gene_sets": set_names,
        "aggregation": "mean z of log1p(CPM) per gene over spots",
        "mapping": "tile centre within spot radius + tile_px/2, nearest spot",
        "head": {
            "kind": "ridge",
            "ridge": ridge,
            "in_sample_r2": dict(zip(set_names, map(float, r2), strict=True)),
        },
        "samples": samples,
        "encoder": bundle_spec(bundle).name,
        "adapter": "none (encoder frozen; LoRA not applied)",
        "parity": record.model_dump(),
        "synthetic": all(info["synthetic"] for info in samples),
    }
    (out / "tile_head.json").write_text(json.dumps(doc, indent=1))
    return doc
