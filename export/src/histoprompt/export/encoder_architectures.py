"""The tile-encoder networks, in their published form: pixels [B,3,S,S] -> embeddings [B,D].

UNI, UNI2-h, Virchow2 and H-optimus-0 are timm ViTs built with their model cards' timm
arguments (pretrained=False), so the published state dict is timm's own layout. CONCH v1.5's
vision tower is a ViT-L/16 trunk followed by an attention-pooling head (`attn_pool_contrast`,
`ln_contrast`), with the names and forward of its published definition (CONCH repository,
TRIDENT's CONCHVisionTower). `checkpoint_root` gives the part of a network whose state dict is
exactly the published file.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - the usual name

_SWIGLU = "swiglu"


def timm_model(model: str, **kwargs: Any) -> nn.Module:
    """timm.create_model(model, pretrained=False, ...): never downloads anything."""
    import timm

    net: nn.Module = timm.create_model(model, pretrained=False, **kwargs)
    return net


def _resolve_layers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """JSON-able layer names -> timm classes: mlp_layer 'SwiGLUPacked' (and other timm.layers
    MLPs); act_layer stays a name, which timm resolves itself ('silu', 'gelu')."""
    import timm.layers

    out = dict(kwargs)
    mlp = out.get("mlp_layer")
    if isinstance(mlp, str):
        allowed = {"Mlp", "SwiGLU", "SwiGLUPacked", "GluMlp", "GatedMlp"}
        if mlp not in allowed:
            raise ValueError(f"mlp_layer {mlp!r} is not one of {sorted(allowed)}")
        out["mlp_layer"] = getattr(timm.layers, mlp)
    return out


# name -> (timm model, the model card's timm arguments, pooling). Layer classes by name.
PUBLISHED_TIMM: dict[str, tuple[str, dict[str, Any], str]] = {
    "uni": (
        "vit_large_patch16_224",
        {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0,
         "dynamic_img_size": True},
        "pooled",
    ),
    "uni2_h": (
        "vit_giant_patch14_224",
        {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5,
         "embed_dim": 1536, "mlp_ratio": 2.66667 * 2, "num_classes": 0, "no_embed_class": True,
         "mlp_layer": "SwiGLUPacked", "act_layer": "silu", "reg_tokens": 8,
         "dynamic_img_size": True},
        "pooled",
    ),
    "virchow2": (
        "vit_huge_patch14_224",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "reg_tokens": 4,
         "mlp_ratio": 5.3375, "global_pool": "", "dynamic_img_size": True,
         "mlp_layer": "SwiGLUPacked", "act_layer": "silu"},
        "cls_mean",
    ),
    "h_optimus_0": (
        "vit_giant_patch14_reg4_dinov2",
        {"img_size": 224, "init_values": 1e-5, "num_classes": 0, "global_pool": "token",
         "dynamic_img_size": True},
        "pooled",
    ),
    "vit_small": ("vit_small_patch16_224", {"num_classes": 0}, "pooled"),
    "vit_base": ("vit_base_patch16_224", {"num_classes": 0}, "pooled"),
}  # fmt: skip


class TimmTokenEncoder(nn.Module):
    """A timm model whose own pooled output (CLS token, or its head) is the tile embedding."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def checkpoint_root(self) -> nn.Module:
        return self.trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.trunk(pixels)
        return out


class ClsMeanEncoder(nn.Module):
    """Virchow2's embedding: CLS token concatenated with the mean of the patch tokens; the
    register tokens (between CLS and the patches) are left out."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk
        self.prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 1))

    def checkpoint_root(self) -> nn.Module:
        return self.trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk.forward_features(pixels)  # type: ignore[operator]
        cls = tokens[:, 0]
        patches = tokens[:, self.prefix_tokens :].mean(dim=1)
        return torch.cat([cls, patches], dim=-1)


class NullEncoder(nn.Module):
    """Global-average-pooled normalised pixels projected to D by a fixed seeded matrix.

    Almost free to run, so data-path benchmarks measure reading and serving, not the network.
    """

    def __init__(self, embed_dim: int, seed: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(3, embed_dim, generator=gen) / 3**0.5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = pixels.mean(dim=(2, 3))
        proj: torch.Tensor = self.projection  # type: ignore[assignment]
        return pooled @ proj


class AttentionPoolHead(nn.Module):
    """Learned queries attend over the trunk's tokens (CONCH's `attn_pool_contrast`).

    Tensor names as published: query [Q, dim], ln_k (context), ln_q, to_q, to_kv, to_out
    (no biases). Returns [B, Q, dim].
    """

    def __init__(self, dim: int, context_dim: int, heads: int, queries: int = 1) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Parameter(torch.randn(queries, dim))
        self.ln_k = nn.LayerNorm(context_dim)
        self.ln_q = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * dim, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, n, _ = tokens.shape
        q = self.to_q(self.ln_q(self.query))  # [Q, dim]
        k, v = self.to_kv(self.ln_k(tokens)).chunk(2, dim=-1)  # [B, N, dim] each
        dim = q.shape[-1]
        head = dim // self.heads
        q = q.reshape(1, -1, self.heads, head).transpose(1, 2)  # [1, H, Q, d]
        k = k.reshape(batch, n, self.heads, head).transpose(1, 2)  # [B, H, N, d]
        v = v.reshape(batch, n, self.heads, head).transpose(1, 2)
        weights = torch.softmax((q * head**-0.5) @ k.transpose(-1, -2), dim=-1)  # [B, H, Q, N]
        out = (weights @ v).transpose(1, 2).reshape(batch, -1, dim)  # [B, Q, dim]
        pooled: torch.Tensor = self.to_out(out)
        return pooled


class ConchV15Tower(nn.Module):
    """CONCH v1.5's vision tower (the file `pytorch_model_vision.bin`).

    trunk: ViT-L/16 with LayerScale whose position embedding is on the 224 px grid (14x14);
    other input sizes interpolate it bicubically as the published forward does (DINO style:
    scale factor (grid + 0.1) / 14). Then one query pools the normed tokens and ln_contrast
    normalises it: the 768-d embedding before the text-alignment projection.
    """

    def __init__(self, trunk: nn.Module, embed_dim: int = 768, heads: int = 8) -> None:
        super().__init__()
        self.trunk = trunk
        width = int(trunk.num_features)  # type: ignore[arg-type]
        self.attn_pool_contrast = AttentionPoolHead(embed_dim, width, heads, queries=1)
        self.ln_contrast = nn.LayerNorm(embed_dim)

    def checkpoint_root(self) -> nn.Module:
        return self

    def adapt_published_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """As CONCH v1.5's published loader does: a `trunk.pos_embed` stored on another square
        grid is resampled (bilinear, no antialiasing) to the trunk's 14x14 grid."""
        from timm.layers.pos_embed import resample_abs_pos_embed

        key = "trunk.pos_embed"
        trunk: Any = self.trunk
        pos, target = state.get(key), trunk.pos_embed
        if pos is None or pos.ndim != 3 or tuple(pos.shape) == tuple(target.shape):
            return state
        side = math.isqrt(pos.shape[1] - 1)
        if side * side != pos.shape[1] - 1 or pos.shape[-1] != target.shape[-1]:
            return state  # not a grid: the layout check names it
        grid = trunk.patch_embed.grid_size
        resampled = resample_abs_pos_embed(
            pos.float(),
            new_size=list(grid),
            num_prefix_tokens=1,
            interpolation="bilinear",
            antialias=False,
        )
        return {**state, key: resampled.to(pos.dtype)}

    def _positions(self, rows: int, cols: int) -> torch.Tensor:
        pos: torch.Tensor = self.trunk.pos_embed  # type: ignore[assignment]
        n = pos.shape[1] - 1
        if n == rows * cols and rows == cols:
            return pos
        side = int(math.sqrt(n))
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic"
        )
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], grid], dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        trunk: Any = self.trunk
        x = trunk.patch_embed.proj(pixels)  # [B, C, rows, cols]
        rows, cols = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([trunk.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self._positions(rows, cols)
        x = trunk.norm(trunk.blocks(trunk.norm_pre(x)))
        pooled = self.attn_pool_contrast(x)[:, 0]
        out: torch.Tensor = self.ln_contrast(pooled)
        return out


def conch_v15_tower(depth: int | None = None) -> ConchV15Tower:
    """CONCH v1.5: ViT-L/16 trunk (LayerScale init 1.0, 224 px grid) + pooling head."""
    kwargs: dict[str, Any] = {"img_size": 224, "init_values": 1.0, "num_classes": 0}
    if depth is not None:
        kwargs["depth"] = depth
    return ConchV15Tower(timm_model("vit_large_patch16_224", **kwargs))


def published_timm(name: str, depth: int | None = None) -> nn.Module:
    """A published timm encoder with its model card's arguments (depth: reduced, for tests)."""
    model, kwargs, pooling = PUBLISHED_TIMM[name]
    args = _resolve_layers(kwargs)
    if depth is not None:
        args["depth"] = depth
    trunk = timm_model(model, **args)
    return ClsMeanEncoder(trunk) if pooling == "cls_mean" else TimmTokenEncoder(trunk)


def generic_timm(model: str, kwargs: dict[str, Any], depth: int | None = None) -> nn.Module:
    """`timm:<model>` with JSON arguments; the model's own pooled output is the embedding."""
    args = _resolve_layers(kwargs)
    if depth is not None:
        args["depth"] = depth
    return TimmTokenEncoder(timm_model(model, **args))


def checkpoint_root(module: nn.Module) -> nn.Module:
    """The submodule whose state dict is the published checkpoint (the module itself when
    it does not say otherwise)."""
    root = getattr(module, "checkpoint_root", None)
    return root() if callable(root) else module
