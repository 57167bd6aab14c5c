"""Alignment module and training: ABMIL masking, InfoNCE, patient split, learning, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from histoprompt.export.alignment import (
    AlignmentConfig,
    AlignmentModel,
    SlideEmbedExport,
    symmetric_info_nce,
)
from histoprompt.export.alignment_training import (
    PairedEmbeddings,
    TrainConfig,
    load_alignment,
    recall_at_k,
    split_by_patient,
    train_alignment,
)
from histoprompt.export.errors import TrainingError


def _model() -> AlignmentModel:
    torch.manual_seed(0)
    return AlignmentModel(
        AlignmentConfig(tile_dim=8, rna_dim=6, hidden=16, attn_dim=8, aligned_dim=4, dropout=0.0)
    ).eval()


def test_padding_does_not_change_the_slide_embedding() -> None:
    model = _model()
    bag = torch.randn(1, 5, 8)
    padded = torch.cat([bag, torch.randn(1, 3, 8) * 100], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    with torch.no_grad():
        a, att_a = model.embed_slides(bag)
        b, att_b = model.embed_slides(padded, mask)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(att_b[0, 5:], torch.zeros(3))
    assert att_a.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert a.norm(dim=-1).item() == pytest.approx(1.0, abs=1e-6)


def test_serving_form_returns_one_embedding_and_per_tile_attention() -> None:
    model = _model()
    with torch.no_grad():
        emb, att = SlideEmbedExport(model)(torch.randn(11, 8))
    assert emb.shape == (1, 4) and att.shape == (11,)


def test_info_nce_is_lower_for_matched_pairs() -> None:
    x = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    scale = torch.tensor(10.0)
    matched = symmetric_info_nce(x, x, scale)
    shuffled = symmetric_info_nce(
        x, x[torch.randperm(8, generator=torch.Generator().manual_seed(1))], scale
    )
    assert matched < shuffled


def test_recall_at_k_counts_ranks() -> None:
    gallery = np.eye(4)
    assert recall_at_k(gallery, gallery, 1) == 1.0
    assert recall_at_k(gallery[[1, 0, 2, 3]], gallery, 1) == 0.5


def test_split_is_by_patient_and_deterministic() -> None:
    patients = [f"P{i // 2}" for i in range(40)]  # two slides per patient
    train, val = split_by_patient(patients, 0.25, seed=1)
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(patients)
    assert (train, val) == split_by_patient(patients, 0.25, seed=1)
    with pytest.raises(TrainingError, match="at least 4 patients"):
        split_by_patient(["a", "b"], 0.5, 0)


def _synthetic_pairs(n: int = 48, seed: int = 0) -> PairedEmbeddings:
    """Bags whose mean carries a latent that the RNA side sees through another map."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    img_map, rna_map = rng.normal(size=(4, 16)), rng.normal(size=(4, 12))
    bags = [
        (z[i] @ img_map + rng.normal(0, 1.0, size=(int(rng.integers(5, 15)), 16))).astype(
            np.float32
        )
        for i in range(n)
    ]
    rna = (z @ rna_map + rng.normal(0, 0.1, size=(n, 12))).astype(np.float32)
    ids = [f"SYN-{i}" for i in range(n)]
    return PairedEmbeddings(bags=bags, slide_patients=ids, patient_ids=ids, rna=rna)


CFG = TrainConfig(
    epochs=25, batch_size=12, hidden=32, attn_dim=16, aligned_dim=16, patience=30, lr=3e-3
)


def test_training_learns_and_writes_its_records(tmp_path: Path) -> None:
    result = train_alignment(_synthetic_pairs(), CFG, tmp_path, progress=False)
    val, base = result.metrics["val"], result.metrics["val_unaligned"]
    assert val["recall@5"] > max(base["recall@5"], val["chance@5"]) + 0.2
    doc = json.loads((tmp_path / "metrics.json").read_text())
    assert doc["config_hash"] == result.config_hash and len(doc["history"]) == 25
    loaded = load_alignment(tmp_path)
    x = torch.randn(1, 7, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.embed_slides(x)[0], result.model.embed_slides(x)[0])


def test_resume_continues_where_the_run_stopped(tmp_path: Path) -> None:
    data = _synthetic_pairs(n=32)
    cfg = CFG.model_copy(update={"dropout": 0.0, "epochs": 8})
    full = train_alignment(data, cfg, tmp_path / "full", progress=False, fingerprint="f")
    short = cfg.model_copy(update={"epochs": 4})
    train_alignment(data, short, tmp_path / "cut", progress=False, fingerprint="f")
    resumed = train_alignment(data, cfg, tmp_path / "cut", progress=False, fingerprint="f")
    assert resumed.metrics["epochs_run"] == 8
    got = [h["train_loss"] for h in resumed.metrics["history"]]
    want = [h["train_loss"] for h in full.metrics["history"]]
    np.testing.assert_allclose(got, want, rtol=1e-4)
    other = cfg.model_copy(update={"lr": 1e-4})
    with pytest.raises(TrainingError, match="another configuration"):
        train_alignment(data, other, tmp_path / "cut", progress=False, fingerprint="f")


def test_inconsistent_data_is_refused() -> None:
    with pytest.raises(TrainingError, match="one patient id per slide"):
        PairedEmbeddings(
            bags=[np.zeros((2, 3))], slide_patients=[], patient_ids=[], rna=np.zeros((0, 2))
        )


def test_tiles_are_whitened_with_the_training_patients_statistics(tmp_path: Path) -> None:
    """Fitted on training patients' tiles only (never early stopping's), stored with the
    weights; a run saved before the statistics existed loads as identity."""
    from safetensors.torch import load_file, save_file

    data = _synthetic_pairs(n=24)
    bags = [(b * np.linspace(0.1, 50, 16) + 7).astype(np.float32) for b in data.bags]
    data = PairedEmbeddings(bags, data.slide_patients, data.patient_ids, data.rna)
    cfg = CFG.model_copy(update={"epochs": 1})
    model = train_alignment(data, cfg, tmp_path, progress=False).model
    train_ids, _ = split_by_patient(data.patient_ids, cfg.val_fraction, cfg.seed)
    tiles = np.concatenate([bags[list(data.patient_ids).index(p)] for p in train_ids])
    np.testing.assert_allclose(model.abmil.tile_mean.numpy(), tiles.mean(0), rtol=1e-4)
    white = (tiles - tiles.mean(0)) @ model.abmil.tile_whiten.numpy().astype(np.float64)
    cov = np.cov(white, rowvar=False)
    np.testing.assert_allclose(cov, np.diag(np.diag(cov)), atol=1e-3)  # decorrelated
    assert 0.99 < np.diag(cov).max() <= 1.0 + 1e-3  # unit variance up to the ridge
    plain = train_alignment(
        data, cfg.model_copy(update={"whiten_tiles": False}), tmp_path / "p", progress=False
    ).model
    assert torch.equal(plain.abmil.tile_whiten, torch.eye(16))
    state = load_file(str(tmp_path / "alignment.safetensors"))
    save_file({k: v for k, v in state.items() if "tile_" not in k}, str(tmp_path / "old.st"))
    (tmp_path / "alignment.safetensors").unlink()
    (tmp_path / "old.st").rename(tmp_path / "alignment.safetensors")
    old = load_alignment(tmp_path)
    assert torch.equal(old.abmil.tile_mean, torch.zeros(16))
    assert torch.equal(old.abmil.tile_whiten, torch.eye(16))
