"""The EncoderSpec as Triton config parameters: export writes them, serving and ingest read them.

tile_preprocess's config.pbtxt carries the spec as string parameters (Triton parameters are
strings only), so the served preprocessing and the ingest tile grid come from one place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from histoprompt.core.errors import ConfigError
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.units import Mpp, Pixels

# `untrained` is optional: configs written before it existed describe trained encoders.
_REQUIRED = ("encoder", "tile_px", "input_px", "target_mpp", "mean", "std", "embed_dim")


class EncoderParamsError(ConfigError):
    """Config parameters that do not describe an EncoderSpec."""

    code = "model_config"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def encoder_spec_to_params(spec: EncoderSpec) -> dict[str, str]:
    """The spec as the string parameters of tile_preprocess's config."""
    return {
        "encoder": spec.name,
        "tile_px": str(spec.tile_px),
        "input_px": str(spec.input_px),
        # repr keeps every digit and always a decimal point ("1.0", not "1").
        "target_mpp": repr(float(spec.target_mpp)),
        "mean": json.dumps(list(spec.mean)),
        "std": json.dumps(list(spec.std)),
        "embed_dim": str(spec.embed_dim),
        "untrained": _bool(spec.untrained),
    }


def _triple(params: Mapping[str, str], key: str) -> tuple[float, float, float]:
    values = json.loads(params[key])
    if not isinstance(values, list) or len(values) != 3:
        raise ValueError(f"{key} must be a JSON list of 3 numbers, got {params[key]!r}")
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def encoder_spec_from_params(params: Mapping[str, str]) -> EncoderSpec:
    """Read the spec back; raises EncoderParamsError naming the missing or invalid keys.

    An empty value counts as missing, as Triton reports an unset string parameter as "".
    """
    missing = [k for k in _REQUIRED if not params.get(k)]
    if missing:
        raise EncoderParamsError(f"encoder parameters missing: {', '.join(missing)}")
    untrained = params.get("untrained") or "false"
    if untrained not in ("true", "false"):
        raise EncoderParamsError(f"encoder parameter untrained is {untrained!r}, not true/false")
    try:
        return EncoderSpec(
            name=params["encoder"],
            tile_px=Pixels(int(params["tile_px"])),
            input_px=Pixels(int(params["input_px"])),
            target_mpp=Mpp(float(params["target_mpp"])),
            mean=_triple(params, "mean"),
            std=_triple(params, "std"),
            embed_dim=int(params["embed_dim"]),
            untrained=untrained == "true",
        )
    except (ValueError, TypeError) as err:
        raise EncoderParamsError(f"invalid encoder parameters: {err}") from err
