"""A SYNTHETIC reference built in one call, for tests of what reads one."""

from __future__ import annotations

from typing import Any

from histoprompt.core.reference import ReferenceDB
from histoprompt.core.reference_build import build_reference
from histoprompt.core.reference_synthetic import linear_embed_fn, synthetic_reference_inputs


def synthetic_reference(
    n_samples: int,
    *,
    n_genes: int | None,
    seed: int,
    embed_dim: int,
    name: str,
    embed_seed: int = 0,
    **build: Any,
) -> ReferenceDB:
    """synthetic_reference_inputs(n_samples, n_genes, seed) embedded by a fixed linear map to
    `embed_dim` (linear_embed_fn, `embed_seed`); `build`: more build_reference arguments."""
    inputs = synthetic_reference_inputs(n_samples, n_genes=n_genes, seed=seed)
    genes = list(inputs.expression.columns)
    embed = linear_embed_fn(len(genes), embed_dim, seed=embed_seed)
    return build_reference(inputs.expression, inputs.metadata, embed, genes, name=name, **build)
