"""Loading a released BulkFormer checkpoint folder as the frozen RNA encoder.

A folder with `bulkformer.json` and the published files side by side:

    bulkformer.json           {"checkpoint": "bulkformer_147M.pt", "graph": "G_tcga.pt",
                               "graph_weight": "G_tcga_weight.pt",
                               "gene_info": "bulkformer_gene_info.csv"}
                              optional: "variant" (bulkformer_37m ... bulkformer_147m),
                              "config" (BulkFormerConfig), "pooling", "interested_genes"
    bulkformer_147M.pt        the released state dict (torch.save of the DDP model)
    G_tcga.pt, G_tcga_weight.pt   the gene graph: edge index [2, E] and weights [E]
    bulkformer_gene_info.csv  the gene vocabulary and order (`ensg_id` column)

Without "variant"/"config" the size is read off the checkpoint's shapes. The checkpoint
must match the architecture exactly (histoprompt.export.weights.check_state_dict); the
error names the layout the file looks like and the first missing/unexpected keys.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from histoprompt.export.bulkformer import (
    MASK_TOKEN,
    VARIANTS,
    BulkFormer,
    BulkFormerConfig,
    GeneGraph,
)
from histoprompt.export.errors import WeightsError
from histoprompt.export.rna import GeneContract
from histoprompt.export.weights import check_state_dict, read_state_dict

BULKFORMER_JSON = "bulkformer.json"
PREPROCESSING = (
    "log1p(TPM) (natural log) per Ensembl gene in bulkformer_gene_info.csv order; a gene "
    "the sample lacks is -10 (BulkFormer's mask token); sample embedding = {pooling} over "
    "genes of [gene token, mask rate, observed-gene mean, non-zero ratio]"
)


class BulkFormerFiles(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str
    graph: str
    graph_weight: str
    gene_info: str
    variant: str | None = None
    config: BulkFormerConfig | None = None
    pooling: str | None = None
    interested_genes: list[str] | None = None


class BulkFormerEncoder(nn.Module):
    """RNA-encoder interface: log1p(TPM) [B, G] in contract order -> [B, dim + 3]."""

    def __init__(
        self,
        model: BulkFormer,
        contract: GeneContract,
        name: str,
        genes_index: list[int] | None = None,
    ) -> None:
        super().__init__()
        if contract.n_genes != model.cfg.gene_length:
            raise WeightsError(
                f"BulkFormer has {model.cfg.gene_length} genes, the gene list {contract.n_genes}"
            )
        self.model = model
        self.contract = contract
        self.card_name = name
        self.pooling = model.cfg.pooling
        self.preprocessing = PREPROCESSING.format(pooling=self.pooling)
        index = torch.tensor(genes_index if genes_index else [], dtype=torch.int64)
        self.register_buffer("genes_index", index, persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.model.cfg.out_dim

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        mask_prob = (expression == MASK_TOKEN).to(expression.dtype).mean(dim=1)
        feats = self.model.gene_features(expression, mask_prob)
        index: torch.Tensor = self.genes_index  # type: ignore[assignment]
        if index.numel():
            feats = feats.index_select(1, index)
        if self.pooling == "mean":
            return feats.mean(dim=1)
        if self.pooling == "max":
            return feats.amax(dim=1)
        if self.pooling == "median":
            return feats.median(dim=1).values
        return feats.amax(dim=1) + feats.mean(dim=1) + feats.median(dim=1).values


def bulkformer_contract(gene_info: Path) -> GeneContract:
    """The published gene order (`ensg_id`); missing genes are imputed with the mask token."""
    import pandas as pd

    try:
        table = pd.read_csv(gene_info)
        genes = [str(g) for g in table["ensg_id"]]
    except (OSError, KeyError, ValueError) as err:
        raise WeightsError(
            f"{gene_info}: not a BulkFormer gene list (ensg_id column): {err}"
        ) from err
    symbols = None
    if "gene_symbol" in table.columns:  # expression keyed by symbols maps onto the ids
        symbols = tuple("" if pd.isna(s) else str(s) for s in table["gene_symbol"])
    return GeneContract(
        genes=tuple(genes), impute_means=(MASK_TOKEN,) * len(genes), symbols=symbols
    )


def detect_config(state: dict[str, torch.Tensor]) -> BulkFormerConfig:
    """The BulkFormer size a state dict has (dim, genes, blocks, Performers per block)."""
    keys = {k.removeprefix("module."): v for k, v in state.items()}
    emb = keys.get("gene_emb_onehot_layer.weight")
    glob = keys.get("global_expr_proj.0.weight")
    if emb is None or glob is None:
        raise WeightsError(
            "not a BulkFormer checkpoint: no gene_emb_onehot_layer.weight / global_expr_proj "
            f"(first keys: {sorted(keys)[:3]})"
        )
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"gb_formers\.(\d+)\.", k))}
    performers = {
        int(m.group(1)) for k in keys if (m := re.match(r"gb_formers\.0\.f\.(\d+)\.net\.", k))
    }
    return BulkFormerConfig(
        dim=int(emb.shape[1]),
        gene_length=int(emb.shape[0]),
        gb_repeat=max(len(blocks), 1),
        p_repeat=max(len(performers), 1),
    )


def variant_name(cfg: BulkFormerConfig) -> str:
    same = [n for n, v in VARIANTS.items() if v.dim == cfg.dim and v.p_repeat == cfg.p_repeat]
    return same[0] if same else f"bulkformer_d{cfg.dim}x{cfg.p_repeat}"


def read_graph(edges: Path, weights: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge index [2, E] and weights [E] from the published .pt files (tensors only)."""
    try:
        edge_index = torch.load(str(edges), map_location="cpu", weights_only=True)
        weight = torch.load(str(weights), map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsError(
            f"cannot read the BulkFormer gene graph {edges}/{weights}: {err}"
        ) from err
    return torch.as_tensor(edge_index), torch.as_tensor(weight)


def build_bulkformer(
    cfg: BulkFormerConfig, edge_index: torch.Tensor, weight: torch.Tensor
) -> BulkFormer:
    try:
        graph = GeneGraph(cfg.gene_length, edge_index, weight)
    except ValueError as err:
        raise WeightsError(f"BulkFormer gene graph: {err}") from err
    return BulkFormer(cfg, graph)


def load_bulkformer_state(model: BulkFormer, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with the published layout's name in the error."""
    name = variant_name(model.cfg)
    try:
        checked = check_state_dict(model, state, source=source)
    except WeightsError as err:
        try:
            seen = variant_name(detect_config(state))
        except (WeightsError, ValidationError):
            seen = "no BulkFormer layout"
        raise WeightsError(
            f"expected the {name} layout; the file looks like {seen}: {err}"
        ) from err
    model.load_state_dict(checked, strict=True)


def load_bulkformer(folder: Path) -> BulkFormerEncoder:
    """The frozen BulkFormer RNA encoder of a checkpoint folder (see module docstring)."""
    try:
        files = BulkFormerFiles.model_validate_json((folder / BULKFORMER_JSON).read_text())
    except (OSError, ValidationError) as err:
        raise WeightsError(f"{folder}: invalid {BULKFORMER_JSON}: {err}") from err
    state = read_state_dict(folder / files.checkpoint)
    cfg = files.config or (VARIANTS[files.variant] if files.variant else detect_config(state))
    if files.pooling:
        cfg = cfg.model_copy(update={"pooling": files.pooling})
    contract = bulkformer_contract(folder / files.gene_info)
    if contract.n_genes != cfg.gene_length:
        raise WeightsError(
            f"{files.gene_info} lists {contract.n_genes} genes, the model has {cfg.gene_length}"
        )
    model = build_bulkformer(cfg, *read_graph(folder / files.graph, folder / files.graph_weight))
    load_bulkformer_state(model, state, str(folder / files.checkpoint))
    index = None
    if files.interested_genes:
        pos = {g: i for i, g in enumerate(contract.genes)}
        missing = [g for g in files.interested_genes if g not in pos]
        if missing:
            raise WeightsError(f"interested genes not in the BulkFormer vocabulary: {missing[:5]}")
        index = [pos[g] for g in files.interested_genes]
    encoder = BulkFormerEncoder(model, contract, variant_name(cfg), index)
    for p in encoder.parameters():
        p.requires_grad_(False)
    return encoder.eval()


def meta_bulkformer(cfg: BulkFormerConfig) -> BulkFormer:
    """The architecture on the meta device (no memory): key names and shapes only."""
    graph = GeneGraph(cfg.gene_length, torch.zeros((2, 0), dtype=torch.int64), torch.zeros(0))
    with torch.device("meta"):
        return BulkFormer(cfg, graph)
