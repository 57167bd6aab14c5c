"""The encoder registry as data: preprocessing contract per encoder name (no torch here).

The model-repository generator and the serving modules read these without importing torch.
Mean/std, input size and target MPP follow each model's published preprocessing (model card,
TRIDENT's encoder classes); `PUBLISHED` says which file the user downloads, its architecture
and what the embedding is. `tiny` and `null` are fixed-seed, untrained stand-ins for tests,
the demo and data-path benchmarks. Any other timm ViT is `timm:<model name>`
(`histoprompt.export.encoders`), with the preprocessing of timm's config for that model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.units import Mpp, Pixels
from histoprompt.export.errors import UnknownEncoderError

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
# H-optimus-0's model card: mean/std of its H&E training tiles.
HOPTIMUS_MEAN: Final = (0.707223, 0.578729, 0.703617)
HOPTIMUS_STD: Final = (0.211883, 0.230117, 0.177517)
TIMM_PREFIX: Final = "timm:"


def _spec(
    name: str,
    tile: int,
    size: int,
    mpp: float,
    dim: int,
    *,
    untrained: bool = False,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> EncoderSpec:
    return EncoderSpec(
        name=name,
        tile_px=Pixels(tile),
        input_px=Pixels(size),
        target_mpp=Mpp(mpp),
        mean=mean,
        std=std,
        embed_dim=dim,
        untrained=untrained,
    )


# All five published models take tiles at 20x (0.5 um/px).
# UNI, UNI2-h, Virchow2, H-optimus-0: 224 px tiles, as trained.
# CONCH v1.5 (as in THREADS/TRIDENT): 512 px tiles resized to the 448 px the tower is used at.
_REGISTRY: Final[dict[str, EncoderSpec]] = {
    "uni": _spec("uni", 224, 224, 0.5, 1024),
    "uni2_h": _spec("uni2_h", 224, 224, 0.5, 1536),
    "conch_v15": _spec("conch_v15", 512, 448, 0.5, 768),
    "virchow2": _spec("virchow2", 224, 224, 0.5, 2560),
    "h_optimus_0": _spec("h_optimus_0", 224, 224, 0.5, 1536, mean=HOPTIMUS_MEAN, std=HOPTIMUS_STD),
    "vit_small": _spec("vit_small", 224, 224, 0.5, 384),
    "vit_base": _spec("vit_base", 224, 224, 0.5, 768),
    "tiny": _spec("tiny", 64, 64, 1.0, 192, untrained=True),
    "null": _spec("null", 224, 224, 0.5, 256, untrained=True),
}

# Encoders that are defined by a seed alone (no weight file exists for them).
SEEDED_ENCODERS: Final = frozenset({"tiny", "null"})


@dataclass(frozen=True)
class PublishedCheckpoint:
    """What a user downloads for an encoder, and what the network does with it."""

    title: str  # the model's published name
    hub: str  # where to pre-fetch it (licence accepted on the hub first)
    files: tuple[str, ...]  # the file(s) that load, as published
    architecture: str
    output: str  # the embedding's definition


PUBLISHED: Final[dict[str, PublishedCheckpoint]] = {
    "uni": PublishedCheckpoint(
        "UNI",
        "MahmoodLab/UNI",
        ("pytorch_model.bin",),
        "ViT-L/16 (timm vit_large_patch16_224, LayerScale 1e-5), 24 blocks",
        "CLS token after the final LayerNorm (1024)",
    ),
    "uni2_h": PublishedCheckpoint(
        "UNI2-h",
        "MahmoodLab/UNI2-h",
        ("pytorch_model.bin",),
        "ViT-H/14 class (embed 1536, 24 blocks, 24 heads), 8 registers, SwiGLU (packed), "
        "SiLU, no class position embedding",
        "CLS token after the final LayerNorm (1536)",
    ),
    "conch_v15": PublishedCheckpoint(
        "CONCH v1.5",
        "MahmoodLab/conchv1_5",
        ("pytorch_model_vision.bin",),
        "vision tower: ViT-L/16 trunk (LayerScale, 224 px position grid interpolated to "
        "448 px), then attn_pool_contrast (1 query, 8 heads, 768-d) and ln_contrast",
        "attention-pooled query after ln_contrast (768), before proj_contrast",
    ),
    "virchow2": PublishedCheckpoint(
        "Virchow2",
        "paige-ai/Virchow2",
        ("pytorch_model.bin",),
        "ViT-H/14 (timm vit_huge_patch14_224, 32 blocks), 4 registers, SwiGLU (packed), SiLU",
        "CLS token concatenated with the mean of the 256 patch tokens, registers excluded (2560)",
    ),
    "h_optimus_0": PublishedCheckpoint(
        "H-optimus-0",
        "bioptimus/H-optimus-0",
        ("pytorch_model.bin",),
        "ViT-g/14 (timm vit_giant_patch14_reg4_dinov2, 40 blocks), 4 registers, SwiGLU (packed)",
        "CLS token after the final LayerNorm (1536)",
    ),
}

# Where users get the published weights (pre-fetch, then pass a local path or s3:// URI).
HUB_SOURCES: Final[dict[str, str]] = {
    **{name: p.hub for name, p in PUBLISHED.items()},
    "vit_small": "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_base": "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
}


def encoder_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def is_timm_name(name: str) -> bool:
    """`timm:<model name>`: any timm model, built from timm's own definition."""
    return name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX)


def encoder_spec(name: str) -> EncoderSpec:
    """The preprocessing contract of a registered encoder; unknown names raise."""
    try:
        return _REGISTRY[name]
    except KeyError as err:
        hint = (
            " (a timm:<model> spec comes from timm's config: histoprompt.export.encoders."
            "load_encoder)"
            if is_timm_name(name)
            else "; or timm:<model name> for any other timm ViT"
        )
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; known encoders: {', '.join(_REGISTRY)}{hint}"
        ) from err
