"""The RNA reference database: what Soft-kNN and prototype prompting query.

A reference holds, for n reference samples (bulk RNA-seq profiles):

| file | content |
|---|---|
| `genes.txt` | G gene symbols, the RNA encoder's order |
| `expression.npy` | float16 or float32 [n, G], log1p(TPM), for new gene sets |
| `embeddings.npy` | float32 [n, E], L2-normalised, aligned space (`rna_embed` output) |
| `hallmark_scores.parquet` | raw ssGSEA scores [n, K] of the Hallmark sets, columns = set names |
| `metadata.parquet` | one row per sample (`sample_id`, e.g. `cancer_type`, `cohort`) |
| `manifest.json` | `ReferenceManifest`, written last: sizes, hashes, version |

Building lives in `reference_build`, storage (local and S3) in `reference_store`, SYNTHETIC
inputs in `reference_synthetic`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.errors import InvalidInputError
from histoprompt.core.genesets import HALLMARK_COLLECTION, GeneIndex
from histoprompt.core.ssgsea import DEFAULT_ALPHA, RankedExpression

__all__ = [
    "EmbedFn",
    "GeneOrderError",
    "ReferenceDB",
    "ReferenceDbError",
    "ReferenceManifest",
]

EmbedFn = Callable[[NDArray[Any]], NDArray[Any]]
"""float32 [n, G] expression in the encoder's gene order -> aligned embeddings [n, E]."""

REFERENCE_SCHEMA = 1
SAMPLE_ID = "sample_id"


class ReferenceDbError(InvalidInputError):
    """A reference that cannot be built or read as asked."""

    code = "invalid_reference"


class GeneOrderError(ReferenceDbError):
    """Expression genes that are not the RNA encoder's gene order."""

    code = "gene_order"


class ReferenceManifest(BaseModel):
    """`manifest.json` of a reference version; written last, so its presence means whole."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: int = Field(REFERENCE_SCHEMA, alias="schema")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version: str
    content_hash: str
    n_samples: int = Field(gt=0)
    n_genes: int = Field(gt=0)
    embed_dim: int = Field(gt=0)
    expression_dtype: Literal["float16", "float32"]
    hallmark_collection: str = HALLMARK_COLLECTION
    hallmark_sets: list[str]
    hallmark_skipped: dict[str, str] = Field(default_factory=dict)
    alpha: float = DEFAULT_ALPHA
    ties: Literal["ordinal", "average"] = "ordinal"
    encoder: str = Field("", description="RNA encoder / alignment version that made embeddings")
    synthetic: bool = False
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    files: dict[str, str] = Field(default_factory=dict, description="file -> sha256")


@dataclass
class ReferenceDB:
    """One loaded reference version (arrays in memory)."""

    manifest: ReferenceManifest
    genes: tuple[str, ...]
    expression: NDArray[Any]  # [n, G] float16/float32
    embeddings: NDArray[Any]  # float32 [n, E], unit rows
    hallmark_scores: pd.DataFrame  # [n, K] raw ssGSEA, columns = set names
    metadata: pd.DataFrame  # n rows, includes SAMPLE_ID
    _ranked: RankedExpression | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def n_samples(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def embed_dim(self) -> int:
        return int(self.embeddings.shape[1])

    @cached_property
    def gene_index(self) -> GeneIndex:
        return GeneIndex(self.genes)

    @property
    def ranked(self) -> RankedExpression:
        """Ranks of the stored expression, computed on first use (seconds for 10k x 20k)."""
        if self._ranked is None:
            self._ranked = RankedExpression(
                self.expression, alpha=self.manifest.alpha, ties=self.manifest.ties
            )
        return self._ranked

    @cached_property
    def gene_mean(self) -> NDArray[Any]:
        """float64 [G] per-gene mean of the stored expression."""
        mean: NDArray[Any] = self.expression.astype(np.float64).mean(axis=0)
        return mean

    @cached_property
    def gene_std(self) -> NDArray[Any]:
        """float64 [G] per-gene standard deviation of the stored expression."""
        std: NDArray[Any] = self.expression.astype(np.float64).std(axis=0)
        return std
