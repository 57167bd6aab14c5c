"""What the soak run records every 10 s, and the figures it reports: RSS per process (psutil),
end-to-end latency, consumer lag; least-squares RSS slope and latency drift."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

import psutil

from histoprompt.core import names
from histoprompt.stack.supervisor import group_pids


def rss_mb(pids: list[int]) -> float:
    """Summed resident memory of `pids` (gone ones count 0), in MB."""
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            continue
    return total / 1e6


def service_pids(stack: Any) -> dict[str, list[int]]:
    """Each stack service's process group: Triton with its python-backend stubs."""
    return {name: group_pids(r.pid) for name, r in stack.state.processes.items()}


def slope_per_hour(times_s: list[float], values: list[float]) -> float:
    """Least-squares slope of values over time, per hour (0.0 with under 3 points)."""
    if len(times_s) < 3:
        return 0.0
    mt, mv = statistics.fmean(times_s), statistics.fmean(values)
    sxx = sum((t - mt) ** 2 for t in times_s)
    if sxx == 0:
        return 0.0
    sxy = sum((t - mt) * (v - mv) for t, v in zip(times_s, values, strict=True))
    return sxy / sxx * 3600.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[idx]


def consumer_lag(settings: Any, group: str) -> int:
    """End offsets minus the group's committed offsets on the incoming topic."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(**settings.kafka_config(), request_timeout_ms=10000)
    consumer = KafkaConsumer(**settings.kafka_config())
    try:
        committed = admin.list_group_offsets(group)[group]
        parts = consumer.partitions_for_topic(names.TOPIC_INCOMING) or {0}
        tps = [TopicPartition(names.TOPIC_INCOMING, p) for p in sorted(parts)]
        ends = consumer.end_offsets(tps)
    finally:
        admin.close()
        consumer.close()
    return sum(max(0, ends[tp] - (committed[tp].offset if tp in committed else 0)) for tp in tps)


@dataclass
class SoakLog:
    """Samples: t (s from start), RSS per process name (MB), lag; latencies by finish time."""

    times: list[float] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)
    lag: list[int] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)

    def sample(self, t: float, rss: dict[str, float], lag: int) -> None:
        self.times.append(t)
        for name, value in rss.items():
            self.rss.setdefault(name, []).append(value)
        self.lag.append(lag)

    def summary(self) -> dict[str, Any]:
        lat = [v for _, v in sorted(self.latencies)]
        third = max(1, len(lat) // 3)
        first, last = lat[:third], lat[-third:]
        return {
            "samples": len(self.times),
            "duration_s": round(self.times[-1], 1) if self.times else 0.0,
            "rss_mb_start": {k: round(v[0], 1) for k, v in self.rss.items()},
            "rss_mb_end": {k: round(v[-1], 1) for k, v in self.rss.items()},
            "rss_slope_mb_per_h": {
                k: round(slope_per_hour(self.times, v), 1) for k, v in self.rss.items()
            },
            "rss_noise_mb": {
                k: round(statistics.pstdev(v), 1) if len(v) > 1 else 0.0
                for k, v in self.rss.items()
            },
            "latency_n": len(lat),
            "latency_p50_s": round(percentile(lat, 50), 2),
            "latency_p95_s": round(percentile(lat, 95), 2),
            "latency_p50_first_third_s": round(percentile(first, 50), 2),
            "latency_p50_last_third_s": round(percentile(last, 50), 2),
            "latency_drift_s": round(percentile(last, 50) - percentile(first, 50), 2),
            "lag_max": max(self.lag, default=0),
            "lag_end": self.lag[-1] if self.lag else 0,
        }
