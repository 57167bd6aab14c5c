"""The encoder registry as data: preprocessing contract per encoder name (no torch here).

The model-repository generator and the serving modules read these without importing torch.
Mean/std and target MPP follow each model's published preprocessing; `tiny` and `null` are
fixed-seed, untrained stand-ins for tests, the demo and data-path benchmarks.
"""

from __future__ import annotations

from typing import Final

from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.units import Mpp, Pixels
from histoprompt.export.errors import UnknownEncoderError

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)


def _spec(
    name: str, tile: int, size: int, mpp: float, dim: int, *, untrained: bool = False
) -> EncoderSpec:
    return EncoderSpec(
        name=name,
        tile_px=Pixels(tile),
        input_px=Pixels(size),
        target_mpp=Mpp(mpp),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        embed_dim=dim,
        untrained=untrained,
    )


# UNI: ViT-L/16 on 224 px tiles at 20x (0.5 um/px).
# CONCH v1.5 (as in THREADS): 512 px tiles at 20x, resized to the 448 px the tower was trained on;
#   the vision tower ends in a 768-d projection.
# Virchow2: ViT-H/14 with 4 register tokens; CLS concatenated with mean patch token -> 2560-d.
_REGISTRY: Final[dict[str, EncoderSpec]] = {
    "uni": _spec("uni", 224, 224, 0.5, 1024),
    "conch_v15": _spec("conch_v15", 512, 448, 0.5, 768),
    "virchow2": _spec("virchow2", 224, 224, 0.5, 2560),
    "vit_small": _spec("vit_small", 224, 224, 0.5, 384),
    "vit_base": _spec("vit_base", 224, 224, 0.5, 768),
    "tiny": _spec("tiny", 64, 64, 1.0, 192, untrained=True),
    "null": _spec("null", 224, 224, 0.5, 256, untrained=True),
}

# Encoders that are defined by a seed alone (no weight file exists for them).
SEEDED_ENCODERS: Final = frozenset({"tiny", "null"})

# Where users get the published weights (pre-fetch, then pass a local path or s3:// URI).
HUB_SOURCES: Final[dict[str, str]] = {
    "uni": "MahmoodLab/UNI",
    "conch_v15": "MahmoodLab/conchv1_5",
    "virchow2": "paige-ai/Virchow2",
    "vit_small": "timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    "vit_base": "timm/vit_base_patch16_224.augreg_in21k_ft_in1k",
}


def encoder_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def encoder_spec(name: str) -> EncoderSpec:
    """The preprocessing contract of a registered encoder; unknown names raise."""
    try:
        return _REGISTRY[name]
    except KeyError as err:
        raise UnknownEncoderError(
            f"unknown encoder {name!r}; known encoders: {', '.join(_REGISTRY)}"
        ) from err
