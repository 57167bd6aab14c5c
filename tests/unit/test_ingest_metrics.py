"""docs/architecture.md metric names on /metrics of a private registry; liveness, readiness."""

from __future__ import annotations

import httpx
from prometheus_client import REGISTRY, CollectorRegistry

from histoprompt.ingest.health import Health, start_metrics_server
from histoprompt.ingest.metrics import make_metrics

NAMES = (
    'histoprompt_ingest_slides_total{status="done"}',
    'histoprompt_ingest_slides_total{status="skipped_duplicate"}',
    "histoprompt_ingest_tiles_total",
    'histoprompt_ingest_stage_seconds_bucket{le="0.01",stage="read"}',
    "histoprompt_ingest_slide_seconds_count",
    "histoprompt_ingest_inflight_slides",
    "histoprompt_ingest_consumer_lag",
    'histoprompt_ingest_stage_cpu_seconds_total{stage="decode"}',
)


def test_metrics_endpoint_and_health() -> None:
    registry = CollectorRegistry()
    metrics = make_metrics(registry)
    metrics.slides.labels(status="done").inc(2)
    metrics.tiles.inc(7)
    health = Health(liveness_timeout_s=60)
    server = start_metrics_server(0, registry, health)
    try:
        base = f"http://127.0.0.1:{server.port}"
        text = httpx.get(base + "/metrics").text
        for name in NAMES:
            assert name in text, name
        assert 'histoprompt_ingest_slides_total{status="done"} 2.0' in text
        assert "histoprompt_ingest_tiles_total 7.0" in text
        assert httpx.get(base + "/healthz").status_code == 200
        assert httpx.get(base + "/readyz").status_code == 503
        health.ready = True
        assert httpx.get(base + "/readyz").status_code == 200
        health.last_beat -= 120
        assert httpx.get(base + "/healthz").status_code == 503
    finally:
        server.close()
    # the process-wide default registry is untouched
    assert REGISTRY.get_sample_value("histoprompt_ingest_tiles_total") is None


def test_stage_cpu_counter_reads_the_wsi_clock_when_scraped() -> None:
    from histoprompt.wsi.stage_clock import CPU_STAGES

    registry = CollectorRegistry()
    make_metrics(registry)
    name = "histoprompt_ingest_stage_cpu_seconds_total"
    before = registry.get_sample_value(name, {"stage": "mask"})
    assert before is not None
    with CPU_STAGES.stage("mask"):
        sum(i * i for i in range(300_000))  # some CPU
    after = registry.get_sample_value(name, {"stage": "mask"})
    assert after is not None and after > before
