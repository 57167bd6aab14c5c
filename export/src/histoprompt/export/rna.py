"""Frozen RNA encoders: the interface, the gene contract, and the demo's `tiny` encoder.

Interface (as BulkFormer): a gene-ordered vector of log1p(TPM) in, a sample embedding out.
Two encoders implement it: the published BulkFormer (export.bulkformer, loaded from its
released checkpoint by export.bulkformer_load) and `tiny`, a fixed-seed UNTRAINED
two-layer MLP kept only for the demo and tests. Teams that run their RNA model elsewhere
pass a table of precomputed embeddings instead (export.rna_table).
The gene order and normalisation are a contract stored next to the weights
(`gene_contract.json`); expression in any other order is mapped onto it by
`GeneContract.align`, which imputes missing genes with the stored per-gene means and
counts them, never dropping them silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from histoprompt.export.errors import GeneContractError, WeightsError
from histoprompt.export.weights import check_state_dict, read_state_dict

CONTRACT_FILE = "gene_contract.json"
CONFIG_FILE = "rna_encoder.json"
WEIGHTS_FILE = "rna_encoder.safetensors"


class GeneContract(BaseModel):
    """Gene order and normalisation the RNA encoder expects."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    genes: tuple[str, ...] = Field(min_length=1)
    normalisation: Literal["log1p_tpm"] = "log1p_tpm"
    impute_means: tuple[float, ...] = Field(
        description="per-gene value for a missing gene: the mean of log1p(TPM), or a model's "
        "mask token (BulkFormer: -10)"
    )
    symbols: tuple[str, ...] | None = Field(
        None, description="gene symbol per gene when `genes` are ids (BulkFormer: Ensembl)"
    )

    @model_validator(mode="after")
    def _check(self) -> GeneContract:
        if len(self.impute_means) != len(self.genes):
            raise ValueError("impute_means must have one value per gene")
        if len(set(self.genes)) != len(self.genes):
            raise ValueError("gene list has duplicates")
        if self.symbols is not None and len(self.symbols) != len(self.genes):
            raise ValueError("symbols must have one entry per gene")
        return self

    @property
    def n_genes(self) -> int:
        return len(self.genes)

    @property
    def names(self) -> tuple[str, ...]:
        """Unique display names in contract order: the symbol where it is present and unique
        (what gene sets use), else the gene id. The RNA reference is keyed by these."""
        if self.symbols is None:
            return self.genes
        counts: dict[str, int] = {}
        for sym in self.symbols:
            counts[sym.upper()] = counts.get(sym.upper(), 0) + 1
        taken = {g.upper() for g in self.genes}
        return tuple(
            sym if sym and counts[sym.upper()] == 1 and sym.upper() not in taken else gene
            for gene, sym in zip(self.genes, self.symbols, strict=True)
        )

    def _source_columns(self, genes: Sequence[str]) -> list[tuple[int, int]]:
        """(contract position, column) pairs: by gene id, else by symbol."""
        index = {g: i for i, g in enumerate(genes)}
        by_symbol = {str(g).upper(): i for i, g in enumerate(genes)}
        pairs = []
        for j, gene in enumerate(self.genes):
            src = index.get(gene)
            if src is None and self.symbols is not None and self.symbols[j]:
                src = by_symbol.get(self.symbols[j].upper())
            if src is not None:
                pairs.append((j, src))
        return pairs

    def align(
        self, values: NDArray[Any], genes: Sequence[str], *, is_log1p: bool = True
    ) -> AlignedExpression:
        """Map samples x genes (any order, any superset/subset) onto the contract order.

        `values` is TPM, or log1p(TPM) when `is_log1p`. Missing genes and non-finite
        values are imputed with the stored means and counted.
        """
        matrix = np.asarray(values, dtype=np.float64)
        if matrix.ndim == 1:
            matrix = matrix[None, :]
        if matrix.ndim != 2 or matrix.shape[1] != len(genes):
            raise GeneContractError(
                f"expression has shape {matrix.shape} but {len(genes)} gene names were given"
            )
        if len(set(genes)) != len(genes):
            raise GeneContractError("expression gene names contain duplicates")
        if not is_log1p:
            if np.nanmin(matrix) < 0:
                raise GeneContractError("TPM values must be non-negative")
            matrix = np.log1p(matrix)
        out = np.tile(np.asarray(self.impute_means, dtype=np.float64), (matrix.shape[0], 1))
        present = self._source_columns(genes)
        if present:
            dst, src = map(list, zip(*present, strict=True))
            block = matrix[:, src]
            finite = np.isfinite(block)
            out[:, dst] = np.where(finite, block, out[:, dst])
            n_nonfinite = int((~finite).sum())
        else:
            n_nonfinite = 0
        found = {j for j, _ in present}
        missing = tuple(g for j, g in enumerate(self.genes) if j not in found)
        return AlignedExpression(
            values=out.astype(np.float32),
            missing_genes=missing,
            n_extra_genes=len(genes) - len({src for _, src in present}),
            n_nonfinite_imputed=n_nonfinite,
        )


@dataclass(frozen=True)
class AlignedExpression:
    """Expression in contract order plus what had to be imputed."""

    values: NDArray[Any]  # float32 [B, G]
    missing_genes: tuple[str, ...]
    n_extra_genes: int
    n_nonfinite_imputed: int

    @property
    def n_missing(self) -> int:
        return len(self.missing_genes)


class RnaEncoderConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_genes: int = Field(gt=0)
    hidden: int = Field(default=256, gt=0)
    embed_dim: int = Field(default=128, gt=0)
    seed: int = 0
    untrained: bool = True


class RnaEncoder(nn.Module):
    """`tiny`: gene-ordered log1p(TPM) [B,G] -> embedding [B,H], UNTRAINED (demo, tests).

    Standardises each gene with the contract means, then a fixed-seed two-layer MLP. The
    real RNA foundation model is BulkFormer (export.bulkformer), same interface.
    """

    card_name = "tiny"

    def __init__(self, config: RnaEncoderConfig, contract: GeneContract) -> None:
        super().__init__()
        if config.n_genes != contract.n_genes:
            raise WeightsError(
                f"RNA encoder expects {config.n_genes} genes, the contract lists {contract.n_genes}"
            )
        self.config = config
        self.contract = contract
        torch.manual_seed(config.seed)
        self.register_buffer("center", torch.tensor(contract.impute_means, dtype=torch.float32))
        self.net = nn.Sequential(
            nn.Linear(config.n_genes, config.hidden),
            nn.GELU(),
            nn.LayerNorm(config.hidden),
            nn.Linear(config.hidden, config.embed_dim),
        )

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        center: torch.Tensor = self.center  # type: ignore[assignment]
        out: torch.Tensor = self.net(expression - center)
        return out


def fit_contract(genes: Sequence[str], log1p_tpm: NDArray[Any]) -> GeneContract:
    """A contract whose imputation means come from a reference expression matrix."""
    means = np.nanmean(np.asarray(log1p_tpm, dtype=np.float64), axis=0)
    means = np.where(np.isfinite(means), means, 0.0)
    return GeneContract(genes=tuple(genes), impute_means=tuple(float(m) for m in means))


def small_rna_encoder(contract: GeneContract, seed: int = 0, embed_dim: int = 128) -> RnaEncoder:
    """The fixed-seed, untrained RNA encoder used by tests and the demo."""
    cfg = RnaEncoderConfig(n_genes=contract.n_genes, embed_dim=embed_dim, seed=seed)
    return RnaEncoder(cfg, contract).eval()


def save_rna_encoder(encoder: RnaEncoder, directory: Path) -> Path:
    """Write weights, config and gene contract side by side (the stored contract)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in encoder.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE))
    (directory / CONFIG_FILE).write_text(encoder.config.model_dump_json(indent=1))
    (directory / CONTRACT_FILE).write_text(encoder.contract.model_dump_json())
    return directory


def load_rna_encoder(directory: Path) -> Any:
    """Load a local RNA-encoder checkpoint directory: a released BulkFormer (`bulkformer.json`,
    export.bulkformer_load) or the `tiny` layout (weights + config + gene contract)."""
    from histoprompt.export.bulkformer_load import BULKFORMER_JSON, load_bulkformer

    if (directory / BULKFORMER_JSON).is_file():
        return load_bulkformer(directory)
    try:
        config = RnaEncoderConfig.model_validate_json((directory / CONFIG_FILE).read_text())
        contract = GeneContract.model_validate_json((directory / CONTRACT_FILE).read_text())
    except FileNotFoundError as err:
        raise WeightsError(
            f"{directory} is not an RNA encoder checkpoint: missing {Path(err.filename).name}"
        ) from err
    except ValueError as err:
        raise WeightsError(f"{directory}: invalid RNA encoder config or contract: {err}") from err
    encoder = RnaEncoder(config, contract)
    state = check_state_dict(
        encoder, read_state_dict(directory / WEIGHTS_FILE), source=str(directory)
    )
    encoder.load_state_dict(state)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()
