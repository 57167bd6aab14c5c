"""SYNTHETIC reference inputs and an untrained linear RNA encoder, for tests, benchmarks and
the demo; no real samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histoprompt.core.genesets import GeneSetCollection, load_hallmark
from histoprompt.core.reference import SAMPLE_ID, EmbedFn

__all__ = ["SyntheticReferenceInputs", "linear_embed_fn", "synthetic_reference_inputs"]


@dataclass(frozen=True)
class SyntheticReferenceInputs:
    """SYNTHETIC expression driven by latent programs over Hallmark genes; no real samples."""

    expression: pd.DataFrame  # [n, G] log1p(TPM)-like, sample ids `SYN-R…`
    metadata: pd.DataFrame  # sample_id, cancer_type, cohort="synthetic", patient_id
    latents: NDArray[Any]  # [n, P]
    program_sets: tuple[str, ...]  # Hallmark set each latent drives


def synthetic_reference_inputs(
    n_samples: int,
    *,
    n_genes: int | None = None,
    n_programs: int = 6,
    seed: int = 0,
    collection: GeneSetCollection | None = None,
) -> SyntheticReferenceInputs:
    """SYNTHETIC reference inputs: each of `n_programs` latents raises one Hallmark set's genes.

    Genes are the Hallmark genes (all of them, or the first `n_genes`, padded with
    `SYNGENE…` fillers when more are asked for); about 20 % of values are exact zeros.
    """
    coll = collection or load_hallmark()
    rng = np.random.default_rng(seed)
    hallmark_genes = list(dict.fromkeys(g for gs in coll.values() for g in gs.genes))
    g = n_genes or len(hallmark_genes)
    genes = hallmark_genes[:g] + [f"SYNGENE{i}" for i in range(max(0, g - len(hallmark_genes)))]
    pos = {x: i for i, x in enumerate(genes)}
    names = [n for n in coll if sum(x in pos for x in coll[n].genes) >= 20][:n_programs]
    latents = rng.normal(size=(n_samples, len(names)))
    base = rng.gamma(2.0, 1.0, size=g)
    x = base + 0.6 * rng.normal(size=(n_samples, g))
    for p, name in enumerate(names):
        idx = [pos[x_] for x_ in coll[name].genes if x_ in pos]
        x[:, idx] += 0.8 * latents[:, [p]]
    x = np.where(x < np.quantile(x, 0.2), 0.0, x)
    x = np.round(np.maximum(x, 0.0), 3).astype(np.float32)
    ids = [f"SYN-R{i:05d}" for i in range(n_samples)]
    expr = pd.DataFrame(x, index=pd.Index(ids, name=SAMPLE_ID), columns=genes)
    meta = pd.DataFrame(
        {
            SAMPLE_ID: ids,
            "cancer_type": rng.choice(["SYN-A", "SYN-B", "SYN-C"], size=n_samples),
            "cohort": "synthetic",
            "patient_id": [f"SYN-P{i:05d}" for i in range(n_samples)],
        }
    )
    return SyntheticReferenceInputs(expr, meta, latents, tuple(names))


def linear_embed_fn(n_genes: int, embed_dim: int = 32, seed: int = 0) -> EmbedFn:
    """An UNTRAINED fixed-seed linear 'RNA encoder' for tests: centred expression x W."""
    w = np.random.default_rng(seed).normal(size=(n_genes, embed_dim)).astype(np.float32)
    w /= np.sqrt(n_genes)

    def embed(x: NDArray[Any]) -> NDArray[Any]:
        xc = x - x.mean(axis=1, keepdims=True)
        out: NDArray[Any] = xc @ w
        return out

    return embed
