"""Readable scores in ingest's stored results: PERCENTILE / ZSCORE from slide_to_pathways
become PathwayScore.percentile / z; an ensemble without them (older repository) leaves None."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from histoprompt.core import names
from histoprompt.ingest.pipeline import pathway_scores
from histoprompt.wsi.triton import TritonClient, served_outputs

SETS = ["HALLMARK_HYPOXIA", "HALLMARK_E2F_TARGETS"]


def _out(**extra: np.ndarray) -> dict[str, np.ndarray]:
    return {
        names.TENSOR_SCORES: np.array([[1.5, -2.0]], dtype=np.float32),
        names.TENSOR_COVERAGE: np.array([0.9, 0.8], dtype=np.float32),
        **extra,
    }


def test_percentile_and_z_are_stored_when_served() -> None:
    out = _out(
        PERCENTILE=np.array([[97.5, np.nan]], dtype=np.float32),
        ZSCORE=np.array([[1.25, np.nan]], dtype=np.float32),
    )
    got = pathway_scores(out, SETS, "soft-knn")
    assert got["HALLMARK_HYPOXIA"].percentile == 97.5 and got["HALLMARK_HYPOXIA"].z == 1.25
    assert got["HALLMARK_HYPOXIA"].score == 1.5 and got["HALLMARK_HYPOXIA"].method == "soft-knn"
    # NaN: the method is off the reference's ssGSEA scale for that set
    assert got["HALLMARK_E2F_TARGETS"].percentile is None and got["HALLMARK_E2F_TARGETS"].z is None
    body = got["HALLMARK_HYPOXIA"].model_dump(mode="json")
    assert body["percentile"] == 97.5 and body["z"] == 1.25


def test_an_ensemble_without_the_outputs_leaves_them_none() -> None:
    got = pathway_scores(_out(), SETS, "soft-knn")
    assert [p.percentile for p in got.values()] == [None, None]
    assert [p.z for p in got.values()] == [None, None]
    only_pct = pathway_scores(_out(PERCENTILE=np.array([[10.0, 20.0]])), SETS, "soft-knn")
    assert only_pct["HALLMARK_E2F_TARGETS"].percentile == 20.0
    assert only_pct["HALLMARK_E2F_TARGETS"].z is None


def _config(*outputs: str) -> dict[str, Any]:
    return {"config": {"output": [{"name": n, "data_type": "TYPE_FP32"} for n in outputs]}}


def test_served_outputs_reads_the_ensembles_config() -> None:
    old = _config("SLIDE_EMBEDDING", "ATTENTION", "SCORES", "COVERAGE")
    new = _config("SLIDE_EMBEDDING", "ATTENTION", "SCORES", "COVERAGE", "PERCENTILE", "ZSCORE")
    assert served_outputs(old, names.READABLE_OUTPUTS) == ()
    assert served_outputs(new, names.READABLE_OUTPUTS) == ("PERCENTILE", "ZSCORE")


class _FakeResult:
    def __init__(self, wanted: list[str]) -> None:
        self.wanted = wanted

    def as_numpy(self, name: str) -> np.ndarray:
        return np.zeros((1, 2), dtype=np.float32)


class _FakeGrpc:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_calls = 0
        self.requested: list[list[str]] = []

    async def get_model_config(self, model: str, as_json: bool) -> dict[str, Any]:
        assert model == names.MODEL_SLIDE_TO_PATHWAYS and as_json
        self.config_calls += 1
        return self.config

    async def infer(self, model: str, inputs: Any, outputs: Any, client_timeout: float) -> Any:
        self.requested.append([o.name() for o in outputs])
        return _FakeResult(self.requested[-1])


def _client(config: dict[str, Any]) -> tuple[TritonClient, _FakeGrpc]:
    client = TritonClient.__new__(TritonClient)
    fake = _FakeGrpc(config)
    client._client, client._timeout, client._attempts, client._base = fake, 1.0, 1, 0.001
    client._readable = None
    return client, fake


def test_client_requests_only_the_readable_outputs_the_ensemble_has() -> None:
    emb = np.zeros((3, 4), dtype=np.float32)
    base = ["SLIDE_EMBEDDING", "ATTENTION", "SCORES", "COVERAGE"]
    for outputs, extra in ((base, []), ([*base, "PERCENTILE", "ZSCORE"], ["PERCENTILE", "ZSCORE"])):
        client, fake = _client(_config(*outputs))
        got = asyncio.run(client.slide_to_pathways(emb, SETS))
        asyncio.run(client.slide_to_pathways(emb, SETS))
        assert fake.requested[0] == [*base, *extra] and sorted(got) == sorted([*base, *extra])
        assert fake.config_calls == 1  # read once per client
