"""`histoprompt-export finetune`: warm start on a fraction of a new SYNTHETIC cohort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers.cohort_files import cohort_args, write_cohort_files
from typer.testing import CliRunner

from histoprompt.export.cli import app
from histoprompt.export.finetune import choose_patients

runner = CliRunner()


def test_fractions_are_nested_and_seeded() -> None:
    ids = [f"SYN-{i:03d}" for i in range(40)]
    small, large = choose_patients(ids, 0.1, 0), choose_patients(ids, 0.5, 0)
    assert len(small) == 4 and len(large) == 20 and set(small) <= set(large)
    assert choose_patients(ids, 0.1, 1) != small


def _source_bundle(folder: Path) -> Path:
    """The parts of a bundle finetune reads: card, alignment run, training config."""
    import torch

    from histoprompt.export.alignment import AlignmentConfig, AlignmentModel
    from histoprompt.export.alignment_training import TrainConfig
    from histoprompt.export.bundle import demo_card, demo_config
    from histoprompt.export.finetune import save_alignment

    folder.mkdir()
    (folder / "model_card.json").write_text(demo_card(demo_config(0)).model_dump_json())
    torch.manual_seed(0)
    save_alignment(
        AlignmentModel(AlignmentConfig(tile_dim=192, rna_dim=128, hidden=16, attn_dim=8,
                                       aligned_dim=8)),
        folder / "alignment",
    )  # fmt: skip
    cfg = TrainConfig(hidden=16, attn_dim=8, aligned_dim=8, batch_size=4)
    (folder / "metrics.json").write_text(json.dumps({"train_config": cfg.model_dump()}))
    return folder


def _new_cohort_files(tmp_path: Path) -> Path:
    """A SYNTHETIC new cohort as finetune reads it: tile embeddings, slides table, parquet."""
    from histoprompt.export.cohort import CohortConfig, make_cohort
    from histoprompt.export.embedding import embed_tiles
    from histoprompt.export.encoders import load_encoder

    enc = load_encoder("tiny")
    cohort = make_cohort(CohortConfig(n_patients=12, min_tiles=3, max_tiles=4, seed=3))
    write_cohort_files(cohort, tmp_path / "new", lambda s: embed_tiles(enc, s.tiles))
    return tmp_path / "new"


def _args(d: Path) -> list[str]:
    return [*cohort_args(d), "--rna-encoder", "tiny"]


def test_finetune_warm_starts_and_records_the_data(tmp_path: Path) -> None:
    from histoprompt.export.alignment_training import load_alignment

    new = _new_cohort_files(tmp_path)
    src = _source_bundle(tmp_path / "src")
    out = tmp_path / "adapted"
    res = runner.invoke(app, ["finetune", "--from", str(src), *_args(new), "--fraction", "0.5",
                              "--epochs", "2", "--alignment-only", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    record = json.loads((out / "finetune.json").read_text())
    assert record["n_patients_used"] == 6 and record["n_patients_new_cohort"] == 12
    assert record["synthetic"] is True and len(record["data_fingerprint"]) == 8
    before, after = load_alignment(src / "alignment"), load_alignment(out / "alignment")
    moved = [
        not np.allclose(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(before.parameters(), after.parameters(), strict=True)
    ]
    assert any(moved)
    bad = runner.invoke(app, ["finetune", "--from", str(src), *_args(new), "--fraction", "0",
                              "--out", str(tmp_path / "x")])  # fmt: skip
    assert bad.exit_code == 2 and "fraction" in bad.output


def test_finetune_writes_a_full_bundle(tmp_path: Path) -> None:
    """Without --alignment-only: ONNX files (parity-checked), a card with its own version
    naming the source, the new cohort as reference, and the fine-tuning record in metrics."""
    from histoprompt.core.modelspec import ModelCard

    new = _new_cohort_files(tmp_path)
    src = _source_bundle(tmp_path / "src")
    out = tmp_path / "adapted"
    res = runner.invoke(app, ["finetune", "--from", str(src), *_args(new), "--fraction", "0.5",
                              "--epochs", "2", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    source_card = ModelCard.model_validate_json((src / "model_card.json").read_text())
    card = ModelCard.model_validate_json((out / "model_card.json").read_text())
    assert card.version.startswith("tiny-ft-") and card.version != source_card.version
    assert card.synthetic is True
    parity = json.loads((out / "parity.json").read_text())
    assert {"slide_embed", "rna_embed"} <= set(parity)
    assert all(rec["passed"] for rec in parity.values()), parity
    assert all((out / f"{name}.onnx").is_file() for name in ("slide_embed", "rna_embed"))
    metrics = json.loads((out / "metrics.json").read_text())
    record = json.loads((out / "finetune.json").read_text())
    assert metrics["finetune"] == record and metrics["model_version"] == card.version
    assert record["source_model"] == source_card.version and record["n_patients_used"] == 6
