"""Triton side without Triton: retry policy and the served-model contract parsing."""

from __future__ import annotations

import asyncio
import json

import pytest
from tritonclient.utils import InferenceServerException

from histoprompt.core.errors import TransientError
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.triton import served_model_from_config, with_retries


def _flaky(errors: list[InferenceServerException]):  # noqa: ANN202
    calls = {"n": 0}

    async def call() -> str:
        calls["n"] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return call, calls


def test_unavailable_is_retried_then_succeeds() -> None:
    call, calls = _flaky(
        [
            InferenceServerException("down", status="StatusCode.UNAVAILABLE"),
            InferenceServerException("slow", status="StatusCode.DEADLINE_EXCEEDED"),
        ]
    )
    assert asyncio.run(with_retries(call, attempts=3, base_s=0.001, what="x")) == "ok"
    assert calls["n"] == 3


def test_retries_exhausted_is_transient() -> None:
    errs = [InferenceServerException("down", status="StatusCode.UNAVAILABLE") for _ in range(5)]
    call, calls = _flaky(errs)
    with pytest.raises(TransientError) as info:
        asyncio.run(with_retries(call, attempts=2, base_s=0.001, what="x"))
    assert info.value.code == "triton_unavailable" and calls["n"] == 2


def test_invalid_argument_is_the_slides_fault_and_not_retried() -> None:
    call, calls = _flaky([InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT")])
    with pytest.raises(SlideError) as info:
        asyncio.run(with_retries(call, attempts=3, base_s=0.001, what="x"))
    assert info.value.code == "infer_error" and calls["n"] == 1


def _config(**params: str) -> dict:
    return {"config": {"parameters": {k: {"string_value": v} for k, v in params.items()}}}


def test_served_model_from_tile_preprocess_parameters() -> None:
    cfg = _config(
        encoder="tiny",
        tile_px="64",
        input_px="64",
        target_mpp="1.0",
        mean=json.dumps([0.485, 0.456, 0.406]),
        std=json.dumps([0.229, 0.224, 0.225]),
        embed_dim="192",
        untrained="true",
        model_version="tiny-abc",
        synthetic="true",
    )
    served = served_model_from_config(cfg, _config(default_method="prototype"))
    assert served.version == "tiny-abc" and served.synthetic
    assert served.spec.tile_px == 64 and served.spec.target_mpp == 1.0
    assert served.spec.untrained and served.pathway_method == "prototype"


def test_missing_encoder_parameters_is_a_config_error() -> None:
    with pytest.raises(TransientError) as info:
        served_model_from_config(_config(encoder="tiny"), {})
    assert info.value.code == "model_config"
