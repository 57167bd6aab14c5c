"""Alignment training on cached tile embeddings (the frozen encoders ran once per slide).

Patients, not slides, are split into train/val; each batch holds one slide per patient so
that in-batch negatives are true negatives. Early stopping watches the validation InfoNCE.
A run writes `last.pt` every epoch (resumable when the config hash matches), the best
weights as `alignment.safetensors`, and `metrics.json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.export.alignment import (
    INPUT_STATISTICS,
    AlignmentConfig,
    AlignmentModel,
    symmetric_info_nce,
)
from histoprompt.export.errors import TrainingError

CHECKPOINT = "last.pt"
WEIGHTS = "alignment.safetensors"
METRICS = "metrics.json"
CONFIG = "alignment_config.json"


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    epochs: int = Field(default=80, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=12, ge=1)
    val_fraction: float = Field(default=0.25, gt=0, lt=1)
    max_tiles: int = Field(default=64, ge=1, description="tiles sampled per bag per step")
    hidden: int = Field(default=128, gt=0)
    attn_dim: int = Field(default=64, gt=0)
    aligned_dim: int = Field(default=64, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    temperature_init: float = Field(default=0.07, gt=0)
    threads: int = Field(default=1, ge=1, description="torch intra-op threads while training")
    whiten_tiles: bool = Field(
        default=True,
        description="whiten tile embeddings with the training patients' mean and covariance "
        "(stored in the model); without it immune and hypoxia dropped out of the alignment",
    )


@dataclass(frozen=True)
class PairedEmbeddings:
    """Cached frozen-encoder outputs: one bag per slide, one RNA embedding per patient."""

    bags: Sequence[NDArray[Any]]  # float32 [N_i, D] per slide
    slide_patients: Sequence[str]  # patient of each slide
    patient_ids: Sequence[str]
    rna: NDArray[Any]  # float32 [P, R], row order = patient_ids

    def __post_init__(self) -> None:
        if len(self.bags) != len(self.slide_patients):
            raise TrainingError("one patient id per slide bag is required")
        if self.rna.shape[0] != len(self.patient_ids):
            raise TrainingError("one RNA embedding row per patient is required")
        unknown = set(self.slide_patients) - set(self.patient_ids)
        if unknown:
            raise TrainingError(f"{len(unknown)} slides belong to patients without RNA")


@dataclass(frozen=True)
class TrainResult:
    model: AlignmentModel
    metrics: dict[str, Any]
    out_dir: Path
    config_hash: str


def config_hash(*parts: Any) -> str:
    """8 hex chars over the JSON of every part (configs, data fingerprints)."""
    blob = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def split_by_patient(
    patient_ids: Sequence[str], val_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Deterministic patient-level split: no patient is in both train and val."""
    unique = sorted(set(patient_ids))
    if len(unique) < 4:
        raise TrainingError(f"need at least 4 patients to split, got {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    n_val = max(2, round(len(unique) * val_fraction))
    val = sorted(unique[i] for i in order[:n_val])
    train = sorted(unique[i] for i in order[n_val:])
    return train, val


def recall_at_k(queries: NDArray[Any], gallery: NDArray[Any], k: int) -> float:
    """Fraction of queries i whose match gallery[i] ranks in the top k by cosine."""
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True).clip(1e-12)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True).clip(1e-12)
    sims = q @ g.T
    true = np.diag(sims)[:, None]
    rank = (sims > true).sum(axis=1)
    return float((rank < k).mean())


def _pad(
    bags: Sequence[NDArray[Any]], max_tiles: int, gen: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    chosen = []
    for bag in bags:
        t = torch.from_numpy(np.ascontiguousarray(bag, dtype=np.float32))
        if t.shape[0] > max_tiles and gen is not None:
            t = t[torch.randperm(t.shape[0], generator=gen)[:max_tiles]]
        chosen.append(t)
    n = max(t.shape[0] for t in chosen)
    x = torch.zeros(len(chosen), n, chosen[0].shape[1])
    mask = torch.zeros(len(chosen), n, dtype=torch.bool)
    for i, t in enumerate(chosen):
        x[i, : t.shape[0]] = t
        mask[i, : t.shape[0]] = True
    return x, mask


class _Split:
    """Slides and RNA rows of one side of the split, one slide per patient per draw."""

    def __init__(self, data: PairedEmbeddings, patients: Sequence[str]) -> None:
        index = {p: i for i, p in enumerate(data.patient_ids)}
        self.patients = list(patients)
        self.rna = torch.from_numpy(data.rna[[index[p] for p in self.patients]]).float()
        by_patient: dict[str, list[int]] = {p: [] for p in self.patients}
        for s, p in enumerate(data.slide_patients):
            if p in by_patient:
                by_patient[p].append(s)
        self.slides = [by_patient[p] for p in self.patients]
        if any(not s for s in self.slides):
            raise TrainingError("every patient in the split needs at least one slide")
        self.data = data

    def first_slides(self) -> list[NDArray[Any]]:
        return [self.data.bags[s[0]] for s in self.slides]


@torch.no_grad()
def evaluate(model: AlignmentModel, split: _Split, max_tiles: int) -> dict[str, float]:
    model.eval()
    x, mask = _pad(split.first_slides(), max_tiles=10**9, gen=None)
    img, _ = model.embed_slides(x, mask)
    rna = model.embed_rna(split.rna)
    loss = float(symmetric_info_nce(img, rna, model.scale()))
    a, b = img.numpy(), rna.numpy()
    n = len(split.patients)
    return {
        "loss": loss,
        "recall@1": recall_at_k(a, b, 1),
        "recall@5": recall_at_k(a, b, 5),
        "chance@5": min(1.0, 5 / n),
        "n": float(n),
    }


def _save_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    tmp.replace(path)


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_alignment(
    data: PairedEmbeddings,
    config: TrainConfig,
    out_dir: Path,
    *,
    fingerprint: str = "",
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    """Train the alignment module; resumes from `out_dir/last.pt` when the hash matches."""
    # The module is small: one thread avoids oversubscription on shared CPUs (10x faster).
    with _intra_op_threads(config.threads):
        return _train(
            data, config, out_dir, fingerprint=fingerprint, resume=resume, progress=progress
        )


def _alignment_config(data: PairedEmbeddings, config: TrainConfig) -> AlignmentConfig:
    return AlignmentConfig(
        tile_dim=int(data.bags[0].shape[1]),
        rna_dim=int(data.rna.shape[1]),
        hidden=config.hidden,
        attn_dim=config.attn_dim,
        aligned_dim=config.aligned_dim,
        dropout=config.dropout,
        temperature_init=config.temperature_init,
    )


def _new_model(align_cfg: AlignmentConfig, config: TrainConfig, train: _Split) -> AlignmentModel:
    """Seeded fresh module; inputs whitened with the training patients' tiles only (early
    stopping's and test patients' stay unseen)."""
    torch.manual_seed(config.seed)
    model = AlignmentModel(align_cfg)
    if config.whiten_tiles:
        tiles = np.concatenate([train.data.bags[s] for slides in train.slides for s in slides])
        model.abmil.set_input_statistics(torch.from_numpy(tiles))
    return model


def _train_epoch(
    model: AlignmentModel,
    opt: torch.optim.Optimizer,
    train: _Split,
    config: TrainConfig,
    gen: torch.Generator,
) -> float:
    """One pass over the training patients in random order; returns the mean InfoNCE."""
    model.train()
    order = torch.randperm(len(train.patients), generator=gen).tolist()
    losses = []
    for start in range(0, len(order) - 1, config.batch_size):
        batch = order[start : start + config.batch_size]
        if len(batch) < 2:
            continue
        picks = [
            train.slides[i][int(torch.randint(len(train.slides[i]), (1,), generator=gen))]
            for i in batch
        ]
        x, mask = _pad([train.data.bags[s] for s in picks], config.max_tiles, gen)
        img, _ = model.embed_slides(x, mask)
        rna = model.embed_rna(train.rna[batch])
        loss = symmetric_info_nce(img, rna, model.scale())
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def _save_checkpoint(
    ckpt: Path,
    digest: str,
    model: AlignmentModel,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    best_state: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    torch.save(
        {
            "config_hash": digest,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "generator": gen.get_state(),
            "best_model": best_state,
            "state": json.dumps(state),
        },
        ckpt,
    )


def _resume(
    ckpt: Path,
    digest: str,
    model: AlignmentModel,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Restore model, optimizer and generator from `ckpt`; returns (best weights, loop state)."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    if saved.get("config_hash") != digest:
        raise TrainingError(
            f"{ckpt} belongs to another configuration (hash {saved.get('config_hash')}, "
            f"this run {digest}); use a fresh output directory or resume=False"
        )
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    gen.set_state(saved["generator"])
    return saved["best_model"], json.loads(saved["state"])


def _train(
    data: PairedEmbeddings,
    config: TrainConfig,
    out_dir: Path,
    *,
    fingerprint: str = "",
    resume: bool = True,
    progress: bool = True,
) -> TrainResult:
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    align_cfg = _alignment_config(data, config)
    # Run length is not part of the identity, so a finished run can be extended by resuming.
    identity = config.model_dump(exclude={"epochs", "patience", "threads"})
    digest = config_hash(identity, align_cfg.model_dump(), fingerprint)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_p, val_p = split_by_patient(data.slide_patients, config.val_fraction, config.seed)
    train, val = _Split(data, train_p), _Split(data, val_p)

    model = _new_model(align_cfg, config, train)
    unaligned = evaluate(model, val, config.max_tiles)  # untrained module: the baseline
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"epoch": 0, "best": float("inf"), "bad": 0, "history": []}
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = out_dir / CHECKPOINT
    train_seconds = 0.0
    if resume and ckpt.is_file():
        best_state, state = _resume(ckpt, digest, model, opt, gen)
        train_seconds = float(state.get("train_seconds", 0.0))

    bar = tqdm(
        range(state["epoch"], config.epochs),
        desc="alignment",
        disable=not progress,
        initial=state["epoch"],
        total=config.epochs,
    )
    for epoch in bar:
        if state["bad"] >= config.patience:
            break
        started = time.perf_counter()
        train_loss = _train_epoch(model, opt, train, config, gen)
        metrics = evaluate(model, val, config.max_tiles)
        train_seconds += time.perf_counter() - started
        record = {"epoch": epoch + 1, "train_loss": train_loss, **metrics}
        state["history"].append(record)
        if metrics["loss"] < state["best"] - 1e-4:
            state.update(best=metrics["loss"], bad=0, best_epoch=epoch + 1)
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            state["bad"] += 1
        state["epoch"] = epoch + 1
        state["train_seconds"] = train_seconds
        bar.set_postfix(val_loss=f"{metrics['loss']:.3f}", r5=f"{metrics['recall@5']:.2f}")
        _save_checkpoint(ckpt, digest, model, opt, gen, best_state, state)
    bar.close()

    model.load_state_dict(best_state)
    model.eval()
    final = evaluate(model, val, config.max_tiles)
    save_file({k: v.contiguous() for k, v in best_state.items()}, str(out_dir / WEIGHTS))
    (out_dir / CONFIG).write_text(align_cfg.model_dump_json(indent=1))
    metrics_doc: dict[str, Any] = {
        "config_hash": digest,
        "train_config": config.model_dump(),
        "alignment_config": align_cfg.model_dump(),
        "n_train_patients": len(train_p),
        "n_val_patients": len(val_p),
        "best_epoch": state.get("best_epoch", 0),
        "epochs_run": state["epoch"],
        "train_seconds": round(train_seconds, 3),
        "val": final,
        "val_unaligned": unaligned,
        "history": state["history"],
    }
    _save_json(out_dir / METRICS, metrics_doc)
    return TrainResult(model=model, metrics=metrics_doc, out_dir=out_dir, config_hash=digest)


def load_alignment(out_dir: Path) -> AlignmentModel:
    """Load the best weights of a finished run."""
    from safetensors.torch import load_file

    try:
        cfg = AlignmentConfig.model_validate_json((out_dir / CONFIG).read_text())
        state = load_file(str(out_dir / WEIGHTS))
    except (OSError, ValueError) as err:
        raise TrainingError(f"{out_dir} holds no finished alignment run: {err}") from err
    model = AlignmentModel(cfg)
    if "abmil.tile_std" in state:  # saved while the inputs were standardised per dimension
        state["abmil.tile_whiten"] = torch.diag(1.0 / state.pop("abmil.tile_std"))
    for key in INPUT_STATISTICS:  # runs from before input whitening: identity
        state.setdefault(key, model.state_dict()[key])
    model.load_state_dict(state)
    return model.eval()
