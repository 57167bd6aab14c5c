"""ONNX export (opset >= 17, dynamic batch/bag axes) with checker and torch parity.

Parity is measured on fixed seeded random inputs of several sizes; a model passes when the
max abs error is <= 1e-4 and every row's cosine to torch is >= 0.9999 (fp32).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict
from torch import nn

from histoprompt.core import names
from histoprompt.export.errors import ExportError, ParityError

OPSET = 18
MAX_ABS_ERR = 1e-4
MIN_COSINE = 0.9999
_EXTERNAL_DATA_BYTES = 1_500_000_000


class ParityRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    opset: int
    input_shapes: list[list[int]]
    max_abs_err: float
    min_cosine: float
    tolerance_abs: float = MAX_ABS_ERR
    tolerance_cosine: float = MIN_COSINE
    passed: bool


def _param_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.state_dict().values())


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    dynamic_axis: str,
    opset: int = OPSET,
) -> Path:
    """Export with dim 0 of the single input dynamic; run onnx.checker on the result."""
    import onnx

    if opset < 17:
        raise ExportError(f"opset {opset} is below the supported minimum 17")
    path.parent.mkdir(parents=True, exist_ok=True)
    dim = torch.export.Dim(dynamic_axis, min=1, max=1 << 20)
    # The exporter narrates on stdout; keep logs and CLI output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(
            module.eval(),
            (example,),
            input_names=[input_name],
            output_names=list(output_names),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=({0: dim},),
            external_data=_param_bytes(module) > _EXTERNAL_DATA_BYTES,
            verbose=False,
        )
    if program is None:  # pragma: no cover - the dynamo exporter always returns a program
        raise ExportError(f"ONNX export of {path.name} returned nothing")
    program.save(str(path), external_data=_param_bytes(module) > _EXTERNAL_DATA_BYTES)
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise ExportError(f"{path} fails onnx.checker: {err}") from err
    return path


def _cosines(a: NDArray[Any], b: NDArray[Any]) -> NDArray[Any]:
    a2 = a.reshape(a.shape[0], -1) if a.ndim > 1 else a[None, :]
    b2 = b.reshape(b.shape[0], -1) if b.ndim > 1 else b[None, :]
    num = (a2 * b2).sum(axis=1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    return np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)


@torch.no_grad()
def check_parity(
    name: str,
    module: nn.Module,
    path: Path,
    inputs: Sequence[NDArray[Any]],
    *,
    input_name: str,
    opset: int = OPSET,
) -> ParityRecord:
    """Compare torch and ONNX Runtime outputs on the given inputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    max_err, min_cos = 0.0, 1.0
    for x in inputs:
        ref = module(torch.from_numpy(x))
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = session.run(None, {input_name: x})
        for r, g in zip(refs, got, strict=True):
            r_np = r.numpy()
            if r_np.shape != g.shape:
                raise ParityError(f"{name}: ONNX output shape {g.shape} != torch {r_np.shape}")
            max_err = max(max_err, float(np.abs(r_np - g).max()))
            min_cos = min(min_cos, float(_cosines(r_np, g).min()))
    return ParityRecord(
        model=name,
        opset=opset,
        input_shapes=[list(x.shape) for x in inputs],
        max_abs_err=max_err,
        min_cosine=min_cos,
        passed=max_err <= MAX_ABS_ERR and min_cos >= MIN_COSINE,
    )


def _random(seed: int, shapes: Sequence[tuple[int, ...]], scale: float = 1.0) -> list[NDArray[Any]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * scale).astype(np.float32) for s in shapes]


def export_and_check(
    name: str,
    module: nn.Module,
    path: Path,
    *,
    input_name: str,
    output_names: Sequence[str],
    dynamic_axis: str,
    shapes: Sequence[tuple[int, ...]],
    seed: int = 0,
    make_inputs: Callable[[int, Sequence[tuple[int, ...]]], list[NDArray[Any]]] = _random,
) -> ParityRecord:
    inputs = make_inputs(seed, shapes)
    export_onnx(
        module,
        torch.from_numpy(inputs[0]),
        path,
        input_name=input_name,
        output_names=output_names,
        dynamic_axis=dynamic_axis,
    )
    return check_parity(name, module, path, inputs, input_name=input_name)


def tile_encoder_shapes(input_px: int) -> list[tuple[int, ...]]:
    return [(4, 3, input_px, input_px), (1, 3, input_px, input_px), (9, 3, input_px, input_px)]


def export_tile_encoder(
    module: nn.Module, input_px: int, path: Path, seed: int = 0
) -> ParityRecord:
    return export_and_check(
        names.MODEL_TILE_ENCODER,
        module,
        path,
        input_name=names.TENSOR_PIXELS,
        output_names=[names.TENSOR_TILE_EMBEDDING],
        dynamic_axis="batch",
        shapes=tile_encoder_shapes(input_px),
        seed=seed,
    )


def export_slide_embed(module: nn.Module, tile_dim: int, path: Path, seed: int = 0) -> ParityRecord:
    return export_and_check(
        names.MODEL_SLIDE_EMBED,
        module,
        path,
        input_name=names.TENSOR_TILE_EMBEDDING,
        output_names=[names.TENSOR_SLIDE_EMBEDDING, names.TENSOR_ATTENTION],
        dynamic_axis="tiles",
        shapes=[(17, tile_dim), (1, tile_dim), (300, tile_dim)],
        seed=seed,
    )


def export_rna_embed(module: nn.Module, n_genes: int, path: Path, seed: int = 0) -> ParityRecord:
    def log_tpm(s: int, shapes: Sequence[tuple[int, ...]]) -> list[NDArray[Any]]:
        rng = np.random.default_rng(s)
        return [rng.uniform(0, 8, size=shape).astype(np.float32) for shape in shapes]

    return export_and_check(
        names.MODEL_RNA_EMBED,
        module,
        path,
        input_name=names.TENSOR_EXPRESSION,
        output_names=[names.TENSOR_RNA_EMBEDDING],
        dynamic_axis="batch",
        shapes=[(3, n_genes), (1, n_genes), (8, n_genes)],
        seed=seed,
        make_inputs=log_tpm,
    )


def write_parity(records: Sequence[ParityRecord], path: Path) -> Path:
    """parity.json: one record per model; raises ParityError when any model failed."""
    doc = {r.model: r.model_dump() for r in records}
    path.write_text(json.dumps(doc, indent=1, sort_keys=True))
    failed = [r.model for r in records if not r.passed]
    if failed:
        raise ParityError(f"ONNX parity failed for {failed}; see {path}")
    return path
