"""EncoderSpec <-> Triton config parameters: one conversion for export, serving and ingest."""

from __future__ import annotations

import pytest

from histoprompt.core.errors import ConfigError
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.triton_params import (
    EncoderParamsError,
    encoder_spec_from_params,
    encoder_spec_to_params,
)

SPEC = EncoderSpec(
    name="tiny",
    tile_px=64,
    input_px=32,
    target_mpp=0.5,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    embed_dim=192,
    untrained=True,
)


@pytest.mark.parametrize(
    "spec",
    [
        SPEC,
        # mpp with many digits and an integral mpp, a trained encoder
        SPEC.model_copy(update={"target_mpp": 0.4990234375, "untrained": False}),
        SPEC.model_copy(update={"target_mpp": 1.0, "name": "uni", "embed_dim": 1024}),
    ],
)
def test_round_trip(spec: EncoderSpec) -> None:
    params = encoder_spec_to_params(spec)
    assert all(isinstance(v, str) for v in params.values())
    assert encoder_spec_from_params(params) == spec


def test_parameter_text_is_what_the_checked_in_repository_holds() -> None:
    # The keys and value formats are read by deployed Triton configs; changing them breaks
    # every model repository written before.
    assert encoder_spec_to_params(SPEC.model_copy(update={"target_mpp": 1.0})) == {
        "encoder": "tiny",
        "tile_px": "64",
        "input_px": "32",
        "target_mpp": "1.0",
        "mean": "[0.485, 0.456, 0.406]",
        "std": "[0.229, 0.224, 0.225]",
        "embed_dim": "192",
        "untrained": "true",
    }


def test_untrained_is_optional_and_defaults_to_trained() -> None:
    params = encoder_spec_to_params(SPEC)
    del params["untrained"]
    assert encoder_spec_from_params(params).untrained is False


@pytest.mark.parametrize("key", ["encoder", "tile_px", "target_mpp", "mean", "embed_dim"])
def test_missing_or_empty_key_is_named(key: str) -> None:
    params = encoder_spec_to_params(SPEC)
    del params[key]
    with pytest.raises(EncoderParamsError, match=f"missing: {key}"):
        encoder_spec_from_params(params)
    with pytest.raises(EncoderParamsError, match=f"missing: {key}"):
        encoder_spec_from_params({**params, key: ""})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tile_px", "sixty-four"),
        ("tile_px", "0"),
        ("target_mpp", "-0.5"),
        ("mean", "[0.5, 0.5]"),
        ("std", "0.5"),
        ("std", "not json"),
        ("mean", '["a", 0.5, 0.5]'),
        ("untrained", "yes"),
    ],
)
def test_invalid_value_is_a_config_error(key: str, value: str) -> None:
    params = {**encoder_spec_to_params(SPEC), key: value}
    with pytest.raises(ConfigError) as info:
        encoder_spec_from_params(params)
    assert isinstance(info.value, EncoderParamsError)
    assert info.value.code == "model_config"
