"""`histoprompt-export finetune`: warm-start a bundle's alignment on a fraction of a new cohort.

Domain adaptation as Winter et al. (Fig. 4) do it: the alignment module of `--from BUNDLE` is
trained `--epochs` more (no early stopping: every chosen patient trains, none selects the
model) on a seeded `--fraction` of the new cohort's patients, then exported as a new bundle
whose reference is the new cohort's expression. `finetune.json` records the source model, the
fraction, the patients used and a fingerprint of the data, so a run can be reproduced and
the patients left out can be used for evaluation. Inputs are laid out as for
`histoprompt-export train` (tile-embedding .npy per slide, slides table, expression parquet).

    histoprompt-export finetune --from bundles/<version> --embeddings emb/ --slides slides.csv \\
        --expression expr.parquet --fraction 0.25 --rna-encoder tiny --out bundles/adapted
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from histoprompt.export.cli_errors import exit_on_error
from histoprompt.export.errors import ExportError

app = typer.Typer(
    name="finetune",
    help="Warm-start a bundle's alignment on a fraction of a new cohort (domain adaptation).",
    pretty_exceptions_show_locals=False,
)

RECORD = "finetune.json"


def choose_patients(patients: list[str], fraction: float, seed: int) -> list[str]:
    """A seeded fraction of the patients; a larger fraction keeps the smaller one's patients."""
    if not 0 < fraction <= 1:
        raise ExportError(f"--fraction must be in (0, 1], got {fraction}")
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    n = max(2, int(round(fraction * len(unique))))
    return sorted(unique[i] for i in order[:n])


def finetune_bundle(
    source: Path,
    embeddings_dir: Path,
    slides_table: Path,
    expression_parquet: Path,
    out_dir: Path,
    *,
    fraction: float,
    rna_encoder_dir: Path | None = None,
    epochs: int = 20,
    lr: float = 5e-4,
    seed: int = 0,
    synthetic: bool = False,
    alignment_only: bool = False,
) -> dict[str, Any]:
    """Fine-tune `source`'s alignment on `fraction` of the new cohort; returns the record."""
    import pandas as pd

    from histoprompt.core.modelspec import ModelCard
    from histoprompt.export.alignment_training import (
        PairedEmbeddings,
        TrainConfig,
        config_hash,
        load_alignment,
    )
    from histoprompt.export.bundle import CardInputs, export_bundle
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.evaluation_curves import finetune_alignment
    from histoprompt.export.train_from_files import (
        _load_bags,
        _read_expression,
        _read_table,
        _rna_side,
        data_hash,
    )

    card = ModelCard.model_validate_json((source / "model_card.json").read_text())
    model = load_alignment(source / "alignment")
    train = TrainConfig(**json.loads((source / "metrics.json").read_text())["train_config"])
    encoder = load_encoder(card.encoder.name)
    patients, genes, values = _read_expression(expression_parquet, True)
    side = _rna_side(patients, genes, values, rna_encoder_dir, None)
    slides = _read_table(slides_table)
    chosen = choose_patients(list(side.patients), fraction, seed)
    bags, slide_patients, _ = _load_bags(
        embeddings_dir, slides, set(chosen), card.encoder.name, card.encoder.embed_dim
    )
    keep = [side.patients.index(p) for p in chosen]
    data = PairedEmbeddings(bags, slide_patients, chosen, side.rna[keep])
    fingerprint = config_hash(chosen, [b.shape for b in bags], data_hash(side.rna[keep]))
    tuned = finetune_alignment(model, data, train, epochs=epochs, lr=lr)
    record: dict[str, Any] = {
        "source_model": card.version,
        "fraction": fraction,
        "seed": seed,
        "epochs": epochs,
        "lr": lr,
        "n_patients_new_cohort": len(side.patients),
        "n_patients_used": len(chosen),
        "patients_used": chosen,
        "data_fingerprint": fingerprint,
        "synthetic": synthetic or card.synthetic,
    }
    save_alignment(tuned, out_dir / "alignment")
    (out_dir / RECORD).write_text(json.dumps(record, indent=1))
    if alignment_only:
        return record
    new_card = card.model_copy(
        update={"version": f"{card.encoder.name}-ft-{config_hash(card.version, fingerprint)}"}
    )
    frame = side.frame if isinstance(side.frame, pd.DataFrame) else pd.DataFrame(side.frame)
    metrics = {
        "finetune": record,
        "train_config": train.model_dump(),
        "n_train_patients": len(chosen),
    }
    inputs = CardInputs(data=data, rna_source=str(rna_encoder_dir))
    export_bundle(out_dir, new_card, encoder, side.encoder, tuned, frame, metrics, inputs)
    return record


def save_alignment(model: Any, out_dir: Path) -> None:
    """Weights and config in the layout `load_alignment` reads."""
    from safetensors.torch import save_file

    from histoprompt.export.alignment_training import CONFIG, WEIGHTS

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / WEIGHTS))
    (out_dir / CONFIG).write_text(model.config.model_dump_json(indent=1))


@app.callback(invoke_without_command=True)
def finetune(
    source: Annotated[Path, typer.Option("--from", help="bundle folder to warm-start from")],
    embeddings: Annotated[Path, typer.Option(help="folder of <slide_id>.npy tile embeddings")],
    slides: Annotated[Path, typer.Option(help="slides table: slide_id, patient_id")],
    expression: Annotated[Path, typer.Option(help="expression parquet of the new cohort")],
    fraction: Annotated[float, typer.Option(help="share of the new cohort's patients, (0, 1]")],
    out: Annotated[Path, typer.Option(help="folder of the fine-tuned bundle")],
    rna_encoder: Annotated[
        Path | None, typer.Option(help="RNA checkpoint folder, or 'tiny' (UNTRAINED demo)")
    ] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 20,
    lr: Annotated[float, typer.Option()] = 5e-4,
    seed: Annotated[int, typer.Option()] = 0,
    synthetic: Annotated[bool, typer.Option(help="label the bundle SYNTHETIC")] = False,
    alignment_only: Annotated[
        bool, typer.Option(help="write alignment/ and finetune.json only (no ONNX export)")
    ] = False,
) -> None:
    """Fine-tune the alignment of --from on --fraction of a new cohort; export a bundle."""
    from histoprompt.core.errors import HistopromptError

    with exit_on_error(HistopromptError, OSError, ValueError):
        record = finetune_bundle(
            source,
            embeddings,
            slides,
            expression,
            out,
            fraction=fraction,
            rna_encoder_dir=rna_encoder,
            epochs=epochs,
            lr=lr,
            seed=seed,
            synthetic=synthetic,
            alignment_only=alignment_only,
        )
    typer.echo(
        f"fine-tuned {record['source_model']} on {record['n_patients_used']} of "
        f"{record['n_patients_new_cohort']} patients (fraction {fraction}); data fingerprint "
        f"{record['data_fingerprint']}; bundle {out}"
    )
