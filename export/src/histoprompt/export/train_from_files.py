"""Train and export a bundle from your own cached tile embeddings and bulk expression.

Inputs:
* `embeddings/` with one `<slide_id>.npy` per slide: float16/32 [n_tiles, D] from the frozen
  tile encoder (e.g. the `tile_embeddings.npy` the ingest service writes per slide);
* a slides table (CSV or parquet) with columns `slide_id`, `patient_id`;
* an expression parquet: `patient_id` + one column per gene, log1p(TPM) (or TPM with
  `is_log1p=False`).
The RNA encoder is a checkpoint folder (`rna.py` layout) or, without one, the small
fixed-seed variant fitted to these genes (then labelled untrained in the metrics).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.modelspec import ModelCard, WeightFile
from histoprompt.core.settings import ConnectionSettings
from histoprompt.export.alignment_training import PairedEmbeddings, TrainConfig, config_hash
from histoprompt.export.errors import TrainingError


def _read_table(path: Path) -> Any:
    import pandas as pd

    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _read_expression(
    path: Path, is_log1p: bool
) -> tuple[list[str], list[str], NDArray[np.float64]]:
    """(patient ids, genes, log1p values [patients, genes]) from the expression parquet."""
    import pandas as pd

    expr = pd.read_parquet(path)
    if "patient_id" not in expr.columns:
        raise TrainingError(f"{path} lacks a patient_id column")
    expr = expr.set_index("patient_id")
    values = expr.to_numpy(dtype=np.float64)
    if not is_log1p:
        values = np.log1p(values)
    return [str(p) for p in expr.index], [str(g) for g in expr.columns], values


def _load_bags(
    embeddings_dir: Path, slides: Any, known_patients: set[str], encoder_name: str, embed_dim: int
) -> tuple[list[NDArray[np.float32]], list[str], int]:
    """Tile embeddings of the slides whose patient has expression; (bags, patients, skipped)."""
    bags, slide_patients = [], []
    skipped = 0
    for slide_id, patient in zip(
        slides["slide_id"].astype(str), slides["patient_id"].astype(str), strict=True
    ):
        path = embeddings_dir / f"{slide_id}.npy"
        if patient not in known_patients or not path.is_file():
            skipped += 1
            continue
        bag = np.load(path).astype(np.float32)
        if bag.ndim != 2 or bag.shape[1] != embed_dim:
            raise TrainingError(
                f"{path} has shape {bag.shape}; encoder {encoder_name} gives [n, {embed_dim}]"
            )
        bags.append(bag)
        slide_patients.append(patient)
    if not bags:
        raise TrainingError("no slide has both embeddings and expression")
    return bags, slide_patients, skipped


@dataclass(frozen=True)
class _RnaSide:
    """RNA embeddings per patient, from an encoder or a precomputed table."""

    patients: list[str]
    rna: NDArray[np.float32]  # [P, R]
    frame: Any  # patients x genes log1p(TPM): the reference rows
    encoder: Any  # RnaEncoder, or None with a table
    table: Any  # pd.DataFrame of precomputed embeddings, or None
    metrics: dict[str, Any]


TINY = "tiny"  # --rna-encoder tiny: the fixed-seed UNTRAINED MLP of the demo


def _rna_side(
    patients: list[str],
    genes: list[str],
    values: NDArray[np.float64],
    rna_encoder_dir: Path | None,
    rna_embeddings: Path | None,
) -> _RnaSide:
    import pandas as pd

    from histoprompt.export.embedding import embed_expression
    from histoprompt.export.rna import fit_contract, load_rna_encoder, small_rna_encoder

    if rna_embeddings is not None:
        from histoprompt.export.rna_table import read_rna_embeddings, rows_for

        if rna_encoder_dir is not None:
            raise TrainingError("give an RNA encoder or precomputed RNA embeddings, not both")
        table = read_rna_embeddings(rna_embeddings)
        keep = [i for i, p in enumerate(patients) if p in table.index]
        if not keep:
            raise TrainingError(f"no expression patient has a row in {rna_embeddings}")
        kept = [patients[i] for i in keep]
        frame = pd.DataFrame(values[keep], index=kept, columns=genes)
        rna = rows_for(table, kept, str(rna_embeddings))
        extra = {"rna_patients_without_embedding": len(patients) - len(kept)}
        return _RnaSide(kept, rna, frame, None, table, {**extra, "rna_precomputed": True})
    untrained = rna_encoder_dir is not None and str(rna_encoder_dir) == TINY
    if rna_encoder_dir is None:
        raise TrainingError(
            "the RNA side is needed: --rna-encoder DIR (a BulkFormer or RNA checkpoint folder), "
            "--rna-embeddings TABLE (precomputed elsewhere), or --rna-encoder tiny (the "
            "UNTRAINED demo encoder)"
        )
    if untrained:
        encoder = small_rna_encoder(fit_contract(genes, values))
    else:
        encoder = load_rna_encoder(rna_encoder_dir)
    aligned = encoder.contract.align(values, genes)
    # reference columns: gene symbols where the contract has them, so gene sets resolve
    frame = pd.DataFrame(aligned.values, index=patients, columns=list(encoder.contract.names))
    metrics = {
        "rna_genes_missing": aligned.n_missing,
        "rna_values_imputed": aligned.n_nonfinite_imputed,
        "rna_encoder_untrained": untrained,
    }
    rna = embed_expression(encoder, aligned.values)
    return _RnaSide(patients, rna, frame, encoder, None, metrics)


def train_from_files(
    embeddings_dir: Path,
    slides_table: Path,
    expression_parquet: Path,
    out_dir: Path,
    *,
    encoder_name: str,
    encoder_weights: str | None = None,
    rna_encoder_dir: Path | None = None,
    rna_embeddings: Path | None = None,
    config: TrainConfig | None = None,
    name: str = "histoprompt",
    is_log1p: bool = True,
    synthetic: bool = False,
    settings: ConnectionSettings | None = None,
    progress: bool = True,
    licences: dict[str, str] | None = None,
) -> ModelCard:
    """Train the alignment on cached embeddings, export the bundle to `out_dir`.

    RNA side: an encoder checkpoint folder, a precomputed table (export.rna_table), or
    `Path("tiny")` for the UNTRAINED demo encoder; one of them is required.
    """
    from histoprompt.export.alignment_training import train_alignment
    from histoprompt.export.bundle import CardInputs, export_bundle
    from histoprompt.export.encoders import load_encoder

    cfg = config or TrainConfig()
    started = time.perf_counter()
    encoder = load_encoder(encoder_name, encoder_weights, settings=settings)
    slides = _read_table(slides_table)
    missing_cols = {"slide_id", "patient_id"} - set(slides.columns)
    if missing_cols:
        raise TrainingError(f"{slides_table} lacks columns {sorted(missing_cols)}")
    patients, genes, values = _read_expression(expression_parquet, is_log1p)
    side = _rna_side(patients, genes, values, rna_encoder_dir, rna_embeddings)
    bags, slide_patients, skipped = _load_bags(
        embeddings_dir, slides, set(side.patients), encoder_name, encoder.spec.embed_dim
    )
    data = PairedEmbeddings(bags, slide_patients, side.patients, side.rna)
    digest = config_hash(
        cfg.model_dump(exclude={"epochs", "patience", "threads"}),
        encoder.weights_digest,
        [b.shape for b in bags],
        genes,
        None if side.table is None else data_hash(side.rna),
    )
    card = ModelCard(
        name=name,
        version=f"{encoder_name}-{digest}",
        encoder=encoder.spec,
        aligned_dim=cfg.aligned_dim,
        rna_genes=side.frame.shape[1],
        synthetic=synthetic,
    )
    result = train_alignment(
        data, cfg, out_dir / "alignment", fingerprint=card.version, progress=progress
    )
    metrics = {
        **result.metrics,
        **side.metrics,
        "load_seconds": round(time.perf_counter() - started, 3),
        "slides_used": len(bags),
        "slides_skipped": skipped,
    }
    inputs = CardInputs(
        data=data,
        sources=_sources(
            encoder_name, encoder_weights, rna_encoder_dir or rna_embeddings, settings
        ),
        rna_source=_rna_source(rna_encoder_dir, rna_embeddings),
        licences=tuple(sorted((licences or {}).items())),
        rna_table=side.table,
    )
    return export_bundle(
        out_dir, card, encoder, side.encoder, result.model, side.frame, metrics, inputs
    )


def _rna_source(rna_encoder_dir: Path | None, rna_embeddings: Path | None) -> str:
    if rna_embeddings is not None:
        return f"precomputed:{rna_embeddings}"
    if rna_encoder_dir is None or str(rna_encoder_dir) == TINY:
        return "tiny (UNTRAINED, fixed seed)"
    return str(rna_encoder_dir)


def data_hash(array: NDArray[Any]) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _sources(
    encoder_name: str,
    encoder_weights: str | None,
    rna_dir: Path | None,
    settings: ConnectionSettings | None,
) -> tuple[WeightFile, ...]:
    """The frozen encoders' weight files with their sha256 (UNTRAINED when seeded)."""
    from histoprompt.export.model_card import sha256_file
    from histoprompt.export.weights import fetch_weights

    tile = WeightFile(role="tile_encoder", name=encoder_name, file="-", untrained=True)
    if encoder_weights is not None:
        local = fetch_weights(encoder_weights, settings)
        tile = WeightFile(
            role="tile_encoder", name=encoder_name, file=encoder_weights, sha256=sha256_file(local)
        )
    if rna_dir is None or str(rna_dir) == TINY:
        return tile, WeightFile(role="rna_encoder", name="tiny", file="-", untrained=True)
    if rna_dir.is_file():  # a precomputed embeddings table
        table = WeightFile(
            role="rna_embeddings",
            name="precomputed",
            file=str(rna_dir),
            sha256=sha256_file(rna_dir),
        )
        return tile, table
    files = sorted(p for p in rna_dir.iterdir() if p.suffix in (".safetensors", ".pt", ".bin"))
    rna = [
        WeightFile(role="rna_encoder", name=rna_dir.name, file=str(f), sha256=sha256_file(f))
        for f in files
    ]
    return (tile, *rna)
