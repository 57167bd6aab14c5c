"""BulkFormer (Kang et al., Cell Systems 2026), the bulk-RNA foundation model, in its
published form, so that its released checkpoints load with strict key and shape checks.

Written from the published definition (KangBoming/BulkFormer: utils/BulkFormer.py,
utils/BulkFormer_block.py, utils/Rope.py of the 2025-12 release; the Performer of
performer-pytorch 1.1.4; torch_geometric's GCNConv), without those packages. Module and
attribute names follow the published ones, because they are the checkpoint's key names:

    gene_emb_onehot_layer, gene_emb_proj.{0,2}, expr_emb.inv_freq, x_proj.{0,2},
    gb_formers.<i>.g.{lin.weight,bias}, gb_formers.<i>.layernorm,
    gb_formers.<i>.f.<j>.net.layers.0.0.{norm, fn.to_q/k/v/out,
                                         fn.fast_attention.projection_matrix},
    gb_formers.<i>.f.<j>.net.layers.0.1.{norm, fn.fn.w1, fn.fn.w2},
    gb_formers.<i>.f.<j>.proj_updater.{calls_since_last_redraw, instance.<same as net>},
    layernorm, global_expr_proj.{0,2}, head.{0,1,3}

(`proj_updater.instance` is the same module as `net`, so its tensors appear twice, as in
the published files.) The DDP prefix `module.` of the released files is stripped.

Input contract (`bulkformer_gene_info.csv`, column `ensg_id`, file order): log1p(TPM) per
Ensembl gene; a gene the sample lacks is -10, the mask token. Output of the published model
is per gene [B, G, dim + 3]: the gene token ⊕ (mask rate, mean of observed genes, non-zero
ratio); the sample embedding is their mean over genes (the published `sample_level`
`mean` aggregation), or over the `interested` genes only.

The gene graph (`G_tcga.pt`: edge index [2, E], `G_tcga_weight.pt`: [E]) is not part of the
checkpoint; it is read from its own files and normalised as GCNConv does
(D^-1/2 A D^-1/2, no self loops, degree over graph[0]).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

MASK_TOKEN = -10.0


class BulkFormerConfig(BaseModel):
    """The published `model_params` (model/config.py); `bins`/`bin_head` are unused there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dim: int = Field(default=640, gt=0)
    gene_length: int = Field(default=20010, gt=0)
    gb_repeat: int = Field(default=1, ge=1)
    p_repeat: int = Field(default=12, ge=1)
    full_head: int = Field(default=8, ge=1)
    bins: int = 0
    bin_head: int = 12
    pooling: Literal["mean", "max", "median", "all"] = "mean"

    @property
    def dim_head(self) -> int:
        return self.dim // self.full_head

    @property
    def nb_features(self) -> int:
        """performer-pytorch's default random-feature count: int(d * ln d)."""
        return int(self.dim_head * math.log(self.dim_head))

    @property
    def out_dim(self) -> int:
        return self.dim + 3


# The five released sizes (README of the published repository; `gene_length` 20010 each).
VARIANTS: dict[str, BulkFormerConfig] = {
    "bulkformer_37m": BulkFormerConfig(dim=128, p_repeat=1),
    "bulkformer_50m": BulkFormerConfig(dim=256, p_repeat=2),
    "bulkformer_93m": BulkFormerConfig(dim=512, p_repeat=6),
    "bulkformer_127m": BulkFormerConfig(dim=640, p_repeat=8),
    "bulkformer_147m": BulkFormerConfig(dim=640, p_repeat=12),
}


class ExprEmbedding(nn.Module):
    """Expression value -> [sin(x f), cos(x f)] with f = 100^(-2i/dim); masked genes -> 0."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        freq = 1.0 / (100 ** (torch.arange(0, dim, 2).float() / dim))
        self.inv_freq = nn.Parameter(freq, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.unsqueeze(-1) * self.inv_freq
        emb = torch.cat((angles.sin(), angles.cos()), dim=-1)
        return emb * (x != MASK_TOKEN).unsqueeze(-1).to(emb.dtype)


class GeneGraph(nn.Module):
    """The normalised gene graph as non-persistent buffers (never part of a checkpoint)."""

    def __init__(self, n_genes: int, edge_index: torch.Tensor, weight: torch.Tensor) -> None:
        super().__init__()
        edge_index = edge_index.to(torch.int64)
        if edge_index.ndim != 2 or edge_index.shape[0] != 2:
            raise ValueError(f"gene graph edge index must be [2, E], got {tuple(edge_index.shape)}")
        if weight.shape != (edge_index.shape[1],):
            raise ValueError(
                f"gene graph has {edge_index.shape[1]} edges but {tuple(weight.shape)} weights"
            )
        if edge_index.numel() and (edge_index.min() < 0 or edge_index.max() >= n_genes):
            raise ValueError(f"gene graph indexes genes outside [0, {n_genes})")
        target, source = edge_index[0], edge_index[1]
        w = weight.to(torch.float32)
        deg = torch.zeros(n_genes).index_add_(0, target, w)
        inv_sqrt = deg.pow(-0.5).masked_fill(deg == 0, 0.0)
        self.n_genes = n_genes
        self.register_buffer("target", target, persistent=False)
        self.register_buffer("source", source, persistent=False)
        self.register_buffer("norm", inv_sqrt[target] * w * inv_sqrt[source], persistent=False)

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        """out[:, t] = sum over edges (t <- s) of norm * x[:, s];  x [B, G, C]."""
        target: torch.Tensor = self.target  # type: ignore[assignment]
        source: torch.Tensor = self.source  # type: ignore[assignment]
        norm: torch.Tensor = self.norm  # type: ignore[assignment]
        messages = x.index_select(1, source) * norm.view(1, -1, 1)
        return torch.zeros_like(x).index_add(1, target, messages)


class GraphConv(nn.Module):
    """GCNConv(dim, dim, add_self_loops=False): A_norm (x W^T) + b."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, graph: GeneGraph) -> torch.Tensor:
        return graph.propagate(self.lin(x)) + self.bias


class FastAttention(nn.Module):
    """FAVOR+ softmax-kernel attention (non-causal) with a fixed projection matrix."""

    def __init__(self, dim_head: int, nb_features: int) -> None:
        super().__init__()
        self.register_buffer("projection_matrix", torch.randn(nb_features, dim_head))

    def _features(self, data: torch.Tensor, is_query: bool) -> torch.Tensor:
        proj: torch.Tensor = self.projection_matrix  # type: ignore[assignment]
        normalizer = data.shape[-1] ** -0.25
        ratio = proj.shape[0] ** -0.5
        dash = torch.einsum("...id,jd->...ij", normalizer * data, proj)
        diag = (data**2).sum(dim=-1, keepdim=True) / 2.0 * normalizer**2
        dims = (-1,) if is_query else (-1, -2)
        peak = torch.amax(dash, dim=dims, keepdim=True).detach()
        return ratio * (torch.exp(dash - diag - peak) + 1e-4)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k = self._features(q, True), self._features(k, False)
        d_inv = 1.0 / torch.einsum("...nd,...d->...n", q, k.sum(dim=-2))
        context = torch.einsum("...nd,...ne->...de", k, v)
        return torch.einsum("...de,...nd,...n->...ne", context, q, d_inv)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, nb_features: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.fast_attention = FastAttention(dim_head, nb_features)
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, -1).transpose(1, 2)

        out = self.fast_attention(split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x)))
        out = out.transpose(1, 2).reshape(b, n, -1)
        result: torch.Tensor = self.to_out(out)
        return result


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, dim * mult)
        self.act = nn.GELU()
        self.w2 = nn.Linear(dim * mult, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.w2(self.act(self.w1(x)))
        return out


class _Wrap(nn.Module):
    """`fn` under its published attribute name (performer-pytorch's Chunk with one chunk)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fn(x)
        return out


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fn(self.norm(x))
        return out


class _Layers(nn.Module):
    """performer-pytorch's SequentialSequence: x += attn(LN x); x += ff(LN x)."""

    def __init__(self, cfg: BulkFormerConfig) -> None:
        super().__init__()
        attn = PreNorm(
            cfg.dim, SelfAttention(cfg.dim, cfg.full_head, cfg.dim_head, cfg.nb_features)
        )
        ff = PreNorm(cfg.dim, _Wrap(FeedForward(cfg.dim)))
        self.layers = nn.ModuleList([nn.ModuleList([attn, ff])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for pair in self.layers:
            attn, ff = pair  # type: ignore[misc]
            x = x + attn(x)
            x = x + ff(x)
        return x


class _ProjectionUpdater(nn.Module):
    """Holds the redraw counter and (again) the layers, as the published Performer does."""

    def __init__(self, instance: nn.Module) -> None:
        super().__init__()
        self.instance = instance
        self.register_buffer("calls_since_last_redraw", torch.tensor(0))


class Performer(nn.Module):
    """One published `Performer(depth=1)`; projections never redraw (inference only)."""

    def __init__(self, cfg: BulkFormerConfig) -> None:
        super().__init__()
        self.net = _Layers(cfg)
        self.proj_updater = _ProjectionUpdater(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class BulkFormerBlock(nn.Module):
    def __init__(self, cfg: BulkFormerConfig) -> None:
        super().__init__()
        self.g = GraphConv(cfg.dim)
        self.f = nn.Sequential(*[Performer(cfg) for _ in range(cfg.p_repeat)])
        self.layernorm = nn.LayerNorm(cfg.dim)

    def forward(self, x: torch.Tensor, graph: GeneGraph) -> torch.Tensor:
        x = self.layernorm(x)
        x = x + self.g(x, graph)
        out: torch.Tensor = self.f(x)
        return out


def _mlp(n_in: int, dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))


class BulkFormer(nn.Module):
    """The published network: expression [B, G] -> per-gene features [B, G, dim + 3]."""

    def __init__(self, cfg: BulkFormerConfig, graph: GeneGraph) -> None:
        super().__init__()
        if graph.n_genes != cfg.gene_length:
            raise ValueError(f"gene graph has {graph.n_genes} genes, the model {cfg.gene_length}")
        self.cfg = cfg
        self.graph = graph
        self.gene_emb_onehot_layer = nn.Embedding(cfg.gene_length, cfg.dim)
        self.gene_emb_proj = _mlp(cfg.dim, cfg.dim)
        self.expr_emb = ExprEmbedding(cfg.dim)
        self.x_proj = _mlp(cfg.dim, cfg.dim)
        self.gb_formers = nn.ModuleList([BulkFormerBlock(cfg) for _ in range(cfg.gb_repeat)])
        self.layernorm = nn.LayerNorm(cfg.dim)
        self.global_expr_proj = _mlp(cfg.gene_length, cfg.dim)
        d3 = cfg.dim + 3
        self.head = nn.Sequential(
            nn.LayerNorm(d3), nn.Linear(d3, cfg.dim), nn.ReLU(), nn.Linear(cfg.dim, 1), nn.ReLU()
        )

    def gene_features(self, x: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """[B, G] log1p(TPM) (-10 = missing), mask rate [B] -> [B, G, dim + 3]."""
        b, g = x.shape
        identity = self.gene_emb_proj(self.gene_emb_onehot_layer.weight)
        tokens = self.expr_emb(x) + identity + self.global_expr_proj(x).unsqueeze(1)
        h = self.x_proj(tokens)
        for block in self.gb_formers:
            h = block(h, self.graph)
        h = self.layernorm(h)
        valid = (x != MASK_TOKEN).to(x.dtype)
        observed_mean = (x * valid).sum(dim=1) / (valid.sum(dim=1) + 1e-8)
        nonzero = (x != 0).to(x.dtype).sum(dim=1) / g
        stats = torch.stack([mask_prob.to(x.dtype), observed_mean, nonzero], dim=-1)
        return torch.cat([h, stats.unsqueeze(1).expand(b, g, 3)], dim=-1)

    def expression(self, x: torch.Tensor, mask_prob: torch.Tensor) -> torch.Tensor:
        """The published `output_expr=True`: per-gene expression, masked genes mean-corrected."""
        pred = self.head(self.gene_features(x, mask_prob)).squeeze(-1)
        mask = (x == MASK_TOKEN).to(x.dtype)
        valid = 1 - mask
        denom = valid.sum(dim=1, keepdim=True) + 1e-8
        shift = (pred * valid).sum(dim=1, keepdim=True) / denom
        shift = shift - (x * valid).sum(dim=1, keepdim=True) / denom
        return pred - mask * shift
