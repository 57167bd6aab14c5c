"""The tiny SYNTHETIC model card that serving unit tests render Triton configs from."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from histoprompt.core.modelspec import ModelCard
from histoprompt.export.encoder_specs import encoder_spec
from histoprompt.export.model_configs import Flavor
from histoprompt.export.model_repo import parse_config, render


def tiny_card() -> ModelCard:
    """The `tiny` encoder, 8-dim aligned space, 10 RNA genes; marked synthetic."""
    return ModelCard(
        name="t",
        version="tiny-test",
        encoder=encoder_spec("tiny"),
        aligned_dim=8,
        rna_genes=10,
        synthetic=True,
    )


def served_config(card: ModelCard, model: str) -> dict[str, Any]:
    """`model`'s CPU-flavour config.pbtxt for `card`, as the dict Triton hands a Python model."""
    text = render(card, Flavor.cpu).configs[model]
    config: dict[str, Any] = json_format.MessageToDict(
        parse_config(text), preserving_proto_field_name=True
    )
    return config
