"""deploy/grafana/histoprompt-dashboard.json: every panel query is valid PromQL (promtool),
the panels ops need are there, and the layout is sane."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "histoprompt-dashboard.json"


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _exprs() -> list[str]:
    return [t["expr"] for p in _panels() for t in p["targets"]]


SELECTOR = 'namespace=~"$namespace",pod=~"$pod"'


def _normalise(expr: str) -> str:
    # Grafana's range variable, filled as Prometheus would see it; the namespace and pod
    # variables at "All" (allValue .*, which also matches the local stack's unlabelled
    # series).
    return expr.replace("$__rate_interval", "5m").replace("$namespace", ".*").replace("$pod", ".*")


def _bare(expr: str) -> str:
    """The expression without spaces and without the variable selectors, for the shape
    checks below."""
    flat = expr.replace(" ", "")
    flat = flat.replace("{" + SELECTOR + "}", "").replace("," + SELECTOR, "")
    flat = flat.replace('{namespace=~"$namespace"}', "")
    return _normalise(flat)


def test_every_panel_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make install-prometheus"
    rules = [
        {"record": f"dashboard:panel_{i}", "expr": _normalise(e)} for i, e in enumerate(_exprs())
    ]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def _has(pattern: str) -> bool:
    return any(re.search(pattern, _bare(e)) for e in _exprs())


@pytest.mark.parametrize(
    ("what", "pattern"),
    [
        ("tiles/s", r"^sum\(rate\(histoprompt_ingest_tiles_total\[5m\]\)\)$"),
        ("slides/h", r"rate\(histoprompt_ingest_slides_total\[5m\]\)\)\*3600$"),
        (
            "p50 slide seconds",
            r"histogram_quantile\(0\.5,.*histoprompt_ingest_slide_seconds_bucket",
        ),
        (
            "p95 slide seconds",
            r"histogram_quantile\(0\.95,.*histoprompt_ingest_slide_seconds_bucket",
        ),
        ("stage seconds", r"by\(le,stage\).*histoprompt_ingest_stage_seconds_bucket"),
        ("queue time per model", r"by\(model\)\(rate\(nv_inference_queue_duration_us"),
        ("compute time per model", r"by\(model\)\(rate\(nv_inference_compute_infer_duration_us"),
        ("batch size", r"nv_inference_count\[5m\]\)\)/sum.*nv_inference_exec_count"),
        ("errors and DLQ", r'histoprompt_ingest_slides_total\{status=~"failed\|dlq"\}'),
        ("Triton errors", r"nv_inference_request_failure"),
        ("lag (exporter or self-reported)", r"^sum\(histoprompt:ingest_consumer_lag:sum\)$"),
        ("in flight", r"^sum\(histoprompt_ingest_inflight_slides\)$"),
        ("GPU utilisation", r"^nv_gpu_utilization$"),
        ("GPU memory (DCGM)", r"DCGM_FI_DEV_FB_USED.*DCGM_FI_DEV_FB_FREE"),
        ("GPU temperature (DCGM)", r"DCGM_FI_DEV_GPU_TEMP"),
        ("GPU Xid errors (DCGM)", r"DCGM_FI_DEV_XID_ERRORS"),
    ],
)
def test_dashboard_shows(what: str, pattern: str) -> None:
    assert _has(pattern), f"no panel shows {what}"


def test_dashboard_filters_by_namespace_and_pod() -> None:
    """Monitoring-mixin standard: namespace and pod variables, and every query uses them
    (the lag recording rule is per namespace, so it takes the namespace only)."""
    variables = {v["name"]: v for v in _dashboard()["templating"]["list"]}
    assert {"datasource", "namespace", "pod"} <= set(variables)
    for name in ("namespace", "pod"):
        var = variables[name]
        assert var["type"] == "query" and var["includeAll"] and var["multi"]
        assert var["allValue"] == ".*"
        assert f", {name})" in var["query"]["query"]
    assert "$namespace" in variables["pod"]["query"]["query"]
    for expr in _exprs():
        flat = expr.replace(" ", "")
        assert 'namespace=~"$namespace"' in flat, expr
        if "histoprompt:ingest_consumer_lag:sum" not in flat:
            # Every metric selector carries the pod filter too.
            selectors = re.findall(r"[a-zA-Z_:][\w:]*\{[^}]*\}", flat)
            metrics = re.findall(r"\b(?:histoprompt_|nv_|DCGM_)\w+", flat)
            assert len(selectors) == len(metrics), expr
            assert all('pod=~"$pod"' in sel for sel in selectors), expr


def test_dashboard_metadata_and_layout() -> None:
    dash = _dashboard()
    assert dash["uid"] == "histoprompt-overview"
    assert dash["templating"]["list"][0]["name"] == "datasource"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        own = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not own & cells, f"panel {panel['title']!r} overlaps another"
        cells |= own
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
