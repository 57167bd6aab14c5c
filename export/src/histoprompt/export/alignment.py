"""The trained part: gated ABMIL slide pooling, projection heads, symmetric InfoNCE.

Shapes: tile embeddings [B,N,D] with a mask [B,N] (variable bag sizes, padded), RNA
embeddings [B,R]; both sides end in an L2-normalised E-dim space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

WHITEN_RIDGE = 1e-3  # eigenvalue floor of the input whitening, relative to the largest


class AlignmentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tile_dim: int = Field(gt=0, description="D")
    rna_dim: int = Field(gt=0, description="width of the frozen RNA encoder output")
    hidden: int = Field(default=256, gt=0)
    attn_dim: int = Field(default=128, gt=0)
    aligned_dim: int = Field(default=128, gt=0, description="E")
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    temperature_init: float = Field(default=0.07, gt=0.0)


class GatedABMIL(nn.Module):
    """Gated attention MIL pooling (Ilse et al. 2018): a = w^T (tanh(V h) * sigmoid(U h)).

    Tiles are first whitened with the training tiles' mean and covariance (PCA whitening,
    buffers, identity until `set_input_statistics`): a frozen encoder's output is dominated by
    a few high-variance, correlated directions (stain colour), and on raw or per-dimension
    standardised inputs the alignment kept those and dropped the low-variance directions that
    carry planted programs (hypoxia, immune).
    """

    tile_mean: torch.Tensor
    tile_whiten: torch.Tensor

    def __init__(self, in_dim: int, hidden: int, attn_dim: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("tile_mean", torch.zeros(in_dim))
        self.register_buffer("tile_whiten", torch.eye(in_dim))
        self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout))
        self.attn_v = nn.Linear(hidden, attn_dim)
        self.attn_u = nn.Linear(hidden, attn_dim)
        self.attn_w = nn.Linear(attn_dim, 1)

    def forward(
        self, tiles: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """tiles [B,N,D], mask [B,N] (True = real tile) -> pooled [B,H], attention [B,N]."""
        h = self.embed((tiles - self.tile_mean) @ self.tile_whiten)
        logits = self.attn_w(torch.tanh(self.attn_v(h)) * torch.sigmoid(self.attn_u(h)))
        logits = logits.squeeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        attention = torch.softmax(logits, dim=-1)
        pooled = torch.einsum("bn,bnh->bh", attention, h)
        return pooled, attention

    @torch.no_grad()
    def set_input_statistics(self, tiles: torch.Tensor, ridge: float = WHITEN_RIDGE) -> None:
        """Whiten inputs with these training tiles' statistics ([N,D]); eigenvalues below
        `ridge` x the largest are damped rather than blown up (noise directions)."""
        x = tiles.double()
        mean = x.mean(dim=0)
        values, vectors = torch.linalg.eigh(torch.cov((x - mean).T))
        values = values.clamp(min=0)
        self.tile_mean.copy_(mean.float())
        self.tile_whiten.copy_((vectors / (values + ridge * values.max()).sqrt()).float())


INPUT_STATISTICS = ("abmil.tile_mean", "abmil.tile_whiten")


class ProjectionHead(nn.Module):
    """Linear -> GELU -> Linear into E, then L2 normalisation."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, in_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(in_dim, out_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=-1)


class AlignmentModel(nn.Module):
    """Image branch (ABMIL + head) and RNA branch (head) with a learnable temperature."""

    def __init__(self, config: AlignmentConfig) -> None:
        super().__init__()
        self.config = config
        self.abmil = GatedABMIL(config.tile_dim, config.hidden, config.attn_dim, config.dropout)
        self.image_head = ProjectionHead(config.hidden, config.aligned_dim, config.dropout)
        self.rna_head = ProjectionHead(config.rna_dim, config.aligned_dim, config.dropout)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.temperature_init)))

    def embed_slides(
        self, tiles: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,N,D] -> slide embeddings [B,E] (unit norm), attention [B,N]."""
        pooled, attention = self.abmil(tiles, mask)
        return self.image_head(pooled), attention

    def embed_rna(self, rna: torch.Tensor) -> torch.Tensor:
        """[B,R] frozen RNA-encoder output -> [B,E] (unit norm)."""
        out: torch.Tensor = self.rna_head(rna)
        return out

    def scale(self) -> torch.Tensor:
        # Clamped as in CLIP so the temperature cannot collapse to zero.
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


def symmetric_info_nce(image: torch.Tensor, rna: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->RNA and RNA->image cross-entropy over the in-batch similarity matrix."""
    logits = scale * image @ rna.T
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class SlideEmbedExport(nn.Module):
    """Serving form of the image branch: one slide [N,D] -> SLIDE_EMBEDDING [1,E], ATTENTION [N]."""

    def __init__(self, model: AlignmentModel) -> None:
        super().__init__()
        self.abmil = model.abmil
        self.image_head = model.image_head

    def forward(self, tiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, attention = self.abmil(tiles.unsqueeze(0))
        return self.image_head(pooled), attention[0]


class RnaEmbedExport(nn.Module):
    """Serving form of the RNA branch: log1p(TPM) [B,G] -> RNA_EMBEDDING [B,E]."""

    def __init__(self, encoder: nn.Module, model: AlignmentModel) -> None:
        super().__init__()
        self.encoder = encoder
        self.rna_head = model.rna_head

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.rna_head(self.encoder(expression))
        return out
