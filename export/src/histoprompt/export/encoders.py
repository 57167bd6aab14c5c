"""Frozen tile encoders: pixels [B,3,S,S] (normalised) -> tile embeddings [B,D].

Architectures come from timm (built with pretrained=False; weights only ever come from a local
file or s3:// URI through `histoprompt.export.weights`). `tiny` and `null` are defined by a
seed and are labelled untrained wherever they appear.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.export.encoder_specs import SEEDED_ENCODERS, encoder_spec
from histoprompt.export.errors import WeightsError
from histoprompt.export.weights import fetch_weights, hub_error, is_hub_name, load_weights_into

if TYPE_CHECKING:
    from histoprompt.core.settings import ConnectionSettings

DEFAULT_SEED = 0


class TimmTokenEncoder(nn.Module):
    """A timm ViT whose pooled output (CLS token, or its head) is the tile embedding."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.trunk(pixels)
        return out


class ClsMeanEncoder(nn.Module):
    """Virchow2 convention: CLS token concatenated with the mean of the patch tokens."""

    def __init__(self, trunk: nn.Module, prefix_tokens: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.prefix_tokens = prefix_tokens

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


def _timm(name: str, **kwargs: Any) -> nn.Module:
    import timm

    model: nn.Module = timm.create_model(name, pretrained=False, **kwargs)
    return model


def build_architecture(name: str, seed: int = DEFAULT_SEED) -> nn.Module:
    """The encoder network with freshly initialised (seeded) weights, in eval mode."""
    spec = encoder_spec(name)
    torch.manual_seed(seed)
    module: nn.Module
    if name == "uni":
        module = TimmTokenEncoder(
            _timm("vit_large_patch16_224", img_size=224, init_values=1e-5, num_classes=0)
        )
    elif name == "conch_v15":
        module = TimmTokenEncoder(
            _timm(
                "vit_large_patch16_224",
                img_size=spec.input_px,
                init_values=1e-5,
                num_classes=spec.embed_dim,
            )
        )
    elif name == "virchow2":
        from timm.layers.mlp import SwiGLUPacked

        trunk = _timm(
            "vit_huge_patch14_224",
            img_size=224,
            init_values=1e-5,
            num_classes=0,
            mlp_ratio=5.3375,
            reg_tokens=4,
            global_pool="",
            mlp_layer=SwiGLUPacked,
            act_layer=nn.SiLU,
        )
        module = ClsMeanEncoder(trunk, prefix_tokens=5)
    elif name == "vit_small":
        module = TimmTokenEncoder(_timm("vit_small_patch16_224", num_classes=0))
    elif name == "vit_base":
        module = TimmTokenEncoder(_timm("vit_base_patch16_224", num_classes=0))
    elif name == "tiny":
        from timm.models.vision_transformer import VisionTransformer

        module = TimmTokenEncoder(
            VisionTransformer(
                img_size=spec.input_px,
                patch_size=8,
                embed_dim=spec.embed_dim,
                depth=4,
                num_heads=3,
                num_classes=0,
            )
        )
    elif name == "null":
        module = NullEncoder(spec.embed_dim, seed)
    else:  # pragma: no cover - encoder_spec() already rejected unknown names
        raise AssertionError(name)
    return module.eval()


@dataclass(frozen=True)
class LoadedEncoder:
    """A frozen encoder network with its preprocessing contract and a weights digest."""

    module: nn.Module
    spec: EncoderSpec
    weights_digest: str


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_encoder(
    name: str,
    weights: str | Path | None = None,
    *,
    seed: int = DEFAULT_SEED,
    allow_random: bool = False,
    settings: ConnectionSettings | None = None,
) -> LoadedEncoder:
    """Build a frozen encoder and load its weights.

    `weights` is a local file or an s3:// URI. Without weights, only the seeded encoders
    (`tiny`, `null`) load, unless `allow_random` asks for a randomly initialised network
    (benchmarks, export tests); such an encoder is labelled untrained.
    """
    spec = encoder_spec(name)
    if weights is not None and is_hub_name(str(weights)):
        raise hub_error(str(weights))
    if weights is None and name not in SEEDED_ENCODERS and not allow_random:
        raise WeightsError(
            f"encoder {name!r} needs its weights: pass a local file or s3:// URI "
            f"(pre-fetch them once, see `histoprompt-export encoders`)"
        )
    module = build_architecture(name, seed=seed)
    if weights is not None:
        local = fetch_weights(weights, settings)
        load_weights_into(module, local)
        digest = _digest_file(local)
    else:
        digest = f"seed{seed}"
        spec = spec.model_copy(update={"untrained": True})
    for param in module.parameters():
        param.requires_grad_(False)
    return LoadedEncoder(module=module.eval(), spec=spec, weights_digest=digest)
