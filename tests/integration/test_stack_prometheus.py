"""Prometheus (real server): it scrapes Triton's nv_inference_* metrics of our model and
has the histoprompt-ingest job configured on the ingest metrics port."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

MODEL = "stack_add_one"


def _query(stack: StackHandle, promql: str) -> list[dict[str, object]]:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": promql})
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success"
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_prometheus_scrapes_triton_inference_metrics(
    stack: StackHandle, stack_test_models: tuple[str, ...]
) -> None:
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    x = np.ones((1, 4), dtype=np.float32)
    n = 5
    for _ in range(n):
        inp = grpcclient.InferInput("INPUT", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        client.infer(MODEL, [inp])

    promql = f'nv_inference_request_success{{job="triton",model="{MODEL}"}}'
    value = 0.0
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline:
        result = _query(stack, promql)
        if result:
            value = float(result[0]["value"][1])  # type: ignore[index]
            if value >= n:
                break
        time.sleep(1.0)
    assert value >= n, f"Prometheus saw {value} successful requests of {MODEL}, wanted >= {n}"


def test_scrape_jobs_and_targets(stack: StackHandle) -> None:
    response = httpx.get(f"{stack.prometheus_url}/api/v1/targets")
    response.raise_for_status()
    targets = {t["labels"]["job"]: t["scrapeUrl"] for t in response.json()["data"]["activeTargets"]}
    assert targets["triton"] == stack.triton_metrics_url
    assert targets["histoprompt-ingest"] == f"http://127.0.0.1:{stack.ingest_metrics_port}/metrics"
    # Triton's target must be up within a few scrape intervals.
    deadline = time.monotonic() + 30.0
    up: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        up = _query(stack, 'up{job="triton"} == 1')
        if up:
            break
        time.sleep(1.0)
    assert up, "Prometheus never scraped Triton successfully"
