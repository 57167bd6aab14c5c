"""Prototype prompting (THREADS-style): a gene set becomes a pseudo-expression profile.

Profile = the reference's per-gene mean, with the set's genes raised by `k_sd` standard
deviations. It runs through the same RNA encoder and projection as the reference (the embed
function), and a slide scores by cosine to that prototype. Raw cosines are not comparable
across sets, so each is calibrated on the reference: z = (cos - mean) / sd of the cosines
between the prototype and every reference embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.genesets import ResolvedGeneSet
from histoprompt.core.reference import EmbedFn, ReferenceDB
from histoprompt.core.softknn import unit_rows

__all__ = ["Prototype", "PrototypeConfig", "PrototypeScorer"]


class PrototypeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    k_sd: float = Field(default=2.0, gt=0, description="how many SDs the set's genes are raised")
    cache_size: int = Field(default=256, ge=0)


@dataclass(frozen=True)
class Prototype:
    embedding: NDArray[Any]  # float32 [E], unit
    ref_mean: float
    ref_sd: float


class PrototypeScorer:
    method = "prototype"

    def __init__(
        self, reference: ReferenceDB, embed_fn: EmbedFn, config: PrototypeConfig | None = None
    ) -> None:
        self.reference = reference
        self.embed_fn = embed_fn
        self.config = config or PrototypeConfig()
        self._cache: dict[str, Prototype] = {}

    def supports(self, resolved: ResolvedGeneSet) -> str | None:
        return None

    def profile(self, resolved: ResolvedGeneSet) -> NDArray[Any]:
        """float32 [G] pseudo-expression: reference mean, set genes + k_sd * SD."""
        prof = self.reference.gene_mean.copy()
        sd = self.reference.gene_std[resolved.indices]
        # a gene constant across the reference still needs to move, or it says nothing
        sd = np.where(sd > 0, sd, 1.0)
        prof[resolved.indices] += self.config.k_sd * sd
        out: NDArray[Any] = prof.astype(np.float32)
        return out

    def prototype(self, resolved: ResolvedGeneSet) -> Prototype:
        key = f"{self.reference.version}:{resolved.key}"
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        emb = np.asarray(self.embed_fn(self.profile(resolved)[None, :]), dtype=np.float32)
        if emb.shape != (1, self.reference.embed_dim):
            raise InvalidInputError(
                f"embed function returned {emb.shape}, expected (1, {self.reference.embed_dim})"
            )
        proto = unit_rows(emb)[0]
        cos = self.reference.embeddings @ proto
        sd = float(cos.std())
        made = Prototype(proto, float(cos.mean()), sd if sd > 0 else 1.0)
        if len(self._cache) >= self.config.cache_size > 0:
            self._cache.pop(next(iter(self._cache)))
        if self.config.cache_size > 0:
            self._cache[key] = made
        return made

    def predict(
        self, slide_embeddings: NDArray[Any], gene_sets: Sequence[ResolvedGeneSet]
    ) -> NDArray[Any]:
        """float32 [B, K]: z-scores of the slide-prototype cosine against the reference."""
        q = unit_rows(slide_embeddings, self.reference.embed_dim)
        out = np.empty((q.shape[0], len(gene_sets)), dtype=np.float32)
        for j, resolved in enumerate(gene_sets):
            p = self.prototype(resolved)
            out[:, j] = (q @ p.embedding - p.ref_mean) / p.ref_sd
        return out
