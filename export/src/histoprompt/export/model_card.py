"""The model card of a served version: written next to the artifacts, shown by the CLI.

`model_card.json` (histoprompt.core.modelspec.ModelCard) lives in the bundle folder and is
installed into `tile_preprocess/1/` and `pathway_query/1/` of the model repository. Beyond
what the served configs need it records: every weight and artifact file with its sha256,
the preprocessing of both modalities, the alignment training data's fingerprint and split,
the evaluation figures, the ONNX (and TensorRT, when built) parity results, the pathway
methods served, and the licences as the user declared them (`--licence COMPONENT=LICENCE`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core import names
from histoprompt.core.modelspec import (
    MODEL_CARD_FILE,
    ModelCard,
    ParityResult,
    TrainingData,
    WeightFile,
)
from histoprompt.export.errors import ExportError

if TYPE_CHECKING:
    from histoprompt.export.alignment_training import PairedEmbeddings
    from histoprompt.export.onnx_export import ParityRecord

# bundle file -> role in the card
BUNDLE_FILES = (
    ("tile_encoder.onnx", f"onnx:{names.MODEL_TILE_ENCODER}"),
    ("tile_encoder.plan", f"tensorrt:{names.MODEL_TILE_ENCODER}"),
    ("slide_embed.onnx", f"onnx:{names.MODEL_SLIDE_EMBED}"),
    ("rna_embed.onnx", f"onnx:{names.MODEL_RNA_EMBED}"),
    ("predictor.onnx", "onnx:predictor"),
    ("alignment/alignment.safetensors", "alignment"),
)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_licences(items: Iterable[str]) -> dict[str, str]:
    """`COMPONENT=LICENCE` strings (e.g. `uni=CC-BY-NC-ND-4.0`) -> mapping."""
    out: dict[str, str] = {}
    for item in items:
        component, sep, licence = item.partition("=")
        if not sep or not component.strip() or not licence.strip():
            raise ExportError(f"--licence wants COMPONENT=LICENCE, got {item!r}")
        out[component.strip()] = licence.strip()
    return out


def data_fingerprint(data: PairedEmbeddings) -> str:
    """sha256 over patients, RNA embeddings and, per slide bag, its shape, first row and mean.

    Reads each bag once (no full-bag hashing: real cohorts hold tens of GB of tiles).
    """
    h = hashlib.sha256()
    h.update("\n".join(map(str, data.patient_ids)).encode())
    h.update(np.ascontiguousarray(data.rna, dtype=np.float32).tobytes())
    for patient, bag in zip(data.slide_patients, data.bags, strict=True):
        arr = np.asarray(bag, dtype=np.float32)
        h.update(f"{patient}:{arr.shape}".encode())
        if arr.size:
            h.update(arr[0].tobytes())
            h.update(arr.mean(axis=0).tobytes())
    return h.hexdigest()


def training_data(
    data: PairedEmbeddings, metrics: Mapping[str, Any], rna_source: str, synthetic: bool
) -> TrainingData:
    return TrainingData(
        fingerprint=data_fingerprint(data),
        n_patients=len(data.patient_ids),
        n_slides=len(data.bags),
        n_train_patients=int(metrics.get("n_train_patients", 0)),
        n_val_patients=int(metrics.get("n_val_patients", 0)),
        split=(
            "by patient, seeded permutation (alignment_training.split_by_patient), "
            f"val_fraction={metrics.get('train_config', {}).get('val_fraction', '?')}, "
            f"seed={metrics.get('train_config', {}).get('seed', '?')}"
        ),
        rna_source=rna_source,
        synthetic=synthetic,
    )


def evaluation_figures(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flat numeric figures: held-out retrieval (aligned and not), predictor CV R²."""
    out: dict[str, float] = {}
    for group in ("val", "val_unaligned"):
        for key, value in (metrics.get(group) or {}).items():
            if isinstance(value, int | float):
                out[f"{group}.{key}"] = float(value)
    for key, value in metrics.items():
        if key.startswith("predictor_") and isinstance(value, int | float):
            out[key] = float(value)
    return out


def bundle_weights(bundle_dir: Path) -> list[WeightFile]:
    return [
        WeightFile(role=role, name=Path(rel).stem, file=rel, sha256=sha256_file(bundle_dir / rel))
        for rel, role in BUNDLE_FILES
        if (bundle_dir / rel).is_file()
    ]


def finish_card(
    card: ModelCard,
    bundle_dir: Path,
    *,
    sources: Sequence[WeightFile] = (),
    records: Sequence[ParityRecord] = (),
    metrics: Mapping[str, Any] | None = None,
    training: TrainingData | None = None,
    rna_encoder: str = "",
    rna_preprocessing: str = "",
    licences: Mapping[str, str] | None = None,
    methods: Sequence[str] = (),
) -> ModelCard:
    """The card with everything above filled in, written to `bundle_dir/model_card.json`."""
    full = card.model_copy(
        update={
            "rna_encoder": rna_encoder or card.rna_encoder,
            "rna_preprocessing": rna_preprocessing or card.rna_preprocessing,
            "weights": (*sources, *bundle_weights(bundle_dir)),
            "training": training,
            "evaluation": evaluation_figures(metrics or {}),
            "parity": tuple(
                ParityResult(
                    model=r.model,
                    max_abs_err=r.max_abs_err,
                    min_cosine=r.min_cosine,
                    passed=r.passed,
                )
                for r in records
            ),
            "licences": dict(licences or card.licences),
            "methods": tuple(methods),
        }
    )
    full = ModelCard.model_validate(full.model_dump())  # nested models re-validated
    (bundle_dir / MODEL_CARD_FILE).write_text(full.model_dump_json(indent=1))
    return full


def with_licences(path: Path, licences: Mapping[str, str]) -> ModelCard:
    """Add declared licences to the card at `path` (a model_card.json) and rewrite it."""
    card = ModelCard.model_validate_json(path.read_text())
    card = card.model_copy(update={"licences": {**card.licences, **licences}})
    path.write_text(card.model_dump_json(indent=1))
    return card


TENSORRT_MIN_COSINE = 0.999  # FP16 engine against the fp32 ONNX model


def tensorrt_parity(
    onnx_path: Path, run_plan: Callable[[NDArray[Any]], NDArray[Any]], input_px: int, seed: int = 0
) -> ParityResult:
    """TensorRT (`run_plan`, e.g. tensorrt_build.run_engine) against ONNX Runtime on seeded
    random tiles; FP16, so it passes on cosine >= 0.999 (max abs is recorded, not bounded)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    max_err, min_cos = 0.0, 1.0
    for n in (4, 1, 9):
        x = rng.standard_normal((n, 3, input_px, input_px)).astype(np.float32)
        want = session.run(None, {names.TENSOR_PIXELS: x})[0].reshape(n, -1)
        got = np.asarray(run_plan(x), dtype=np.float32).reshape(n, -1)
        max_err = max(max_err, float(np.abs(want - got).max()))
        cos = (want * got).sum(1) / np.maximum(
            np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1), 1e-30
        )
        min_cos = min(min_cos, float(cos.min()))
    return ParityResult(
        model=names.MODEL_TILE_ENCODER,
        runtime="tensorrt",
        max_abs_err=max_err,
        min_cosine=min_cos,
        passed=min_cos >= TENSORRT_MIN_COSINE,
    )


def add_parity(card_path: Path, result: ParityResult, plan: Path | None = None) -> ModelCard:
    """Record a parity result (and the plan file's sha256) in the card at `card_path`."""
    card = ModelCard.model_validate_json(card_path.read_text())
    parity = tuple(p for p in card.parity if (p.model, p.runtime) != (result.model, result.runtime))
    weights = card.weights
    if plan is not None:
        role = f"tensorrt:{result.model}"
        weights = tuple(w for w in weights if w.role != role)
        weights += (
            WeightFile(role=role, name=plan.stem, file=plan.name, sha256=sha256_file(plan)),
        )
    card = card.model_copy(update={"parity": (*parity, result), "weights": weights})
    card_path.write_text(card.model_dump_json(indent=1))
    return card


def find_card(where: Path) -> Path:
    """model_card.json in a bundle folder, a model repository, or the file itself."""
    for candidate in (
        where,
        where / MODEL_CARD_FILE,
        where / names.MODEL_TILE_PREPROCESS / "1" / MODEL_CARD_FILE,
        where / names.MODEL_PATHWAY_QUERY / "1" / MODEL_CARD_FILE,
    ):
        if candidate.is_file():
            return candidate
    raise ExportError(
        f"no {MODEL_CARD_FILE} in {where} (a bundle folder, a model repository or the file)"
    )


CARD_PLACES = (
    "",
    MODEL_CARD_FILE,
    f"{names.MODEL_TILE_PREPROCESS}/1/{MODEL_CARD_FILE}",
    f"{names.MODEL_PATHWAY_QUERY}/1/{MODEL_CARD_FILE}",
)


def read_card(where: str, client: Any = None) -> ModelCard:
    """The card of a bundle folder, a model repository or the file, local or `s3://`.

    `client`: a minio client for s3:// (default: from ConnectionSettings.load()).
    """
    if not where.startswith("s3://"):
        return ModelCard.model_validate_json(find_card(Path(where)).read_text())
    from minio.error import S3Error

    from histoprompt.core.s3 import make_minio, parse_s3_uri
    from histoprompt.core.settings import ConnectionSettings

    bucket, prefix = parse_s3_uri(where)
    minio = client or make_minio(ConnectionSettings.load())
    base = prefix.rstrip("/")
    for place in CARD_PLACES:
        key = f"{base}/{place}".strip("/") if place else base
        if not key.endswith(".json"):
            continue
        try:
            resp = minio.get_object(bucket, key)
        except S3Error:  # noqa: S112 - not there: try the next place; the error names them
            continue
        try:
            return ModelCard.model_validate_json(resp.read())
        finally:
            resp.close()
            resp.release_conn()
    raise ExportError(f"no {MODEL_CARD_FILE} under {where} (tried {', '.join(CARD_PLACES[1:])})")


def render_card(card: ModelCard) -> str:
    """Human-readable card."""
    spec = card.encoder
    lines = [
        f"model {card.name} version {card.version}" + (" [SYNTHETIC]" if card.synthetic else ""),
        f"tile encoder: {spec.name} D={spec.embed_dim}"
        + (" (UNTRAINED)" if spec.untrained else ""),
        f"  preprocessing: tile {spec.tile_px}px at {spec.target_mpp} um/px -> "
        f"{spec.input_px}px, mean {spec.mean}, std {spec.std}",
        f"rna encoder: {card.rna_encoder or '-'} G={card.rna_genes}",
        f"  preprocessing: {card.rna_preprocessing or '-'}",
        f"aligned space: E={card.aligned_dim}; methods: {', '.join(card.methods) or '-'}",
        "weights:",
        *(
            f"  {w.role:22s} {w.name:18s} {w.sha256 or 'no file (UNTRAINED, fixed seed)'}  {w.file}"
            for w in card.weights
        ),
    ]
    if card.training is not None:
        t = card.training
        lines += [
            f"training data: {t.n_patients} patients, {t.n_slides} slides "
            f"({t.n_train_patients} train / {t.n_val_patients} val patients)"
            + (" [SYNTHETIC]" if t.synthetic else ""),
            f"  fingerprint {t.fingerprint}",
            f"  split: {t.split}; rna: {t.rna_source}",
        ]
    lines.append("evaluation:")
    lines += [f"  {k} = {v:.4g}" for k, v in sorted(card.evaluation.items())] or ["  -"]
    lines.append("parity:")
    lines += [
        f"  {p.model:14s} {p.runtime:11s} max|d|={p.max_abs_err:.2e} "
        f"min cos={p.min_cosine:.6f} {'pass' if p.passed else 'FAIL'}"
        for p in card.parity
    ] or ["  -"]
    if not any(p.runtime == "tensorrt" for p in card.parity):
        lines.append("  tensorrt: not built for this version")
    lines.append("licences (as declared):")
    lines += [f"  {k}: {v}" for k, v in sorted(card.licences.items())] or ["  none declared"]
    return "\n".join(lines)
