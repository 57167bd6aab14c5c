"""Triton side without Triton: retry policy and the served-model contract parsing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from tritonclient.utils import InferenceServerException

from histoprompt.core.errors import TransientError
from histoprompt.wsi.errors import SlideError
from histoprompt.wsi.scoring import ScoringOptions
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


@pytest.mark.parametrize(
    "message",
    [
        "Request for unknown model: 'patch_embed' is not found",
        "Request for unknown model: 'patch_embed' has no available versions",
        "Request for unknown model: 'patch_embed' version 1 is not ready",
    ],
)
def test_a_model_still_loading_is_transient_not_the_slides_fault(message: str) -> None:
    errs = [InferenceServerException(message, status="StatusCode.INVALID_ARGUMENT")] * 2
    call, calls = _flaky(errs)
    with pytest.raises(TransientError) as info:
        asyncio.run(with_retries(call, attempts=2, base_s=0.001, what="patch_embed"))
    assert info.value.code == "triton_unavailable" and calls["n"] == 2


def test_invalid_argument_is_the_slides_fault_and_not_retried() -> None:
    call, calls = _flaky([InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT")])
    with pytest.raises(SlideError) as info:
        asyncio.run(with_retries(call, attempts=3, base_s=0.001, what="x"))
    assert info.value.code == "infer_error" and calls["n"] == 1


def _config(max_batch_size: int = 0, **params: str) -> dict:
    config: dict = {"parameters": {k: {"string_value": v} for k, v in params.items()}}
    if max_batch_size:
        config["max_batch_size"] = max_batch_size
    return {"config": config}


PREPROCESS = _config(
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


def test_served_model_from_tile_preprocess_parameters() -> None:
    served = served_model_from_config(
        PREPROCESS, _config(default_method="prototype"), _config(max_batch_size=128)
    )
    assert served.version == "tiny-abc" and served.synthetic and served.encoder == "tiny"
    assert served.spec.tile_px == 64 and served.spec.target_mpp == 1.0
    assert served.spec.untrained and served.pathway_method == "prototype"
    assert served.max_batch_size == 128


def test_missing_encoder_parameters_is_a_config_error() -> None:
    with pytest.raises(TransientError) as info:
        served_model_from_config(_config(encoder="tiny"), {}, _config(max_batch_size=8))
    assert info.value.code == "model_config" and "tile_px" in str(info.value)


def test_unbatched_patch_embed_is_a_config_error() -> None:
    with pytest.raises(TransientError) as info:
        served_model_from_config(PREPROCESS, {}, _config())
    assert info.value.code == "model_config" and "max_batch_size" in str(info.value)


class _Stop(Exception):
    """Ends process() once the scoring options are seen."""


@pytest.mark.parametrize(("setting", "served_max", "expected"), [(64, 16, 16), (64, 256, 64)])
def test_served_max_batch_size_bounds_the_tiles_per_request(
    monkeypatch: pytest.MonkeyPatch, setting: int, served_max: int, expected: int
) -> None:
    from histoprompt.ingest import pipeline
    from histoprompt.ingest.events import SlideJob
    from histoprompt.ingest.settings import IngestSettings

    seen: list[ScoringOptions] = []

    class Opened:
        reader, gets = None, 0

        def close(self) -> None:
            return None

    async def score_slide(*args: Any) -> None:
        seen.append(args[-1])
        raise _Stop

    class Store:
        def is_complete(self, slide_id: str, version: str) -> bool:
            return False

    monkeypatch.setattr(pipeline, "open_slide", lambda *a: Opened())
    monkeypatch.setattr(pipeline, "score_slide", score_slide)
    settings = IngestSettings(  # type: ignore[call-arg]
        _env_file=None, slides_bucket="b", ingest_batch_size=setting, ingest_decoder="cpu"
    )
    served = served_model_from_config(PREPROCESS, {}, _config(max_batch_size=served_max))
    proc = pipeline.SlideProcessor(settings, None, Store(), None, served, [])  # type: ignore[arg-type]
    with pytest.raises(_Stop):
        asyncio.run(proc.process(SlideJob("b", "s.svs", "e", 1, "single")))
    assert [o.batch_size for o in seen] == [expected]
