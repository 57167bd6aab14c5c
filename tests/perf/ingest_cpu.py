"""CPU milliseconds per tile of the ingest data path, all processes together (bench_ingest).

What a tile costs outside the encoder decides how many cores a GPU needs beside it. The
figure is the user + system CPU time, read with psutil before and after one run, of:
the ingest process (here: this benchmark process, which runs the ingest path in-process;
not its children, which are the stack's services), Triton with its python-backend stubs,
the S3 server and the Kafka broker; divided by the tiles. Prometheus is measured and shown
but not counted (it scrapes; it is not on the data path). Inside ingest, the split by stage
comes from histoprompt.wsi.stage_clock (thread CPU time per stage); what is left of the
ingest process's CPU is the gRPC client and the event loop.

The history of the figure (one row per change) is a committed JSON file that bench runs
append to with `--history LABEL`; the report renders it. Rows are not rerun: each is the
figure its change measured when it was made.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.perf.cpu_accounting import Group, delta_by_process, measure

HISTORY = Path(__file__).resolve().parent / "ingest_cpu_history.json"
COUNTED = ("ingest", "triton", "seaweed", "minio", "kafka")
NOT_COUNTED = ("prometheus",)
REST = "grpc+loop"
"""The ingest process's CPU outside the wsi stages: gRPC client, event loop, Python glue."""


def stack_groups(handle: Any) -> dict[str, Group]:
    """ingest (this process, without its children) and each stack service with its tree."""
    groups = {"ingest": Group(os.getpid(), tree=False)}
    for name, record in handle.state.processes.items():
        groups[name] = Group(record.pid)
    return groups


def idle_rates(groups: dict[str, Group], seconds: float) -> dict[str, float]:
    """CPU-ms per wall second each group spends while nothing is asked of it (heartbeats,
    polling, JVM housekeeping): the part of a run's figure that grows with its duration."""
    t0 = time.perf_counter()
    with measure(groups) as meter:
        time.sleep(seconds)
    wall = time.perf_counter() - t0
    return {g: 1000 * s / wall for g, s in meter.groups.items()}


def cpu_run(
    groups: dict[str, Group],
    run: Callable[[], dict[str, Any]],
    idle_s: float = 3.0,
    repeats: int = 3,
) -> dict[str, Any]:
    """`cpu_once` `repeats` times; the run with the lowest figure is kept (other load on a
    shared machine only ever adds CPU time: cache misses, preemption), with the figures of
    all repeats alongside."""
    runs = [cpu_once(groups, run, idle_s if i == 0 else 0.0) for i in range(repeats)]
    best = min(runs, key=lambda r: r["cpu"]["ms_per_tile"])
    best["cpu"]["repeats_ms_per_tile"] = [r["cpu"]["ms_per_tile"] for r in runs]
    best["cpu"]["idle_ms_per_s"] = runs[0]["cpu"]["idle_ms_per_s"]
    return best


def cpu_once(
    groups: dict[str, Group], run: Callable[[], dict[str, Any]], idle_s: float
) -> dict[str, Any]:
    """Run `run` (which returns n_tiles) and add its CPU accounting: ms per tile per process
    group, per Triton process, and per ingest stage; and each group's idle rate, measured
    for `idle_s` just before."""
    from histoprompt.wsi.stage_clock import CPU_STAGES

    idle = idle_rates(groups, idle_s) if idle_s > 0 else {}
    stages0 = CPU_STAGES.totals()
    with measure(groups) as meter:
        out = run()
    stages1 = CPU_STAGES.totals()
    n = int(out["n_tiles"])
    per_tile = {g: 1000 * s / n for g, s in meter.groups.items()}
    stage_ms = {s: 1000 * (stages1[s] - stages0.get(s, 0.0)) / n for s in stages1}
    stage_ms[REST] = per_tile["ingest"] - sum(stage_ms.values())
    assert meter.before is not None and meter.after is not None
    triton = delta_by_process(meter.before, meter.after, "triton") if "triton" in groups else {}
    out["cpu"] = {
        "ms_per_tile": sum(v for g, v in per_tile.items() if g in COUNTED),
        "groups_ms_per_tile": per_tile,
        "ingest_stages_ms_per_tile": stage_ms,
        "triton_processes_ms_per_tile": {k: 1000 * v / n for k, v in triton.items()},
        "wall_s": out.get("seconds"),
        "idle_ms_per_s": idle,
    }
    return out


def cpu_lines(title: str, cpu: dict[str, Any], n_tiles: int, passes: int = 1) -> list[str]:
    """Markdown: the headline figure and its split by process group, Triton process, stage.
    `n_tiles`: the tiles one run measured, `passes` times over the same slide."""
    groups = cpu["groups_ms_per_tile"]
    counted = [g for g in COUNTED if g in groups]
    repeats = cpu.get("repeats_ms_per_tile", [cpu["ms_per_tile"]])
    tiles = f"{n_tiles // passes} tiles x {passes} passes" if passes > 1 else f"{n_tiles} tiles"
    lines = [
        f"**{title}: {cpu['ms_per_tile']:.2f} CPU-ms per tile** ({tiles} per run; user + system "
        f"CPU of {', '.join(counted)}, read with psutil before and after the run; the lowest "
        f"of {len(repeats)} runs: {', '.join(f'{v:.2f}' for v in repeats)}).",
        "",
        "| process | CPU-ms/tile | counted |",
        "|---|---:|---|",
    ]
    idle = cpu.get("idle_ms_per_s", {})
    wall = cpu.get("wall_s") or 0.0
    lines[-2:] = [
        "| process | CPU-ms/tile | counted | idle CPU-ms per s | idle share of its figure |",
        "|---|---:|---|---:|---:|",
    ]
    for g, v in sorted(groups.items(), key=lambda kv: -kv[1]):
        rate = idle.get(g)
        share = f"{min(1.0, rate * wall / n_tiles / v):.0%}" if rate is not None and v else "-"
        rate_s = f"{rate:.1f}" if rate is not None else "-"
        lines.append(f"| {g} | {v:.3f} | {'yes' if g in COUNTED else 'no'} | {rate_s} | {share} |")
    lines += [
        "",
        f"Wall time of the run {wall:.2f} s. The idle rates were measured for a few seconds "
        "just before it; idle CPU (Kafka's and S3's housekeeping) is part of the figure, and "
        "grows with the run's wall time on a busy machine.",
    ]
    triton = cpu.get("triton_processes_ms_per_tile", {})
    if triton:
        lines += [
            "",
            "Triton by process: "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(triton.items(), key=lambda kv: -kv[1]))
            + " CPU-ms/tile.",
        ]
    stages = cpu["ingest_stages_ms_per_tile"]
    lines += [
        "",
        "Ingest by stage (thread CPU time; `grpc+loop` is the rest of the process): "
        + ", ".join(f"{k} {v:.3f}" for k, v in stages.items())
        + " CPU-ms/tile.",
        "",
    ]
    return lines


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def load_history(path: Path = HISTORY) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def append_history(label: str, data_path: dict[str, Any], path: Path = HISTORY) -> None:
    """Record this run's figure as the row for change `label` (replacing a row so named)."""
    cpu = data_path["cpu"]
    row = {
        "change": label,
        "commit": _commit(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "n_tiles": data_path["n_tiles"],
        "cpu_ms_per_tile": round(cpu["ms_per_tile"], 3),
        "groups_ms_per_tile": {k: round(v, 3) for k, v in cpu["groups_ms_per_tile"].items()},
        "tiles_per_s": round(data_path["ingest_tiles_per_s"], 1),
        "runs": len(cpu.get("repeats_ms_per_tile", [0])),
    }
    rows = [r for r in load_history(path) if r["change"] != label] + [row]
    path.write_text(json.dumps(rows, indent=1) + "\n")


def history_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The history table (null-encoder data path), oldest change first."""
    if not rows:
        return []
    groups = [
        g
        for g in ("ingest", "triton", "seaweed", "minio", "kafka")
        if any(g in r["groups_ms_per_tile"] for r in rows)
    ]
    lines = [
        "**History** of the null-encoder figure, one row per change, each measured by "
        "`bench_ingest --history` when the change was made, on top of the commit named "
        "(rows are recorded in tests/perf/ingest_cpu_history.json, not rerun; `kept`: whether "
        "the change stayed, set by `python -m tests.perf.ingest_cpu --mark`):",
        "",
        "| change | kept | measured on | CPU-ms/tile (lowest of runs) | runs | "
        + " | ".join(groups)
        + " | tiles/s (wall, noisy) |",
        "|---|---|---|---:|---:|" + "---:|" * len(groups) + "---:|",
    ]
    for r in rows:
        # "-": the process did not run (one S3 server or the other).
        cells = r["groups_ms_per_tile"]
        parts = [f"{cells[g]:.3f}" if g in cells else "-" for g in groups]
        lines.append(
            f"| {r['change']} | {r.get('kept', 'yes')} | {r['commit']} | "
            f"{r['cpu_ms_per_tile']:.2f} | {r.get('runs', 1)} | "
            + " | ".join(parts)
            + f" | {r['tiles_per_s']:.0f} |"
        )
    return [*lines, ""]


def mark(label: str, kept: str, path: Path = HISTORY) -> None:
    """Set the `kept` verdict (yes / no, and why) of history row `label`."""
    rows = load_history(path)
    hits = [r for r in rows if r["change"] == label]
    if not hits:
        raise SystemExit(f"no history row {label!r}")
    for r in hits:
        r["kept"] = kept
    path.write_text(json.dumps(rows, indent=1) + "\n")


def rerender_history(document: Path, path: Path = HISTORY) -> bool:
    """Replace the history table in `document` (BENCHMARKS.md) with one rendered from the
    rows as they are now (after `mark`); False when the document has no such table."""
    text = document.read_text()
    lines = history_lines(load_history(path))
    start = text.find(lines[0]) if lines else -1
    if start < 0:
        return False
    end = text.find("\n\n", text.find("\n|", start) + 1)
    table = "\n".join(lines).rstrip("\n")
    document.write_text(text[:start] + table + text[end if end >= 0 else len(text) :])
    return True


if __name__ == "__main__":
    import argparse

    from tests.perf._report import BENCHMARKS

    parser = argparse.ArgumentParser(description="mark a history row kept or not")
    parser.add_argument("--mark", required=True, metavar="LABEL")
    parser.add_argument("--kept", required=True, help="yes, or no and why")
    args = parser.parse_args()
    mark(args.mark, args.kept)
    rerender_history(BENCHMARKS)  # the table in BENCHMARKS.md shows the verdict at once
