"""The chart's defaults are the code's: every HISTOPROMPT_* value the default render of
helm/histoprompt sets equals the IngestSettings field default, unless it is listed below as
deployment-specific with the reason. Changing either side alone fails here.

helm is the pinned build the helm-chart tests use (`make install-helm`).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import test_helm_chart as chart

from histoprompt.core.modelspec import MAX_TILE_BATCH
from histoprompt.core.settings import ENV_PREFIX
from histoprompt.ingest.settings import IngestSettings

# The chart's fixtures, so this module renders with the same pinned helm and cache.
helm = chart.helm
render = chart.render

# Values a cluster needs to differ from a developer's machine, and why.
DEPLOYMENT_SPECIFIC = {
    "HISTOPROMPT_KAFKA_BOOTSTRAP": "the cluster's brokers, not the local stack's",
    "HISTOPROMPT_S3_ENDPOINT": "AWS S3 for s3.region unless s3.endpoint is set",
    "HISTOPROMPT_S3_SECURE": "TLS in a cluster; the local stack serves plain http",
    "HISTOPROMPT_TRITON_URL": "this release's Triton Service",
    "HISTOPROMPT_TRITON_HTTP_URL": "this release's Triton Service",
    "HISTOPROMPT_INGEST_METRICS_HOST": "a pod is scraped on its IP, a local process on loopback",
}

# Rendered explicitly as the slides bucket, which is what the empty default means.
EFFECTIVE = {"HISTOPROMPT_INGEST_ALLOWED_BUCKETS"}

FROM_SECRETS = {"HISTOPROMPT_S3_ACCESS_KEY", "HISTOPROMPT_S3_SECRET_KEY"}


def _field(env_name: str) -> str:
    return env_name.removeprefix(ENV_PREFIX).lower()


@pytest.fixture(scope="module")
def default_env(render: chart.Render) -> dict[str, chart.Manifest]:
    env = chart._env(chart._ingest_container(render()))
    return {n: e for n, e in env.items() if n.startswith(ENV_PREFIX)}


def test_default_render_sets_the_code_defaults(default_env: dict[str, chart.Manifest]) -> None:
    rendered = chart._settings_from_env(default_env)
    compared = []
    for name, entry in sorted(default_env.items()):
        if "value" not in entry or name in DEPLOYMENT_SPECIFIC or name in EFFECTIVE:
            continue
        field = _field(name)
        default = IngestSettings.model_fields[field].default
        assert getattr(rendered, field) == default, f"{name}: chart != IngestSettings default"
        compared.append(name)
    # The values this module was written for; a mapping that silently vanished from the
    # template would otherwise shrink the comparison unnoticed.
    assert {
        "HISTOPROMPT_INGEST_CONCURRENCY",
        "HISTOPROMPT_INGEST_BATCH_SIZE",
        "HISTOPROMPT_INGEST_MAX_INFLIGHT",
        "HISTOPROMPT_INGEST_MAX_ATTEMPTS",
        "HISTOPROMPT_INGEST_ALLOWED_PREFIXES",
        "HISTOPROMPT_INGEST_SHUTDOWN_DEADLINE_S",
        "HISTOPROMPT_INGEST_LIVENESS_TIMEOUT_S",
        "HISTOPROMPT_INGEST_SERIES_SETTLE_S",
        "HISTOPROMPT_INGEST_SLIDE_DEADLINE_S",
        "HISTOPROMPT_INGEST_MAX_DELIVERIES",
        "HISTOPROMPT_INGEST_SESSION_TIMEOUT_S",
        "HISTOPROMPT_INGEST_MAX_POLL_INTERVAL_S",
        "HISTOPROMPT_INGEST_METRICS_PORT",
        "HISTOPROMPT_INGEST_GROUP_ID",
        "HISTOPROMPT_KAFKA_SECURITY_PROTOCOL",
        "HISTOPROMPT_S3_REGION",
        "HISTOPROMPT_SLIDES_BUCKET",
        "HISTOPROMPT_RESULTS_BUCKET",
        "HISTOPROMPT_MODELS_BUCKET",
    } <= set(compared)


def test_allowed_buckets_default_means_the_same(default_env: dict[str, chart.Manifest]) -> None:
    rendered = chart._settings_from_env(default_env)
    default = IngestSettings.model_fields["ingest_allowed_buckets"].default
    slides = IngestSettings.model_fields["slides_bucket"].default
    assert default == ()
    assert rendered.allowed_buckets() == (slides,)


def test_exceptions_are_rendered_and_only_secrets_come_from_secrets(
    default_env: dict[str, chart.Manifest],
) -> None:
    assert set(DEPLOYMENT_SPECIFIC) | EFFECTIVE <= set(default_env)
    assert {n for n, e in default_env.items() if "value" not in e} == FROM_SECRETS


def _schema_batch_bounds() -> dict[str, Any]:
    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    settings = schema["properties"]["ingest"]["properties"]["settings"]["properties"]
    bounds: dict[str, Any] = settings["batchSize"]
    return bounds


def test_tile_batch_bound_is_the_core_constant() -> None:
    limits = {
        type(m).__name__: m for m in IngestSettings.model_fields["ingest_batch_size"].metadata
    }
    assert _schema_batch_bounds()["maximum"] == MAX_TILE_BATCH
    assert limits["Le"].le == MAX_TILE_BATCH
