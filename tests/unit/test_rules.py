"""deploy/prometheus/rules: `promtool check rules`, and `promtool test rules` on synthetic
series, so each alert is shown to fire on the failure it names and to stay quiet when healthy.

The unit tests run on a copy of the rules without annotations: promtool compares
annotations verbatim, and the annotation templates are already checked by `check rules`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
RULE_FILES = sorted(RULES_DIR.glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is missing: make install-prometheus (Debian package prometheus)"
    return binary


def _alerts() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == ["histoprompt.yml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def _rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(promtool: str, path: Path) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_rejects_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    """The check is not a rubber stamp: a PromQL syntax error fails it."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(x[5m])"}]}]}
        )
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


ALERTS = {
    "HistopromptIngestErrorRateHigh",
    "HistopromptIngestDLQGrowing",
    "HistopromptIngestConsumerLagHigh",
    "HistopromptIngestStalled",
    "HistopromptIngestAbsent",
    "HistopromptTritonAbsent",
    "HistopromptTritonNotReady",
    "HistopromptTritonQueueTimeHigh",
    "HistopromptTritonInferenceFailures",
    "HistopromptGPUIdleWithBacklog",
    "HistopromptGPUIdle",
}
README = ROOT / "README.md"
RUNBOOKS = "https://github.com/histoprompt/histoprompt/blob/main/README.md#"


def test_every_alert_has_severity_component_and_text() -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} == ALERTS
    for alert in alerts:
        assert alert["labels"]["severity"] in {"info", "warning", "critical"}
        assert alert["labels"]["component"] in {"ingest", "triton"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert "for" in alert
        # Portable between the local stack and Kubernetes: no job selector.
        assert "job=" not in alert["expr"]


def _github_anchors(markdown: str) -> set[str]:
    """Heading anchors as GitHub renders them: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_links_its_runbook_in_the_readme() -> None:
    anchors = _github_anchors(README.read_text())
    for alert in _alerts():
        url = alert["annotations"].get("runbook_url", "")
        assert url.startswith(RUNBOOKS), alert["alert"]
        assert url.removeprefix(RUNBOOKS) == alert["alert"].lower()
        assert url.removeprefix(RUNBOOKS) in anchors, f"README has no section for {url}"
    operations = README.read_text().split("\n## Operations", 1)
    assert len(operations) == 2, "README lost its Operations chapter"
    assert all(f"### {a}" in operations[1] for a in ALERTS)


def test_every_alert_aggregates_by_namespace() -> None:
    """One alert per deployment, never a sum over every namespace (absent() has no labels)."""
    for rule in _rules():
        expr = " ".join(rule["expr"].split())
        if expr.startswith("absent("):
            continue
        aggregations = re.findall(r"\b(sum|avg|max|min|count)\s*(by\s*\([^)]*\))?\s*\(", expr)
        name = rule.get("alert") or rule.get("record")
        for op, by in aggregations:
            assert "namespace" in by, f"{name}: {op} without by (namespace)"
        uses_lag = "histoprompt:ingest_consumer_lag:sum" in expr
        assert aggregations or uses_lag, f"{name} aggregates nothing"
        # Joins between aggregates keep the namespace.
        for on in re.findall(r"\bon\s*\(([^)]*)\)", expr):
            assert "namespace" in on, f"{name}: on ({on})"


def test_the_local_stack_loads_these_rules() -> None:
    from histoprompt.stack.prometheus import rule_files

    assert rule_files(RULES_DIR) == [p.resolve() for p in RULE_FILES]


def _series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def _expect(alert: str, at: str, labels: list[dict[str, str]]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": [{"exp_labels": x} for x in labels]}


NS = 'namespace="hp"'
INGEST = {"severity": "warning", "component": "ingest", "namespace": "hp"}
TRITON = {"severity": "warning", "component": "triton", "namespace": "hp"}
CRITICAL_INGEST = {**INGEST, "severity": "critical"}
SLIDES = "histoprompt_ingest_slides_total"
LAG = f"histoprompt_ingest_consumer_lag{{{NS}}}"
EXPORTER_LAG = f"histoprompt:ingest_consumer_lag:exporter{{{NS}}}"
TILES = f"histoprompt_ingest_tiles_total{{{NS}}}"
QUEUE = "nv_inference_queue_duration_us"
COMPUTE = "nv_inference_compute_infer_duration_us"
UNAVAILABLE = "kube_deployment_status_replicas_unavailable"

SCENARIOS: dict[str, dict[str, Any]] = {
    "error rate high": {
        "input_series": [
            _series(f'{SLIDES}{{status="done",{NS}}}', "0+10x60"),
            _series(f'{SLIDES}{{status="failed",{NS}}}', "0+2x60"),
        ],
        "alert_rule_test": [_expect("HistopromptIngestErrorRateHigh", "30m", [INGEST])],
    },
    "error rate healthy": {
        "input_series": [
            _series(f'{SLIDES}{{status="done",{NS}}}', "0+10x60"),
            _series(f'{SLIDES}{{status="failed",{NS}}}', "0x60"),
        ],
        "alert_rule_test": [
            _expect("HistopromptIngestErrorRateHigh", "30m", []),
            _expect("HistopromptIngestDLQGrowing", "30m", []),
        ],
    },
    "error rate is per namespace, not diluted by another namespace's traffic": {
        "input_series": [
            _series(f'{SLIDES}{{status="done",{NS}}}', "0+1x60"),
            _series(f'{SLIDES}{{status="failed",{NS}}}', "0+1x60"),
            _series(f'{SLIDES}{{status="done",namespace="big"}}', "0+1000x60"),
        ],
        "alert_rule_test": [_expect("HistopromptIngestErrorRateHigh", "30m", [INGEST])],
    },
    "dlq growing": {
        "input_series": [_series(f'{SLIDES}{{status="dlq",{NS}}}', "0x5 1+1x40")],
        "alert_rule_test": [
            _expect("HistopromptIngestDLQGrowing", "3m", []),
            _expect("HistopromptIngestDLQGrowing", "20m", [INGEST]),
        ],
    },
    "lag high": {
        "input_series": [_series(LAG, "600x40"), _series(TILES, "0+100x40")],
        "alert_rule_test": [
            _expect("HistopromptIngestConsumerLagHigh", "10m", []),
            _expect("HistopromptIngestConsumerLagHigh", "20m", [INGEST]),
            _expect("HistopromptIngestStalled", "20m", []),
        ],
    },
    "lag is per namespace: two small backlogs do not add up": {
        "input_series": [
            _series(LAG, "300x40"),
            _series('histoprompt_ingest_consumer_lag{namespace="other"}', "300x40"),
        ],
        "alert_rule_test": [_expect("HistopromptIngestConsumerLagHigh", "20m", [])],
    },
    "exporter lag wins over the self-reported gauge": {
        # A consumer that lost its partitions kept reporting 600 (E8): the exporter's
        # broker-side 100 is what counts.
        "input_series": [
            _series(LAG, "600x40"),
            _series(EXPORTER_LAG, "100x40"),
            _series(TILES, "0+100x40"),
        ],
        "alert_rule_test": [_expect("HistopromptIngestConsumerLagHigh", "20m", [])],
        "promql_expr_test": [
            {
                "expr": "histoprompt:ingest_consumer_lag:sum",
                "eval_time": "20m",
                "exp_samples": [
                    {"labels": f"histoprompt:ingest_consumer_lag:sum{{{NS}}}", "value": 100}
                ],
            }
        ],
    },
    "exporter lag alerts on its own": {
        "input_series": [_series(EXPORTER_LAG, "900x40"), _series(TILES, "0+100x40")],
        "alert_rule_test": [_expect("HistopromptIngestConsumerLagHigh", "20m", [INGEST])],
    },
    "stalled: no tiles while lag grows": {
        "input_series": [_series(LAG, "0+5x40"), _series(TILES, "100x40")],
        "alert_rule_test": [_expect("HistopromptIngestStalled", "25m", [CRITICAL_INGEST])],
    },
    "stalled: every consumer dead, the exporter still sees the lag grow": {
        # No ingest series at all: only the exporter's lag shows the backlog (E8).
        "input_series": [_series(EXPORTER_LAG, "0+5x40")],
        "alert_rule_test": [_expect("HistopromptIngestStalled", "25m", [CRITICAL_INGEST])],
    },
    "busy, lag grows: not stalled": {
        "input_series": [_series(LAG, "0+5x40"), _series(TILES, "0+100x40")],
        "alert_rule_test": [_expect("HistopromptIngestStalled", "25m", [])],
    },
    "no ingest metrics at all": {
        "input_series": [
            _series('nv_inference_request_success{model="patch_embed",version="1"}', "0+1x30")
        ],
        "alert_rule_test": [
            _expect("HistopromptIngestAbsent", "5m", []),
            _expect(
                "HistopromptIngestAbsent",
                "15m",
                [{"severity": "critical", "component": "ingest"}],
            ),
            _expect("HistopromptTritonAbsent", "15m", []),
        ],
    },
    "ingest scraped": {
        "input_series": [_series(TILES, "0x30")],
        "alert_rule_test": [_expect("HistopromptIngestAbsent", "15m", [])],
    },
    "no triton serving patch_embed": {
        "input_series": [
            _series(TILES, "0x30"),
            # Triton is up but only another model is loaded: still no patch_embed.
            _series('nv_inference_request_success{model="slide_embed",version="1"}', "0x30"),
        ],
        "alert_rule_test": [
            _expect("HistopromptTritonAbsent", "5m", []),
            _expect(
                "HistopromptTritonAbsent",
                "15m",
                [{"severity": "critical", "component": "triton", "model": "patch_embed"}],
            ),
        ],
    },
    "triton replicas not ready": {
        "input_series": [
            _series(f'{UNAVAILABLE}{{deployment="hp-histoprompt-triton",{NS}}}', "1x40"),
            _series(f'{UNAVAILABLE}{{deployment="hp-histoprompt-ingest",{NS}}}', "1x40"),
        ],
        "alert_rule_test": [
            _expect("HistopromptTritonNotReady", "10m", []),
            _expect(
                "HistopromptTritonNotReady",
                "20m",
                [{**TRITON, "deployment": "hp-histoprompt-triton"}],
            ),
        ],
    },
    "triton rollout: one replica briefly unavailable": {
        "input_series": [
            _series(f'{UNAVAILABLE}{{deployment="hp-histoprompt-triton",{NS}}}', "1x5 0x40"),
        ],
        "alert_rule_test": [_expect("HistopromptTritonNotReady", "20m", [])],
    },
    "triton queue time above compute time": {
        "input_series": [
            _series(f'{QUEUE}{{model="tile_encoder",version="1",{NS}}}', "0+3000000x40"),
            _series(f'{COMPUTE}{{model="tile_encoder",version="1",{NS}}}', "0+1000000x40"),
            # An ensemble queues but computes nothing itself: never alerted on.
            _series(f'{QUEUE}{{model="patch_embed",version="1",{NS}}}', "0+1000x40"),
            _series(f'{COMPUTE}{{model="patch_embed",version="1",{NS}}}', "0x40"),
            # A healthy model: short queue.
            _series(f'{QUEUE}{{model="slide_embed",version="1",{NS}}}', "0+1000x40"),
            _series(f'{COMPUTE}{{model="slide_embed",version="1",{NS}}}', "0+1000000x40"),
        ],
        "alert_rule_test": [
            _expect("HistopromptTritonQueueTimeHigh", "10m", []),
            _expect("HistopromptTritonQueueTimeHigh", "30m", [{**TRITON, "model": "tile_encoder"}]),
        ],
    },
    "triton failures": {
        "input_series": [
            _series(
                f'nv_inference_request_failure{{model="slide_embed",version="1",{NS}}}', "0+1x40"
            ),
            _series(
                f'nv_inference_request_failure{{model="tile_encoder",version="1",{NS}}}', "0x40"
            ),
        ],
        "alert_rule_test": [
            _expect(
                "HistopromptTritonInferenceFailures", "20m", [{**TRITON, "model": "slide_embed"}]
            ),
        ],
    },
    "gpu idle while slides wait": {
        "input_series": [
            _series(f'nv_gpu_utilization{{gpu_uuid="GPU-idle",{NS}}}', "0.01x60"),
            _series(f'nv_gpu_utilization{{gpu_uuid="GPU-busy",{NS}}}', "0.9x60"),
            _series(LAG, "50x60"),
            # Another namespace's backlog does not make this namespace's GPU "wanted".
            _series('nv_gpu_utilization{gpu_uuid="GPU-other",namespace="other"}', "0.01x60"),
        ],
        "alert_rule_test": [
            _expect("HistopromptGPUIdleWithBacklog", "40m", [{**TRITON, "gpu_uuid": "GPU-idle"}]),
        ],
    },
    "gpu idle, nothing waiting": {
        "input_series": [
            _series(f'nv_gpu_utilization{{gpu_uuid="GPU-idle",{NS}}}', "0.01x80"),
            _series(LAG, "0x80"),
        ],
        "alert_rule_test": [
            _expect("HistopromptGPUIdleWithBacklog", "40m", []),
            _expect("HistopromptGPUIdle", "50m", []),
            _expect(
                "HistopromptGPUIdle",
                "70m",
                [{**TRITON, "severity": "info", "gpu_uuid": "GPU-idle"}],
            ),
        ],
    },
}


def test_every_alert_has_a_firing_scenario() -> None:
    firing = {
        case["alertname"]
        for body in SCENARIOS.values()
        for case in body["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert firing == ALERTS


def _without_annotations(path: Path, target: Path) -> Path:
    doc = yaml.safe_load(path.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    target.write_text(yaml.safe_dump(doc))
    return target


def _promtool_test(promtool: str, tmp_path: Path, scenarios: dict[str, dict[str, Any]]) -> str:
    rules = _without_annotations(RULE_FILES[0], tmp_path / "rules.yml")
    tests = [{"name": name, "interval": "1m", **body} for name, body in scenarios.items()]
    spec = tmp_path / "rules_test.yml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests})
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(spec)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alerts_fire_on_their_failure_and_not_when_healthy(promtool: str, tmp_path: Path) -> None:
    out = _promtool_test(promtool, tmp_path, SCENARIOS)
    assert "SUCCESS" in out


def test_promtool_test_catches_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """Control: claiming the healthy error-rate scenario alerts must fail."""
    wrong = {
        "wrong": {
            **SCENARIOS["error rate healthy"],
            "alert_rule_test": [_expect("HistopromptIngestErrorRateHigh", "30m", [INGEST])],
        }
    }
    with pytest.raises(AssertionError, match="FAILED"):
        _promtool_test(promtool, tmp_path, wrong)
