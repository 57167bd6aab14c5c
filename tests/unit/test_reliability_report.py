"""RELIABILITY.md rendering and the soak statistics, on figures made up here (no stack)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.soak_stats import SoakLog, percentile, slope_per_hour
from perf import reliability_report


def _figures(fault: str, **kw: object) -> dict[str, object]:
    base = {
        "fault": fault,
        "submitted": 20,
        "bad": 0,
        "completed": 20,
        "failed_results": 0,
        "duplicated": 0,
        "lost": 0,
        "dlq": 0,
        "dlq_codes": {},
        "recover_s": 4.25,
        "recover_means": "kill -9 to the killed slide's redelivery",
        "offset_samples": 7,
        "offset_violations": [],
        "load_avg": [3.5, 3.0, 2.0],
    }
    return base | kw


def test_slope_is_least_squares_per_hour() -> None:
    times = [0.0, 10.0, 20.0, 30.0]
    assert slope_per_hour(times, [100 + 0.01 * t for t in times]) == pytest.approx(36.0)
    assert slope_per_hour(times, [5.0, 5.0, 5.0, 5.0]) == 0.0
    assert slope_per_hour([0.0, 1.0], [1.0, 2.0]) == 0.0  # too few points to say


def test_percentile_and_drift() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0, 5.0], 50) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == 5.0
    log = SoakLog()
    log.sample(0.0, {"ingest-0": 100.0}, 0)
    log.sample(10.0, {"ingest-0": 101.0}, 2)
    log.latencies = [(float(i), 1.0 if i < 3 else 2.0) for i in range(9)]
    summary = log.summary()
    assert summary["latency_drift_s"] == 1.0
    assert summary["lag_max"] == 2 and summary["rss_mb_end"]["ingest-0"] == 101.0


def test_report_renders_a_row_per_fault_and_names_the_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    kill = _figures("kill_worker_mid_slide")
    bad = _figures(
        "poison_corrupt_and_crash_looping_input",
        bad=5,
        completed=15,
        dlq=4,
        dlq_codes={"malformed_event": 3, "crash_loop": 1},
        recover_s=None,
    )
    for f in (kill, bad):
        (results / f"{f['fault']}.json").write_text(json.dumps(f))
    (results / "kill_worker_mid_slide.items.json").write_text("[]")  # not a figures file
    target = tmp_path / "RELIABILITY.md"
    monkeypatch.setattr(reliability_report, "RELIABILITY", target)
    assert reliability_report.main(["--results", str(results)]) == 0
    text = target.read_text()
    assert "| kill -9 one worker mid-slide, restart it | 20 | 0 | 20 | 0 | 0 | 0 (-) |" in text
    assert "| 4 (crash_loop 1, malformed_event 3) |" in text
    assert "Not measured in this run: Kafka broker stopped 15 s" in text


def test_report_without_results_fails(tmp_path: Path) -> None:
    assert reliability_report.main(["--results", str(tmp_path)]) == 1
