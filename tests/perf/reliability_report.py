"""RELIABILITY.md's chaos table, rendered from the JSON figures the chaos tests wrote.

`make chaos` runs the chaos tests (each writes `<results dir>/<fault>.json`, see
tests/helpers/chaos_run.py) and then this module. No figure here is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from ._report import write_section

ROOT = Path(__file__).resolve().parents[2]
RELIABILITY = ROOT / "RELIABILITY.md"
TITLE = "Chaos on the local stack"
# Test order = table order; the label says what was done.
FAULTS = {
    "kill_worker_mid_slide": "kill -9 one worker mid-slide, restart it",
    "kafka_broker_down_15_s": "Kafka broker stopped 15 s",
    "triton_down_15_s": "Triton stopped 15 s (models reloaded)",
    "s3_down_15_s": "S3 server stopped 15 s",
    "poison_corrupt_and_crash_looping_input": "3 poison, 1 truncated DICOM, 1 crash-looping slide",
    "rebalance_add_a_worker_then_remove_one": "rebalance: a third worker joins, one leaves",
}
HEADER = """# Reliability

Figures written by code: `make chaos` (the chaos table) and `make soak` (the soak
section). Slides are SYNTHETIC; the encoder is the demo's tiny UNTRAINED one. Every count is
read from the stores (results bucket manifests, the DLQ and results topics, the consumer
group's committed offsets), not from logs.
"""


def commit() -> str:
    try:
        out = subprocess.run(  # noqa: S603 - fixed argv
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


def _row(fault: str, r: dict[str, Any]) -> str:
    recover = "-" if r.get("recover_s") is None else f"{r['recover_s']:.1f}"
    codes = ", ".join(f"{k} {v}" for k, v in sorted(r.get("dlq_codes", {}).items())) or "-"
    load = r.get("load_avg") or [0.0]
    return (
        f"| {FAULTS.get(fault, fault)} | {r['submitted']} | {r['bad']} | {r['completed']} "
        f"| {r['lost']} | {r['duplicated']} | {r['dlq']} ({codes}) | {r['failed_results']} "
        f"| {recover} | {r.get('recover_means', '-')} "
        f"| {r['offset_samples']} / {len(r['offset_violations'])} | {load[0]:.1f} "
        f"| {r.get('finished', '-')} {r.get('commit', '')} |"
    )


def body(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        f"Rendered at commit {commit()}; each row says when its test finished and the commit "
        "it ran on (`+`: with uncommitted changes). The machine (2 cores) was shared with "
        "other jobs while this ran: the load column is the 1-minute load average when each "
        "test finished, and times to recover stretch with it.",
        "",
        "| fault | submitted | bad | completed | lost | duplicated | DLQ (reasons) "
        "| failed results | time to recover (s) | measured as | offset samples / violations "
        "| load | finished, commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [f for f in FAULTS if f in results] + sorted(set(results) - set(FAULTS))
    lines += [_row(f, results[f]) for f in order]
    settles = sorted({r["series_settle_s"] for r in results.values() if "series_settle_s" in r})
    if settles:
        lines += [
            "",
            "Workers: 2 ingest processes (a third joins in the rebalance test), static group "
            "membership with a 10 s session, 6 tries per delivery at 1 s doubling, "
            f"HISTOPROMPT_INGEST_SERIES_SETTLE_S {', '.join(f'{v:g}' for v in settles)} s. "
            "`missing` in each figures file names the lost slides.",
        ]
    missing = [FAULTS[f] for f in FAULTS if f not in results]
    if missing:
        lines += ["", "Not measured in this run: " + "; ".join(missing) + "."]
    lines += [
        "",
        "Target for every fault: completed = submitted - bad, lost = 0, duplicated = 0; "
        "an offset violation is a message below the group's committed offset whose slide "
        "had neither a result nor a DLQ record when sampled.",
    ]
    return lines


def soak_body(s: dict[str, Any]) -> list[str]:
    lines = [
        f"`make soak`: one SYNTHETIC slide every {s['interval_s']:.0f} s for {s['soak_s']:.0f} s "
        f"into 2 ingest workers (kinds in turn: {', '.join(s['kinds'])}), RSS sampled every "
        f"{s['sample_s']:.0f} s ({s['samples']} samples). Submitted {s['submitted']}, completed "
        f"{s['completed']}, lost {s['lost']}, duplicated {s['duplicated']}.",
        "",
        "| process | RSS start (MB) | RSS end (MB) | slope (MB/hour) | sd of samples (MB) |",
        "|---|---|---|---|---|",
    ]
    for name in s["rss_mb_start"]:
        lines.append(
            f"| {name} | {s['rss_mb_start'][name]} | {s['rss_mb_end'][name]} "
            f"| {s['rss_slope_mb_per_h'][name]} | {s['rss_noise_mb'][name]} |"
        )
    lines += [
        "",
        "End-to-end latency (submission to the result manifest's `created`), "
        f"{s['latency_n']} slides: p50 "
        f"{s['latency_p50_s']} s, p95 {s['latency_p95_s']} s; p50 of the first third "
        f"{s['latency_p50_first_third_s']} s, of the last third {s['latency_p50_last_third_s']}"
        f" s (drift {s['latency_drift_s']} s). Consumer lag: at most {s['lag_max']} messages, "
        f"{s['lag_end']} at the end.",
        "",
        "A slope over a run this short is noisy: compare it with the samples' spread; a run "
        "of a few minutes mostly shows warm-up (caches, the JIT of the Kafka JVM). "
        f"Commit {commit()}; 1-minute load average {s['load_avg'][0]:.1f} at the end (shared "
        "machine).",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=ROOT / ".cache" / "chaos")
    args = parser.parse_args(argv)
    found = sorted(p for p in args.results.glob("*.json") if p.stem.count(".") == 0)
    results = {p.stem: json.loads(p.read_text()) for p in found}
    soak = results.pop("soak", None)
    if not results and soak is None:
        print(f"no results in {args.results}; run make chaos or make soak")  # noqa: T201
        return 1
    if not RELIABILITY.is_file():
        RELIABILITY.write_text(HEADER)
    if results:
        write_section(TITLE, body(results), path=RELIABILITY)
    if soak is not None:
        write_section("Soak", soak_body(soak), path=RELIABILITY)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
