"""Frozen tile encoders: pixels [B,3,S,S] (normalised) -> tile embeddings [B,D].

The networks (`histoprompt.export.encoder_architectures`) are built with pretrained=False;
weights only ever come from a local file or s3:// URI through `histoprompt.export.weights`,
strictly, in the published checkpoint's own layout. `tiny` and `null` are defined by a seed
and are labelled untrained wherever they appear. `timm:<model>` (with JSON `arch_kwargs`)
builds any other timm model; its preprocessing comes from timm's config for that model.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.units import Mpp, Pixels
from histoprompt.export.encoder_architectures import (
    PUBLISHED_TIMM,
    NullEncoder,
    TimmTokenEncoder,
    checkpoint_root,
    conch_v15_tower,
    generic_timm,
    published_timm,
)
from histoprompt.export.encoder_specs import (
    PUBLISHED,
    SEEDED_ENCODERS,
    TIMM_PREFIX,
    encoder_spec,
    is_timm_name,
)
from histoprompt.export.errors import UnknownEncoderError, WeightsError
from histoprompt.export.weights import (
    KnownLayout,
    fetch_weights,
    hub_error,
    is_hub_name,
    load_weights_into,
    tensor_layout,
)

if TYPE_CHECKING:
    from histoprompt.core.settings import ConnectionSettings

DEFAULT_SEED = 0
# timm:<model> encoders: tiles at 20x unless the caller says otherwise.
DEFAULT_TIMM_MPP = 0.5


def _build(
    name: str, seed: int, depth: int | None, arch_kwargs: Mapping[str, Any] | None
) -> nn.Module:
    if is_timm_name(name):
        return generic_timm(name.removeprefix(TIMM_PREFIX), dict(arch_kwargs or {}), depth)
    spec = encoder_spec(name)
    if arch_kwargs:
        raise UnknownEncoderError(f"arch_kwargs are for timm:<model> encoders, not {name!r}")
    if name in PUBLISHED_TIMM:
        return published_timm(name, depth)
    if name == "conch_v15":
        return conch_v15_tower(depth)
    if name == "tiny":
        from timm.models.vision_transformer import VisionTransformer

        return TimmTokenEncoder(
            VisionTransformer(
                img_size=spec.input_px,
                patch_size=8,
                embed_dim=spec.embed_dim,
                depth=depth or 4,
                num_heads=3,
                num_classes=0,
            )
        )
    if name == "null":
        return NullEncoder(spec.embed_dim, seed)
    raise AssertionError(name)  # pragma: no cover - encoder_spec() rejected unknown names


def build_architecture(
    name: str,
    seed: int = DEFAULT_SEED,
    *,
    depth: int | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The encoder network with freshly initialised (seeded) weights, in eval mode.

    `depth` builds the same network with fewer blocks (tests, benchmarks: never served).
    Built under `torch.device("meta")`, it costs neither memory nor compute.
    """
    torch.manual_seed(seed)
    return _build(name, seed, depth, arch_kwargs).eval()


@functools.lru_cache(maxsize=1)
def published_layouts() -> tuple[KnownLayout, ...]:
    """The tensor names and shapes of every published checkpoint (built on the meta device)."""
    known = []
    for name, published in PUBLISHED.items():
        with torch.device("meta"):
            root = checkpoint_root(build_architecture(name))
        label = f"{published.title} ({published.hub} {' / '.join(published.files)})"
        known.append(KnownLayout(name, label, tensor_layout(root.state_dict())))
    return tuple(known)


def timm_spec(
    name: str,
    module: nn.Module,
    arch_kwargs: Mapping[str, Any] | None = None,
    target_mpp: float = DEFAULT_TIMM_MPP,
) -> EncoderSpec:
    """A timm:<model> encoder's contract: input size, mean and std from timm's config for the
    model; the width from a forward pass on the meta device."""
    trunk: Any = checkpoint_root(module)
    cfg = dict(getattr(trunk, "pretrained_cfg", {}) or {})
    size = getattr(getattr(trunk, "patch_embed", None), "img_size", None)
    edge = int(size[0]) if size is not None else int(cfg.get("input_size", (3, 224, 224))[-1])
    with torch.device("meta"), torch.no_grad():
        meta = build_architecture(name, depth=1, arch_kwargs=arch_kwargs)
        width = int(meta(torch.empty(1, 3, edge, edge)).shape[-1])
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return EncoderSpec(
        name=name,
        tile_px=Pixels(edge),
        input_px=Pixels(edge),
        target_mpp=Mpp(target_mpp),
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        embed_dim=width,
    )


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
    arch_kwargs: Mapping[str, Any] | None = None,
    depth: int | None = None,
) -> LoadedEncoder:
    """Build a frozen encoder and load its weights, strictly, in the published layout.

    `weights` is a local file or an s3:// URI (safetensors or a torch state dict, with or
    without the common wrappers). Without weights, only the seeded encoders (`tiny`, `null`)
    load, unless `allow_random` asks for a randomly initialised network (benchmarks, export
    tests); such an encoder is labelled untrained. `depth` (fewer blocks) is for tests.
    """
    if weights is not None and is_hub_name(str(weights)):
        raise hub_error(str(weights))
    if not is_timm_name(name):
        encoder_spec(name)  # unknown names fail here
    if weights is None and name not in SEEDED_ENCODERS and not allow_random:
        raise WeightsError(
            f"encoder {name!r} needs its weights: pass a local file or s3:// URI "
            f"(pre-fetch them once, see `histoprompt-export encoders`)"
        )
    if weights is not None:
        local = fetch_weights(weights, settings)
        with torch.device("meta"):  # the file's tensors are taken as they are
            module = build_architecture(name, seed, depth=depth, arch_kwargs=arch_kwargs)
        load_weights_into(
            checkpoint_root(module),
            local,
            expected_name=name,
            known_layouts=published_layouts,
            adapt=getattr(module, "adapt_published_state", None),
        )
        digest = _digest_file(local)
    else:
        module = build_architecture(name, seed, depth=depth, arch_kwargs=arch_kwargs)
        digest = f"seed{seed}"
    spec = timm_spec(name, module, arch_kwargs) if is_timm_name(name) else encoder_spec(name)
    if weights is None or name in SEEDED_ENCODERS:
        spec = spec.model_copy(update={"untrained": True})
    for param in module.parameters():
        param.requires_grad_(False)
    return LoadedEncoder(module=module.eval(), spec=spec, weights_digest=digest)
