"""Soak (opt-in, `make soak`): slides at a fixed rate into 2 ingest workers for a bounded time.

Every 10 s: each process's RSS (the two workers, Triton with its stubs, Kafka, the S3
server), consumer lag; per slide the end-to-end latency (submission to its result manifest).
Written to `<results dir>/soak.json`; `make soak` then renders RELIABILITY.md's "Soak"
section from it (tests.perf.reliability_report): RSS slope (MB/hour, least squares), latency
p50/p95 and its drift (last third's p50 minus the first third's). SOAK_SECONDS (default 600,
at most 600) and SOAK_INTERVAL_S (default 6 s between slides) shorten it for a dry run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from helpers.chaos_feed import GOOD_KINDS
from helpers.chaos_run import ChaosRun, results_dir
from helpers.soak_stats import SoakLog, consumer_lag, rss_mb, service_pids

pytestmark = [pytest.mark.integration, pytest.mark.soak]

SOAK_S = min(600.0, float(os.environ.get("SOAK_SECONDS", "600")))
INTERVAL_S = float(os.environ.get("SOAK_INTERVAL_S", "6"))
SAMPLE_S = 10.0
DRAIN_S = 180.0


@pytest.fixture
def run(stack, served_model, tmp_path: Path) -> Iterator[ChaosRun]:  # noqa: ANN001
    r = ChaosRun(stack, tmp_path, "soak")
    try:
        yield r
    finally:
        r.close()


def _sample(run: ChaosRun, log: SoakLog, t: float) -> None:
    rss = {f"ingest-{slot}": rss_mb([w.proc.pid]) for slot, w in run.workers.items()}
    rss |= {name: rss_mb(pids) for name, pids in service_pids(run.stack).items()}
    log.sample(t, rss, consumer_lag(run.settings, run.group))


def _latencies(run: ChaosRun) -> list[tuple[float, float]]:
    """(finished, seconds) per completed slide: submission to its result manifest's `created`
    (the result is durable from then on)."""
    states = run.audit.look()
    out = []
    for item in run.items:
        for created in states[item.n].created[:1]:
            done = datetime.fromisoformat(created).timestamp()
            out.append((done, done - item.submitted_wall))
    return out


def test_soak(run: ChaosRun) -> None:
    for slot in range(2):
        run.start_worker(slot)
    run.wait_joined()
    log = SoakLog()
    t0 = time.monotonic()
    next_slide = next_sample = t0
    while (now := time.monotonic()) - t0 < SOAK_S:
        if now >= next_slide:
            run.submit([GOOD_KINDS[len(run.items) % len(GOOD_KINDS)]])
            next_slide += INTERVAL_S
        if now >= next_sample:
            _sample(run, log, now - t0)
            next_sample += SAMPLE_S
        time.sleep(0.2)
    figures = run.wait_settled(DRAIN_S)
    log.latencies = _latencies(run)
    _sample(run, log, time.monotonic() - t0)
    summary = {
        **log.summary(),
        **figures,
        "interval_s": INTERVAL_S,
        "soak_s": SOAK_S,
        "sample_s": SAMPLE_S,
        "kinds": list(GOOD_KINDS),
        "load_avg": os.getloadavg(),
    }
    results_dir().mkdir(parents=True, exist_ok=True)
    (results_dir() / "soak.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsoak: {json.dumps(summary)}")  # noqa: T201
    assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
    assert summary["latency_n"] == figures["completed"], summary
