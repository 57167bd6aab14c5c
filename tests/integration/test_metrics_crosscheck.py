"""Every metric the alert rules and the Grafana dashboard name exists in a live scrape of the
local stack: Triton's /metrics after real inferences, and the real ingest service process's
/metrics. A renamed metric on either side fails here.

Triton's GPU metrics (nv_gpu_*) come from DCGM and only exist on a GPU. On the CPU-only
local Triton they are checked against Triton's documented GPU metric list
(assets/triton_gpu_metrics.json, source noted there) instead; when the scraped Triton does
serve GPU metrics, they are checked against the scrape like everything else.

The same test also checks that the local Prometheus loaded deploy/prometheus/rules and
evaluates every rule without error, and that it sees the ingest metrics under the job the
rules and dashboard are written for.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from prometheus_client.parser import text_string_to_metric_families

from histoprompt.stack import StackHandle
from histoprompt.stack.ports import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
DASHBOARD = ROOT / "deploy" / "grafana" / "histoprompt-dashboard.json"
GPU_METRICS = Path(__file__).parent / "assets" / "triton_gpu_metrics.json"
METRIC = re.compile(r"\b(?:histoprompt_|nv_)[a-z0-9_]+\b")
INFER_MODELS = ("stack_add_one", "stack_add_two")  # a python model and an ensemble


def _rule_exprs() -> list[str]:
    return [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def _dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def _named(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in METRIC.findall(e)}


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]")


def _scrape(url: str) -> set[str]:
    """Sample names exactly as exposed, which is what Prometheus stores and PromQL names.

    (prometheus_client's parser is not used for the names: it appends `_total` to counters
    that Triton exposes without it, e.g. nv_inference_count.)
    """
    response = httpx.get(url, timeout=10.0)
    response.raise_for_status()
    text = response.text
    families = list(text_string_to_metric_families(text))  # raises on a malformed exposition
    assert families
    return {m.group(1) for line in text.splitlines() if (m := SAMPLE.match(line))}


def test_the_extraction_finds_the_metrics_ops_rely_on() -> None:
    """Guards the regex: if it found nothing, the cross-check would pass vacuously."""
    named = _named(_rule_exprs()) | _named(_dashboard_exprs())
    assert {
        "histoprompt_ingest_slides_total",
        "histoprompt_ingest_tiles_total",
        "histoprompt_ingest_slide_seconds_bucket",
        "histoprompt_ingest_stage_seconds_bucket",
        "histoprompt_ingest_consumer_lag",
        "histoprompt_ingest_inflight_slides",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_gpu_utilization",
    } <= named
    assert not any(n.endswith("_") for n in named)


@pytest.fixture(scope="module")
def triton_scrape(stack: StackHandle, stack_test_models: tuple[str, ...]) -> set[str]:
    """Triton's metric names after real inferences on a python model and an ensemble."""
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        for model in INFER_MODELS:
            for batch in (1, 4):
                inp = grpcclient.InferInput("INPUT", [batch, 4], "FP32")
                inp.set_data_from_numpy(np.ones((batch, 4), dtype=np.float32))
                result = client.infer(model, [inp])
                assert result.as_numpy("OUTPUT") is not None
    finally:
        client.close()
    return _scrape(stack.triton_metrics_url)


@pytest.fixture(scope="module")
def ingest_process(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real `histoprompt-ingest run` on the stack's ingest metrics port (Prometheus'
    histoprompt-ingest job). It serves /metrics before it waits for its Triton model, so
    it needs no model loaded; it is stopped with SIGTERM afterwards.

    Its Triton URL is a closed loopback port, so it is never ready whatever models other
    modules have loaded in the shared Triton, and it never starts consuming; its own consumer
    group keeps it off the shared group's offsets even so."""
    port = stack.ingest_metrics_port
    base = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("ingest") / "ingest.log"
    # Inherited HISTOPROMPT_* (e.g. a sourced developer stack.env) would override stack.env.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HISTOPROMPT_")}
    # Chosen free and left closed: nothing listens there during the test.
    env["HISTOPROMPT_TRITON_URL"] = f"127.0.0.1:{free_port()}"
    env["HISTOPROMPT_INGEST_GROUP_ID"] = f"metrics-crosscheck-{uuid.uuid4().hex[:12]}"
    argv = [
        str(Path(sys.executable).parent / "histoprompt-ingest"),
        "run",
        "--env-file",
        str(stack.env_file),
        "--metrics-port",
        str(port),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60.0
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"histoprompt-ingest did not serve /healthz on {port} "
                    f"(exit {proc.returncode}):\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _missing(named: set[str], scraped: set[str], gpu_documented: set[str]) -> list[str]:
    serves_gpu = any(n.startswith("nv_gpu_") for n in scraped)
    missing = []
    for name in sorted(named):
        if name in scraped:
            continue
        if not serves_gpu and name in gpu_documented:
            continue  # GPU-only, checked against Triton's documented list
        missing.append(name)
    return missing


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_every_named_metric_exists_in_a_live_scrape(
    source: str, triton_scrape: set[str], ingest_process: str
) -> None:
    exprs = _rule_exprs() if source == "rules" else _dashboard_exprs()
    named = _named(exprs)
    gpu = json.loads(GPU_METRICS.read_text())
    documented = set(gpu["metrics"])
    scraped = triton_scrape | _scrape(f"{ingest_process}/metrics")
    assert not _missing(named, scraped, documented), (
        f"{source} name metrics that neither Triton nor ingest serves"
    )
    # GPU names that stood in for a scrape must be documented GPU metrics, and the label
    # the rules and dashboard group by must be Triton's GPU label.
    gpu_named = {n for n in named if n.startswith(("nv_gpu_", "nv_energy_"))}
    assert gpu_named <= documented
    if gpu_named:
        # The dashboard uses the label in its legends, the rules in their expressions.
        joined = "\n".join(exprs) if source == "rules" else DASHBOARD.read_text()
        assert "gpu_uuid" in joined and gpu["labels"] == ["gpu_uuid"]


def test_a_renamed_metric_would_be_caught(triton_scrape: set[str], ingest_process: str) -> None:
    """Control for the check above, on the same live scrape."""
    scraped = triton_scrape | _scrape(f"{ingest_process}/metrics")
    documented = set(json.loads(GPU_METRICS.read_text())["metrics"])
    renamed = {"histoprompt_ingest_tile_total", "nv_inference_queue_time_us"}
    assert _missing(renamed, scraped, documented) == sorted(renamed)


def test_triton_serves_per_model_counters_for_batches(triton_scrape: set[str]) -> None:
    assert {"nv_inference_count", "nv_inference_exec_count"} <= triton_scrape


def test_ingest_health_endpoints_behave_as_the_chart_probes_expect(ingest_process: str) -> None:
    assert httpx.get(f"{ingest_process}/healthz", timeout=5.0).status_code == 200
    # Not ready: its Triton URL points at a closed port (see the ingest_process fixture).
    assert httpx.get(f"{ingest_process}/readyz", timeout=5.0).status_code == 503


def _prom(stack: StackHandle, path: str, **params: str) -> Any:
    response = httpx.get(f"{stack.prometheus_url}{path}", params=params, timeout=10.0)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success"
    return body["data"]


def _prom_names(stack: StackHandle, job: str, prefix: str) -> set[str]:
    query = f'count by (__name__) ({{job="{job}",__name__=~"{prefix}.+"}})'
    result = _prom(stack, "/api/v1/query", query=query)["result"]
    return {r["metric"]["__name__"] for r in result}


def test_local_prometheus_sees_the_metrics_and_evaluates_the_rules(
    stack: StackHandle, ingest_process: str, triton_scrape: set[str]
) -> None:
    """What the rules evaluate on: the names as stored by the stack's Prometheus."""
    named = _named(_rule_exprs() + _dashboard_exprs())
    ingest_named = {n for n in named if n.startswith("histoprompt_")}
    triton_named = {n for n in named if n.startswith("nv_") and n in triton_scrape}
    assert len(triton_named) >= 6
    seen: set[str] = set()
    groups: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90.0
    while time.monotonic() < deadline:
        seen = _prom_names(stack, "histoprompt-ingest", "histoprompt_") | _prom_names(
            stack, "triton", "nv_"
        )
        groups = _prom(stack, "/api/v1/rules", type="alert")["groups"]
        # Prometheus reports "0001-01-01T00:00:00Z" for a rule it has not evaluated yet.
        evaluated = all(
            not r.get("lastEvaluation", "0001").startswith("0001")
            for g in groups
            for r in g["rules"]
        )
        if (ingest_named | triton_named) <= seen and groups and evaluated:
            break
        time.sleep(2.0)
    missing = sorted((ingest_named | triton_named) - seen)
    assert not missing, f"Prometheus lacks {missing}"
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    in_files = {
        rule["alert"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    assert set(loaded) == in_files
    unhealthy = {n: r.get("lastError") for n, r in loaded.items() if r["health"] != "ok"}
    assert not unhealthy
