"""Soft-kNN: a slide's pathway score is a similarity-weighted mean over its RNA neighbours.

cosine(slide, reference embeddings) -> top-k -> softmax(sim / temperature) -> weighted mean of
the neighbours' ssGSEA scores. Open vocabulary: a gene set that is not a precomputed Hallmark
gets its reference scores on demand (ssGSEA over the stored, pre-ranked expression), cached
in an LRU keyed by the reference version and the gene set's content key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.genesets import GeneSetCollection, ResolvedGeneSet, gene_set_key
from histoprompt.core.reference import ReferenceDB

__all__ = ["ScoreCache", "SoftKnn", "SoftKnnConfig", "unit_rows"]


class SoftKnnConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(default=32, ge=1, description="neighbours per slide")
    temperature: float = Field(default=0.05, gt=0, description="softmax temperature on cosine")
    cache_size: int = Field(default=256, ge=0, description="new gene sets kept in the LRU")


def unit_rows(x: NDArray[Any], expected_dim: int | None = None) -> NDArray[Any]:
    """float32 [B, E] with unit rows; InvalidInputError for a bad shape, NaN or zero rows."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InvalidInputError(f"slide embeddings must be [B, E] with B >= 1, got {arr.shape}")
    if expected_dim is not None and arr.shape[1] != expected_dim:
        raise InvalidInputError(
            f"slide embeddings have width {arr.shape[1]}, the reference's aligned space has "
            f"{expected_dim}; query with the model version the reference was built for"
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError("slide embeddings contain NaN/inf")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InvalidInputError("a slide embedding is all zeros")
    out: NDArray[Any] = arr / norms
    return out


class ScoreCache:
    """Thread-safe LRU of per-reference-sample score vectors, keyed by strings."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[str, NDArray[Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> NDArray[Any] | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: NDArray[Any]) -> None:
        if self.capacity == 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data


class SoftKnn:
    """Soft-kNN over one reference."""

    method = "soft_knn"

    def __init__(
        self,
        reference: ReferenceDB,
        config: SoftKnnConfig | None = None,
        hallmark: GeneSetCollection | None = None,
    ) -> None:
        self.reference = reference
        self.config = config or SoftKnnConfig()
        self.cache = ScoreCache(self.config.cache_size)
        self._k = min(self.config.k, reference.n_samples)
        # Precomputed columns are only reused for the exact same genes (a user JSON set
        # that borrows a Hallmark name but changes its genes must be recomputed).
        self._precomputed: dict[str, str] = {}
        if hallmark is not None:
            for name in reference.hallmark_scores.columns:
                if name in hallmark:
                    self._precomputed[gene_set_key(hallmark[name].genes)] = str(name)

    def supports(self, resolved: ResolvedGeneSet) -> str | None:
        return None

    def warm(self) -> None:
        """Rank the reference expression now (model load), not on the first new gene set."""
        _ = self.reference.ranked

    def neighbours(self, slide_embeddings: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
        """(indices int64 [B, k], softmax weights float64 [B, k]) of the nearest references."""
        q = unit_rows(slide_embeddings, self.reference.embed_dim)
        sims = q @ self.reference.embeddings.T  # [B, n] cosine, both sides unit rows
        k = self._k
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else None
        if idx is None:
            idx = np.broadcast_to(np.arange(sims.shape[1]), sims.shape).copy()
        top = np.take_along_axis(sims, idx, axis=1).astype(np.float64)
        logits = (top - top.max(axis=1, keepdims=True)) / self.config.temperature
        w = np.exp(logits)
        w /= w.sum(axis=1, keepdims=True)
        return idx, w

    def is_cached(self, resolved: ResolvedGeneSet) -> bool:
        return resolved.key in self._precomputed or self._cache_key(resolved) in self.cache

    def _cache_key(self, resolved: ResolvedGeneSet) -> str:
        return f"{self.reference.version}:{resolved.key}"

    def reference_scores(self, resolved: ResolvedGeneSet) -> NDArray[Any]:
        """Raw ssGSEA score of the set in every reference sample, float32 [n]."""
        column = self._precomputed.get(resolved.key)
        if column is not None:
            return self.reference.hallmark_scores[column].to_numpy(np.float32)
        key = self._cache_key(resolved)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        scores = self.reference.ranked.score(resolved.indices).astype(np.float32)
        self.cache.put(key, scores)
        return scores

    def predict(
        self, slide_embeddings: NDArray[Any], gene_sets: Sequence[ResolvedGeneSet]
    ) -> NDArray[Any]:
        """float32 [B, K] predicted scores (on the reference's raw ssGSEA scale)."""
        idx, w = self.neighbours(slide_embeddings)
        out = np.empty((idx.shape[0], len(gene_sets)), dtype=np.float32)
        for j, resolved in enumerate(gene_sets):
            ref_scores = self.reference_scores(resolved)
            out[:, j] = (w * ref_scores[idx]).sum(axis=1)
        return out
