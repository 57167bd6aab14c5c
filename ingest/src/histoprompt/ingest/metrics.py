"""docs/architecture.md metrics ("6. Metrics") on a registry passed in, never the global one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from histoprompt.wsi.stage_clock import CPU_STAGES

STATUSES = ("done", "failed", "dlq", "skipped_duplicate")
STAGES = ("read", "tile", "infer", "write")
_SLIDE_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
_STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True)
class IngestMetrics:
    registry: CollectorRegistry
    slides: Counter
    tiles: Counter
    stage_seconds: Histogram
    slide_seconds: Histogram
    inflight: Gauge
    consumer_lag: Gauge


class StageCpuCollector(Collector):
    """histoprompt_ingest_stage_cpu_seconds_total{stage}: the process's CPU seconds per
    data-path stage (histoprompt.wsi.stage_clock), read when scraped."""

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "histoprompt_ingest_stage_cpu_seconds",
            "CPU seconds per data-path stage (read, decode, mask, tiles), all slides",
            labels=["stage"],
        )
        for stage, seconds in CPU_STAGES.totals().items():
            family.add_metric([stage], seconds)
        yield family


def make_metrics(registry: CollectorRegistry) -> IngestMetrics:
    """Register the ingest metrics on `registry`. No label carries a key or patient data."""
    slides = Counter(
        "histoprompt_ingest_slides",
        "Slides handled, by outcome",
        ["status"],
        registry=registry,
    )
    for status in STATUSES:
        slides.labels(status=status)
    stage = Histogram(
        "histoprompt_ingest_stage_seconds",
        "Seconds per pipeline stage per slide",
        ["stage"],
        buckets=_STAGE_BUCKETS,
        registry=registry,
    )
    for name in STAGES:
        stage.labels(stage=name)
    registry.register(StageCpuCollector())
    return IngestMetrics(
        registry=registry,
        slides=slides,
        tiles=Counter("histoprompt_ingest_tiles", "Tiles embedded", registry=registry),
        stage_seconds=stage,
        slide_seconds=Histogram(
            "histoprompt_ingest_slide_seconds",
            "Seconds from event to result",
            buckets=_SLIDE_BUCKETS,
            registry=registry,
        ),
        inflight=Gauge(
            "histoprompt_ingest_inflight_slides", "Slides being processed", registry=registry
        ),
        consumer_lag=Gauge(
            "histoprompt_ingest_consumer_lag",
            "Messages behind the end of histoprompt.slides.incoming (this consumer's partitions)",
            registry=registry,
        ),
    )
