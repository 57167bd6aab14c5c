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
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.core.modelspec import ModelCard
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


def train_from_files(
    embeddings_dir: Path,
    slides_table: Path,
    expression_parquet: Path,
    out_dir: Path,
    *,
    encoder_name: str,
    encoder_weights: str | None = None,
    rna_encoder_dir: Path | None = None,
    config: TrainConfig | None = None,
    name: str = "histoprompt",
    is_log1p: bool = True,
    synthetic: bool = False,
    settings: ConnectionSettings | None = None,
    progress: bool = True,
) -> ModelCard:
    """Train the alignment on cached embeddings, export the bundle to `out_dir`."""
    import pandas as pd

    from histoprompt.export.alignment_training import train_alignment
    from histoprompt.export.bundle import export_bundle
    from histoprompt.export.embedding import embed_expression
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.rna import fit_contract, load_rna_encoder, small_rna_encoder

    cfg = config or TrainConfig()
    started = time.perf_counter()
    encoder = load_encoder(encoder_name, encoder_weights, settings=settings)
    slides = _read_table(slides_table)
    missing_cols = {"slide_id", "patient_id"} - set(slides.columns)
    if missing_cols:
        raise TrainingError(f"{slides_table} lacks columns {sorted(missing_cols)}")
    patients, genes, values = _read_expression(expression_parquet, is_log1p)
    if rna_encoder_dir is not None:
        rna_encoder = load_rna_encoder(rna_encoder_dir)
        rna_untrained = False
    else:
        rna_encoder = small_rna_encoder(fit_contract(genes, values))
        rna_untrained = True
    aligned = rna_encoder.contract.align(values, genes)

    bags, slide_patients, skipped = _load_bags(
        embeddings_dir, slides, set(patients), encoder_name, encoder.spec.embed_dim
    )
    data = PairedEmbeddings(
        bags=bags,
        slide_patients=slide_patients,
        patient_ids=patients,
        rna=embed_expression(rna_encoder, aligned.values),
    )
    digest = config_hash(
        cfg.model_dump(exclude={"epochs", "patience", "threads"}),
        encoder.weights_digest,
        [b.shape for b in bags],
        genes,
    )
    card = ModelCard(
        name=name,
        version=f"{encoder_name}-{digest}",
        encoder=encoder.spec,
        aligned_dim=cfg.aligned_dim,
        rna_genes=rna_encoder.contract.n_genes,
        synthetic=synthetic,
    )
    result = train_alignment(
        data, cfg, out_dir / "alignment", fingerprint=card.version, progress=progress
    )
    metrics = {
        **result.metrics,
        "load_seconds": round(time.perf_counter() - started, 3),
        "slides_used": len(bags),
        "slides_skipped": skipped,
        "rna_genes_missing": aligned.n_missing,
        "rna_values_imputed": aligned.n_nonfinite_imputed,
        "rna_encoder_untrained": rna_untrained,
    }
    frame = pd.DataFrame(aligned.values, index=patients, columns=list(rna_encoder.contract.genes))
    export_bundle(out_dir, card, encoder, rna_encoder, result.model, frame, metrics)
    return card
